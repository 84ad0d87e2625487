package secevent

import (
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// SET is a verified Security Event Token.
type SET struct {
	Issuer    string
	JTI       string
	Audience  []string
	IssuedAt  time.Time
	TxnID     string  // "txn", or Kakao's "txm"
	Subject   Subject // SET-level normalized subject (sub_id, else top-level sub, else first event subject)
	Events    []Event // sorted by Type for determinism
	KeyID     string
	Algorithm string

	// TimeOfEvent is the "toe" claim, zero when absent.
	TimeOfEvent time.Time
	// Expires is the "exp" claim, zero when absent.
	Expires time.Time
	// Payload is the verified JWT claims set exactly as signed.
	Payload json.RawMessage
}

// parseClaims checks the claims of a payload whose signature has already
// been verified. Descriptions name claims, never their values. The checks run
// in a fixed order (iss, aud, jti, times, txn, subjects, events), so a payload
// with several faults always reports the same one.
func (v *Verifier) parseClaims(payload []byte) (*SET, *Error) {
	m, err := decodeObject(payload)
	if err != nil {
		return nil, wrapErr(CodeInvalidRequest, "payload is not a JSON object without duplicate members", err)
	}
	set := &SET{Payload: append(json.RawMessage(nil), payload...)}
	var e *Error
	if set.Issuer, e = v.claimIssuer(m); e != nil {
		return nil, e
	}
	if set.Audience, e = v.claimAudience(m); e != nil {
		return nil, e
	}
	if set.JTI, e = v.claimJTI(m); e != nil {
		return nil, e
	}
	if e = v.claimTimes(m, set); e != nil {
		return nil, e
	}
	if set.TxnID, e = claimTxn(m); e != nil {
		return nil, e
	}
	subs, e := claimSubjects(m, set.Issuer)
	if e != nil {
		return nil, e
	}
	if e = parseEvents(m, set, subs); e != nil {
		return nil, e
	}
	return set, nil
}

// claimIssuer checks iss: present, a string, the expected issuer.
func (v *Verifier) claimIssuer(m map[string]json.RawMessage) (string, *Error) {
	raw, ok := m["iss"]
	if !ok {
		return "", newErr(CodeInvalidIssuer, "iss claim missing")
	}
	iss, ok := rawString(raw)
	if !ok {
		return "", newErr(CodeInvalidRequest, "iss claim is not a string")
	}
	if iss != v.issuer {
		return "", newErr(CodeInvalidIssuer, "iss claim does not match the expected issuer")
	}
	return iss, nil
}

// claimAudience checks aud: a string or an array of strings, one of which
// names this receiver.
func (v *Verifier) claimAudience(m map[string]json.RawMessage) ([]string, *Error) {
	raw, ok := m["aud"]
	if !ok {
		return nil, newErr(CodeInvalidAudience, "aud claim missing")
	}
	var aud []string
	if s, ok := rawString(raw); ok {
		aud = []string{s}
	} else if arr, ok := rawStringArray(raw); ok {
		aud = arr
	} else {
		return nil, newErr(CodeInvalidRequest, "aud claim is neither a string nor an array of strings")
	}
	for _, a := range aud {
		if _, ok := v.audiences[a]; ok {
			return aud, nil
		}
	}
	return nil, newErr(CodeInvalidAudience, "aud claim does not name this receiver")
}

// claimJTI checks jti: a non-empty string of at most maxJTI bytes.
func (v *Verifier) claimJTI(m map[string]json.RawMessage) (string, *Error) {
	raw, ok := m["jti"]
	if !ok {
		return "", newErr(CodeInvalidRequest, "jti claim missing")
	}
	jti, ok := rawString(raw)
	switch {
	case !ok:
		return "", newErr(CodeInvalidRequest, "jti claim is not a string")
	case jti == "":
		return "", newErr(CodeInvalidRequest, "jti claim is empty")
	case len(jti) > v.maxJTI:
		return "", newErr(CodeInvalidRequest, "jti claim is too long")
	}
	return jti, nil
}

// claimTimes checks iat (required, within the accepted window), exp and nbf
// (optional, with the allowed skew) and reads toe (optional).
func (v *Verifier) claimTimes(m map[string]json.RawMessage, set *SET) *Error {
	now := v.now()
	iat, e := v.claimIssuedAt(m, now)
	if e != nil {
		return e
	}
	set.IssuedAt = iat
	expired := func(exp time.Time) bool { return now.Sub(exp) > v.maxFutureSkew }
	if set.Expires, e = optionalDate(m, "exp", expired, "token has expired (exp)"); e != nil {
		return e
	}
	early := func(nbf time.Time) bool { return nbf.Sub(now) > v.maxFutureSkew }
	if _, e = optionalDate(m, "nbf", early, "token is not yet valid (nbf)"); e != nil {
		return e
	}
	set.TimeOfEvent, e = optionalDate(m, "toe", nil, "")
	return e
}

// claimIssuedAt checks iat: present, a NumericDate, neither older than maxAge
// nor further ahead than maxFutureSkew.
func (v *Verifier) claimIssuedAt(m map[string]json.RawMessage, now time.Time) (time.Time, *Error) {
	raw, ok := m["iat"]
	if !ok {
		return time.Time{}, newErr(CodeInvalidRequest, "iat claim missing")
	}
	iat, ok := rawNumericDate(raw)
	switch {
	case !ok:
		return time.Time{}, newErr(CodeInvalidRequest, "iat claim is not a valid NumericDate")
	case now.Sub(iat) > v.maxAge:
		return time.Time{}, newErr(CodeInvalidRequest, "iat claim is older than the accepted window")
	case iat.Sub(now) > v.maxFutureSkew:
		return time.Time{}, newErr(CodeInvalidRequest, "iat claim is in the future")
	}
	return iat, nil
}

// optionalDate reads an optional NumericDate claim (zero when absent). One
// that is present must be a NumericDate, and not invalid (when invalid is
// given: then the error says why).
func optionalDate(m map[string]json.RawMessage, name string, invalid func(time.Time) bool, why string) (time.Time, *Error) {
	raw, ok := m[name]
	if !ok {
		return time.Time{}, nil
	}
	t, ok := rawNumericDate(raw)
	if !ok {
		return time.Time{}, newErr(CodeInvalidRequest, name+" claim is not a valid NumericDate")
	}
	if invalid != nil && invalid(t) {
		return time.Time{}, newErr(CodeInvalidRequest, why)
	}
	return t, nil
}

// claimTxn reads txn (RFC 8417) or txm (Kakao's spelling); neither is
// required, each present one must be a string, txn wins.
func claimTxn(m map[string]json.RawMessage) (string, *Error) {
	txn := ""
	for _, name := range []string{"txn", "txm"} {
		raw, ok := m[name]
		if !ok {
			continue
		}
		s, ok := rawString(raw)
		if !ok {
			return "", newErr(CodeInvalidRequest, name+" claim is not a string")
		}
		if txn == "" {
			txn = s
		}
	}
	return txn, nil
}

// setSubjects are the SET-level subjects: sub_id (RFC 9493 / SSF) and the
// top-level sub (Kakao), either or both absent.
type setSubjects struct {
	issuer    string
	subID     *Subject
	topSub    string
	hasTopSub bool
}

// claimSubjects reads sub_id and sub; when both name an iss_sub user they
// must agree.
func claimSubjects(m map[string]json.RawMessage, iss string) (setSubjects, *Error) {
	subs := setSubjects{issuer: iss}
	if raw, ok := m["sub_id"]; ok {
		s, err := ParseSubject(raw, iss)
		if err != nil {
			return subs, wrapErr(CodeInvalidRequest, "sub_id claim is not a valid subject identifier", err)
		}
		subs.subID = &s
	}
	if raw, ok := m["sub"]; ok {
		s, ok := rawString(raw)
		if !ok || s == "" {
			return subs, newErr(CodeInvalidRequest, "sub claim is not a non-empty string")
		}
		subs.topSub, subs.hasTopSub = s, true
	}
	if subs.subID != nil && subs.conflicts(*subs.subID) {
		return subs, newErr(CodeInvalidRequest, "sub claim does not match sub_id")
	}
	return subs, nil
}

// conflicts reports whether s names an iss_sub user other than the
// top-level sub.
func (subs setSubjects) conflicts(s Subject) bool {
	return subs.hasTopSub && s.Format == FormatIssSub && s.UserID != subs.topSub
}

// setLevel is the SET-level subject from the claims: sub_id, else the
// top-level sub; ok is false when neither is there.
func (subs setSubjects) setLevel() (Subject, bool) {
	switch {
	case subs.subID != nil:
		return *subs.subID, true
	case subs.hasTopSub:
		return subjectFromSub(subs.issuer, subs.topSub), true
	}
	return Subject{}, false
}

// parseEvents checks the events claim (a non-empty object of event objects),
// fills set.Events sorted by type and settles the subjects: the SET's is
// sub_id, else sub, else the first event subject; an event without its own
// subject gets the SET's.
func parseEvents(m map[string]json.RawMessage, set *SET, subs setSubjects) *Error {
	evMap, types, e := eventTypes(m)
	if e != nil {
		return e
	}
	setSubject, haveSetSubject := subs.setLevel()
	set.Events = make([]Event, 0, len(types))
	eventSubjects := make([]bool, len(types))
	for i, t := range types {
		ev, hasSubject, e := parseEvent(t, evMap[t], set, subs)
		if e != nil {
			return e
		}
		set.Events = append(set.Events, ev)
		eventSubjects[i] = hasSubject
	}
	if !haveSetSubject {
		if i := slices.Index(eventSubjects, true); i >= 0 {
			setSubject, haveSetSubject = set.Events[i].Subject, true
		}
	}
	for i := range set.Events {
		if !eventSubjects[i] && haveSetSubject {
			set.Events[i].Subject = setSubject
		}
	}
	set.Subject = setSubject
	return nil
}

// eventTypes checks that the events claim is a non-empty JSON object and
// returns its members with their names sorted.
func eventTypes(m map[string]json.RawMessage) (map[string]json.RawMessage, []string, *Error) {
	raw, ok := m["events"]
	if !ok {
		return nil, nil, newErr(CodeInvalidRequest, "events claim missing")
	}
	if kindOf(raw) != kindObject {
		return nil, nil, newErr(CodeInvalidRequest, "events claim is not a JSON object")
	}
	evMap, err := decodeObject(raw)
	if err != nil {
		return nil, nil, wrapErr(CodeInvalidRequest, "events claim is not a JSON object", err)
	}
	if len(evMap) == 0 {
		return nil, nil, newErr(CodeInvalidRequest, "events claim is empty")
	}
	return evMap, slices.Sorted(maps.Keys(evMap)), nil
}

// parseEvent checks one member of the events claim: a non-empty type whose
// value is an object, with an optional subject that agrees with the
// top-level sub. hasSubject reports whether the event named its own.
func parseEvent(typ string, raw json.RawMessage, set *SET, subs setSubjects) (ev Event, hasSubject bool, e *Error) {
	if typ == "" {
		return Event{}, false, newErr(CodeInvalidRequest, "events claim has an empty event type")
	}
	if kindOf(raw) != kindObject {
		return Event{}, false, newErr(CodeInvalidRequest, "event value is not a JSON object")
	}
	body, err := decodeObject(raw)
	if err != nil {
		return Event{}, false, wrapErr(CodeInvalidRequest, "event value is not a JSON object", err)
	}
	ev = Event{
		Type:     typ,
		Name:     EventName(typ),
		Category: CategoryOf(typ),
		Payload:  append(json.RawMessage(nil), raw...),
		Time:     eventTime(body, set),
	}
	if rawSubj, ok := body["subject"]; ok {
		s, err := ParseSubject(rawSubj, subs.issuer)
		if err != nil {
			return Event{}, false, wrapErr(CodeInvalidRequest, "event subject is not a valid subject identifier", err)
		}
		if subs.conflicts(s) {
			return Event{}, false, newErr(CodeInvalidRequest, "sub claim does not match the event subject")
		}
		ev.Subject, hasSubject = s, true
	}
	return ev, hasSubject, nil
}

// eventTime is when an event happened: toe, else the event's
// event_timestamp (read leniently), else iat.
func eventTime(body map[string]json.RawMessage, set *SET) time.Time {
	if !set.TimeOfEvent.IsZero() {
		return set.TimeOfEvent
	}
	if raw, ok := body["event_timestamp"]; ok {
		if ts, ok := lenientTimestamp(raw); ok {
			return ts
		}
	}
	return set.IssuedAt
}
