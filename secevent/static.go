package secevent

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// StaticKeys is a KeySource over a fixed, in-memory key set for one issuer
// (tests, development, or keys distributed out of band).
type StaticKeys struct {
	issuer string
	keys   map[string]*jose.JSONWebKey
}

// NewStaticKeys validates set and returns a StaticKeys for issuer. Unlike a
// fetched JWKS (where bad entries are skipped), a static set is
// configuration, so any unusable entry (private material, use other than
// "sig", missing or duplicate kid) is an error.
func NewStaticKeys(issuer string, set jose.JSONWebKeySet) (*StaticKeys, error) {
	if issuer == "" {
		return nil, errors.New("secevent: StaticKeys needs an issuer")
	}
	s := &StaticKeys{issuer: issuer, keys: make(map[string]*jose.JSONWebKey, len(set.Keys))}
	for i := range set.Keys {
		k := set.Keys[i]
		vk, err := vetKey(&k)
		if err != nil {
			return nil, fmt.Errorf("secevent: static key %d: %w", i, err)
		}
		if _, dup := s.keys[vk.KeyID]; dup {
			return nil, fmt.Errorf("secevent: static key %d: duplicate kid", i)
		}
		s.keys[vk.KeyID] = vk
	}
	if len(s.keys) == 0 {
		return nil, errors.New("secevent: StaticKeys needs at least one key")
	}
	return s, nil
}

// Key implements KeySource.
func (s *StaticKeys) Key(_ context.Context, issuer, kid string) (*jose.JSONWebKey, error) {
	if issuer != s.issuer {
		return nil, fmt.Errorf("%w (issuer not served by this key set)", ErrUnknownKey)
	}
	k, ok := s.keys[kid]
	if !ok {
		return nil, ErrUnknownKey
	}
	return k, nil
}
