package secevent

import (
	"errors"
	"fmt"
)

// Code is an RFC 8935 §2.3 error code. A receiver returns it to the SET
// transmitter in the "err" member of a 400 response body.
type Code string

// The RFC 8935 §2.3 error codes.
const (
	// CodeInvalidRequest: the body cannot be parsed as a SET or the SET is
	// not well formed (structure, header, claims, replay window).
	CodeInvalidRequest Code = "invalid_request"
	// CodeInvalidKey: the signing key or algorithm is unknown or unacceptable.
	CodeInvalidKey Code = "invalid_key"
	// CodeInvalidIssuer: "iss" is not the configured issuer.
	CodeInvalidIssuer Code = "invalid_issuer"
	// CodeInvalidAudience: "aud" does not name this receiver.
	CodeInvalidAudience Code = "invalid_audience"
	// CodeAuthenticationFailed: the signature does not verify (or the token is unsigned).
	CodeAuthenticationFailed Code = "authentication_failed"
	// CodeAccessDenied: the transmitter is not allowed to send to us. The
	// verifier itself never returns it; it exists for callers (e.g. an IP
	// allow-list in the HTTP layer).
	CodeAccessDenied Code = "access_denied"
)

var (
	// ErrUnknownKey is wrapped by KeySource errors when the key id is not
	// known for the issuer, even after any permitted refresh.
	ErrUnknownKey = errors.New("secevent: unknown key id")
	// ErrKeysUnavailable is wrapped by KeySource errors when the key set
	// could not be obtained (network failure, bad JWKS document, ...) and no
	// usable cached key exists. It is a receiver-side, temporary condition:
	// see IsTemporary.
	ErrKeysUnavailable = errors.New("secevent: verification keys unavailable")
)

// Error is every verification failure returned by Verifier.Verify.
//
// Description is safe to send back to the transmitter and to log: it never
// contains token contents (claim values such as e-mail addresses or user ids),
// only claim names and short reasons. Err may carry more detail for internal
// diagnosis; it also never embeds claim values produced by this package, but
// it may wrap errors from a KeySource (e.g. network errors naming the JWKS URL).
type Error struct {
	Code        Code
	Description string
	Err         error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("secevent: %s: %s: %v", e.Code, e.Description, e.Err)
	}
	return fmt.Sprintf("secevent: %s: %s", e.Code, e.Description)
}

func (e *Error) Unwrap() error { return e.Err }

// CodeOf reports the RFC 8935 code of err if err is (or wraps) an *Error.
func CodeOf(err error) (Code, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Code, true
	}
	return "", false
}

// IsTemporary reports whether a verification failure was caused by the
// receiver side (keys could not be fetched, context cancelled) rather than by
// the token. An HTTP receiver should answer such failures with 503 instead of
// 400 so that a transmitter that retries, retries.
func IsTemporary(err error) bool {
	return errors.Is(err, ErrKeysUnavailable) ||
		errors.Is(err, errContextDone)
}

// errContextDone marks failures caused by the caller's context.
var errContextDone = errors.New("secevent: context done")

func newErr(code Code, desc string) *Error { return &Error{Code: code, Description: desc} }

func wrapErr(code Code, desc string, err error) *Error {
	return &Error{Code: code, Description: desc, Err: err}
}
