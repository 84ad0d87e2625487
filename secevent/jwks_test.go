package secevent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jwksServer serves a mutable JWKS document and counts hits.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   []byte
	status int
	delay  time.Duration
	hits   atomic.Int64
}

func newJWKSServer(t *testing.T, keys ...jose.JSONWebKey) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK}
	s.setKeys(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status, delay := s.body, s.status, s.delay
		s.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(t *testing.T, keys ...jose.JSONWebKey) {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	require.NoError(t, err)
	s.setBody(b, http.StatusOK)
}

func (s *jwksServer) setDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

func (s *jwksServer) setBody(b []byte, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = b, status
}

// fakeClock is a settable clock for rate-limit and key-age tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestVerifyWithJWKSURL(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL})
	v := newTestVerifier(t, func(c *Config) { c.Keys = ks })

	tok := signRaw(t, kakaoHeader, kakaoExample, rsaA)
	for i := 0; i < 3; i++ {
		set, err := v.Verify(context.Background(), []byte(tok))
		require.NoError(t, err)
		assert.Equal(t, "701541", set.Subject.UserID)
	}
	assert.EqualValues(t, 1, srv.hits.Load(), "keys are cached")
}

func TestJWKSKeyRotation(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, pubJWK("old", rsaA.Public(), "RS256"))
	clk := &fakeClock{t: testNow}
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL, MinRefreshInterval: 30 * time.Second, Now: clk.Now})
	v := newTestVerifier(t, func(c *Config) { c.Keys = ks })
	ctx := context.Background()

	_, err := v.Verify(ctx, []byte(signRaw(t, hdr("RS256", "old", "secevent+jwt"), kakaoExample, rsaA)))
	require.NoError(t, err)

	// The issuer rotates: "new" appears, "old" is withdrawn.
	srv.setKeys(t, pubJWK("new", rsaB.Public(), "RS256"))
	newTok := []byte(signRaw(t, hdr("RS256", "new", "secevent+jwt"), kakaoExample, rsaB))

	// Within the refresh interval the unknown kid does not trigger a fetch.
	_, err = v.Verify(ctx, newTok)
	code, _ := CodeOf(err)
	assert.Equal(t, CodeInvalidKey, code)
	assert.EqualValues(t, 1, srv.hits.Load())

	clk.Add(31 * time.Second)
	set, err := v.Verify(ctx, newTok)
	require.NoError(t, err, "refetch finds the rotated key")
	assert.Equal(t, "new", set.KeyID)
	assert.EqualValues(t, 2, srv.hits.Load())

	// The withdrawn key no longer verifies (after the next permitted refetch).
	clk.Add(31 * time.Second)
	_, err = v.Verify(ctx, []byte(signRaw(t, hdr("RS256", "old", "secevent+jwt"), kakaoExample, rsaA)))
	code, _ = CodeOf(err)
	assert.Equal(t, CodeInvalidKey, code)
}

func TestJWKSUnknownKidBurstIsRateLimited(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	srv.setDelay(50 * time.Millisecond) // keep the first fetch in flight while the burst arrives
	clk := &fakeClock{t: testNow}
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL, MinRefreshInterval: time.Minute, Now: clk.Now})
	v := newTestVerifier(t, func(c *Config) { c.Keys = ks })

	var wg sync.WaitGroup
	var invalidKey atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tok := signRawCached(t, fmt.Sprintf("bogus-%d", i))
			_, err := v.Verify(context.Background(), tok)
			if c, _ := CodeOf(err); c == CodeInvalidKey {
				invalidKey.Add(1)
			}
		}(i)
	}
	wg.Wait()
	assert.EqualValues(t, 200, invalidKey.Load())
	assert.EqualValues(t, 1, srv.hits.Load(), "a burst of bogus kids costs one fetch")

	// A second burst later in the same interval costs nothing.
	for i := 0; i < 50; i++ {
		_, _ = v.Verify(context.Background(), signRawCached(t, fmt.Sprintf("again-%d", i)))
	}
	assert.EqualValues(t, 1, srv.hits.Load())

	// The next interval allows exactly one more.
	clk.Add(time.Minute)
	for i := 0; i < 50; i++ {
		_, _ = v.Verify(context.Background(), signRawCached(t, fmt.Sprintf("later-%d", i)))
	}
	assert.EqualValues(t, 2, srv.hits.Load())

	// The genuine key still verifies throughout.
	_, err := v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, kakaoExample, rsaA)))
	require.NoError(t, err)
}

// signRawCached returns a token with the given kid; the signature is
// irrelevant (the kid is unknown), so it reuses one RSA signature.
func signRawCached(t *testing.T, kid string) []byte {
	h := b64s([]byte(hdr("RS256", kid, "secevent+jwt")))
	return []byte(h + "." + b64s([]byte(kakaoExample)) + "." + b64s(make([]byte, 256)))
}

func TestJWKSOutageKeepsOldKeys(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	clk := &fakeClock{t: testNow}
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL, MinRefreshInterval: time.Second, MaxKeyAge: time.Hour, Now: clk.Now})
	v := newTestVerifier(t, func(c *Config) { c.Keys = ks })
	tok := []byte(signRaw(t, kakaoHeader, kakaoExample, rsaA))
	_, err := v.Verify(context.Background(), tok)
	require.NoError(t, err)

	for _, outage := range []struct {
		name   string
		body   []byte
		status int
	}{
		{"500", []byte("oops"), http.StatusInternalServerError},
		{"garbage", []byte("<html>"), http.StatusOK},
		{"empty key set", []byte(`{"keys":[]}`), http.StatusOK},
	} {
		srv.setBody(outage.body, outage.status)
		clk.Add(2 * time.Hour) // keys are stale: a refresh is attempted
		before := srv.hits.Load()
		_, err = v.Verify(context.Background(), tok)
		require.NoError(t, err, outage.name+": stale keys stay in use while the JWKS is broken")
		require.Eventually(t, func() bool { return srv.hits.Load() == before+1 }, time.Second, 5*time.Millisecond,
			outage.name+": the stale key set triggered one background refresh")
		// Wait for that refresh to finish: Refresh joins the fetch in flight
		// (or is rate limited), so the next outage starts a fetch of its own
		// instead of sharing this one.
		_ = ks.Refresh(context.Background())
		require.Equal(t, before+1, srv.hits.Load(), outage.name+": waiting for the refresh fetched nothing more")
	}

	// Unknown kid during the outage: receiver-side, temporary.
	clk.Add(time.Minute)
	_, err = v.Verify(context.Background(), []byte(signRaw(t, hdr("RS256", "rotated", "secevent+jwt"), kakaoExample, rsaA)))
	assert.True(t, IsTemporary(err), "kid unknown while the JWKS is failing: %v", err)

	// Recovery.
	srv.setKeys(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	clk.Add(time.Minute)
	_, err = v.Verify(context.Background(), []byte(signRaw(t, hdr("RS256", "rotated", "secevent+jwt"), kakaoExample, rsaA)))
	assert.False(t, IsTemporary(err))
	c, _ := CodeOf(err)
	assert.Equal(t, CodeInvalidKey, c)
}

func TestJWKSSlowServerTimesOut(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	srv.setDelay(5 * time.Second)
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL, Timeout: 100 * time.Millisecond})
	v := newTestVerifier(t, func(c *Config) { c.Keys = ks })
	start := time.Now()
	_, err := v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, kakaoExample, rsaA)))
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.True(t, IsTemporary(err))
	assert.Less(t, elapsed, time.Second, "the whole fetch is bounded by Timeout")

	// The caller's context also bounds the wait.
	ks2 := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL, Timeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = ks2.Key(ctx, testIssuer, testKID)
	require.Error(t, err)
	assert.Less(t, time.Since(start), time.Second)
}

func TestJWKSRefusesPrivateAndUnusableEntries(t *testing.T) {
	testKeys(t)
	priv := jose.JSONWebKey{Key: rsaB, KeyID: "private", Use: "sig", Algorithm: "RS256"}
	privJSON, err := json.Marshal(priv)
	require.NoError(t, err)
	pubJSON, err := json.Marshal(pubJWK(testKID, rsaA.Public(), "RS256"))
	require.NoError(t, err)
	encJSON, err := json.Marshal(jose.JSONWebKey{Key: rsaB.Public(), KeyID: "enc", Use: "enc"})
	require.NoError(t, err)
	body := `{"keys":[` + string(privJSON) + `,` + string(pubJSON) + `,` + string(encJSON) +
		`,{"kty":"oct","kid":"hmac","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},{"kty":"weird","kid":"w"},"notakey"]}`
	srv := newJWKSServer(t)
	srv.setBody([]byte(body), http.StatusOK)
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL})
	v := newTestVerifier(t, func(c *Config) { c.Keys = ks })

	_, err = v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, kakaoExample, rsaA)))
	require.NoError(t, err, "the good entry is usable despite bad neighbours")

	for _, kid := range []string{"private", "enc", "hmac", "w"} {
		_, err := v.Verify(context.Background(), []byte(signRaw(t, hdr("RS256", kid, "secevent+jwt"), kakaoExample, rsaB)))
		c, _ := CodeOf(err)
		assert.Equal(t, CodeInvalidKey, c, kid)
	}
	_, err = v.Verify(context.Background(), []byte(signHS256(hdr("HS256", "hmac", "secevent+jwt"), kakaoExample, []byte("secretsecretsecretsecretsecret"))))
	c, _ := CodeOf(err)
	assert.Equal(t, CodeInvalidKey, c)
}

func TestJWKSOtherIssuerAndDuplicateKeys(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL})
	_, err := ks.Key(context.Background(), "https://other.example", testKID)
	assert.ErrorIs(t, err, ErrUnknownKey)
	assert.EqualValues(t, 0, srv.hits.Load(), "no fetch for a foreign issuer")

	// A JWKS with a duplicated member inside a key entry is refused as a whole entry.
	srv2 := newJWKSServer(t)
	n := b64s(rsaA.N.Bytes())
	srv2.setBody([]byte(`{"keys":[{"kty":"RSA","kid":"k1","e":"AQAB","n":"`+n+`","n":"`+b64s(rsaB.N.Bytes())+`"}]}`), http.StatusOK)
	ks2 := NewJWKS(testIssuer, JWKSOptions{URL: srv2.URL})
	_, err = ks2.Key(context.Background(), testIssuer, testKID)
	assert.ErrorIs(t, err, ErrKeysUnavailable)
}

func TestJWKSBodySizeCap(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t)
	pubJSON, _ := json.Marshal(pubJWK(testKID, rsaA.Public(), "RS256"))
	srv.setBody([]byte(`{"pad":"`+strings.Repeat("x", maxJWKSBytes)+`","keys":[`+string(pubJSON)+`]}`), http.StatusOK)
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL})
	_, err := ks.Key(context.Background(), testIssuer, testKID)
	assert.ErrorIs(t, err, ErrKeysUnavailable)
}

func TestJWKSNoRedirects(t *testing.T) {
	testKeys(t)
	good := newJWKSServer(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	redir := httptest.NewServer(http.RedirectHandler(good.URL, http.StatusFound))
	defer redir.Close()
	ks := NewJWKS(testIssuer, JWKSOptions{URL: redir.URL})
	_, err := ks.Key(context.Background(), testIssuer, testKID)
	assert.ErrorIs(t, err, ErrKeysUnavailable)
	assert.EqualValues(t, 0, good.hits.Load())
}

func TestStaticKeysValidation(t *testing.T) {
	testKeys(t)
	_, err := NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaA, KeyID: "p"}}})
	assert.Error(t, err, "private key refused")
	_, err = NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaA.Public()}}})
	assert.Error(t, err, "kid required")
	_, err = NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK("a", rsaA.Public(), ""), pubJWK("a", rsaB.Public(), "")}})
	assert.Error(t, err, "duplicate kid")
	_, err = NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaA.Public(), KeyID: "e", Use: "enc"}}})
	assert.Error(t, err, "use enc")
	_, err = NewStaticKeys("", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK("a", rsaA.Public(), "")}})
	assert.Error(t, err)
	ks, err := NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK("a", rsaA.Public(), "")}})
	require.NoError(t, err)
	_, err = ks.Key(context.Background(), "https://other.example", "a")
	assert.ErrorIs(t, err, ErrUnknownKey)
	_, err = ks.Key(context.Background(), testIssuer, "b")
	assert.ErrorIs(t, err, ErrUnknownKey)
}

func TestJWKSStartupFailureRetriesSooner(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t)
	srv.setBody([]byte("down"), http.StatusServiceUnavailable)
	clk := &fakeClock{t: testNow}
	ks := NewJWKS(testIssuer, JWKSOptions{URL: srv.URL, MinRefreshInterval: time.Hour, Now: clk.Now})
	_, err := ks.Key(context.Background(), testIssuer, testKID)
	assert.ErrorIs(t, err, ErrKeysUnavailable)
	_, err = ks.Key(context.Background(), testIssuer, testKID)
	assert.ErrorIs(t, err, ErrKeysUnavailable)
	assert.EqualValues(t, 1, srv.hits.Load(), "still rate limited")

	srv.setKeys(t, pubJWK(testKID, rsaA.Public(), "RS256"))
	clk.Add(time.Second)
	k, err := ks.Key(context.Background(), testIssuer, testKID)
	require.NoError(t, err, "with no keys cached, retries come after a second, not MinRefreshInterval")
	assert.Equal(t, testKID, k.KeyID)
	assert.EqualValues(t, 2, srv.hits.Load())
	require.NoError(t, ks.Refresh(context.Background()), "rate-limited Refresh is not an error")
}

func TestDiscoveryRefreshWarmsUp(t *testing.T) {
	tr := newTransmitter(t, "")
	iss := tr.issuer("")
	tr.setDoc("/.well-known/ssf-configuration", `{"issuer":"`+iss+`","jwks_uri":"`+tr.URL+`/jwks.json"}`)
	d := NewDiscovery(DiscoveryOptions{Issuer: iss})
	require.NoError(t, d.Refresh(context.Background()))
	assert.EqualValues(t, 1, tr.jwksHits.Load())
	_, err := d.Key(context.Background(), iss, testKID)
	require.NoError(t, err)
	assert.EqualValues(t, 1, tr.jwksHits.Load())
}
