package secevent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
)

const (
	testIssuer = "https://kauth.kakao.com"
	testAud    = "8c67b00000000000000000000e2e76140"
	testKID    = "k1"
)

// testNow is shortly after the iat of Kakao's documented example.
var testNow = time.Unix(1744790000, 0).UTC()

var (
	keysOnce sync.Once
	rsaA     *rsa.PrivateKey // the issuer's key, kid k1
	rsaB     *rsa.PrivateKey // another issuer's key, also published as k1
	rsaSmall *rsa.PrivateKey // 1024 bits
	ecKey    *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaB, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaSmall, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func pubJWK(kid string, pub crypto.PublicKey, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: pub, KeyID: kid, Use: "sig", Algorithm: alg}
}

func b64s(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signRaw builds a compact JWS from raw header and payload JSON, signing
// with RS256 (PKCS#1 v1.5, SHA-256). Raw strings let tests build tokens no
// well-behaved library would produce (duplicate members, wrong types...).
func signRaw(t testing.TB, hdr, payload string, key *rsa.PrivateKey) string {
	t.Helper()
	input := b64s([]byte(hdr)) + "." + b64s([]byte(payload))
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	require.NoError(t, err)
	return input + "." + b64s(sig)
}

const kakaoHeader = `{"kid":"k1","typ":"secevent+jwt","alg":"RS256"}`

// kakaoExample is the documented Kakao user-linked payload (aud shortened
// to our test audience).
const kakaoExample = `{"aud": "8c67b00000000000000000000e2e76140", "sub": "701541", "iss": "https://kauth.kakao.com",
 "txm": "1d61d6c8-173b-488c-b8af-2e2b6ca29777", "iat": 1744789997,
 "jti": "7185208e-c045-41e9-a2ff-0b219b9e123e",
 "events": {"https://schemas.openid.net/secevent/oauth/event-type/user-linked":
   {"subject": {"sub": "701541", "subject_type": "iss-sub", "iss": "https://kauth.kakao.com"}}}}`

// claims is a mutable payload for tests.
type claims map[string]any

func baseClaims() claims {
	return claims{
		"iss": testIssuer,
		"aud": testAud,
		"iat": testNow.Unix() - 3,
		"jti": "jti-1",
		"events": map[string]any{
			EventUserLinked: map[string]any{
				"subject": map[string]any{"sub": "701541", "subject_type": "iss-sub", "iss": testIssuer},
			},
		},
	}
}

func (c claims) with(k string, v any) claims {
	out := claims{}
	for kk, vv := range c {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func (c claims) without(k string) claims {
	out := claims{}
	for kk, vv := range c {
		if kk != k {
			out[kk] = vv
		}
	}
	return out
}

func (c claims) json(t testing.TB) string {
	t.Helper()
	b, err := json.Marshal(c)
	require.NoError(t, err)
	return string(b)
}

func staticKS(t testing.TB) *StaticKeys {
	t.Helper()
	testKeys(t)
	ks, err := NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		pubJWK(testKID, rsaA.Public(), "RS256"),
	}})
	require.NoError(t, err)
	return ks
}

func newTestVerifier(t testing.TB, mod func(*Config)) *Verifier {
	t.Helper()
	cfg := Config{
		Issuer:    testIssuer,
		Audiences: []string{testAud, "other-app"},
		Keys:      staticKS(t),
		Now:       func() time.Time { return testNow },
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewVerifier(cfg)
	require.NoError(t, err)
	return v
}
