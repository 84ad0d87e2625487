package secevent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func verifyClaims(t *testing.T, c claims) *SET {
	t.Helper()
	v := newTestVerifier(t, nil)
	set, err := v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, c.json(t), rsaA)))
	require.NoError(t, err)
	return set
}

func TestVerifySubIDFormats(t *testing.T) {
	cases := []struct {
		name   string
		subID  map[string]any
		format string
		issuer string
		user   string
	}{
		{"iss_sub", map[string]any{"format": "iss_sub", "iss": "https://idp.example", "sub": "u1"}, "iss_sub", "https://idp.example", "u1"},
		{"email", map[string]any{"format": "email", "email": "User@EXAMPLE.com"}, "email", testIssuer, "User@example.com"},
		{"opaque", map[string]any{"format": "opaque", "id": "op-1"}, "opaque", testIssuer, "op-1"},
		{"account", map[string]any{"format": "account", "uri": "acct:u@example.com"}, "account", testIssuer, "acct:u@example.com"},
		{"phone_number", map[string]any{"format": "phone_number", "phone_number": "+821012345678"}, "phone_number", testIssuer, "+821012345678"},
		{"did", map[string]any{"format": "did", "url": "did:example:123"}, "did", testIssuer, "did:example:123"},
		{"uri", map[string]any{"format": "uri", "uri": "https://example.com/u/1"}, "uri", testIssuer, "https://example.com/u/1"},
		{"aliases prefers iss_sub of the SET issuer", map[string]any{"format": "aliases", "identifiers": []any{
			map[string]any{"format": "email", "email": "a@example.com"},
			map[string]any{"format": "iss_sub", "iss": "https://other.example", "sub": "x"},
			map[string]any{"format": "iss_sub", "iss": testIssuer, "sub": "701541"},
		}}, "iss_sub", testIssuer, "701541"},
		{"complex takes the user member", map[string]any{"format": "complex",
			"session": map[string]any{"format": "opaque", "id": "sess-1"},
			"user":    map[string]any{"format": "iss_sub", "iss": testIssuer, "sub": "701541"},
			"device":  map[string]any{"format": "opaque", "id": "dev-1"},
		}, "iss_sub", testIssuer, "701541"},
		{"complex without format", map[string]any{
			"user":   map[string]any{"format": "email", "email": "u@example.com"},
			"tenant": map[string]any{"format": "opaque", "id": "t1"},
		}, "email", testIssuer, "u@example.com"},
		{"unknown format accepted", map[string]any{"format": "x-custom", "foo": "bar"}, "x-custom", testIssuer, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := baseClaims().with("sub_id", tc.subID).with("events", map[string]any{EventSessionRevoked: map[string]any{}})
			set := verifyClaims(t, c)
			assert.Equal(t, tc.format, set.Subject.Format)
			assert.Equal(t, tc.issuer, set.Subject.Issuer)
			assert.Equal(t, tc.user, set.Subject.UserID)
			want, _ := json.Marshal(tc.subID)
			assert.JSONEq(t, string(want), string(set.Subject.Raw))
			require.Len(t, set.Events, 1)
			assert.Equal(t, set.Subject, set.Events[0].Subject, "event without its own subject inherits sub_id")
		})
	}
}

func TestVerifyEventTime(t *testing.T) {
	iat := testNow.Unix() - 3
	ev := func(body map[string]any) map[string]any { return map[string]any{EventCredentialChange: body} }
	cases := []struct {
		name string
		c    claims
		want time.Time
	}{
		{"toe wins", baseClaims().with("toe", 1744780000).with("events", ev(map[string]any{"event_timestamp": 1744770000})), time.Unix(1744780000, 0)},
		{"event_timestamp seconds", baseClaims().with("events", ev(map[string]any{"event_timestamp": 1744770000})), time.Unix(1744770000, 0)},
		{"event_timestamp milliseconds", baseClaims().with("events", ev(map[string]any{"event_timestamp": int64(1744770000123)})), time.UnixMilli(1744770000123)},
		{"event_timestamp fractional seconds", baseClaims().with("events", ev(map[string]any{"event_timestamp": 1744770000.5})), time.Unix(1744770000, 5e8)},
		{"event_timestamp unusable falls back to iat", baseClaims().with("events", ev(map[string]any{"event_timestamp": "soon"})), time.Unix(iat, 0)},
		{"iat fallback", baseClaims().with("events", ev(map[string]any{})), time.Unix(iat, 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := verifyClaims(t, tc.c)
			require.Len(t, set.Events, 1)
			assert.True(t, tc.want.Equal(set.Events[0].Time), "got %v want %v", set.Events[0].Time, tc.want)
		})
	}
}

func TestVerifyUnknownEventTypeAccepted(t *testing.T) {
	c := baseClaims().with("events", map[string]any{
		"https://example.com/event-type/brand-new": map[string]any{"whatever": []any{1, 2}},
		EventUserLinked: map[string]any{"subject": map[string]any{"subject_type": "iss-sub", "iss": testIssuer, "sub": "701541"}},
	}).with("unknown_claim", map[string]any{"x": 1})
	set := verifyClaims(t, c)
	require.Len(t, set.Events, 2)
	assert.Equal(t, "https://example.com/event-type/brand-new", set.Events[0].Type, "sorted by type")
	assert.Equal(t, CategoryUnknown, set.Events[0].Category)
	assert.Equal(t, "brand-new", set.Events[0].Name)
	assert.JSONEq(t, `{"whatever":[1,2]}`, string(set.Events[0].Payload))
	assert.Equal(t, "701541", set.Events[0].Subject.UserID, "inherits the SET subject taken from the other event")
	d, err := set.Events[0].Details()
	require.NoError(t, err)
	require.IsType(t, &Generic{}, d)
	assert.Contains(t, d.(*Generic).Extra, "whatever")
}

func TestVerifyEventsSortedAndCategorized(t *testing.T) {
	c := baseClaims().without("events").with("sub", "701541").with("events", map[string]any{
		EventStreamUpdated:      map[string]any{"status": "enabled"},
		EventAccountDisabled:    map[string]any{"reason": "hijacking"},
		EventUserProfileChanged: map[string]any{"nickname": "n"},
		EventSessionRevoked:     map[string]any{},
		EventUserUnlinked:       map[string]any{},
	})
	set := verifyClaims(t, c)
	var got []Category
	for i, e := range set.Events {
		if i > 0 {
			assert.Less(t, set.Events[i-1].Type, e.Type)
		}
		got = append(got, e.Category)
		assert.Equal(t, Subject{Format: "iss_sub", Issuer: testIssuer, UserID: "701541"}, withoutRaw(e.Subject), "top-level sub is the fallback subject")
	}
	assert.ElementsMatch(t, []Category{CategorySSF, CategoryRISC, CategoryKakao, CategoryCAEP, CategoryOAuth}, got)
}

func TestVerifyTypVariantsAndOptions(t *testing.T) {
	for _, typ := range []string{"secevent+jwt", "SECEVENT+JWT", "application/secevent+jwt", "Application/SecEvent+JWT"} {
		v := newTestVerifier(t, nil)
		_, err := v.Verify(context.Background(), []byte(signRaw(t, hdr("RS256", testKID, typ), baseClaims().json(t), rsaA)))
		assert.NoError(t, err, typ)
	}
	v := newTestVerifier(t, func(c *Config) { c.AllowMissingTyp = true })
	_, err := v.Verify(context.Background(), []byte(signRaw(t, hdr("RS256", testKID, ""), baseClaims().json(t), rsaA)))
	assert.NoError(t, err, "missing typ allowed by option")

	v = newTestVerifier(t, nil)
	set, err := v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, baseClaims().with("aud", []string{"x", "other-app"}).json(t), rsaA)))
	require.NoError(t, err, "aud array intersecting the configured list")
	assert.Equal(t, []string{"x", "other-app"}, set.Audience)

	set, err = v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, baseClaims().with("exp", testNow.Unix()+60).json(t), rsaA)+"\r\n"))
	require.NoError(t, err, "future exp and trailing newline accepted")
	assert.Equal(t, testNow.Unix()+60, set.Expires.Unix())

	v = newTestVerifier(t, func(c *Config) { c.MaxJTILength = 300 })
	_, err = v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, baseClaims().with("jti", strings.Repeat("j", 300)).json(t), rsaA)))
	require.NoError(t, err)
}

func TestVerifyOtherAlgorithmsWhenAllowed(t *testing.T) {
	testKeys(t)
	ks, err := NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		pubJWK(testKID, rsaA.Public(), ""),
		pubJWK("ec1", ecKey.Public(), "ES256"),
	}})
	require.NoError(t, err)
	v := newTestVerifier(t, func(c *Config) {
		c.Keys = ks
		c.Algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256}
	})
	set, err := v.Verify(context.Background(), []byte(signPS256(t, hdr("PS256", testKID, "secevent+jwt"), baseClaims().json(t), rsaA)))
	require.NoError(t, err)
	assert.Equal(t, "PS256", set.Algorithm)
	set, err = v.Verify(context.Background(), []byte(signES256(t, hdr("ES256", "ec1", "secevent+jwt"), baseClaims().json(t), ecKey)))
	require.NoError(t, err)
	assert.Equal(t, "ES256", set.Algorithm)
}

func TestNewVerifierValidatesConfig(t *testing.T) {
	ks := staticKS(t)
	ok := Config{Issuer: testIssuer, Audiences: []string{testAud}, Keys: ks}
	_, err := NewVerifier(ok)
	require.NoError(t, err)
	bad := map[string]func(c *Config){
		"no issuer":      func(c *Config) { c.Issuer = "" },
		"no audiences":   func(c *Config) { c.Audiences = nil },
		"empty audience": func(c *Config) { c.Audiences = []string{""} },
		"no keys":        func(c *Config) { c.Keys = nil },
		"HS256":          func(c *Config) { c.Algorithms = []jose.SignatureAlgorithm{jose.HS256} },
		"none":           func(c *Config) { c.Algorithms = []jose.SignatureAlgorithm{"none"} },
		"negative age":   func(c *Config) { c.MaxAge = -time.Second },
	}
	for name, mod := range bad {
		c := ok
		mod(&c)
		_, err := NewVerifier(c)
		assert.Error(t, err, name)
	}
}

func TestIsTemporary(t *testing.T) {
	v := newTestVerifier(t, func(c *Config) {
		c.Keys = keyFunc(func(context.Context, string, string) (*jose.JSONWebKey, error) {
			return nil, ErrKeysUnavailable
		})
	})
	_, err := v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, kakaoExample, rsaA)))
	assert.True(t, IsTemporary(err))

	v = newTestVerifier(t, nil)
	_, err = v.Verify(context.Background(), []byte(signRaw(t, hdr("RS256", "nope", "secevent+jwt"), kakaoExample, rsaA)))
	assert.False(t, IsTemporary(err), "unknown kid is the token's fault")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = v.Verify(ctx, []byte(signRaw(t, kakaoHeader, kakaoExample, rsaA)))
	assert.True(t, IsTemporary(err))
}
