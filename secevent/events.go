package secevent

import (
	"encoding/json"
	"strings"
	"time"
)

// Category groups event types by the specification family that defines them.
type Category string

// Event categories.
const (
	CategoryOAuth   Category = "oauth" // Kakao's OAUTH events (no user consent needed)
	CategoryRISC    Category = "risc"  // OpenID RISC 1.0
	CategoryCAEP    Category = "caep"  // OpenID CAEP 1.0
	CategoryKakao   Category = "kakao" // Kakao platform events (profile change)
	CategorySSF     Category = "ssf"   // SSF stream control events
	CategoryUnknown Category = "unknown"
)

// Event type URI prefixes.
const (
	PrefixOAuth = "https://schemas.openid.net/secevent/oauth/event-type/"
	PrefixRISC  = "https://schemas.openid.net/secevent/risc/event-type/"
	PrefixCAEP  = "https://schemas.openid.net/secevent/caep/event-type/"
	PrefixSSF   = "https://schemas.openid.net/secevent/ssf/event-type/"
	PrefixKakao = "https://schemas.kakao.com/platevent/kakao/event-type/"
)

// Event types from Kakao's Account Status Change webhook and the OpenID
// RISC/CAEP/SSF specifications. Only user-linked is confirmed verbatim by
// Kakao; the set is open and unknown types are accepted as CategoryUnknown.
const (
	// OAUTH
	EventUserLinked        = PrefixOAuth + "user-linked"
	EventUserUnlinked      = PrefixOAuth + "user-unlinked"
	EventUserScopeConsent  = PrefixOAuth + "user-scope-consent"
	EventUserScopeWithdraw = PrefixOAuth + "user-scope-withdraw"
	EventTokensRevoked     = PrefixOAuth + "tokens-revoked"
	EventTokenIssued       = PrefixOAuth + "token-issued"
	EventTokenRevoked      = PrefixOAuth + "token-revoked"

	// RISC
	EventAccountDisabled                 = PrefixRISC + "account-disabled"
	EventAccountEnabled                  = PrefixRISC + "account-enabled"
	EventAccountPurged                   = PrefixRISC + "account-purged"
	EventAccountCredentialChangeRequired = PrefixRISC + "account-credential-change-required"
	EventCredentialCompromise            = PrefixRISC + "credential-compromise"
	EventIdentifierChanged               = PrefixRISC + "identifier-changed"
	EventIdentifierRecycled              = PrefixRISC + "identifier-recycled"
	EventSessionsRevoked                 = PrefixRISC + "sessions-revoked" // deprecated alias of CAEP session-revoked
	EventOptIn                           = PrefixRISC + "opt-in"
	EventOptOutInitiated                 = PrefixRISC + "opt-out-initiated"
	EventOptOutCancelled                 = PrefixRISC + "opt-out-cancelled"
	EventOptOutEffective                 = PrefixRISC + "opt-out-effective"
	EventRecoveryActivated               = PrefixRISC + "recovery-activated"
	EventRecoveryInformationChanged      = PrefixRISC + "recovery-information-changed"

	// CAEP
	EventCredentialChange       = PrefixCAEP + "credential-change"
	EventAssuranceLevelChange   = PrefixCAEP + "assurance-level-change"
	EventSessionRevoked         = PrefixCAEP + "session-revoked"
	EventTokenClaimsChange      = PrefixCAEP + "token-claims-change"
	EventDeviceComplianceChange = PrefixCAEP + "device-compliance-change"
	EventSessionEstablished     = PrefixCAEP + "session-established"
	EventSessionPresented       = PrefixCAEP + "session-presented"
	EventRiskLevelChange        = PrefixCAEP + "risk-level-change"

	// KAKAO
	EventUserProfileChanged = PrefixKakao + "user-profile-changed"

	// SSF
	EventVerification  = PrefixSSF + "verification"
	EventStreamUpdated = PrefixSSF + "stream-updated"
)

// KnownEventTypes lists every event type constant above.
var KnownEventTypes = []string{
	EventUserLinked, EventUserUnlinked, EventUserScopeConsent, EventUserScopeWithdraw,
	EventTokensRevoked, EventTokenIssued, EventTokenRevoked,
	EventAccountDisabled, EventAccountEnabled, EventAccountPurged,
	EventAccountCredentialChangeRequired, EventCredentialCompromise,
	EventIdentifierChanged, EventIdentifierRecycled, EventSessionsRevoked,
	EventOptIn, EventOptOutInitiated, EventOptOutCancelled, EventOptOutEffective,
	EventRecoveryActivated, EventRecoveryInformationChanged,
	EventCredentialChange, EventAssuranceLevelChange, EventSessionRevoked,
	EventTokenClaimsChange, EventDeviceComplianceChange, EventSessionEstablished,
	EventSessionPresented, EventRiskLevelChange,
	EventUserProfileChanged,
	EventVerification, EventStreamUpdated,
}

// Event is one member of the SET "events" claim.
type Event struct {
	Type     string          // full event type URI
	Name     string          // last path segment, e.g. "user-linked", "account-disabled"
	Category Category        // from the URI prefix; CategoryUnknown otherwise
	Subject  Subject         // the event's subject (in-event "subject", else the SET-level subject)
	Time     time.Time       // toe, else event_timestamp (seconds or milliseconds), else iat
	Payload  json.RawMessage // the event object exactly as received
}

// CategoryOf classifies an event type URI.
func CategoryOf(eventType string) Category {
	switch {
	case strings.HasPrefix(eventType, PrefixOAuth):
		return CategoryOAuth
	case strings.HasPrefix(eventType, PrefixRISC):
		return CategoryRISC
	case strings.HasPrefix(eventType, PrefixCAEP):
		return CategoryCAEP
	case strings.HasPrefix(eventType, PrefixSSF):
		return CategorySSF
	case strings.HasPrefix(eventType, PrefixKakao):
		return CategoryKakao
	}
	return CategoryUnknown
}

// EventName returns the last path (or URN) segment of an event type URI,
// e.g. "user-linked". A trailing slash is ignored.
func EventName(eventType string) string {
	t := strings.TrimRight(eventType, "/")
	if i := strings.LastIndexAny(t, "/:"); i >= 0 {
		return t[i+1:]
	}
	return t
}
