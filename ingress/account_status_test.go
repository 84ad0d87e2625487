package ingress_test

// HTTP-level tests of the Account Status Change webhook: real requests to the
// ingress handler, a real verifier fetching keys from a JWKS endpoint over
// HTTP, and a real (freshly migrated) Postgres inbox.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
)

const (
	asIssuer      = "https://kauth.kakao.com"
	asAudience    = "8c67b0d4e2e76140aa11bb22cc33dd44"
	asOtherIssuer = "https://attacker.example"
	// asMarker is planted in every hostile token (claims, kid, ...): it must
	// never show up in a log line or a response.
	asMarker = "MARKER-q7Zx3vK9"
	// asAdminKey is a secret the server holds; it must never be logged.
	asAdminKey = "SECRET-adminkey-5b1e0c7d"
	// asMaxAge is the replay window configured for these tests.
	asMaxAge = time.Hour
)

// Keys are shared by the package's tests: RSA generation is slow.
var (
	asKeysOnce sync.Once
	asKey      *simulator.Key // the issuer's key
	asOther    *simulator.Key // another issuer's key, published under the same kid
)

func asKeys(t *testing.T) {
	t.Helper()
	asKeysOnce.Do(func() {
		var err error
		if asKey, err = simulator.NewKey(); err != nil {
			panic(err)
		}
		pk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		asOther = &simulator.Key{Private: pk, KID: asKey.KID}
	})
}

// asLogBuffer collects slog output from concurrent handlers.
type asLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *asLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *asLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// asEnv is one running ingress on its own database.
type asEnv struct {
	t        *testing.T
	db       *sqlx.DB
	dbURL    string
	verifier *secevent.Verifier
	srv      *ingress.Server
	ts       *httptest.Server
	logs     *asLogBuffer
	// jwksDown makes the issuer's JWKS endpoint answer 503.
	jwksDown atomic.Bool
	// attackerHits counts requests to a JWKS a hostile token points at (jku).
	attackerHits atomic.Int64
	attackerURL  string
}

// newASEnv starts the ingress. mod, if not nil, adjusts the server before it
// starts serving (e.g. to wrap the inbox).
func newASEnv(t *testing.T, mod func(e *asEnv)) *asEnv {
	t.Helper()
	asKeys(t)
	e := &asEnv{t: t, logs: &asLogBuffer{}}
	e.db, e.dbURL = testenv.Database(t)

	// The issuer's JWKS, fetched over HTTP as in production.
	ours := asKey.JWKSHandler()
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.jwksDown.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		ours.ServeHTTP(w, r)
	}))
	t.Cleanup(jwks.Close)
	// Another issuer the verifier also knows, publishing a different key
	// under the very same kid.
	other := httptest.NewServer(asOther.JWKSHandler())
	t.Cleanup(other.Close)
	// A key server only an attacker's token names (jku); it must never be asked.
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.attackerHits.Add(1)
		asOther.JWKSHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(attacker.Close)
	e.attackerURL = attacker.URL

	v, err := secevent.NewVerifier(secevent.Config{
		Issuer:    asIssuer,
		Audiences: []string{asAudience},
		Keys: secevent.MultiIssuerKeys{
			asIssuer:      secevent.NewJWKS(asIssuer, secevent.JWKSOptions{URL: jwks.URL}),
			asOtherIssuer: secevent.NewJWKS(asOtherIssuer, secevent.JWKSOptions{URL: other.URL}),
		},
		MaxAge: asMaxAge,
	})
	require.NoError(t, err)
	e.verifier = v
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.srv = &ingress.Server{
		Inbox: inbox.NewPostgres(e.db),
		SETs:  v,
		Log:   log,
		Ready: e.db.PingContext,
		Kakao: ingress.Kakao{AdminKeys: []string{asAdminKey}, AppID: "1234"},
	}
	if mod != nil {
		mod(e)
	}
	e.ts = httptest.NewServer(e.srv.Handler())
	t.Cleanup(e.ts.Close)
	return e
}

type asResponse struct {
	status int
	header http.Header
	body   []byte
}

func (e *asEnv) do(method, contentType, body string) asResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.ts.URL+ingress.PathAccountStatus, strings.NewReader(body))
	require.NoError(e.t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := e.ts.Client().Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return asResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *asEnv) post(token string) asResponse {
	e.t.Helper()
	return e.do(http.MethodPost, ingress.SETContentType, token)
}

func (e *asEnv) rows() int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.Get(&n, `SELECT count(*) FROM setflow_inbox`))
	return n
}

// asAssertError checks an RFC 8935 error answer.
func asAssertError(t *testing.T, r asResponse, status int, code string) {
	t.Helper()
	assert.Equal(t, status, r.status, "body: %s", r.body)
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))
	assert.NotEmpty(t, r.header.Get("Content-Language"))
	var body map[string]any
	require.NoError(t, json.Unmarshal(r.body, &body), "body: %s", r.body)
	assert.Len(t, body, 2, "body has exactly err and description: %s", r.body)
	assert.Equal(t, code, body["err"], "body: %s", r.body)
	desc, _ := body["description"].(string)
	assert.NotEmpty(t, strings.TrimSpace(desc))
	assert.NotContains(t, string(r.body), asMarker, "the answer echoes token contents")
}

// Token building.

func asB64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func asHeader(alg, kid, typ string) string {
	m := map[string]string{"alg": alg}
	if kid != "" {
		m["kid"] = kid
	}
	if typ != "" {
		m["typ"] = typ
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func asKakaoHeader() string { return asHeader("RS256", asKey.KID, "secevent+jwt") }

// asSignRS256 builds a compact JWS from raw header and payload JSON, so that
// tests can sign what no well-behaved library would produce.
func asSignRS256(t *testing.T, header, payload string, key *rsa.PrivateKey) string {
	t.Helper()
	input := asB64([]byte(header)) + "." + asB64([]byte(payload))
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	require.NoError(t, err)
	return input + "." + asB64(sig)
}

func asSignPS256(t *testing.T, header, payload string, key *rsa.PrivateKey) string {
	t.Helper()
	input := asB64([]byte(header)) + "." + asB64([]byte(payload))
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, sum[:], nil)
	require.NoError(t, err)
	return input + "." + asB64(sig)
}

func asSignHS256(header, payload string, secret []byte) string {
	input := asB64([]byte(header)) + "." + asB64([]byte(payload))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + asB64(mac.Sum(nil))
}

var asSeq atomic.Int64

// asHostileClaims are valid Kakao-shaped claims carrying the marker in the jti,
// the user id and an extra claim.
func asHostileClaims(t *testing.T) map[string]any {
	t.Helper()
	c, err := simulator.SET{
		Issuer: asIssuer, Audience: asAudience, UserID: "7015" + asMarker, EventType: "account-disabled",
		Fields: map[string]any{"reason": "hijacking"},
		JTI:    fmt.Sprintf("jti-%s-%d", asMarker, asSeq.Add(1)),
	}.Claims()
	require.NoError(t, err)
	c["note"] = asMarker
	return c
}

func asWith(c map[string]any, k string, v any) map[string]any {
	c[k] = v
	return c
}

func asWithout(c map[string]any, k string) map[string]any {
	delete(c, k)
	return c
}

// asGoodToken is a token that would be accepted, built with go-jose (the
// simulator), for cases that then break it on the wire.
func asGoodToken(t *testing.T) string {
	t.Helper()
	tok, err := asKey.Sign(asHostileClaims(t))
	require.NoError(t, err)
	return tok
}

func asSegments(tok string) []string { return strings.Split(tok, ".") }

// asValidToken is an acceptable SET with a fresh jti (no marker).
func asValidToken(t *testing.T) (token, jti string) {
	t.Helper()
	jti = simulator.NewID()
	c, err := simulator.SET{Issuer: asIssuer, Audience: asAudience, UserID: "701541",
		EventType: "user-linked", JTI: jti}.Claims()
	require.NoError(t, err)
	token, err = asKey.Sign(c)
	require.NoError(t, err)
	return token, jti
}

type asCase struct {
	name   string
	method string // default POST
	ctype  string // default application/secevent+jwt; "none" sends no Content-Type
	body   func(t *testing.T, e *asEnv) string
	status int // default 400
	code   secevent.Code
}

func asHostileCases() []asCase {
	signed := func(f func(c map[string]any) map[string]any) func(t *testing.T, e *asEnv) string {
		return func(t *testing.T, _ *asEnv) string {
			return asSignRS256(t, asKakaoHeader(), asJSON(t, f(asHostileClaims(t))), asKey.Private)
		}
	}
	claim := func(k string, v any) func(t *testing.T, e *asEnv) string {
		return signed(func(c map[string]any) map[string]any { return asWith(c, k, v) })
	}
	noClaim := func(k string) func(t *testing.T, e *asEnv) string {
		return signed(func(c map[string]any) map[string]any { return asWithout(c, k) })
	}
	header := func(h string) func(t *testing.T, e *asEnv) string {
		return func(t *testing.T, _ *asEnv) string {
			return asSignRS256(t, h, asJSON(t, asHostileClaims(t)), asKey.Private)
		}
	}
	good := func(t *testing.T, _ *asEnv) string { return asGoodToken(t) }
	modify := func(f func(t *testing.T, s []string) string) func(t *testing.T, e *asEnv) string {
		return func(t *testing.T, _ *asEnv) string { return f(t, asSegments(asGoodToken(t))) }
	}
	raw := func(s string) func(t *testing.T, e *asEnv) string {
		return func(*testing.T, *asEnv) string { return s }
	}
	kid := asKeysKID
	const (
		req  = secevent.CodeInvalidRequest
		key  = secevent.CodeInvalidKey
		auth = secevent.CodeAuthenticationFailed
	)

	return []asCase{
		// HTTP envelope.
		{name: "GET", method: http.MethodGet, body: raw(""), status: http.StatusMethodNotAllowed, code: req},
		{name: "PUT with a valid token", method: http.MethodPut, body: good, status: http.StatusMethodNotAllowed, code: req},
		{name: "PATCH with a valid token", method: http.MethodPatch, body: good, status: http.StatusMethodNotAllowed, code: req},
		{name: "DELETE", method: http.MethodDelete, body: raw(""), status: http.StatusMethodNotAllowed, code: req},
		{name: "no content type", ctype: "none", body: good, status: http.StatusUnsupportedMediaType, code: req},
		{name: "content type application/json", ctype: "application/json", body: good, status: http.StatusUnsupportedMediaType, code: req},
		{name: "content type application/jwt", ctype: "application/jwt", body: good, status: http.StatusUnsupportedMediaType, code: req},
		{name: "content type form", ctype: "application/x-www-form-urlencoded", body: func(t *testing.T, _ *asEnv) string {
			return "token=" + asGoodToken(t)
		}, status: http.StatusUnsupportedMediaType, code: req},
		{name: "malformed content type", ctype: "application/secevent+jwt; charset", body: good, status: http.StatusUnsupportedMediaType, code: req},
		{name: "oversize body (garbage)", body: raw(strings.Repeat("A", 64<<10+1)), status: http.StatusRequestEntityTooLarge, code: req},
		{name: "oversize body (validly signed)", body: claim("pad", strings.Repeat("x", 70<<10)), status: http.StatusRequestEntityTooLarge, code: req},
		{name: "empty body", body: raw(""), code: req},
		{name: "whitespace body", body: raw(" \r\n\t "), code: req},
		{name: "form-encoded token", body: func(t *testing.T, _ *asEnv) string { return "token=" + asGoodToken(t) }, code: req},

		// Serialization and structure.
		{name: "JWE-shaped five segments", body: raw(asB64([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM","kid":"`+asMarker+`"}`)) + ".AAAA.AAAA.AAAA.AAAA"), code: req},
		{name: "JSON serialization", body: modify(func(_ *testing.T, s []string) string {
			return fmt.Sprintf(`{"payload":%q,"protected":%q,"signature":%q}`, s[1], s[0], s[2])
		}), code: req},
		{name: "JSON serialization (general)", body: modify(func(_ *testing.T, s []string) string {
			return fmt.Sprintf(`{"payload":%q,"signatures":[{"protected":%q,"signature":%q}]}`, s[1], s[0], s[2])
		}), code: req},
		{name: "one segment", body: modify(func(_ *testing.T, s []string) string { return s[1] }), code: req},
		{name: "two segments (signature cut off)", body: modify(func(_ *testing.T, s []string) string { return s[0] + "." + s[1] }), code: req},
		{name: "four segments", body: modify(func(_ *testing.T, s []string) string { return strings.Join(s, ".") + ".AAAA" }), code: req},
		{name: "token cut in half", body: modify(func(_ *testing.T, s []string) string {
			tok := strings.Join(s, ".")
			return tok[:len(s[0])+1+len(s[1])/2]
		}), code: req},
		{name: "empty signature segment", body: modify(func(_ *testing.T, s []string) string { return s[0] + "." + s[1] + "." }), code: req},
		{name: "empty payload segment", body: modify(func(_ *testing.T, s []string) string { return s[0] + ".." + s[2] }), code: req},
		{name: "truncated header segment", body: modify(func(_ *testing.T, s []string) string {
			return s[0][:len(s[0])-4] + "." + s[1] + "." + s[2]
		}), code: req},
		{name: "truncated payload segment", body: modify(func(_ *testing.T, s []string) string {
			// Cut to a length no base64 encoding has (4n+1).
			n := len(s[1]) - 1
			for n%4 != 1 {
				n--
			}
			return s[0] + "." + s[1][:n] + "." + s[2]
		}), code: req},
		{name: "truncated signature", body: modify(func(t *testing.T, s []string) string {
			sig, err := base64.RawURLEncoding.DecodeString(s[2])
			require.NoError(t, err)
			return s[0] + "." + s[1] + "." + asB64(sig[:len(sig)-3])
		}), code: auth},
		{name: "bad base64 in header", body: modify(func(_ *testing.T, s []string) string { return "*" + s[0][1:] + "." + s[1] + "." + s[2] }), code: req},
		{name: "bad base64 in payload", body: modify(func(_ *testing.T, s []string) string { return s[0] + "." + s[1] + "%." + s[2] }), code: req},
		{name: "bad base64 in signature", body: modify(func(_ *testing.T, s []string) string {
			return s[0] + "." + s[1] + "." + s[2][:10] + "!" + s[2][11:]
		}), code: req},
		{name: "standard base64 instead of base64url", body: func(t *testing.T, _ *asEnv) string {
			// A payload whose std encoding has '+' or '/' ("~~~" is "fn5+").
			var input string
			for pad := ""; !strings.ContainsAny(input, "+/"); pad += " " {
				p := asJSON(t, asWith(asHostileClaims(t), "x", pad+"~~~~~~"))
				input = base64.RawStdEncoding.EncodeToString([]byte(asKakaoHeader())) + "." + base64.RawStdEncoding.EncodeToString([]byte(p))
			}
			sum := sha256.Sum256([]byte(input))
			sig, err := rsa.SignPKCS1v15(rand.Reader, asKey.Private, crypto.SHA256, sum[:])
			require.NoError(t, err)
			return input + "." + asB64(sig)
		}, code: req},
		{name: "padded base64", body: modify(func(_ *testing.T, s []string) string { return strings.Join(s, ".") + "==" }), code: req},
		{name: "whitespace inside token", body: modify(func(_ *testing.T, s []string) string { return s[0] + ". " + s[1] + "." + s[2] }), code: req},
		{name: "header not JSON", body: header("not json " + asMarker), code: req},
		{name: "payload not JSON", body: func(t *testing.T, _ *asEnv) string {
			return asSignRS256(t, asKakaoHeader(), "hello "+asMarker, asKey.Private)
		}, code: req},
		{name: "payload is an array", body: func(t *testing.T, _ *asEnv) string {
			return asSignRS256(t, asKakaoHeader(), `["`+asMarker+`"]`, asKey.Private)
		}, code: req},

		// Algorithm and key.
		{name: "alg none with a signature", body: func(t *testing.T, _ *asEnv) string {
			return asB64([]byte(asHeader("none", kid(), "secevent+jwt"))) + "." + asB64([]byte(asJSON(t, asHostileClaims(t)))) + ".AAAA"
		}, code: auth},
		{name: "alg none without a signature", body: func(t *testing.T, _ *asEnv) string {
			return asB64([]byte(asHeader("none", kid(), "secevent+jwt"))) + "." + asB64([]byte(asJSON(t, asHostileClaims(t)))) + "."
		}, code: req},
		{name: "alg NONE upper case", body: func(t *testing.T, _ *asEnv) string {
			return asB64([]byte(asHeader("NONE", kid(), "secevent+jwt"))) + "." + asB64([]byte(asJSON(t, asHostileClaims(t)))) + ".AAAA"
		}, code: auth},
		{name: "HS256 keyed with the RSA public key (PEM)", body: func(t *testing.T, _ *asEnv) string {
			der, err := x509.MarshalPKIXPublicKey(&asKey.Private.PublicKey)
			require.NoError(t, err)
			pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			return asSignHS256(asHeader("HS256", kid(), "secevent+jwt"), asJSON(t, asHostileClaims(t)), pemKey)
		}, code: key},
		{name: "HS256 keyed with the published JWKS", body: func(t *testing.T, _ *asEnv) string {
			j, err := json.Marshal(asKey.JWKS())
			require.NoError(t, err)
			return asSignHS256(asHeader("HS256", kid(), "secevent+jwt"), asJSON(t, asHostileClaims(t)), j)
		}, code: key},
		{name: "PS256 when only RS256 is allowed", body: func(t *testing.T, _ *asEnv) string {
			return asSignPS256(t, asHeader("PS256", kid(), "secevent+jwt"), asJSON(t, asHostileClaims(t)), asKey.Private)
		}, code: key},
		{name: "RS512 signed with go-jose", body: func(t *testing.T, _ *asEnv) string {
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS512, Key: asKey.Private},
				(&jose.SignerOptions{}).WithType("secevent+jwt").WithHeader("kid", asKey.KID))
			require.NoError(t, err)
			jws, err := signer.Sign([]byte(asJSON(t, asHostileClaims(t))))
			require.NoError(t, err)
			tok, err := jws.CompactSerialize()
			require.NoError(t, err)
			return tok
		}, code: key},
		{name: "missing alg", body: header(`{"kid":"` + asKeysKID() + `","typ":"secevent+jwt"}`), code: req},
		{name: "unknown kid", body: header(asHeader("RS256", "kid-"+asMarker, "secevent+jwt")), code: key},
		{name: "missing kid", body: header(asHeader("RS256", "", "secevent+jwt")), code: req},
		{name: "empty kid", body: header(`{"alg":"RS256","kid":"","typ":"secevent+jwt"}`), code: req},
		{name: "kid not a string", body: header(`{"alg":"RS256","kid":7,"typ":"secevent+jwt"}`), code: req},
		{name: "key from another issuer with the same kid (iss = other)", body: func(t *testing.T, _ *asEnv) string {
			return asSignRS256(t, asKakaoHeader(), asJSON(t, asWith(asHostileClaims(t), "iss", asOtherIssuer)), asOther.Private)
		}, code: auth},
		{name: "key from another issuer with the same kid (iss = ours, go-jose)", body: func(t *testing.T, _ *asEnv) string {
			tok, err := asOther.Sign(asHostileClaims(t))
			require.NoError(t, err)
			return tok
		}, code: auth},
		{name: "jku header naming the attacker's key set", body: func(t *testing.T, e *asEnv) string {
			h := fmt.Sprintf(`{"alg":"RS256","kid":%q,"typ":"secevent+jwt","jku":%q}`, asKey.KID, e.attackerURL)
			return asSignRS256(t, h, asJSON(t, asHostileClaims(t)), asOther.Private)
		}, code: auth},
		{name: "embedded jwk header", body: func(t *testing.T, _ *asEnv) string {
			j, err := json.Marshal(jose.JSONWebKey{Key: &asOther.Private.PublicKey, KeyID: asKey.KID, Algorithm: "RS256", Use: "sig"})
			require.NoError(t, err)
			h := fmt.Sprintf(`{"alg":"RS256","kid":%q,"typ":"secevent+jwt","jwk":%s}`, asKey.KID, j)
			return asSignRS256(t, h, asJSON(t, asHostileClaims(t)), asOther.Private)
		}, code: auth},
		{name: "crit header", body: header(`{"alg":"RS256","kid":"` + asKeysKID() + `","typ":"secevent+jwt","crit":["` + asMarker + `"],"` + asMarker + `":1}`), code: req},

		// Signature.
		{name: "tampered payload", body: modify(func(t *testing.T, s []string) string {
			s[1] = asB64([]byte(asJSON(t, asWith(asHostileClaims(t), "sub", "999"+asMarker))))
			return strings.Join(s, ".")
		}), code: auth},
		{name: "tampered payload (one bit)", body: modify(func(t *testing.T, s []string) string {
			p, err := base64.RawURLEncoding.DecodeString(s[1])
			require.NoError(t, err)
			i := bytes.Index(p, []byte("hijacking"))
			require.Positive(t, i)
			p[i] ^= 0x20 // hijacking -> Hijacking
			s[1] = asB64(p)
			return strings.Join(s, ".")
		}), code: auth},
		{name: "tampered signature", body: modify(func(t *testing.T, s []string) string {
			sig, err := base64.RawURLEncoding.DecodeString(s[2])
			require.NoError(t, err)
			sig[17] ^= 0x01
			s[2] = asB64(sig)
			return strings.Join(s, ".")
		}), code: auth},
		{name: "tampered header", body: modify(func(_ *testing.T, s []string) string {
			s[0] = asB64([]byte(`{"typ":"application/secevent+jwt","kid":"` + asKeysKID() + `","alg":"RS256"}`))
			return strings.Join(s, ".")
		}), code: auth},
		{name: "signature of another token", body: func(t *testing.T, _ *asEnv) string {
			a, b := asSegments(asGoodToken(t)), asSegments(asGoodToken(t))
			return a[0] + "." + a[1] + "." + b[2]
		}, code: auth},

		// Duplicate members.
		{name: "duplicate iss in payload", body: func(t *testing.T, _ *asEnv) string {
			p := `{"iss":"` + asOtherIssuer + `",` + strings.TrimPrefix(asJSON(t, asHostileClaims(t)), "{")
			return asSignRS256(t, asKakaoHeader(), p, asKey.Private)
		}, code: req},
		{name: "duplicate jti in payload (escaped name)", body: func(t *testing.T, _ *asEnv) string {
			p := `{"\u006a\u0074\u0069":"` + asMarker + `-dup",` + strings.TrimPrefix(asJSON(t, asHostileClaims(t)), "{")
			return asSignRS256(t, asKakaoHeader(), p, asKey.Private)
		}, code: req},
		{name: "duplicate alg in header", body: header(`{"alg":"RS256","kid":"` + asKeysKID() + `","typ":"secevent+jwt","alg":"none"}`), code: req},

		// typ.
		{name: "typ JWT", body: header(asHeader("RS256", asKeysKID(), "JWT")), code: req},
		{name: "typ missing", body: header(asHeader("RS256", asKeysKID(), "")), code: req},

		// iss / aud.
		{name: "wrong iss", body: claim("iss", "https://kauth.kakao.com.evil.example"), code: secevent.CodeInvalidIssuer},
		{name: "iss with trailing slash", body: claim("iss", asIssuer+"/"), code: secevent.CodeInvalidIssuer},
		{name: "missing iss", body: noClaim("iss"), code: secevent.CodeInvalidIssuer},
		{name: "wrong aud", body: claim("aud", "aud-"+asMarker), code: secevent.CodeInvalidAudience},
		{name: "aud array without us", body: claim("aud", []string{"a", "b-" + asMarker}), code: secevent.CodeInvalidAudience},
		{name: "missing aud", body: noClaim("aud"), code: secevent.CodeInvalidAudience},

		// Times: the replay window is asMaxAge.
		{name: "iat beyond the replay window", body: claim("iat", time.Now().Add(-asMaxAge-time.Minute).Unix()), code: req},
		{name: "iat a year ago", body: claim("iat", time.Now().AddDate(-1, 0, 0).Unix()), code: req},
		{name: "iat in the future", body: claim("iat", time.Now().Add(time.Hour).Unix()), code: req},
		{name: "iat missing", body: noClaim("iat"), code: req},
		{name: "iat as a string", body: claim("iat", fmt.Sprint(time.Now().Unix())), code: req},
		{name: "exp in the past", body: claim("exp", time.Now().Add(-time.Hour).Unix()), code: req},

		// jti.
		{name: "missing jti", body: noClaim("jti"), code: req},
		{name: "empty jti", body: claim("jti", ""), code: req},
		{name: "jti too long", body: claim("jti", strings.Repeat(asMarker, 40)), code: req},
		{name: "jti a number", body: claim("jti", 42), code: req},

		// events and subjects.
		{name: "missing events", body: noClaim("events"), code: req},
		{name: "events an array", body: claim("events", []any{map[string]any{"note": asMarker}}), code: req},
		{name: "events a string", body: claim("events", secevent.PrefixOAuth+"user-linked"), code: req},
		{name: "events null", body: claim("events", nil), code: req},
		{name: "events empty", body: claim("events", map[string]any{}), code: req},
		{name: "event value not an object", body: claim("events", map[string]any{secevent.PrefixOAuth + "user-linked": asMarker}), code: req},
		{name: "top-level sub disagrees with the event subject", body: claim("sub", "999"+asMarker), code: req},
	}
}

// asKeysKID is the issuer's kid (the keys are created lazily).
func asKeysKID() string { return asKey.KID }

// TestAccountStatusHostile posts every hostile delivery and checks the exact
// answer, that nothing reached the inbox, and that neither the tokens'
// contents nor secrets reached the logs.
func TestAccountStatusHostile(t *testing.T) {
	e := newASEnv(t, nil)
	cases := asHostileCases()
	require.GreaterOrEqual(t, len(cases), 40)
	seen := map[string]bool{}
	var bodies []string
	for _, tc := range cases {
		require.False(t, seen[tc.name], "duplicate case %q", tc.name)
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			ctype := tc.ctype
			switch ctype {
			case "":
				ctype = ingress.SETContentType
			case "none":
				ctype = ""
			}
			status := tc.status
			if status == 0 {
				status = http.StatusBadRequest
			}
			body := tc.body(t, e)
			bodies = append(bodies, body)
			r := e.do(method, ctype, body)
			asAssertError(t, r, status, string(tc.code))
			if status == http.StatusMethodNotAllowed {
				assert.Equal(t, http.MethodPost, r.header.Get("Allow"))
			}
			assert.Empty(t, r.header.Get("Retry-After"), "a client error is not retryable")
			assert.Equal(t, 0, e.rows(), "a rejected delivery reached the inbox")
		})
	}
	assert.Zero(t, e.attackerHits.Load(), "the verifier fetched keys from a URL named by a token")

	logs := e.logs.String()
	require.Contains(t, logs, "set rejected", "the log capture works")
	assert.NotContains(t, logs, asMarker, "a rejected token's contents were logged")
	assert.NotContains(t, logs, asAdminKey, "a secret was logged")
	for _, b := range bodies {
		for _, s := range asSegments(b) {
			if len(s) >= 40 {
				require.NotContains(t, logs, s, "a token segment was logged")
			}
		}
	}
}

// The base of the hostile table is acceptable, so the table cannot pass
// merely because every token is broken in the same way.
func TestAccountStatusHostileBaseAccepted(t *testing.T) {
	e := newASEnv(t, nil)
	r := e.post(asGoodToken(t))
	assert.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	assert.Equal(t, 1, e.rows())
}

func TestAccountStatusAcceptsOnceAndDeduplicates(t *testing.T) {
	e := newASEnv(t, nil)
	token, jti := asValidToken(t)

	r := e.post(token)
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	assert.Empty(t, r.body)
	assert.Equal(t, 1, e.rows())

	entry, err := inbox.NewPostgres(e.db).Get(context.Background(), ingress.SETKey(jti))
	require.NoError(t, err)
	assert.Equal(t, token, string(entry.Raw), "the raw token is stored as received")
	assert.Equal(t, inbox.StatusPending, entry.Status)
	require.Len(t, entry.Envelope.Events, 1)
	assert.Equal(t, secevent.PrefixOAuth+"user-linked", entry.Envelope.Events[0].Type)
	assert.Equal(t, "701541", entry.Envelope.Subject.UserID)
	assert.Equal(t, asIssuer, entry.Envelope.Subject.Issuer)

	// The same token again: 202, still one row.
	for range 2 {
		r = e.post(token)
		assert.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
		assert.Empty(t, r.body)
	}
	assert.Equal(t, 1, e.rows())

	// Tolerated variants: media type parameters and case, the application/
	// prefix in typ, surrounding whitespace.
	tok2, _ := asValidToken(t)
	r = e.do(http.MethodPost, "Application/SECEVENT+JWT; charset=utf-8", tok2+"\r\n")
	assert.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	c, err := simulator.SET{Issuer: asIssuer, Audience: asAudience, UserID: "42", EventType: "account-purged"}.Claims()
	require.NoError(t, err)
	c["aud"] = []string{"someone-else", asAudience}
	tok3 := asSignRS256(t, asHeader("RS256", asKey.KID, "application/secevent+jwt"), asJSON(t, c), asKey.Private)
	r = e.post(tok3)
	assert.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	assert.Equal(t, 3, e.rows())
}

// asFlakyInbox fails while fail is set, else writes through.
type asFlakyInbox struct {
	next  inbox.Writer
	fail  atomic.Bool
	calls atomic.Int64
}

func (f *asFlakyInbox) Put(ctx context.Context, e inbox.Entry) (bool, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return false, errors.New("inbox unavailable (test)")
	}
	return f.next.Put(ctx, e)
}

func (f *asFlakyInbox) ReceivedAfter(ctx context.Context, key string, t time.Time) (bool, error) {
	if f.fail.Load() {
		return false, errors.New("inbox unavailable (test)")
	}
	return f.next.ReceivedAfter(ctx, key, t)
}

func asAssertUnavailable(t *testing.T, r asResponse) {
	t.Helper()
	asAssertError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
	assert.NotEmpty(t, r.header.Get("Retry-After"))
}

// A failed store answers 503 and leaves no trace, so that the sender's retry is
// processed as a first delivery, not swallowed as a duplicate.
func TestAccountStatusInboxFailure(t *testing.T) {
	var flaky *asFlakyInbox
	e := newASEnv(t, func(e *asEnv) {
		flaky = &asFlakyInbox{next: e.srv.Inbox}
		flaky.fail.Store(true)
		e.srv.Inbox = flaky
	})
	token, jti := asValidToken(t)
	asAssertUnavailable(t, e.post(token))
	assert.EqualValues(t, 1, flaky.calls.Load(), "the verified token reached the store")
	assert.Equal(t, 0, e.rows())

	flaky.fail.Store(false)
	r := e.post(token)
	assert.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	assert.Equal(t, 1, e.rows())
	_, err := inbox.NewPostgres(e.db).Get(context.Background(), ingress.SETKey(jti))
	assert.NoError(t, err)
}

func TestAccountStatusInboxClosedDB(t *testing.T) {
	e := newASEnv(t, func(e *asEnv) {
		closed, err := sqlx.Open("postgres", e.dbURL)
		require.NoError(t, err)
		require.NoError(t, closed.Ping())
		require.NoError(t, closed.Close())
		e.srv.Inbox = inbox.NewPostgres(closed)
	})
	token, _ := asValidToken(t)
	asAssertUnavailable(t, e.post(token))
	assert.Equal(t, 0, e.rows())
}

// An unreachable database, whose URL carries a password: 503, and the
// password is not logged.
func TestAccountStatusInboxUnreachable(t *testing.T) {
	const password = "SECRET-dbpassword-91ac"
	e := newASEnv(t, func(e *asEnv) {
		port := testenv.FreePort(t)
		db, err := sqlx.Open("postgres", fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/setflow?sslmode=disable&connect_timeout=1", password, port))
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		e.srv.Inbox = inbox.NewPostgres(db)
	})
	token, _ := asValidToken(t)
	asAssertUnavailable(t, e.post(token))
	assert.Equal(t, 0, e.rows())
	logs := e.logs.String()
	assert.Contains(t, logs, "inbox write failed")
	assert.NotContains(t, logs, password)
	assert.NotContains(t, logs, asAdminKey)
}

// asSlowInbox never finishes before its context ends.
type asSlowInbox struct{}

func (asSlowInbox) Put(ctx context.Context, _ inbox.Entry) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

func (asSlowInbox) ReceivedAfter(ctx context.Context, _ string, _ time.Time) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

// A database slower than StoreTimeout: 503 in time, not a late 202.
func TestAccountStatusInboxTooSlow(t *testing.T) {
	e := newASEnv(t, func(e *asEnv) {
		e.srv.Inbox = asSlowInbox{}
		e.srv.StoreTimeout = 200 * time.Millisecond
	})
	token, _ := asValidToken(t)
	start := time.Now()
	asAssertUnavailable(t, e.post(token))
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Equal(t, 0, e.rows())
}

// With the issuer's key set unreachable and no key cached, a genuine token
// cannot be judged: 503 (retryable), never 400, and nothing stored. Once
// the keys are back the same token is accepted.
func TestAccountStatusKeysUnavailable(t *testing.T) {
	e := newASEnv(t, func(e *asEnv) { e.jwksDown.Store(true) })
	token, _ := asValidToken(t)

	asAssertUnavailable(t, e.post(token))
	assert.Equal(t, 0, e.rows())
	_, err := e.verifier.Verify(context.Background(), []byte(token))
	require.Error(t, err)
	assert.True(t, secevent.IsTemporary(err), "err: %v", err)

	// A token naming a bogus kid cannot be judged either; its contents stay
	// out of the logs all the same.
	bogus := asSignRS256(t, asHeader("RS256", "kid-"+asMarker, "secevent+jwt"), asJSON(t, asHostileClaims(t)), asOther.Private)
	asAssertUnavailable(t, e.post(bogus))
	assert.Equal(t, 0, e.rows())
	assert.Contains(t, e.logs.String(), "set verification unavailable")
	assert.NotContains(t, e.logs.String(), asMarker)

	e.jwksDown.Store(false)
	// Without any cached key the verifier retries the key set after a second.
	deadline := time.Now().Add(5 * time.Second)
	var r asResponse
	for {
		r = e.post(token)
		if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	assert.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	assert.Equal(t, 1, e.rows())
}

// A key server that is not even listening.
func TestAccountStatusKeysUnreachable(t *testing.T) {
	e := newASEnv(t, func(e *asEnv) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		v, err := secevent.NewVerifier(secevent.Config{Issuer: asIssuer, Audiences: []string{asAudience},
			Keys: secevent.NewJWKS(asIssuer, secevent.JWKSOptions{URL: dead.URL, Timeout: time.Second})})
		require.NoError(t, err)
		e.srv.SETs = v
	})
	token, _ := asValidToken(t)
	asAssertUnavailable(t, e.post(token))
	assert.Equal(t, 0, e.rows())
}
