package ingress_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/simulator"
)

// A validly signed SET whose event payload holds a NUL in a nickname (a
// nickname can) is stored and answered 202, not 503 on every delivery.
func TestAccountStatusNULInPayloadIsStored(t *testing.T) {
	e := newASEnv(t, nil)
	jti := simulator.NewID()
	c, err := simulator.SET{Issuer: asIssuer, Audience: asAudience, UserID: "701541", EventType: "user-profile-changed",
		JTI: jti, Fields: map[string]any{"nickname": "a\x00b"}}.Claims()
	require.NoError(t, err)
	tok, err := asKey.Sign(c)
	require.NoError(t, err)
	r := e.post(tok)
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	assert.Equal(t, 1, e.rows())
	en, err := inbox.NewPostgres(e.db).Get(t.Context(), ingress.SETKey(jti))
	require.NoError(t, err)
	assert.Equal(t, tok, string(en.Raw), "the raw token is kept byte-exact")
	require.Len(t, en.Envelope.Events, 1)
	var p map[string]any
	require.NoError(t, json.Unmarshal(en.Envelope.Events[0].Payload, &p))
	assert.Equal(t, "a\uFFFDb", p["nickname"], "the NUL is stored as U+FFFD")
}

const asRISC = "https://schemas.openid.net/secevent/risc/event-type/"

// asRawClaims is a Kakao-shaped claims set written as text, so that a test
// can sign escapes and numbers no JSON encoder would produce. jti, sub and
// the event's members are inserted as raw JSON.
func asRawClaims(jti, sub, eventType, eventMembers, extraClaims string) string {
	return fmt.Sprintf(`{"iss":%q,"aud":%q,"iat":%d,"jti":%s,"sub":%s,%s"events":{%s:{"subject":{"subject_type":"iss-sub","iss":%q,"sub":%s}%s}}}`,
		asIssuer, asAudience, time.Now().Unix(), jti, sub, extraClaims, eventType, asIssuer, sub, eventMembers)
}

// Odd but valid JSON in a validly signed SET is stored (normalised in the
// envelope where jsonb cannot hold it) and answered 202; the raw token is
// kept byte-exact. What the verifier refuses (nesting beyond its limit) is a
// 400 and stores nothing.
func TestAccountStatusOddJSON(t *testing.T) {
	e := newASEnv(t, nil)
	disabled := `"` + asRISC + `account-disabled"`
	changed := `"` + asRISC + `account-credential-change-required"`
	cases := []struct {
		name                          string
		jti, sub, typ, members, extra string
		status                        int
		check                         func(t *testing.T, env event.Envelope)
	}{
		{name: "NUL and lone surrogates in event members", typ: disabled,
			members: `,"reason":"hijacking","nickname":"\u0000\ud800x\udfff","n\u0000":"\ud83d\ude00"`,
			check: func(t *testing.T, env event.Envelope) {
				p := asPayload(t, env)
				assert.Equal(t, "\uFFFD\uFFFDx\uFFFD", p["nickname"])
				assert.Equal(t, "😀", p["n\uFFFD"])
			}},
		{name: "NUL in the jti", jti: `"jti-\u0000-odd"`, typ: disabled},
		{name: "NUL in the subject", sub: `"7015\u0000"`, typ: disabled, check: func(t *testing.T, env event.Envelope) {
			assert.Equal(t, "7015\uFFFD", env.Subject.UserID)
		}},
		{name: "NUL in the event type", typ: `"` + asRISC + `account-disabled\u0000"`},
		{name: "NUL in txm", typ: disabled, extra: `"txm":"t\u0000",`, check: func(t *testing.T, env event.Envelope) {
			assert.Equal(t, "t\uFFFD", env.TxnID)
		}},
		{name: "huge numbers", typ: changed, members: `,"big":1e999999,"tiny":-1e-99999,"fine":1e300,"long":` + strings.Repeat("9", 4000),
			check: func(t *testing.T, env event.Envelope) {
				p := asPayload(t, env)
				assert.Equal(t, "1e999999", p["big"])
				assert.Equal(t, "-1e-99999", p["tiny"])
				assert.IsType(t, json.Number(""), p["fine"])
				assert.Equal(t, json.Number(strings.Repeat("9", 4000)), p["long"], "a number numeric holds stays a number")
			}},
		{name: "nesting at the verifier's limit", typ: changed, members: `,"deep":` + strings.Repeat("[", 29) + `"\u0000"` + strings.Repeat("]", 29)},
		{name: "unknown members and claims", typ: changed, members: `,"x-unknown":{"a":[true,null,{"b":"c"}]}`, extra: `"x-claim":[1,2],`},
		{name: "escaped member names", typ: disabled, members: `,"\u0072eason":"hijacking"`},
		{name: "nesting beyond the verifier's limit", typ: changed, members: `,"deep":` + strings.Repeat("[", 40) + strings.Repeat("]", 40),
			status: http.StatusBadRequest},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			jti := c.jti
			if jti == "" {
				jti = fmt.Sprintf(`"odd-%d-%s"`, i, simulator.NewID())
			}
			sub := c.sub
			if sub == "" {
				sub = `"701541"`
			}
			status := c.status
			if status == 0 {
				status = http.StatusAccepted
			}
			claims := asRawClaims(jti, sub, c.typ, c.members, c.extra)
			require.True(t, json.Valid([]byte(claims)), claims)
			tok := asSignRS256(t, asKakaoHeader(), claims, asKey.Private)
			before := e.rows()
			r := e.post(tok)
			require.Equal(t, status, r.status, "body: %s", r.body)
			if status != http.StatusAccepted {
				assert.Equal(t, before, e.rows(), "a refused token was stored")
				return
			}
			require.Equal(t, before+1, e.rows())
			var decoded string
			require.NoError(t, json.Unmarshal([]byte(jti), &decoded))
			en, err := inbox.NewPostgres(e.db).Get(t.Context(), ingress.SETKey(decoded))
			require.NoError(t, err, "stored under SETKey(jti)")
			assert.Equal(t, tok, string(en.Raw), "the raw token is kept byte-exact")
			if c.check != nil {
				c.check(t, en.Envelope)
			}
			// The same token again is a duplicate of the stored one.
			r = e.post(tok)
			require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
			assert.Equal(t, before+1, e.rows())
		})
	}
}

func asPayload(t *testing.T, env event.Envelope) map[string]any {
	t.Helper()
	require.Len(t, env.Events, 1)
	dec := json.NewDecoder(bytes.NewReader(env.Events[0].Payload))
	dec.UseNumber()
	var p map[string]any
	require.NoError(t, dec.Decode(&p))
	return p
}
