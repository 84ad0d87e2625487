package secevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Subject is one normalized subject identifier: who an event is about.
//
// Transmitters identify subjects in several shapes: RFC 9493 subject
// identifiers in a top-level "sub_id" ({"format":"iss_sub",...}), SSF complex
// subjects ({"format":"complex","user":{...},"session":{...}}), legacy RISC
// subjects inside the event ({"subject_type":"iss-sub",...}, as Kakao sends),
// or only a top-level JWT "sub". Subject reduces all of them to one
// (Issuer, UserID) pair that downstream code can use as a key.
type Subject struct {
	// Format is the RFC 9493 format of the identifier UserID was taken from
	// (legacy names are normalized: "iss-sub" → "iss_sub", "phone" →
	// "phone_number", "id_token_claims" → "iss_sub"). For aliases and complex
	// subjects it is the format of the chosen member. Unknown formats are
	// kept as received (lower-cased) with an empty UserID.
	Format string
	// Issuer is the issuer the UserID is relative to: the subject's own "iss"
	// for iss_sub, otherwise the SET issuer.
	Issuer string
	// UserID is the normalized identifier: sub (iss_sub), email (domain
	// lower-cased), phone_number, id (opaque), uri (account, uri), url (did).
	UserID string
	// Raw is the subject object exactly as received (or synthesized from a
	// top-level "sub" when that is all the SET carries).
	Raw json.RawMessage
}

// Subject identifier formats (RFC 9493 and SSF).
const (
	FormatAccount     = "account"
	FormatEmail       = "email"
	FormatIssSub      = "iss_sub"
	FormatOpaque      = "opaque"
	FormatPhoneNumber = "phone_number"
	FormatDID         = "did"
	FormatURI         = "uri"
	FormatAliases     = "aliases"
	FormatComplex     = "complex"
)

// complexMembers are the SSF complex-subject members in order of preference
// when no "user" member is present.
var complexMembers = []string{"user", "tenant", "org_unit", "group", "device", "session", "application"}

var errSubject = errors.New("invalid subject")

// ParseSubject parses a subject identifier object (RFC 9493, SSF complex, or
// legacy RISC subject_type style) and normalizes it. defaultIssuer is used
// when the identifier carries no issuer of its own (normally the SET "iss").
//
// Known formats with missing or mistyped required members are errors; unknown
// formats are not (they yield a Subject with an empty UserID), because the
// set of formats is open. Error messages name members, never their values.
func ParseSubject(raw json.RawMessage, defaultIssuer string) (Subject, error) {
	return parseSubject(raw, defaultIssuer, 0)
}

func subjErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errSubject, fmt.Sprintf(format, args...))
}

// normalizeFormat maps legacy RISC subject_type names to RFC 9493 names.
func normalizeFormat(f string) string {
	f = strings.ToLower(strings.TrimSpace(f))
	switch f {
	case "iss-sub", "id_token_claims", "id-token-claims":
		return FormatIssSub
	case "phone":
		return FormatPhoneNumber
	}
	return f
}

// depth: 0 top level, 1 inside aliases/complex. Nested aliases and complex
// are refused (RFC 9493 §3.2.3: aliases must not contain aliases).
func parseSubject(raw json.RawMessage, defaultIssuer string, depth int) (Subject, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return Subject{}, subjErr("subject is not a well-formed JSON object")
	}
	format, err := subjectFormat(m)
	if err != nil {
		return Subject{}, err
	}
	s := Subject{Format: format, Issuer: defaultIssuer, Raw: append(json.RawMessage(nil), raw...)}
	members := subjectMembers{m: m, format: format}
	switch format {
	case FormatIssSub:
		s.Issuer, s.UserID, err = members.issSub(defaultIssuer)
	case FormatAliases, FormatComplex:
		if depth > 0 {
			return Subject{}, subjErr("nested aliases or complex subject")
		}
		var chosen Subject
		if format == FormatAliases {
			chosen, err = parseAliases(m, defaultIssuer, depth)
		} else {
			chosen, err = parseComplex(m, defaultIssuer, depth)
		}
		s.Format, s.Issuer, s.UserID = chosen.Format, chosen.Issuer, chosen.UserID
	default:
		s.UserID, err = members.identifier()
	}
	if err != nil {
		return Subject{}, err
	}
	if s.Issuer == "" {
		s.Issuer = defaultIssuer
	}
	return s, nil
}

// subjectFormat is the subject's normalized format: "format", else the
// legacy "subject_type", else inferred from the only unambiguous shapes seen
// in the wild (a complex subject's members, or a bare "sub").
func subjectFormat(m map[string]json.RawMessage) (string, error) {
	for _, name := range []string{"format", "subject_type"} {
		v, ok := m[name]
		if !ok {
			continue
		}
		f, ok := rawString(v)
		if !ok {
			return "", subjErr("%s is not a string", name)
		}
		return normalizeFormat(f), nil
	}
	switch {
	case has(m, "user") || has(m, "session") || has(m, "device") || has(m, "tenant"):
		return FormatComplex, nil
	case has(m, "sub"):
		return FormatIssSub, nil
	}
	return "", subjErr("subject has no format")
}

// subjectMembers reads the members of one subject object of a known format.
type subjectMembers struct {
	m      map[string]json.RawMessage
	format string
}

// require returns a member that must be a non-blank string.
func (sm subjectMembers) require(name string) (string, error) {
	v, ok := sm.m[name]
	if !ok {
		return "", subjErr("%s subject lacks %q", sm.format, name)
	}
	str, ok := rawString(v)
	if !ok {
		return "", subjErr("%s subject member %q is not a string", sm.format, name)
	}
	if strings.TrimSpace(str) == "" {
		return "", subjErr("%s subject member %q is empty", sm.format, name)
	}
	return str, nil
}

// issSub reads an iss_sub subject: sub is required; iss, when a non-empty
// string, replaces the default issuer.
func (sm subjectMembers) issSub(defaultIssuer string) (issuer, sub string, err error) {
	sub, err = sm.require("sub")
	if err != nil {
		return "", "", err
	}
	issuer = defaultIssuer
	if v, ok := sm.m["iss"]; ok {
		iss, ok := rawString(v)
		if !ok {
			return "", "", subjErr("iss_sub subject member \"iss\" is not a string")
		}
		if iss != "" {
			issuer = iss
		}
	}
	return issuer, sub, nil
}

// identifierFormats are the single-member formats: the member that holds the
// identifier and how it is normalized (nil: kept as sent).
var identifierFormats = map[string]struct {
	member    string
	normalize func(string) (string, error)
}{
	FormatEmail:       {"email", func(e string) (string, error) { return normalizeEmail(e), nil }},
	FormatPhoneNumber: {"phone_number", func(p string) (string, error) { return strings.TrimSpace(p), nil }},
	FormatOpaque:      {"id", nil},
	FormatAccount:     {"uri", acctURI},
	FormatURI:         {"uri", nil},
	FormatDID:         {"url", nil},
}

// identifier reads the identifier of a single-member format. An unknown
// format is accepted with an empty identifier (the set of formats is open;
// Raw keeps the object).
func (sm subjectMembers) identifier() (string, error) {
	f, ok := identifierFormats[sm.format]
	if !ok {
		return "", nil
	}
	name := f.member
	if sm.format == FormatPhoneNumber && !has(sm.m, name) && has(sm.m, "phone") {
		name = "phone" // the legacy RISC member name
	}
	v, err := sm.require(name)
	if err != nil || f.normalize == nil {
		return v, err
	}
	return f.normalize(v)
}

// acctURI accepts an account subject's uri only as an acct: URI.
func acctURI(u string) (string, error) {
	if !strings.HasPrefix(strings.ToLower(u), "acct:") {
		return "", subjErr("account subject uri is not an acct: URI")
	}
	return u, nil
}

// parseAliases parses every identifier of an aliases subject (each must be
// valid) and returns the one chooseAlias prefers.
func parseAliases(m map[string]json.RawMessage, defaultIssuer string, depth int) (Subject, error) {
	v, ok := m["identifiers"]
	if !ok || kindOf(v) != kindArray {
		return Subject{}, subjErr("aliases subject lacks an identifiers array")
	}
	var ids []json.RawMessage
	if err := json.Unmarshal(v, &ids); err != nil || len(ids) == 0 {
		return Subject{}, subjErr("aliases subject has no identifiers")
	}
	parsed := make([]Subject, 0, len(ids))
	for _, id := range ids {
		p, err := parseSubject(id, defaultIssuer, depth+1)
		if err != nil {
			return Subject{}, err
		}
		parsed = append(parsed, p)
	}
	return chooseAlias(parsed, defaultIssuer), nil
}

// parseComplex parses every known member of an SSF complex subject (each
// must be valid) and returns the first in preference order ("user" when
// present).
func parseComplex(m map[string]json.RawMessage, defaultIssuer string, depth int) (Subject, error) {
	var chosen *Subject
	for _, name := range complexMembers {
		v, ok := m[name]
		if !ok {
			continue
		}
		p, err := parseSubject(v, defaultIssuer, depth+1)
		if err != nil {
			return Subject{}, err
		}
		if chosen == nil {
			chosen = &p
		}
	}
	if chosen == nil {
		return Subject{}, subjErr("complex subject has no known member")
	}
	return *chosen, nil
}

// chooseAlias prefers an iss_sub identifier from the SET issuer, then any
// iss_sub, then the first identifier with a non-empty UserID.
func chooseAlias(ids []Subject, issuer string) Subject {
	for _, s := range ids {
		if s.Format == FormatIssSub && s.Issuer == issuer {
			return s
		}
	}
	for _, s := range ids {
		if s.Format == FormatIssSub {
			return s
		}
	}
	for _, s := range ids {
		if s.UserID != "" {
			return s
		}
	}
	return ids[0]
}

// normalizeEmail lower-cases the domain part (case-insensitive per RFC 5321)
// and keeps the local part as sent (it may be case-sensitive).
func normalizeEmail(e string) string {
	e = strings.TrimSpace(e)
	at := strings.LastIndexByte(e, '@')
	if at < 0 {
		return e
	}
	return e[:at+1] + strings.ToLower(e[at+1:])
}

func has(m map[string]json.RawMessage, k string) bool {
	_, ok := m[k]
	return ok
}

// subjectFromSub synthesizes an iss_sub subject from a top-level JWT "sub".
func subjectFromSub(iss, sub string) Subject {
	raw, _ := json.Marshal(map[string]string{"format": FormatIssSub, "iss": iss, "sub": sub})
	return Subject{Format: FormatIssSub, Issuer: iss, UserID: sub, Raw: raw}
}
