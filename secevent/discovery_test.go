package secevent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// transmitter is a fake SSF transmitter whose issuer is its own URL.
type transmitter struct {
	*httptest.Server
	mu       sync.Mutex
	docs     map[string]string // path -> body (404 when absent)
	jwks     []byte
	hits     map[string]int
	jwksHits atomic.Int64
}

func newTransmitter(t *testing.T, issuerPath string) *transmitter {
	t.Helper()
	testKeys(t)
	tr := &transmitter{docs: map[string]string{}, hits: map[string]int{}}
	tr.jwks, _ = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK(testKID, rsaA.Public(), "RS256")}})
	tr.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		tr.hits[r.URL.Path]++
		body, ok := tr.docs[r.URL.Path]
		tr.mu.Unlock()
		if r.URL.Path == "/jwks.json" {
			tr.jwksHits.Add(1)
			_, _ = w.Write(tr.jwks)
			return
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(tr.Close)
	return tr
}

func (tr *transmitter) issuer(path string) string { return tr.URL + path }

func (tr *transmitter) setDoc(path, body string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.docs[path] = body
}

func (tr *transmitter) hitsOf(path string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.hits[path]
}

func verifyWithIssuer(t *testing.T, ks KeySource, issuer string) (*SET, error) {
	v, err := NewVerifier(Config{Issuer: issuer, Audiences: []string{testAud}, Keys: ks, Now: func() time.Time { return testNow }})
	require.NoError(t, err)
	return v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, baseClaims().with("iss", issuer).without("events").with("events",
		map[string]any{EventUserLinked: map[string]any{}}).json(t), rsaA)))
}

func TestWellKnownURLs(t *testing.T) {
	u, err := WellKnownURLs("https://kauth.kakao.com")
	require.NoError(t, err)
	assert.Equal(t, []string{"https://kauth.kakao.com/.well-known/ssf-configuration", "https://kauth.kakao.com/.well-known/sse-configuration"}, u)
	u, err = WellKnownURLs("https://idp.example/tenants/t1/")
	require.NoError(t, err)
	assert.Equal(t, "https://idp.example/.well-known/ssf-configuration/tenants/t1", u[0])
	_, err = WellKnownURLs("not a url")
	assert.Error(t, err)
}

func TestDiscoverySSFConfiguration(t *testing.T) {
	tr := newTransmitter(t, "")
	iss := tr.issuer("")
	tr.setDoc("/.well-known/ssf-configuration", `{"issuer":"`+iss+`","jwks_uri":"`+tr.URL+`/jwks.json","delivery_methods_supported":["urn:ietf:rfc:8935"]}`)
	d := NewDiscovery(DiscoveryOptions{Issuer: iss})
	_, err := verifyWithIssuer(t, d, iss)
	require.NoError(t, err)
	cfg, err := d.Configuration(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"urn:ietf:rfc:8935"}, cfg.DeliveryMethodsSupported)
	assert.Equal(t, 0, tr.hitsOf("/.well-known/sse-configuration"), "legacy document not needed")
}

func TestDiscoveryFallsBackToSSEConfiguration(t *testing.T) {
	tr := newTransmitter(t, "")
	iss := tr.issuer("")
	// Kakao's documented shape: delivery_methods_supported is a string.
	tr.setDoc("/.well-known/sse-configuration", `{"issuer":"`+iss+`","jwks_uri":"`+tr.URL+`/jwks.json","delivery_methods_supported":"https://schemas.openid.net/secevent/risc/delivery-method/push"}`)
	d := NewDiscovery(DiscoveryOptions{Issuer: iss})
	_, err := verifyWithIssuer(t, d, iss)
	require.NoError(t, err)
	assert.Equal(t, 1, tr.hitsOf("/.well-known/ssf-configuration"))
	assert.Equal(t, 1, tr.hitsOf("/.well-known/sse-configuration"))
	cfg, err := d.Configuration(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"https://schemas.openid.net/secevent/risc/delivery-method/push"}, cfg.DeliveryMethodsSupported)
	assert.Equal(t, tr.URL+"/.well-known/sse-configuration", cfg.Source)

	// Cached: more verifications do not rediscover.
	_, err = verifyWithIssuer(t, d, iss)
	require.NoError(t, err)
	assert.Equal(t, 1, tr.hitsOf("/.well-known/sse-configuration"))
}

func TestDiscoveryIssuerPathInsertion(t *testing.T) {
	tr := newTransmitter(t, "")
	iss := tr.issuer("/tenant/a")
	tr.setDoc("/.well-known/ssf-configuration/tenant/a", `{"issuer":"`+iss+`","jwks_uri":"`+tr.URL+`/jwks.json"}`)
	_, err := verifyWithIssuer(t, NewDiscovery(DiscoveryOptions{Issuer: iss}), iss)
	require.NoError(t, err)
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	tr := newTransmitter(t, "")
	iss := tr.issuer("")
	tr.setDoc("/.well-known/ssf-configuration", `{"issuer":"https://evil.example","jwks_uri":"`+tr.URL+`/jwks.json"}`)
	tr.setDoc("/.well-known/sse-configuration", `{"issuer":"`+iss+`","jwks_uri":"`+tr.URL+`/jwks.json"}`)
	d := NewDiscovery(DiscoveryOptions{Issuer: iss, JWKS: JWKSOptions{URL: tr.URL + "/jwks.json"}})
	_, err := d.Key(context.Background(), iss, testKID)
	require.Error(t, err)
	assert.ErrorIs(t, err, errIssuerMismatch)
	assert.Equal(t, 0, tr.hitsOf("/.well-known/sse-configuration"), "a mismatching document stops discovery")
	assert.EqualValues(t, 0, tr.jwksHits.Load(), "no keys are fetched, not even from the pinned fallback")

	_, err = verifyWithIssuer(t, d, iss)
	c, _ := CodeOf(err)
	assert.Equal(t, CodeInvalidKey, c)

	// Trailing-slash difference is a mismatch too (exact comparison).
	tr2 := newTransmitter(t, "")
	iss2 := tr2.issuer("")
	tr2.setDoc("/.well-known/ssf-configuration", `{"issuer":"`+iss2+`/","jwks_uri":"`+tr2.URL+`/jwks.json"}`)
	_, err = NewDiscovery(DiscoveryOptions{Issuer: iss2}).Key(context.Background(), iss2, testKID)
	assert.ErrorIs(t, err, errIssuerMismatch)
}

func TestDiscoveryPinnedFallback(t *testing.T) {
	tr := newTransmitter(t, "")
	iss := tr.issuer("")
	d := NewDiscovery(DiscoveryOptions{Issuer: iss, JWKS: JWKSOptions{URL: tr.URL + "/jwks.json"}})
	_, err := verifyWithIssuer(t, d, iss)
	require.NoError(t, err, "neither document exists: the pinned JWKS URL is used")
	assert.Equal(t, 1, tr.hitsOf("/.well-known/ssf-configuration"))
	assert.Equal(t, 1, tr.hitsOf("/.well-known/sse-configuration"))

	// Without a pinned URL discovery failure is a temporary error.
	d2 := NewDiscovery(DiscoveryOptions{Issuer: iss})
	_, err = verifyWithIssuer(t, d2, iss)
	assert.True(t, IsTemporary(err))
}

func TestDiscoveryRejectsBadDocuments(t *testing.T) {
	iss := "https://idp.example"
	for name, body := range map[string]string{
		"no jwks_uri":         `{"issuer":"https://idp.example"}`,
		"http jwks_uri":       `{"issuer":"https://idp.example","jwks_uri":"http://idp.example/jwks"}`,
		"duplicate issuer":    `{"issuer":"https://evil.example","issuer":"https://idp.example","jwks_uri":"https://idp.example/jwks"}`,
		"bad delivery method": `{"issuer":"https://idp.example","jwks_uri":"https://idp.example/jwks","delivery_methods_supported":5}`,
	} {
		_, err := parseConfiguration([]byte(body), iss)
		assert.Error(t, err, name)
	}
	cfg, err := parseConfiguration([]byte(`{"issuer":"https://idp.example","jwks_uri":"https://idp.example/jwks","x":1}`), iss)
	require.NoError(t, err)
	assert.Equal(t, "https://idp.example/jwks", cfg.JWKSURI)
}

func TestDiscoveryForeignIssuer(t *testing.T) {
	d := NewDiscovery(DiscoveryOptions{Issuer: "https://idp.example"})
	_, err := d.Key(context.Background(), "https://other.example", testKID)
	assert.ErrorIs(t, err, ErrUnknownKey)
}
