package secevent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxAge        = 7 * 24 * time.Hour
	DefaultMaxFutureSkew = 5 * time.Minute
	DefaultMaxJTILength  = 256
	DefaultMaxTokenSize  = 64 << 10

	// RSA key size bounds: below 2048 bits is breakable in practice; above
	// 8192 bits verification becomes a CPU denial-of-service lever.
	minRSABits = 2048
	maxRSABits = 8192
	// maxKIDLength bounds the key id we pass to a KeySource (cache keys).
	maxKIDLength = 256
)

// Config configures a Verifier. Issuer, Audiences and Keys are required.
type Config struct {
	Issuer          string                    // required, compared exactly with "iss"
	Audiences       []string                  // required, at least one; "aud" (string or array) must intersect
	Keys            KeySource                 // required
	Algorithms      []jose.SignatureAlgorithm // default [RS256]; "none" and HS* are always refused
	MaxAge          time.Duration             // how old "iat" may be (replay window); default 7*24h
	MaxFutureSkew   time.Duration             // how far "iat" may be in the future; also the leeway for exp/nbf; default 5m
	AllowMissingTyp bool                      // default false: the "typ" header is required
	MaxJTILength    int                       // default 256
	MaxTokenSize    int                       // default 64 KiB
	Now             func() time.Time          // default time.Now
}

// Verifier verifies Security Event Tokens. It is safe for concurrent use.
type Verifier struct {
	issuer          string
	audiences       map[string]struct{}
	keys            KeySource
	algs            map[jose.SignatureAlgorithm]struct{}
	maxAge          time.Duration
	maxFutureSkew   time.Duration
	allowMissingTyp bool
	maxJTI          int
	maxSize         int
	now             func() time.Time
}

// asymmetricAlgs are the algorithms a Config may allow. HMAC is excluded on
// purpose: a transmitter's public key is public, so an HMAC "signature" keyed
// with it proves nothing (the classic RS256→HS256 confusion).
var asymmetricAlgs = map[jose.SignatureAlgorithm]bool{
	jose.RS256: true, jose.RS384: true, jose.RS512: true,
	jose.PS256: true, jose.PS384: true, jose.PS512: true,
	jose.ES256: true, jose.ES384: true, jose.ES512: true,
	jose.EdDSA: true,
}

// NewVerifier validates cfg and returns a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("secevent: Config.Issuer is required")
	}
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("secevent: Config.Audiences needs at least one audience")
	}
	if cfg.Keys == nil {
		return nil, errors.New("secevent: Config.Keys is required")
	}
	v := &Verifier{
		issuer:          cfg.Issuer,
		audiences:       make(map[string]struct{}, len(cfg.Audiences)),
		keys:            cfg.Keys,
		algs:            make(map[jose.SignatureAlgorithm]struct{}),
		maxAge:          cfg.MaxAge,
		maxFutureSkew:   cfg.MaxFutureSkew,
		allowMissingTyp: cfg.AllowMissingTyp,
		maxJTI:          cfg.MaxJTILength,
		maxSize:         cfg.MaxTokenSize,
		now:             cfg.Now,
	}
	for _, a := range cfg.Audiences {
		if a == "" {
			return nil, errors.New("secevent: Config.Audiences contains an empty audience")
		}
		v.audiences[a] = struct{}{}
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []jose.SignatureAlgorithm{jose.RS256}
	}
	for _, a := range algs {
		if !asymmetricAlgs[a] {
			return nil, fmt.Errorf("secevent: algorithm %q is not allowed (only asymmetric signature algorithms; never none or HMAC)", a)
		}
		v.algs[a] = struct{}{}
	}
	if cfg.MaxAge < 0 || cfg.MaxFutureSkew < 0 || cfg.MaxJTILength < 0 || cfg.MaxTokenSize < 0 {
		return nil, errors.New("secevent: Config durations and limits must not be negative")
	}
	if v.maxAge == 0 {
		v.maxAge = DefaultMaxAge
	}
	if v.maxFutureSkew == 0 {
		v.maxFutureSkew = DefaultMaxFutureSkew
	}
	if v.maxJTI == 0 {
		v.maxJTI = DefaultMaxJTILength
	}
	if v.maxSize == 0 {
		v.maxSize = DefaultMaxTokenSize
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Issuer returns the configured issuer.
func (v *Verifier) Issuer() string { return v.issuer }

// b64 is base64url without padding, refusing non-canonical trailing bits
// (so one token has exactly one encoding).
var b64 = base64.RawURLEncoding.Strict()

// header is the parsed, vetted JOSE header.
type header struct {
	alg jose.SignatureAlgorithm
	kid string
}

// Verify verifies a compact-serialized SET and returns its parsed contents.
// Every failure is an *Error carrying an RFC 8935 code; failures for which
// IsTemporary is true are receiver-side (e.g. the JWKS could not be fetched).
//
// Order matters: structure and header are checked first, then the signature
// with a key looked up for the CONFIGURED issuer (never one named by the
// token), and only then are claims trusted and checked.
func (v *Verifier) Verify(ctx context.Context, token []byte) (*SET, error) {
	if len(token) > v.maxSize {
		return nil, newErr(CodeInvalidRequest, "token exceeds the size limit")
	}
	token = bytes.TrimSpace(token)
	if len(token) == 0 {
		return nil, newErr(CodeInvalidRequest, "empty token")
	}
	if token[0] == '{' {
		return nil, newErr(CodeInvalidRequest, "JWS JSON serialization is not accepted; compact serialization required")
	}
	parts := bytes.Split(token, []byte{'.'})
	switch len(parts) {
	case 3:
	case 5:
		return nil, newErr(CodeInvalidRequest, "encrypted tokens (JWE) are not accepted")
	default:
		return nil, newErr(CodeInvalidRequest, "token is not a compact JWS (three segments)")
	}
	for _, p := range parts {
		if len(p) == 0 {
			return nil, newErr(CodeInvalidRequest, "token has an empty segment")
		}
	}
	hdrJSON, err := decodeSegment(parts[0])
	if err != nil {
		return nil, wrapErr(CodeInvalidRequest, "header is not valid base64url", err)
	}
	if _, err := decodeSegment(parts[1]); err != nil {
		return nil, wrapErr(CodeInvalidRequest, "payload is not valid base64url", err)
	}
	if _, err := decodeSegment(parts[2]); err != nil {
		return nil, wrapErr(CodeInvalidRequest, "signature is not valid base64url", err)
	}
	h, verr := v.parseHeader(hdrJSON)
	if verr != nil {
		return nil, verr
	}

	key, verr := v.lookupKey(ctx, h)
	if verr != nil {
		return nil, verr
	}

	jws, err := jose.ParseSignedCompact(string(token), []jose.SignatureAlgorithm{h.alg})
	if err != nil {
		return nil, wrapErr(CodeInvalidRequest, "token is not a well-formed JWS", err)
	}
	payload, err := jws.Verify(key.Key)
	if err != nil {
		return nil, wrapErr(CodeAuthenticationFailed, "signature verification failed", err)
	}

	set, verr := v.parseClaims(payload)
	if verr != nil {
		return nil, verr
	}
	set.KeyID = h.kid
	set.Algorithm = string(h.alg)
	return set, nil
}

func decodeSegment(seg []byte) ([]byte, error) {
	out := make([]byte, b64.DecodedLen(len(seg)))
	n, err := b64.Decode(out, seg)
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

// knownHeaders are the header parameters we understand. Anything else is
// ignored unless listed in "crit".
func (v *Verifier) parseHeader(data []byte) (header, *Error) {
	m, err := decodeObject(data)
	if err != nil {
		return header{}, wrapErr(CodeInvalidRequest, "header is not a JSON object without duplicate members", err)
	}
	if _, ok := m["crit"]; ok {
		// RFC 7515 §4.1.11: a recipient MUST reject a JWS listing critical
		// extensions it does not understand. We understand none (not even
		// RFC 7797 "b64", which would change what the signature covers).
		return header{}, newErr(CodeInvalidRequest, "unsupported critical header parameter")
	}
	if _, ok := m["b64"]; ok {
		return header{}, newErr(CodeInvalidRequest, "header parameter b64 is not supported")
	}
	rawAlg, ok := m["alg"]
	if !ok {
		return header{}, newErr(CodeInvalidRequest, "header lacks alg")
	}
	alg, ok := rawString(rawAlg)
	if !ok || alg == "" {
		return header{}, newErr(CodeInvalidRequest, "header alg is not a string")
	}
	if strings.EqualFold(alg, "none") {
		return header{}, newErr(CodeAuthenticationFailed, "unsigned tokens (alg none) are not accepted")
	}
	if _, ok := v.algs[jose.SignatureAlgorithm(alg)]; !ok {
		return header{}, newErr(CodeInvalidKey, "signature algorithm not allowed")
	}
	if rawTyp, ok := m["typ"]; ok {
		typ, ok := rawString(rawTyp)
		if !ok || !isSETType(typ) {
			return header{}, newErr(CodeInvalidRequest, "header typ is not secevent+jwt")
		}
	} else if !v.allowMissingTyp {
		return header{}, newErr(CodeInvalidRequest, "header lacks typ")
	}
	rawKID, ok := m["kid"]
	if !ok {
		return header{}, newErr(CodeInvalidRequest, "header lacks kid")
	}
	kid, ok := rawString(rawKID)
	if !ok || kid == "" {
		return header{}, newErr(CodeInvalidRequest, "header kid is not a non-empty string")
	}
	if len(kid) > maxKIDLength {
		return header{}, newErr(CodeInvalidRequest, "header kid is too long")
	}
	return header{alg: jose.SignatureAlgorithm(alg), kid: kid}, nil
}

// isSETType accepts "secevent+jwt" case-insensitively, with or without the
// "application/" media type prefix (RFC 8417 §2.3, RFC 7515 §4.1.9).
func isSETType(typ string) bool {
	t := strings.ToLower(typ)
	t = strings.TrimPrefix(t, "application/")
	return t == "secevent+jwt"
}

// lookupKey fetches the key for (configured issuer, kid) and checks that it
// is acceptable for the header algorithm.
func (v *Verifier) lookupKey(ctx context.Context, h header) (*jose.JSONWebKey, *Error) {
	if err := ctx.Err(); err != nil {
		return nil, wrapErr(CodeInvalidKey, "verification cancelled", errors.Join(errContextDone, err))
	}
	key, err := v.keys.Key(ctx, v.issuer, h.kid)
	if err != nil {
		switch {
		case errors.Is(err, ErrUnknownKey):
			return nil, wrapErr(CodeInvalidKey, "unknown key id", err)
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			return nil, wrapErr(CodeInvalidKey, "key lookup cancelled", errors.Join(errContextDone, err))
		case errors.Is(err, ErrKeysUnavailable):
			return nil, wrapErr(CodeInvalidKey, "verification keys unavailable", err)
		default:
			return nil, wrapErr(CodeInvalidKey, "key lookup failed", err)
		}
	}
	if key == nil || key.Key == nil {
		return nil, wrapErr(CodeInvalidKey, "unknown key id", ErrUnknownKey)
	}
	if err := keyAcceptable(key, h.alg); err != nil {
		return nil, wrapErr(CodeInvalidKey, err.Error(), nil)
	}
	return key, nil
}

// keyAcceptable checks that key is public, meant for signatures, declares no
// conflicting algorithm, and has the type and size the algorithm requires.
// The returned error text is a safe description.
func keyAcceptable(key *jose.JSONWebKey, alg jose.SignatureAlgorithm) error {
	if !key.IsPublic() {
		return errors.New("key is not a public key")
	}
	if key.Use != "" && key.Use != "sig" {
		return errors.New("key is not a signature key")
	}
	if key.Algorithm != "" && key.Algorithm != string(alg) {
		return errors.New("key algorithm does not match token algorithm")
	}
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		k, ok := key.Key.(*rsa.PublicKey)
		if !ok {
			return errors.New("key type does not match token algorithm")
		}
		if k.N == nil || k.E < 3 {
			return errors.New("RSA key is malformed")
		}
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return errors.New("RSA key size outside 2048..8192 bits")
		}
	case jose.ES256, jose.ES384, jose.ES512:
		k, ok := key.Key.(*ecdsa.PublicKey)
		if !ok {
			return errors.New("key type does not match token algorithm")
		}
		want := map[jose.SignatureAlgorithm]elliptic.Curve{
			jose.ES256: elliptic.P256(), jose.ES384: elliptic.P384(), jose.ES512: elliptic.P521(),
		}[alg]
		if k.Curve != want {
			return errors.New("key curve does not match token algorithm")
		}
	case jose.EdDSA:
		if _, ok := key.Key.(ed25519.PublicKey); !ok {
			return errors.New("key type does not match token algorithm")
		}
	default:
		return errors.New("signature algorithm not allowed")
	}
	return nil
}
