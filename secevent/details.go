package secevent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Typed event payloads returned by Event.Details.
//
// Kakao documents few payload fields, so decoding is tolerant: absent fields
// stay zero, and only a field present with an unusable type is an error.
// Every struct keeps the remaining members in Extra so that nothing the
// transmitter sent is lost.

// Localized is a human-readable text that CAEP allows either as a plain
// string or as a map from language tag to text. A plain string is stored
// under the key "".
type Localized map[string]string

// String returns the untagged text, else "en", else any text
// (deterministically: the smallest language tag).
func (l Localized) String() string {
	if s, ok := l[""]; ok {
		return s
	}
	if s, ok := l["en"]; ok {
		return s
	}
	best, found := "", false
	var out string
	for k, v := range l {
		if !found || k < best {
			best, out, found = k, v, true
		}
	}
	return out
}

// CAEPCommon holds the optional fields common to all CAEP events.
type CAEPCommon struct {
	EventTimestamp   time.Time // zero if absent (seconds or milliseconds accepted)
	InitiatingEntity string    // "admin", "user", "policy", "system" (open)
	ReasonAdmin      Localized
	ReasonUser       Localized
}

// Generic is the payload of events without specific fields (user-linked,
// account-enabled, ...) and of unknown event types.
type Generic struct {
	CAEPCommon
	Extra map[string]any
}

// UserUnlinked is OAUTH user-unlinked.
type UserUnlinked struct {
	Reason string // e.g. ACCOUNT_DELETE, UNLINK_FROM_SERVICE, REVOKE_ACCOUNT_SERVICE_TERMS (open)
	Extra  map[string]any
}

// ScopeChange is OAUTH user-scope-consent and user-scope-withdraw.
type ScopeChange struct {
	Scopes []string // from a "scopes" array or a space-separated "scope" string
	Extra  map[string]any
}

// ScopeConsent is OAUTH user-scope-consent.
type ScopeConsent = ScopeChange

// ScopeWithdraw is OAUTH user-scope-withdraw.
type ScopeWithdraw = ScopeChange

// AccountDisabled is RISC account-disabled.
type AccountDisabled struct {
	Reason string // "hijacking", "bulk-account" (open)
	Extra  map[string]any
}

// IdentifierChanged is RISC identifier-changed (and identifier-recycled).
type IdentifierChanged struct {
	NewValue string // "new-value", optional
	Extra    map[string]any
}

// CredentialChange is CAEP credential-change; CredentialType is also set for
// RISC credential-compromise.
type CredentialChange struct {
	CAEPCommon
	CredentialType string // "password", "pin", "x509", "fido2-platform", ... (open)
	ChangeType     string // "create", "revoke", "update", "delete" (open)
	FriendlyName   string
	Extra          map[string]any
}

// LevelChange is CAEP assurance-level-change and risk-level-change.
type LevelChange struct {
	CAEPCommon
	Namespace       string // assurance-level-change
	CurrentLevel    string
	PreviousLevel   string
	ChangeDirection string // assurance-level-change
	RiskReason      string // risk-level-change
	Principal       string // risk-level-change
	Extra           map[string]any
}

// DeviceComplianceChange is CAEP device-compliance-change.
type DeviceComplianceChange struct {
	CAEPCommon
	PreviousStatus string
	CurrentStatus  string
	Extra          map[string]any
}

// TokenClaimsChange is CAEP token-claims-change.
type TokenClaimsChange struct {
	CAEPCommon
	Claims map[string]any
	Extra  map[string]any
}

// ProfileChanged is KAKAO user-profile-changed. Field names are not
// documented, so every member except "subject" is returned as is.
type ProfileChanged struct {
	Fields map[string]any
}

// Verification is SSF verification.
type Verification struct {
	State string
	Extra map[string]any
}

// StreamUpdated is SSF stream-updated.
type StreamUpdated struct {
	Status string // "enabled", "paused", "disabled"
	Reason string
	Extra  map[string]any
}

// fieldReader reads members of an event object exactly by name and
// collects the members it did not consume.
type fieldReader struct {
	m    map[string]json.RawMessage
	used map[string]bool
	err  error
}

func (r *fieldReader) str(names ...string) string {
	for _, n := range names {
		raw, ok := r.m[n]
		if !ok {
			continue
		}
		r.used[n] = true
		if kindOf(raw) == kindNull {
			continue
		}
		s, ok := rawString(raw)
		if !ok {
			r.fail(n, "a string")
			return ""
		}
		return s
	}
	return ""
}

func (r *fieldReader) localized(name string) Localized {
	raw, ok := r.m[name]
	if !ok {
		return nil
	}
	r.used[name] = true
	switch kindOf(raw) {
	case kindNull:
		return nil
	case kindString:
		s, _ := rawString(raw)
		return Localized{"": s}
	case kindObject:
		var l map[string]string
		if err := json.Unmarshal(raw, &l); err != nil {
			r.fail(name, "a string or a map of language to string")
			return nil
		}
		return Localized(l)
	}
	r.fail(name, "a string or a map of language to string")
	return nil
}

func (r *fieldReader) scopes() []string {
	var out []string
	for _, n := range []string{"scopes", "scope"} {
		raw, ok := r.m[n]
		if !ok {
			continue
		}
		r.used[n] = true
		switch kindOf(raw) {
		case kindNull:
		case kindString:
			s, _ := rawString(raw)
			out = append(out, strings.Fields(s)...)
		case kindArray:
			arr, ok := rawStringArray(raw)
			if !ok {
				r.fail(n, "an array of strings")
				return nil
			}
			for _, s := range arr {
				out = append(out, strings.Fields(s)...)
			}
		default:
			r.fail(n, "a string or an array of strings")
			return nil
		}
	}
	return out
}

func (r *fieldReader) object(name string) map[string]any {
	raw, ok := r.m[name]
	if !ok {
		return nil
	}
	r.used[name] = true
	if kindOf(raw) == kindNull {
		return nil
	}
	if kindOf(raw) != kindObject {
		r.fail(name, "an object")
		return nil
	}
	out, err := decodeAny(raw)
	if err != nil {
		r.fail(name, "an object")
		return nil
	}
	m, _ := out.(map[string]any)
	return m
}

func (r *fieldReader) caep() CAEPCommon {
	var c CAEPCommon
	if raw, ok := r.m["event_timestamp"]; ok {
		r.used["event_timestamp"] = true
		if t, ok := lenientTimestamp(raw); ok {
			c.EventTimestamp = t
		} else if kindOf(raw) != kindNull {
			r.fail("event_timestamp", "a NumericDate")
		}
	}
	c.InitiatingEntity = r.str("initiating_entity")
	c.ReasonAdmin = r.localized("reason_admin")
	c.ReasonUser = r.localized("reason_user")
	return c
}

func (r *fieldReader) fail(name, want string) {
	if r.err == nil {
		r.err = fmt.Errorf("secevent: event member %q is not %s", name, want)
	}
}

// extra returns members not consumed, excluding the subject.
func (r *fieldReader) extra() map[string]any {
	var out map[string]any
	for k, raw := range r.m {
		if r.used[k] || k == "subject" {
			continue
		}
		v, err := decodeAny(raw)
		if err != nil {
			continue
		}
		if out == nil {
			out = make(map[string]any)
		}
		out[k] = v
	}
	return out
}

func decodeAny(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// Details decodes the event payload into a typed struct according to the
// event type:
//
//	user-unlinked                               *UserUnlinked
//	user-scope-consent, user-scope-withdraw     *ScopeChange
//	account-disabled                            *AccountDisabled
//	identifier-changed, identifier-recycled     *IdentifierChanged
//	credential-change, credential-compromise    *CredentialChange
//	assurance-level-change, risk-level-change   *LevelChange
//	device-compliance-change                    *DeviceComplianceChange
//	token-claims-change                         *TokenClaimsChange
//	user-profile-changed                        *ProfileChanged
//	verification                                *Verification
//	stream-updated                              *StreamUpdated
//	anything else, including unknown types      *Generic
//
// Numbers inside Extra/Fields are json.Number. An error means a known field
// had an unusable type; the raw Payload is still available.
func (e Event) Details() (any, error) {
	m, err := decodeObject(e.Payload)
	if err != nil {
		return nil, fmt.Errorf("secevent: event payload: %w", err)
	}
	r := &fieldReader{m: m, used: map[string]bool{}}
	var out any
	switch e.Type {
	case EventUserUnlinked:
		d := &UserUnlinked{Reason: r.str("reason", "referrer_type")}
		d.Extra = r.extra()
		out = d
	case EventUserScopeConsent, EventUserScopeWithdraw:
		d := &ScopeChange{Scopes: r.scopes()}
		d.Extra = r.extra()
		out = d
	case EventAccountDisabled:
		d := &AccountDisabled{Reason: r.str("reason")}
		d.Extra = r.extra()
		out = d
	case EventIdentifierChanged, EventIdentifierRecycled:
		d := &IdentifierChanged{NewValue: r.str("new-value", "new_value")}
		d.Extra = r.extra()
		out = d
	case EventCredentialChange, EventCredentialCompromise:
		d := &CredentialChange{CAEPCommon: r.caep()}
		d.CredentialType = r.str("credential_type")
		d.ChangeType = r.str("change_type")
		d.FriendlyName = r.str("friendly_name")
		d.Extra = r.extra()
		out = d
	case EventAssuranceLevelChange, EventRiskLevelChange:
		d := &LevelChange{CAEPCommon: r.caep()}
		d.Namespace = r.str("namespace")
		d.CurrentLevel = r.str("current_level")
		d.PreviousLevel = r.str("previous_level")
		d.ChangeDirection = r.str("change_direction")
		d.RiskReason = r.str("risk_reason")
		d.Principal = r.str("principal")
		d.Extra = r.extra()
		out = d
	case EventDeviceComplianceChange:
		d := &DeviceComplianceChange{CAEPCommon: r.caep()}
		d.PreviousStatus = r.str("previous_status")
		d.CurrentStatus = r.str("current_status")
		d.Extra = r.extra()
		out = d
	case EventTokenClaimsChange:
		d := &TokenClaimsChange{CAEPCommon: r.caep()}
		d.Claims = r.object("claims")
		d.Extra = r.extra()
		out = d
	case EventUserProfileChanged:
		d := &ProfileChanged{Fields: r.extra()}
		if d.Fields == nil {
			d.Fields = map[string]any{}
		}
		out = d
	case EventVerification:
		d := &Verification{State: r.str("state")}
		d.Extra = r.extra()
		out = d
	case EventStreamUpdated:
		d := &StreamUpdated{Status: r.str("status"), Reason: r.str("reason")}
		d.Extra = r.extra()
		out = d
	default:
		// Unknown or field-less types never fail: if the CAEP common
		// fields are unusable they are left in Extra.
		d := &Generic{CAEPCommon: r.caep()}
		if r.err != nil {
			r.err, r.used = nil, map[string]bool{}
			d.CAEPCommon = CAEPCommon{}
		}
		d.Extra = r.extra()
		out = d
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}
