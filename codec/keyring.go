package codec

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// EnvKeys names the environment variable holding the key ring:
// "id:base64key,id:base64key,…", the first entry being the current key.
const EnvKeys = "SETFLOW_CODEC_KEYS"

// KeySize is the length of every key: AES-256.
const KeySize = 32

// ErrNoKeys is returned by ConfiguredKeyRing when SETFLOW_CODEC_KEYS is unset or
// empty.
var ErrNoKeys = errors.New(EnvKeys + " is not set")

// KeyRing holds the AES-256 keys by id. New payloads are encrypted with the
// current key; a payload is decrypted with the key named in its metadata, so
// older keys stay in the ring until nothing encrypted with them is retained.
//
// A KeyRing never prints its key material: String and LogValue show ids only.
type KeyRing struct {
	current string
	ids     []string // current first, then in the order given
	aeads   map[string]cipher.AEAD
}

// NewKeyRing builds a ring from raw keys. current must be one of the ids.
func NewKeyRing(current string, keys map[string][]byte) (*KeyRing, error) {
	if _, ok := keys[current]; !ok {
		return nil, fmt.Errorf("codec: current key id %q is not in the key ring", current)
	}
	r := &KeyRing{current: current, aeads: make(map[string]cipher.AEAD, len(keys))}
	if err := r.add(current, keys[current]); err != nil {
		return nil, fmt.Errorf("codec: %w", err)
	}
	// The remaining ids in a stable order, so IDs and logs are deterministic.
	rest := make([]string, 0, len(keys)-1)
	for id := range keys {
		if id != current {
			rest = append(rest, id)
		}
	}
	slices.Sort(rest)
	for _, id := range rest {
		if err := r.add(id, keys[id]); err != nil {
			return nil, fmt.Errorf("codec: %w", err)
		}
	}
	return r, nil
}

func (r *KeyRing) add(id string, key []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	if _, dup := r.aeads[id]; dup {
		return fmt.Errorf("key id %q appears more than once", id)
	}
	if len(key) != KeySize {
		return fmt.Errorf("key %q is %d bytes, must be %d (AES-256)", id, len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("key %q: %w", id, err)
	}
	aead, err := cipher.NewGCM(block) // 12-byte nonce, 16-byte tag
	if err != nil {
		return fmt.Errorf("key %q: %w", id, err)
	}
	r.aeads[id] = aead
	r.ids = append(r.ids, id)
	return nil
}

// checkID keeps ids printable and free of the list separators.
func checkID(id string) error {
	if id == "" {
		return errors.New("empty key id")
	}
	if len(id) > 64 {
		return fmt.Errorf("key id %q is longer than 64 characters", id[:64]+"…")
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("key id %q may only hold letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

// ParseKeyRing parses "id:base64key,id:base64key,…"; the first entry is the
// current key. Keys are 32 bytes in standard or URL-safe base64, padded or not
// (e.g. `openssl rand -base64 32`). Errors name the entry and its id but never
// show key material.
func ParseKeyRing(s string) (*KeyRing, error) {
	r, err := parseKeyRing(s)
	if err != nil {
		return nil, fmt.Errorf("codec: %w", err)
	}
	return r, nil
}

func parseKeyRing(s string) (*KeyRing, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty key ring, want id:base64key[,id:base64key…]")
	}
	r := &KeyRing{aeads: map[string]cipher.AEAD{}}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, fmt.Errorf("key ring entry %d is empty", i+1)
		}
		id, b64, ok := strings.Cut(entry, ":")
		if !ok {
			// The entry may be a bare key: do not echo it.
			return nil, fmt.Errorf("key ring entry %d has no id, want id:base64key", i+1)
		}
		id, b64 = strings.TrimSpace(id), strings.TrimSpace(b64)
		if err := checkID(id); err != nil {
			return nil, fmt.Errorf("key ring entry %d: %w", i+1, err)
		}
		if _, dup := r.aeads[id]; dup {
			return nil, fmt.Errorf("key ring entry %d: key id %q appears more than once", i+1, id)
		}
		key, err := decodeKey(b64)
		if err != nil {
			return nil, fmt.Errorf("key ring entry %d (id %q): key is not valid base64", i+1, id)
		}
		if err := r.add(id, key); err != nil {
			return nil, fmt.Errorf("key ring entry %d: %w", i+1, err)
		}
		clear(key)
	}
	r.current = r.ids[0]
	return r, nil
}

func decodeKey(s string) ([]byte, error) {
	var firstErr error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// ConfiguredKeyRing parses the value of SETFLOW_CODEC_KEYS (config reads
// the variable), naming the variable in errors. It returns an error wrapping
// ErrNoKeys when spec is empty.
func ConfiguredKeyRing(spec string) (*KeyRing, error) {
	v := strings.TrimSpace(spec)
	if v == "" {
		return nil, ErrNoKeys
	}
	r, err := parseKeyRing(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvKeys, err)
	}
	return r, nil
}

// CurrentID is the id of the key new payloads are encrypted with.
func (r *KeyRing) CurrentID() string { return r.current }

// IDs lists the key ids, current first.
func (r *KeyRing) IDs() []string { return append([]string(nil), r.ids...) }

// String shows the ids only.
func (r *KeyRing) String() string {
	return fmt.Sprintf("KeyRing(current=%s, ids=%s)", r.current, strings.Join(r.ids, ","))
}

// GoString keeps %#v from printing internals.
func (r *KeyRing) GoString() string { return r.String() }

// LogValue shows the ids only.
func (r *KeyRing) LogValue() slog.Value {
	return slog.GroupValue(slog.String("current", r.current), slog.Any("ids", r.IDs()))
}
