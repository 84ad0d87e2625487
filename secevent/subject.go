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
	s := Subject{Issuer: defaultIssuer, Raw: append(json.RawMessage(nil), raw...)}

	format := ""
	if v, ok := m["format"]; ok {
		f, ok := rawString(v)
		if !ok {
			return Subject{}, subjErr("format is not a string")
		}
		format = f
	} else if v, ok := m["subject_type"]; ok {
		f, ok := rawString(v)
		if !ok {
			return Subject{}, subjErr("subject_type is not a string")
		}
		format = f
	} else {
		// No format: infer only the unambiguous shapes seen in the wild.
		switch {
		case has(m, "user") || has(m, "session") || has(m, "device") || has(m, "tenant"):
			format = FormatComplex
		case has(m, "sub"):
			format = FormatIssSub
		default:
			return Subject{}, subjErr("subject has no format")
		}
	}
	format = normalizeFormat(format)
	s.Format = format

	req := func(name string) (string, error) {
		v, ok := m[name]
		if !ok {
			return "", subjErr("%s subject lacks %q", format, name)
		}
		str, ok := rawString(v)
		if !ok {
			return "", subjErr("%s subject member %q is not a string", format, name)
		}
		if strings.TrimSpace(str) == "" {
			return "", subjErr("%s subject member %q is empty", format, name)
		}
		return str, nil
	}

	switch format {
	case FormatIssSub:
		sub, err := req("sub")
		if err != nil {
			return Subject{}, err
		}
		if v, ok := m["iss"]; ok {
			iss, ok := rawString(v)
			if !ok {
				return Subject{}, subjErr("iss_sub subject member \"iss\" is not a string")
			}
			if iss != "" {
				s.Issuer = iss
			}
		}
		s.UserID = sub
	case FormatEmail:
		e, err := req("email")
		if err != nil {
			return Subject{}, err
		}
		s.UserID = normalizeEmail(e)
	case FormatPhoneNumber:
		name := "phone_number"
		if !has(m, name) && has(m, "phone") {
			name = "phone"
		}
		p, err := req(name)
		if err != nil {
			return Subject{}, err
		}
		s.UserID = strings.TrimSpace(p)
	case FormatOpaque:
		id, err := req("id")
		if err != nil {
			return Subject{}, err
		}
		s.UserID = id
	case FormatAccount:
		u, err := req("uri")
		if err != nil {
			return Subject{}, err
		}
		if !strings.HasPrefix(strings.ToLower(u), "acct:") {
			return Subject{}, subjErr("account subject uri is not an acct: URI")
		}
		s.UserID = u
	case FormatURI:
		u, err := req("uri")
		if err != nil {
			return Subject{}, err
		}
		s.UserID = u
	case FormatDID:
		u, err := req("url")
		if err != nil {
			return Subject{}, err
		}
		s.UserID = u
	case FormatAliases:
		if depth > 0 {
			return Subject{}, subjErr("nested aliases or complex subject")
		}
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
		chosen := chooseAlias(parsed, defaultIssuer)
		s.Format, s.Issuer, s.UserID = chosen.Format, chosen.Issuer, chosen.UserID
	case FormatComplex:
		if depth > 0 {
			return Subject{}, subjErr("nested aliases or complex subject")
		}
		found := false
		for _, name := range complexMembers {
			v, ok := m[name]
			if !ok {
				continue
			}
			p, err := parseSubject(v, defaultIssuer, depth+1)
			if err != nil {
				return Subject{}, err
			}
			if !found {
				// Members are validated, the first in preference order wins
				// ("user" when present).
				s.Format, s.Issuer, s.UserID = p.Format, p.Issuer, p.UserID
				found = true
			}
		}
		if !found {
			return Subject{}, subjErr("complex subject has no known member")
		}
	default:
		// Unknown format: accepted, identifier left empty, Raw kept.
	}
	if s.Issuer == "" {
		s.Issuer = defaultIssuer
	}
	return s, nil
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
