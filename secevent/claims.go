package secevent

import (
	"encoding/json"
	"sort"
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
// been verified. Descriptions name claims, never their values.
func (v *Verifier) parseClaims(payload []byte) (*SET, *Error) {
	m, err := decodeObject(payload)
	if err != nil {
		return nil, wrapErr(CodeInvalidRequest, "payload is not a JSON object without duplicate members", err)
	}
	set := &SET{Payload: append(json.RawMessage(nil), payload...)}

	// iss
	rawIss, ok := m["iss"]
	if !ok {
		return nil, newErr(CodeInvalidIssuer, "iss claim missing")
	}
	iss, ok := rawString(rawIss)
	if !ok {
		return nil, newErr(CodeInvalidRequest, "iss claim is not a string")
	}
	if iss != v.issuer {
		return nil, newErr(CodeInvalidIssuer, "iss claim does not match the expected issuer")
	}
	set.Issuer = iss

	// aud
	rawAud, ok := m["aud"]
	if !ok {
		return nil, newErr(CodeInvalidAudience, "aud claim missing")
	}
	var aud []string
	if s, ok := rawString(rawAud); ok {
		aud = []string{s}
	} else if arr, ok := rawStringArray(rawAud); ok {
		aud = arr
	} else {
		return nil, newErr(CodeInvalidRequest, "aud claim is neither a string nor an array of strings")
	}
	matched := false
	for _, a := range aud {
		if _, ok := v.audiences[a]; ok {
			matched = true
			break
		}
	}
	if !matched {
		return nil, newErr(CodeInvalidAudience, "aud claim does not name this receiver")
	}
	set.Audience = aud

	// jti
	rawJTI, ok := m["jti"]
	if !ok {
		return nil, newErr(CodeInvalidRequest, "jti claim missing")
	}
	jti, ok := rawString(rawJTI)
	if !ok {
		return nil, newErr(CodeInvalidRequest, "jti claim is not a string")
	}
	if jti == "" {
		return nil, newErr(CodeInvalidRequest, "jti claim is empty")
	}
	if len(jti) > v.maxJTI {
		return nil, newErr(CodeInvalidRequest, "jti claim is too long")
	}
	set.JTI = jti

	// iat, exp, nbf
	now := v.now()
	rawIat, ok := m["iat"]
	if !ok {
		return nil, newErr(CodeInvalidRequest, "iat claim missing")
	}
	iat, ok := rawNumericDate(rawIat)
	if !ok {
		return nil, newErr(CodeInvalidRequest, "iat claim is not a valid NumericDate")
	}
	if now.Sub(iat) > v.maxAge {
		return nil, newErr(CodeInvalidRequest, "iat claim is older than the accepted window")
	}
	if iat.Sub(now) > v.maxFutureSkew {
		return nil, newErr(CodeInvalidRequest, "iat claim is in the future")
	}
	set.IssuedAt = iat
	if rawExp, ok := m["exp"]; ok {
		exp, ok := rawNumericDate(rawExp)
		if !ok {
			return nil, newErr(CodeInvalidRequest, "exp claim is not a valid NumericDate")
		}
		if now.Sub(exp) > v.maxFutureSkew {
			return nil, newErr(CodeInvalidRequest, "token has expired (exp)")
		}
		set.Expires = exp
	}
	if rawNbf, ok := m["nbf"]; ok {
		nbf, ok := rawNumericDate(rawNbf)
		if !ok {
			return nil, newErr(CodeInvalidRequest, "nbf claim is not a valid NumericDate")
		}
		if nbf.Sub(now) > v.maxFutureSkew {
			return nil, newErr(CodeInvalidRequest, "token is not yet valid (nbf)")
		}
	}
	if rawToe, ok := m["toe"]; ok {
		toe, ok := rawNumericDate(rawToe)
		if !ok {
			return nil, newErr(CodeInvalidRequest, "toe claim is not a valid NumericDate")
		}
		set.TimeOfEvent = toe
	}

	// txn (RFC 8417) or txm (Kakao's spelling); neither required.
	for _, name := range []string{"txn", "txm"} {
		raw, ok := m[name]
		if !ok {
			continue
		}
		s, ok := rawString(raw)
		if !ok {
			return nil, newErr(CodeInvalidRequest, name+" claim is not a string")
		}
		if set.TxnID == "" {
			set.TxnID = s
		}
	}

	// Subject: sub_id (RFC 9493 / SSF) and/or top-level sub (Kakao).
	var subID *Subject
	if raw, ok := m["sub_id"]; ok {
		s, err := ParseSubject(raw, iss)
		if err != nil {
			return nil, wrapErr(CodeInvalidRequest, "sub_id claim is not a valid subject identifier", err)
		}
		subID = &s
	}
	topSub, hasTopSub := "", false
	if raw, ok := m["sub"]; ok {
		s, ok := rawString(raw)
		if !ok || s == "" {
			return nil, newErr(CodeInvalidRequest, "sub claim is not a non-empty string")
		}
		topSub, hasTopSub = s, true
	}
	if subID != nil && hasTopSub && subID.Format == FormatIssSub && subID.UserID != topSub {
		return nil, newErr(CodeInvalidRequest, "sub claim does not match sub_id")
	}

	// events
	rawEvents, ok := m["events"]
	if !ok {
		return nil, newErr(CodeInvalidRequest, "events claim missing")
	}
	if kindOf(rawEvents) != kindObject {
		return nil, newErr(CodeInvalidRequest, "events claim is not a JSON object")
	}
	evMap, err := decodeObject(rawEvents)
	if err != nil {
		return nil, wrapErr(CodeInvalidRequest, "events claim is not a JSON object", err)
	}
	if len(evMap) == 0 {
		return nil, newErr(CodeInvalidRequest, "events claim is empty")
	}
	types := make([]string, 0, len(evMap))
	for t := range evMap {
		types = append(types, t)
	}
	sort.Strings(types)

	setSubject := Subject{}
	haveSetSubject := false
	switch {
	case subID != nil:
		setSubject, haveSetSubject = *subID, true
	case hasTopSub:
		setSubject, haveSetSubject = subjectFromSub(iss, topSub), true
	}

	set.Events = make([]Event, 0, len(types))
	eventSubjects := make([]bool, len(types))
	for i, t := range types {
		raw := evMap[t]
		if t == "" {
			return nil, newErr(CodeInvalidRequest, "events claim has an empty event type")
		}
		if kindOf(raw) != kindObject {
			return nil, newErr(CodeInvalidRequest, "event value is not a JSON object")
		}
		body, err := decodeObject(raw)
		if err != nil {
			return nil, wrapErr(CodeInvalidRequest, "event value is not a JSON object", err)
		}
		ev := Event{
			Type:     t,
			Name:     EventName(t),
			Category: CategoryOf(t),
			Payload:  append(json.RawMessage(nil), raw...),
		}
		if rawSubj, ok := body["subject"]; ok {
			s, err := ParseSubject(rawSubj, iss)
			if err != nil {
				return nil, wrapErr(CodeInvalidRequest, "event subject is not a valid subject identifier", err)
			}
			if hasTopSub && s.Format == FormatIssSub && s.UserID != topSub {
				return nil, newErr(CodeInvalidRequest, "sub claim does not match the event subject")
			}
			ev.Subject = s
			eventSubjects[i] = true
		}
		// Event time: toe, else event_timestamp, else iat.
		switch {
		case !set.TimeOfEvent.IsZero():
			ev.Time = set.TimeOfEvent
		default:
			ev.Time = iat
			if rawTS, ok := body["event_timestamp"]; ok {
				if ts, ok := lenientTimestamp(rawTS); ok {
					ev.Time = ts
				}
			}
		}
		set.Events = append(set.Events, ev)
	}
	if !haveSetSubject {
		for i := range set.Events {
			if eventSubjects[i] {
				setSubject, haveSetSubject = set.Events[i].Subject, true
				break
			}
		}
	}
	for i := range set.Events {
		if !eventSubjects[i] && haveSetSubject {
			set.Events[i].Subject = setSubject
		}
	}
	set.Subject = setSubject
	return set, nil
}
