package secevent

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func details(t *testing.T, typ, payload string) any {
	t.Helper()
	d, err := Event{Type: typ, Payload: json.RawMessage(payload)}.Details()
	require.NoError(t, err, payload)
	return d
}

func TestDetails(t *testing.T) {
	d := details(t, EventUserUnlinked, `{"subject":{},"reason":"UNLINK_FROM_SERVICE","extra":1}`).(*UserUnlinked)
	assert.Equal(t, "UNLINK_FROM_SERVICE", d.Reason)
	assert.Equal(t, json.Number("1"), d.Extra["extra"])
	assert.NotContains(t, d.Extra, "subject")

	assert.Equal(t, []string{"profile_nickname", "account_email"},
		details(t, EventUserScopeWithdraw, `{"scopes":["profile_nickname","account_email"]}`).(*ScopeWithdraw).Scopes)
	assert.Equal(t, []string{"profile_nickname", "account_email"},
		details(t, EventUserScopeWithdraw, `{"scope":"profile_nickname  account_email"}`).(*ScopeWithdraw).Scopes)
	assert.Equal(t, []string{"talk_message"},
		details(t, EventUserScopeConsent, `{"scope":"talk_message"}`).(*ScopeConsent).Scopes)
	assert.Empty(t, details(t, EventUserScopeConsent, `{}`).(*ScopeConsent).Scopes)

	assert.Equal(t, "hijacking", details(t, EventAccountDisabled, `{"reason":"hijacking"}`).(*AccountDisabled).Reason)
	assert.Equal(t, "new@example.com", details(t, EventIdentifierChanged, `{"new-value":"new@example.com"}`).(*IdentifierChanged).NewValue)

	cc := details(t, EventCredentialChange, `{"credential_type":"password","change_type":"update","event_timestamp":1744770000,
		"initiating_entity":"user","reason_admin":{"en":"Password changed","ko":"비밀번호 변경"},"reason_user":"You changed it"}`).(*CredentialChange)
	assert.Equal(t, "password", cc.CredentialType)
	assert.Equal(t, "update", cc.ChangeType)
	assert.Equal(t, time.Unix(1744770000, 0).UTC(), cc.EventTimestamp)
	assert.Equal(t, "user", cc.InitiatingEntity)
	assert.Equal(t, "Password changed", cc.ReasonAdmin.String())
	assert.Equal(t, "비밀번호 변경", cc.ReasonAdmin["ko"])
	assert.Equal(t, "You changed it", cc.ReasonUser.String())
	assert.Empty(t, cc.Extra)

	lc := details(t, EventAssuranceLevelChange, `{"namespace":"NIST-AAL","current_level":"nist-aal2","previous_level":"nist-aal1","change_direction":"increase"}`).(*LevelChange)
	assert.Equal(t, "nist-aal2", lc.CurrentLevel)
	assert.Equal(t, "increase", lc.ChangeDirection)

	dc := details(t, EventDeviceComplianceChange, `{"previous_status":"compliant","current_status":"not-compliant"}`).(*DeviceComplianceChange)
	assert.Equal(t, "not-compliant", dc.CurrentStatus)

	tc := details(t, EventTokenClaimsChange, `{"claims":{"role":"admin"}}`).(*TokenClaimsChange)
	assert.Equal(t, "admin", tc.Claims["role"])

	pc := details(t, EventUserProfileChanged, `{"subject":{"sub":"1"},"nickname":"kim","profile_image_url":"https://x"}`).(*ProfileChanged)
	assert.Equal(t, map[string]any{"nickname": "kim", "profile_image_url": "https://x"}, pc.Fields)

	assert.Equal(t, "abc", details(t, EventVerification, `{"state":"abc"}`).(*Verification).State)
	su := details(t, EventStreamUpdated, `{"status":"paused","reason":"maintenance"}`).(*StreamUpdated)
	assert.Equal(t, "paused", su.Status)

	g := details(t, EventUserLinked, `{"subject":{}}`).(*Generic)
	assert.Empty(t, g.Extra)
	g = details(t, "https://unknown.example/x", `{"event_timestamp":{"bad":1},"reason_admin":7,"k":"v"}`).(*Generic)
	assert.Equal(t, "v", g.Extra["k"], "unknown types never fail; unusable common fields stay in Extra")
	assert.Contains(t, g.Extra, "reason_admin")
}

func TestDetailsRejectsMistypedKnownFields(t *testing.T) {
	for typ, payload := range map[string]string{
		EventUserUnlinked:      `{"reason":5}`,
		EventUserScopeWithdraw: `{"scopes":[1,2]}`,
		EventAccountDisabled:   `{"reason":{}}`,
		EventCredentialChange:  `{"reason_admin":[1]}`,
		EventTokenClaimsChange: `{"claims":"x"}`,
	} {
		_, err := Event{Type: typ, Payload: json.RawMessage(payload)}.Details()
		assert.Error(t, err, typ)
	}
}
