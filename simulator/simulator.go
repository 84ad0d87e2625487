// Package simulator plays Kakao's side for local development and tests: it
// holds a development signing key, serves its JWKS, builds Security Event Tokens
// shaped like Kakao's (in-event subject with subject_type, txm, top-level sub)
// and POSTs them — what Kakao's webhook test tool does, without a Kakao account.
package simulator

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/setflow/setflow/secevent"
)

// Key is a development RSA signing key.
type Key struct {
	Private *rsa.PrivateKey
	KID     string
}

// NewKey generates a 2048-bit key.
func NewKey() (*Key, error) {
	pk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return keyOf(pk)
}

func keyOf(pk *rsa.PrivateKey) (*Key, error) {
	jwk := jose.JSONWebKey{Key: &pk.PublicKey}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &Key{Private: pk, KID: "dev-" + hex.EncodeToString(thumb[:8])}, nil
}

// LoadOrCreateKey reads a PKCS#8 PEM key from path, creating it (mode 0600) if
// it does not exist, so that the JWKS stays the same across restarts.
func LoadOrCreateKey(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := NewKey()
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("simulator: %s holds no PEM block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("simulator: %s: %w", path, err)
	}
	pk, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("simulator: %s is not an RSA key", path)
	}
	return keyOf(pk)
}

// JWKS is the public key set a verifier needs.
func (k *Key) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &k.Private.PublicKey, KeyID: k.KID, Algorithm: string(jose.RS256), Use: "sig",
	}}}
}

// JWKSHandler serves the public key set, like https://kauth.kakao.com/.well-known/jwks.json.
func (k *Key) JWKSHandler() http.Handler {
	body, _ := json.Marshal(k.JWKS())
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// Sign signs claims as a SET with the header Kakao documents.
func (k *Key) Sign(claims any) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k.Private},
		(&jose.SignerOptions{}).WithType("secevent+jwt").WithHeader("kid", k.KID))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

var names = map[string][]string{
	secevent.PrefixOAuth: {"user-linked", "user-unlinked", "user-scope-consent", "user-scope-withdraw", "tokens-revoked", "token-issued", "token-revoked"},
	secevent.PrefixRISC: {"account-disabled", "account-enabled", "account-purged", "account-credential-change-required",
		"credential-compromise", "identifier-changed", "identifier-recycled", "sessions-revoked", "opt-in",
		"opt-out-initiated", "opt-out-cancelled", "opt-out-effective", "recovery-activated", "recovery-information-changed"},
	secevent.PrefixCAEP: {"credential-change", "assurance-level-change", "session-revoked", "token-claims-change",
		"device-compliance-change", "session-established", "session-presented", "risk-level-change"},
	secevent.PrefixKakao: {"user-profile-changed"},
	secevent.PrefixSSF:   {"verification", "stream-updated"},
}

// EventTypeURI expands a short name ("account-disabled") to its full URI; a
// full URI is returned unchanged. "sessions-revoked" is RISC's deprecated
// spelling; "session-revoked" is CAEP's.
func EventTypeURI(name string) (string, error) {
	if strings.Contains(name, "://") {
		return name, nil
	}
	for prefix, list := range names {
		for _, n := range list {
			if n == name {
				return prefix + n, nil
			}
		}
	}
	return "", fmt.Errorf("unknown event type %q (known: %s)", name, strings.Join(EventNames(), ", "))
}

// EventNames lists the short names EventTypeURI knows, sorted.
func EventNames() []string {
	var out []string
	for _, list := range names {
		out = append(out, list...)
	}
	sort.Strings(out)
	return out
}

// SET describes a test token. Zero fields get sensible values.
type SET struct {
	Issuer   string
	Audience string
	UserID   string
	// EventType is a short name or a full URI.
	EventType string
	// Fields are extra members of the event object (e.g. "reason": "hijacking").
	Fields   map[string]any
	JTI      string
	IssuedAt time.Time
}

// Claims builds the SET's claims in Kakao's documented shape.
func (s SET) Claims() (map[string]any, error) {
	uri, err := EventTypeURI(s.EventType)
	if err != nil {
		return nil, err
	}
	if s.JTI == "" {
		s.JTI = NewID()
	}
	if s.IssuedAt.IsZero() {
		s.IssuedAt = time.Now()
	}
	ev := map[string]any{"subject": map[string]any{"sub": s.UserID, "subject_type": "iss-sub", "iss": s.Issuer}}
	for k, v := range s.Fields {
		ev[k] = v
	}
	return map[string]any{
		"aud": s.Audience, "sub": s.UserID, "iss": s.Issuer, "txm": NewID(),
		"iat": s.IssuedAt.Unix(), "jti": s.JTI,
		"events": map[string]any{uri: ev},
	}, nil
}

// NewID returns a random UUID-shaped id, as Kakao uses for jti and txm.
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Post sends a signed token the way Kakao does and returns the status and body.
func Post(ctx context.Context, c *http.Client, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(token))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	if c == nil {
		c = &http.Client{Timeout: 3 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = io.Copy(&buf, io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, buf.String(), nil
}
