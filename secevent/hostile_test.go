package secevent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keyFunc is a KeySource built from a function, for keys StaticKeys refuses.
type keyFunc func(ctx context.Context, issuer, kid string) (*jose.JSONWebKey, error)

func (f keyFunc) Key(ctx context.Context, issuer, kid string) (*jose.JSONWebKey, error) {
	return f(ctx, issuer, kid)
}

func hdr(alg, kid, typ string) string {
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

func signHS256(hdrJSON, payload string, secret []byte) string {
	input := b64s([]byte(hdrJSON)) + "." + b64s([]byte(payload))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + b64s(mac.Sum(nil))
}

func signPS256(t testing.TB, hdrJSON, payload string, key *rsa.PrivateKey) string {
	input := b64s([]byte(hdrJSON)) + "." + b64s([]byte(payload))
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, sum[:], nil)
	require.NoError(t, err)
	return input + "." + b64s(sig)
}

func signES256(t testing.TB, hdrJSON, payload string, key *ecdsa.PrivateKey) string {
	input := b64s([]byte(hdrJSON)) + "." + b64s([]byte(payload))
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	require.NoError(t, err)
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64s(sig)
}

func segments(tok string) []string { return strings.Split(tok, ".") }

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

type hostileCase struct {
	name string
	tok  func(t *testing.T) string
	cfg  func(c *Config) // optional verifier tweak
	code Code
}

func hostileCases() []hostileCase {
	good := func(t *testing.T) string { return signRaw(t, kakaoHeader, baseClaims().json(t), rsaA) }
	payloadWith := func(k string, v any) func(t *testing.T) string {
		return func(t *testing.T) string { return signRaw(t, kakaoHeader, baseClaims().with(k, v).json(t), rsaA) }
	}
	payloadWithout := func(k string) func(t *testing.T) string {
		return func(t *testing.T) string { return signRaw(t, kakaoHeader, baseClaims().without(k).json(t), rsaA) }
	}
	rawPayload := func(p string) func(t *testing.T) string {
		return func(t *testing.T) string { return signRaw(t, kakaoHeader, p, rsaA) }
	}
	rawHeader := func(h string) func(t *testing.T) string {
		return func(t *testing.T) string { return signRaw(t, h, baseClaims().json(t), rsaA) }
	}
	otherIssuer := "https://attacker.example"
	multiIssuer := func(c *Config) {
		ksB, err := NewStaticKeys(otherIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK(testKID, rsaB.Public(), "RS256")}})
		if err != nil {
			panic(err)
		}
		c.Keys = MultiIssuerKeys{testIssuer: c.Keys, otherIssuer: ksB}
	}
	withKey := func(k jose.JSONWebKey) func(c *Config) {
		return func(c *Config) {
			c.Keys = keyFunc(func(_ context.Context, iss, kid string) (*jose.JSONWebKey, error) {
				if iss == testIssuer && kid == testKID {
					return &k, nil
				}
				return nil, ErrUnknownKey
			})
		}
	}
	events := func(v any) func(t *testing.T) string { return payloadWith("events", v) }

	return []hostileCase{
		// Structure and serialization.
		{name: "empty token", tok: func(*testing.T) string { return "" }, code: CodeInvalidRequest},
		{name: "two segments", tok: func(t *testing.T) string {
			s := segments(good(t))
			return s[0] + "." + s[1]
		}, code: CodeInvalidRequest},
		{name: "four segments", tok: func(t *testing.T) string { return good(t) + ".AAAA" }, code: CodeInvalidRequest},
		{name: "five segments (JWE)", tok: func(*testing.T) string {
			return b64s([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM","kid":"k1"}`)) + ".AAAA.AAAA.AAAA.AAAA"
		}, code: CodeInvalidRequest},
		{name: "JSON serialization", tok: func(t *testing.T) string {
			s := segments(good(t))
			return fmt.Sprintf(`{"payload":%q,"protected":%q,"signature":%q}`, s[1], s[0], s[2])
		}, code: CodeInvalidRequest},
		{name: "empty signature segment", tok: func(t *testing.T) string {
			s := segments(good(t))
			return s[0] + "." + s[1] + "."
		}, code: CodeInvalidRequest},
		{name: "bad base64 in header", tok: func(t *testing.T) string {
			s := segments(good(t))
			return "*" + s[0][1:] + "." + s[1] + "." + s[2]
		}, code: CodeInvalidRequest},
		{name: "bad base64 in payload", tok: func(t *testing.T) string {
			s := segments(good(t))
			return s[0] + "." + s[1] + "%." + s[2]
		}, code: CodeInvalidRequest},
		{name: "bad base64 in signature", tok: func(t *testing.T) string {
			s := segments(good(t))
			return s[0] + "." + s[1] + "." + s[2][:10] + "!" + s[2][11:]
		}, code: CodeInvalidRequest},
		{name: "padded base64 signature", tok: func(t *testing.T) string { return good(t) + "==" }, code: CodeInvalidRequest},
		{name: "whitespace inside token", tok: func(t *testing.T) string {
			g := good(t)
			return g[:20] + " " + g[20:]
		}, code: CodeInvalidRequest},
		{name: "truncated header segment", tok: func(t *testing.T) string {
			s := segments(good(t))
			return s[0][:len(s[0])-4] + "." + s[1] + "." + s[2]
		}, code: CodeInvalidRequest},
		{name: "truncated signature segment", tok: func(t *testing.T) string {
			s := segments(good(t))
			sig, err := b64.DecodeString(s[2])
			require.NoError(t, err)
			s[2] = b64s(sig[:len(sig)-3])
			return strings.Join(s, ".")
		}, code: CodeAuthenticationFailed},
		{name: "non-canonical base64 trailing bits in signature", tok: func(t *testing.T) string {
			s := segments(good(t))
			// 256 bytes encode to 342 chars whose last char carries 4 unused
			// bits; setting them makes a second encoding of the same bytes.
			last := s[2][len(s[2])-1]
			idx := strings.IndexByte(b64Alphabet, last)
			s[2] = s[2][:len(s[2])-1] + string(b64Alphabet[idx|1])
			return strings.Join(s, ".")
		}, code: CodeInvalidRequest},
		{name: "oversize token", tok: func(t *testing.T) string {
			return signRaw(t, kakaoHeader, baseClaims().with("pad", strings.Repeat("x", 70<<10)).json(t), rsaA)
		}, code: CodeInvalidRequest},
		{name: "header not JSON", tok: rawHeader(`not json`), code: CodeInvalidRequest},
		{name: "header is an array", tok: rawHeader(`["RS256"]`), code: CodeInvalidRequest},

		// Header.
		{name: "alg none with signature", tok: func(t *testing.T) string {
			return b64s([]byte(hdr("none", testKID, "secevent+jwt"))) + "." + b64s([]byte(baseClaims().json(t))) + ".AAAA"
		}, code: CodeAuthenticationFailed},
		{name: "alg None mixed case", tok: func(t *testing.T) string {
			return b64s([]byte(hdr("None", testKID, "secevent+jwt"))) + "." + b64s([]byte(baseClaims().json(t))) + ".AAAA"
		}, code: CodeAuthenticationFailed},
		{name: "alg none without signature", tok: func(t *testing.T) string {
			return b64s([]byte(hdr("none", testKID, "secevent+jwt"))) + "." + b64s([]byte(baseClaims().json(t))) + "."
		}, code: CodeInvalidRequest},
		{name: "HS256 keyed with the RSA public key (PEM)", tok: func(t *testing.T) string {
			der, err := x509.MarshalPKIXPublicKey(rsaA.Public())
			require.NoError(t, err)
			pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			return signHS256(hdr("HS256", testKID, "secevent+jwt"), baseClaims().json(t), pemKey)
		}, code: CodeInvalidKey},
		{name: "HS256 keyed with the RSA modulus", tok: func(t *testing.T) string {
			return signHS256(hdr("HS256", testKID, "secevent+jwt"), baseClaims().json(t), rsaA.N.Bytes())
		}, code: CodeInvalidKey},
		{name: "PS256 when only RS256 allowed", tok: func(t *testing.T) string {
			return signPS256(t, hdr("PS256", testKID, "secevent+jwt"), baseClaims().json(t), rsaA)
		}, code: CodeInvalidKey},
		{name: "lower-case alg rs256", tok: rawHeader(hdr("rs256", testKID, "secevent+jwt")), code: CodeInvalidKey},
		{name: "alg missing", tok: rawHeader(`{"kid":"k1","typ":"secevent+jwt"}`), code: CodeInvalidRequest},
		{name: "alg not a string", tok: rawHeader(`{"alg":256,"kid":"k1","typ":"secevent+jwt"}`), code: CodeInvalidRequest},
		{name: "wrong typ", tok: rawHeader(hdr("RS256", testKID, "JWT")), code: CodeInvalidRequest},
		{name: "typ not a string", tok: rawHeader(`{"alg":"RS256","kid":"k1","typ":1}`), code: CodeInvalidRequest},
		{name: "missing typ", tok: rawHeader(hdr("RS256", testKID, "")), code: CodeInvalidRequest},
		{name: "missing kid", tok: rawHeader(hdr("RS256", "", "secevent+jwt")), code: CodeInvalidRequest},
		{name: "kid not a string", tok: rawHeader(`{"alg":"RS256","kid":1,"typ":"secevent+jwt"}`), code: CodeInvalidRequest},
		{name: "kid too long", tok: rawHeader(hdr("RS256", strings.Repeat("k", 300), "secevent+jwt")), code: CodeInvalidRequest},
		{name: "wrong kid", tok: rawHeader(hdr("RS256", "k2", "secevent+jwt")), code: CodeInvalidKey},
		{name: "unknown crit", tok: rawHeader(`{"alg":"RS256","kid":"k1","typ":"secevent+jwt","crit":["exp"],"exp":1}`), code: CodeInvalidRequest},
		{name: "crit b64 (unencoded payload)", tok: rawHeader(`{"alg":"RS256","kid":"k1","typ":"secevent+jwt","crit":["b64"],"b64":false}`), code: CodeInvalidRequest},
		{name: "b64 without crit", tok: rawHeader(`{"alg":"RS256","kid":"k1","typ":"secevent+jwt","b64":true}`), code: CodeInvalidRequest},
		{name: "duplicate alg in header", tok: rawHeader(`{"alg":"RS256","kid":"k1","typ":"secevent+jwt","alg":"none"}`), code: CodeInvalidRequest},
		{name: "duplicate kid in header via escape", tok: rawHeader(`{"alg":"RS256","kid":"k1","typ":"secevent+jwt","\u006bid":"k2"}`), code: CodeInvalidRequest},

		// Keys.
		{name: "key from another issuer with the same kid (iss = other)", cfg: multiIssuer, tok: func(t *testing.T) string {
			return signRaw(t, kakaoHeader, baseClaims().with("iss", otherIssuer).json(t), rsaB)
		}, code: CodeAuthenticationFailed},
		{name: "key from another issuer with the same kid (iss = ours)", cfg: multiIssuer, tok: func(t *testing.T) string {
			return signRaw(t, kakaoHeader, baseClaims().json(t), rsaB)
		}, code: CodeAuthenticationFailed},
		{name: "embedded jwk header is ignored", tok: func(t *testing.T) string {
			j, _ := json.Marshal(pubJWK(testKID, rsaB.Public(), "RS256"))
			return signRaw(t, `{"alg":"RS256","kid":"k1","typ":"secevent+jwt","jwk":`+string(j)+`}`, baseClaims().json(t), rsaB)
		}, code: CodeAuthenticationFailed},
		{name: "jku header is ignored", tok: func(t *testing.T) string {
			return signRaw(t, `{"alg":"RS256","kid":"k1","typ":"secevent+jwt","jku":"https://attacker.example/jwks"}`, baseClaims().json(t), rsaB)
		}, code: CodeAuthenticationFailed},
		{name: "RSA 1024-bit key", cfg: withKey(pubJWK(testKID, rsaSmall.Public(), "RS256")), tok: func(t *testing.T) string {
			return signRaw(t, kakaoHeader, baseClaims().json(t), rsaSmall)
		}, code: CodeInvalidKey},
		{name: "key alg differs from token alg", cfg: withKey(pubJWK(testKID, rsaA.Public(), "RS512")), tok: good, code: CodeInvalidKey},
		{name: "key use enc", cfg: withKey(jose.JSONWebKey{Key: rsaA.Public(), KeyID: testKID, Use: "enc"}), tok: good, code: CodeInvalidKey},
		{name: "key source returns a private key", cfg: withKey(jose.JSONWebKey{Key: rsaA, KeyID: testKID}), tok: good, code: CodeInvalidKey},
		{name: "key source returns an HMAC secret", cfg: withKey(jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: testKID}), tok: good, code: CodeInvalidKey},
		{name: "EC key for an RSA algorithm", cfg: withKey(pubJWK(testKID, ecKey.Public(), "")), tok: good, code: CodeInvalidKey},
		{name: "RSA key for ES256", cfg: func(c *Config) { c.Algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256} }, tok: func(t *testing.T) string {
			return signES256(t, hdr("ES256", testKID, "secevent+jwt"), baseClaims().json(t), ecKey)
		}, code: CodeInvalidKey},
		{name: "key source failure", cfg: func(c *Config) {
			c.Keys = keyFunc(func(context.Context, string, string) (*jose.JSONWebKey, error) {
				return nil, fmt.Errorf("%w: boom", ErrKeysUnavailable)
			})
		}, tok: good, code: CodeInvalidKey},

		// Signature.
		{name: "tampered payload", tok: func(t *testing.T) string {
			s := segments(good(t))
			s[1] = b64s([]byte(baseClaims().with("jti", "other").json(t)))
			return strings.Join(s, ".")
		}, code: CodeAuthenticationFailed},
		{name: "tampered signature", tok: func(t *testing.T) string {
			s := segments(good(t))
			sig, err := b64.DecodeString(s[2])
			require.NoError(t, err)
			sig[10] ^= 0x01
			s[2] = b64s(sig)
			return strings.Join(s, ".")
		}, code: CodeAuthenticationFailed},
		{name: "tampered header", tok: func(t *testing.T) string {
			s := segments(good(t))
			s[0] = b64s([]byte(`{"kid":"k1","typ":"application/secevent+jwt","alg":"RS256"}`))
			return strings.Join(s, ".")
		}, code: CodeAuthenticationFailed},
		{name: "signature from another key", tok: func(t *testing.T) string { return signRaw(t, kakaoHeader, baseClaims().json(t), rsaB) }, code: CodeAuthenticationFailed},

		// Payload JSON.
		{name: "payload not JSON", tok: rawPayload(`hello`), code: CodeInvalidRequest},
		{name: "payload is an array", tok: rawPayload(`[1,2]`), code: CodeInvalidRequest},
		{name: "payload trailing data", tok: func(t *testing.T) string { return signRaw(t, kakaoHeader, baseClaims().json(t)+`{}`, rsaA) }, code: CodeInvalidRequest},
		{name: "payload invalid UTF-8", tok: func(t *testing.T) string {
			return signRaw(t, kakaoHeader, strings.Replace(baseClaims().json(t), `"jti-1"`, "\"jti-\xff\"", 1), rsaA)
		}, code: CodeInvalidRequest},
		{name: "payload too deep", tok: func(t *testing.T) string {
			deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
			return signRaw(t, kakaoHeader, strings.TrimSuffix(baseClaims().json(t), "}")+`,"x":`+deep+`}`, rsaA)
		}, code: CodeInvalidRequest},
		{name: "duplicate iss in payload", tok: func(t *testing.T) string {
			return signRaw(t, kakaoHeader, `{"iss":"https://evil.example",`+strings.TrimPrefix(baseClaims().json(t), "{"), rsaA)
		}, code: CodeInvalidRequest},
		{name: "duplicate escaped iss in payload", tok: func(t *testing.T) string {
			return signRaw(t, kakaoHeader, `{"\u0069ss":"https://evil.example",`+strings.TrimPrefix(baseClaims().json(t), "{"), rsaA)
		}, code: CodeInvalidRequest},
		{name: "duplicate sub inside event subject", tok: rawPayload(`{"iss":"https://kauth.kakao.com","aud":"` + testAud + `","iat":1744789997,"jti":"j",` +
			`"events":{"` + EventUserLinked + `":{"subject":{"subject_type":"iss-sub","sub":"1","sub":"2"}}}}`), code: CodeInvalidRequest},

		// iss / aud.
		{name: "wrong iss", tok: payloadWith("iss", "https://kauth.kakao.com.evil.example"), code: CodeInvalidIssuer},
		{name: "iss with trailing slash", tok: payloadWith("iss", testIssuer+"/"), code: CodeInvalidIssuer},
		{name: "missing iss", tok: payloadWithout("iss"), code: CodeInvalidIssuer},
		{name: "iss not a string", tok: payloadWith("iss", 1), code: CodeInvalidRequest},
		{name: "wrong aud string", tok: payloadWith("aud", "someone-else"), code: CodeInvalidAudience},
		{name: "wrong aud array", tok: payloadWith("aud", []string{"a", "b"}), code: CodeInvalidAudience},
		{name: "empty aud array", tok: payloadWith("aud", []string{}), code: CodeInvalidAudience},
		{name: "missing aud", tok: payloadWithout("aud"), code: CodeInvalidAudience},
		{name: "aud number", tok: payloadWith("aud", 5), code: CodeInvalidRequest},
		{name: "aud array with a number", tok: payloadWith("aud", []any{testAud, 5}), code: CodeInvalidRequest},

		// Times.
		{name: "iat far past", tok: payloadWith("iat", testNow.Unix()-8*24*3600), code: CodeInvalidRequest},
		{name: "iat in the future", tok: payloadWith("iat", testNow.Unix()+600), code: CodeInvalidRequest},
		{name: "iat as string", tok: payloadWith("iat", fmt.Sprint(testNow.Unix())), code: CodeInvalidRequest},
		{name: "iat negative", tok: payloadWith("iat", -1), code: CodeInvalidRequest},
		{name: "iat huge", tok: payloadWith("iat", 1e300), code: CodeInvalidRequest},
		{name: "missing iat", tok: payloadWithout("iat"), code: CodeInvalidRequest},
		{name: "exp in the past", tok: payloadWith("exp", testNow.Unix()-3600), code: CodeInvalidRequest},
		{name: "exp not a number", tok: payloadWith("exp", "tomorrow"), code: CodeInvalidRequest},
		{name: "nbf in the future", tok: payloadWith("nbf", testNow.Unix()+3600), code: CodeInvalidRequest},
		{name: "toe not a number", tok: payloadWith("toe", "yesterday"), code: CodeInvalidRequest},

		// jti.
		{name: "missing jti", tok: payloadWithout("jti"), code: CodeInvalidRequest},
		{name: "empty jti", tok: payloadWith("jti", ""), code: CodeInvalidRequest},
		{name: "too-long jti", tok: payloadWith("jti", strings.Repeat("j", 257)), code: CodeInvalidRequest},
		{name: "jti number", tok: payloadWith("jti", 42), code: CodeInvalidRequest},

		// txn / sub.
		{name: "txn number", tok: payloadWith("txn", 7), code: CodeInvalidRequest},
		{name: "txm object", tok: payloadWith("txm", map[string]any{}), code: CodeInvalidRequest},
		{name: "top-level sub disagrees with event subject", tok: payloadWith("sub", "999"), code: CodeInvalidRequest},
		{name: "top-level sub not a string", tok: payloadWith("sub", 701541), code: CodeInvalidRequest},
		{name: "sub disagrees with sub_id", tok: func(t *testing.T) string {
			c := baseClaims().with("sub", "1").with("sub_id", map[string]any{"format": "iss_sub", "iss": testIssuer, "sub": "2"})
			c["events"] = map[string]any{EventUserLinked: map[string]any{}}
			return signRaw(t, kakaoHeader, c.json(t), rsaA)
		}, code: CodeInvalidRequest},
		{name: "sub_id email without email", tok: payloadWith("sub_id", map[string]any{"format": "email"}), code: CodeInvalidRequest},
		{name: "sub_id not an object", tok: payloadWith("sub_id", "701541"), code: CodeInvalidRequest},
		{name: "sub_id nested aliases", tok: payloadWith("sub_id", map[string]any{"format": "aliases", "identifiers": []any{
			map[string]any{"format": "aliases", "identifiers": []any{map[string]any{"format": "opaque", "id": "x"}}},
		}}), code: CodeInvalidRequest},
		{name: "event subject iss_sub without sub", tok: events(map[string]any{EventUserLinked: map[string]any{"subject": map[string]any{"subject_type": "iss-sub", "iss": testIssuer}}}), code: CodeInvalidRequest},

		// events.
		{name: "missing events", tok: payloadWithout("events"), code: CodeInvalidRequest},
		{name: "events not an object (array)", tok: events([]any{map[string]any{}}), code: CodeInvalidRequest},
		{name: "events not an object (string)", tok: events(EventUserLinked), code: CodeInvalidRequest},
		{name: "events null", tok: events(nil), code: CodeInvalidRequest},
		{name: "events empty", tok: events(map[string]any{}), code: CodeInvalidRequest},
		{name: "event value not an object (string)", tok: events(map[string]any{EventUserLinked: "yes"}), code: CodeInvalidRequest},
		{name: "event value not an object (array)", tok: events(map[string]any{EventUserLinked: []any{}}), code: CodeInvalidRequest},
		{name: "event value null", tok: events(map[string]any{EventUserLinked: nil}), code: CodeInvalidRequest},
		{name: "one good event and one bad", tok: events(map[string]any{EventUserLinked: map[string]any{}, EventUserUnlinked: 1}), code: CodeInvalidRequest},
		{name: "empty event type", tok: events(map[string]any{"": map[string]any{}}), code: CodeInvalidRequest},
	}
}

func TestVerifyHostileTokens(t *testing.T) {
	testKeys(t)
	cases := hostileCases()
	require.GreaterOrEqual(t, len(cases), 40)
	seen := map[string]bool{}
	for _, tc := range cases {
		require.False(t, seen[tc.name], "duplicate case name %q", tc.name)
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, tc.cfg)
			tok := tc.tok(t)
			set, err := v.Verify(context.Background(), []byte(tok))
			require.Error(t, err)
			assert.Nil(t, set)
			var e *Error
			require.True(t, errors.As(err, &e), "error must be *Error: %T", err)
			assert.Equal(t, tc.code, e.Code, "description: %s", e.Description)
			code, ok := CodeOf(err)
			assert.True(t, ok)
			assert.Equal(t, tc.code, code)
			assert.NotEmpty(t, e.Description)
			// Descriptions never echo token contents.
			for _, secret := range []string{"701541", "jti-1", testAud, "attacker", "evil"} {
				assert.NotContains(t, e.Description, secret)
			}
		})
	}
}

// The happy path of the hostile table's base token, so the table cannot
// pass because every token is broken.
func TestHostileBaseTokenVerifies(t *testing.T) {
	v := newTestVerifier(t, nil)
	_, err := v.Verify(context.Background(), []byte(signRaw(t, kakaoHeader, baseClaims().json(t), rsaA)))
	require.NoError(t, err)
}
