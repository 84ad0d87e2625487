package secevent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// KeySource provides transmitters' public verification keys.
//
// The issuer argument is always the Verifier's configured issuer, never a
// value read from an unverified token, and implementations must scope key ids
// per issuer: a key published by another issuer under the same kid must not
// be returned.
type KeySource interface {
	// Key returns the public verification key for (issuer, kid). It returns
	// an error wrapping ErrUnknownKey when the kid is not known even after
	// any refresh.
	Key(ctx context.Context, issuer, kid string) (*jose.JSONWebKey, error)
}

// MultiIssuerKeys routes key lookups to a KeySource per issuer. Unknown
// issuers yield ErrUnknownKey.
type MultiIssuerKeys map[string]KeySource

// Key implements KeySource.
func (m MultiIssuerKeys) Key(ctx context.Context, issuer, kid string) (*jose.JSONWebKey, error) {
	ks, ok := m[issuer]
	if !ok || ks == nil {
		return nil, fmt.Errorf("%w (no key source for issuer)", ErrUnknownKey)
	}
	return ks.Key(ctx, issuer, kid)
}

// privateMembers are JWK members that only appear in private or symmetric
// keys (RFC 7518 §6.2.2, §6.3.2, §6.4.1). A JWKS that publishes them is
// leaking secrets; such entries are never used.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"}

var errUnusableKey = errors.New("unusable key")

// parseKeyEntry decodes one JWKS entry and vets it for signature
// verification. Entries with private material, a use other than "sig", no
// kid, or an unsupported key type are refused.
func parseKeyEntry(raw json.RawMessage) (*jose.JSONWebKey, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", errUnusableKey, err)
	}
	for _, name := range privateMembers {
		if _, ok := m[name]; ok {
			return nil, fmt.Errorf("%w: contains private key material", errUnusableKey)
		}
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", errUnusableKey, err)
	}
	return vetKey(&k)
}

// vetKey checks a decoded key for use as a verification key.
func vetKey(k *jose.JSONWebKey) (*jose.JSONWebKey, error) {
	if k.KeyID == "" {
		return nil, fmt.Errorf("%w: no kid", errUnusableKey)
	}
	if !k.IsPublic() || !k.Valid() {
		return nil, fmt.Errorf("%w: not a public key", errUnusableKey)
	}
	if k.Use != "" && k.Use != "sig" {
		return nil, fmt.Errorf("%w: use is not sig", errUnusableKey)
	}
	return k, nil
}

// parseJWKS decodes a JWK Set document. Unusable entries are skipped (and
// counted); a document without any usable key is an error, so that a broken
// or emptied JWKS never replaces good cached keys.
func parseJWKS(data []byte) (keys map[string]*jose.JSONWebKey, skipped int, err error) {
	m, err := decodeObject(data)
	if err != nil {
		return nil, 0, fmt.Errorf("JWKS is not a JSON object without duplicate members: %w", err)
	}
	rawKeys, ok := m["keys"]
	if !ok || kindOf(rawKeys) != kindArray {
		return nil, 0, errors.New("JWKS lacks a keys array")
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(rawKeys, &entries); err != nil {
		return nil, 0, fmt.Errorf("JWKS keys: %w", err)
	}
	keys = make(map[string]*jose.JSONWebKey, len(entries))
	for _, e := range entries {
		k, err := parseKeyEntry(e)
		if err != nil {
			skipped++
			continue
		}
		if _, dup := keys[k.KeyID]; dup {
			// Ambiguous kid: keep the first entry only.
			skipped++
			continue
		}
		keys[k.KeyID] = k
	}
	if len(keys) == 0 {
		return nil, skipped, errors.New("JWKS contains no usable signature keys")
	}
	return keys, skipped, nil
}
