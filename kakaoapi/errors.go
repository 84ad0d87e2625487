package kakaoapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/setflow/setflow/internal/httpx"
)

// Kakao error codes this package acts on (developers.kakao.com, REST API
// error codes and Kakao Login error codes).
const (
	CodeInternal           = -1    // internal error while processing; Kakao says "retry"
	CodeInvalidArgument    = -2    // missing or malformed parameter
	CodeNotEnabled         = -3    // feature or admin-key API category not enabled for the app
	CodeMaintenance        = -7    // service under maintenance or internal problem
	CodeAPITerminated      = -9    // the API has been retired
	CodeQuotaExceeded      = -10   // allowed request quota exceeded
	CodeNotLinked          = -101  // the user is not linked to the app
	CodeInvalidAppKey      = -401  // invalid app key or token
	CodePlatformTimeout    = -603  // timeout inside Kakao's platform
	CodeServiceUnavailable = -9798 // service under maintenance (HTTP 503)
)

// ErrNotLinked matches (errors.Is) an *APIError whose code is -101: the user
// is not linked to the app any more, so logging them out or unlinking them is
// already done.
var ErrNotLinked = errors.New("kakaoapi: user is not linked to the app")

// retryableCodes are answered with HTTP 400 yet describe conditions that pass:
// an internal error, maintenance, an exhausted quota, a platform timeout.
// -9 (API retired) and -11 (paid quota cap) are not here: they need a person.
var retryableCodes = map[int]bool{
	CodeInternal:           true,
	CodeMaintenance:        true,
	CodeQuotaExceeded:      true,
	CodePlatformTimeout:    true,
	CodeServiceUnavailable: true,
}

// APIError is every failure of this package: an error answer from Kakao
// (Status ≥ 300), a transport failure (Err set, Status 0 or the status whose
// body could not be read), or a request refused locally (Status 0, Err nil).
// Its text never contains the admin key or profile data. Its retry half
// (httpx.Retry) makes it an httpx.RetryableError.
type APIError struct {
	Op   string // "logout", "unlink" or "profile"
	Code int    // Kakao's error code, 0 when the body had none
	Msg  string // Kakao's message or ours, sanitized and shortened
	Err  error  // underlying transport error, if any
	httpx.Retry
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("kakaoapi ")
	b.WriteString(e.Op)
	b.WriteString(":")
	e.WriteStatus(&b)
	if e.Code != 0 {
		fmt.Fprintf(&b, " code %d", e.Code)
	}
	if e.Msg != "" {
		b.WriteString(" ")
		b.WriteString(e.Msg)
	}
	e.WriteSuffix(&b, e.Err)
	return b.String()
}

func (e *APIError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotLinked) hold for code -101.
func (e *APIError) Is(target error) bool {
	return target == ErrNotLinked && e.Code == CodeNotLinked
}

// classify turns a non-2xx answer into an *APIError.
//
//	429, 408, 5xx                       retryable (Retry-After honoured)
//	400 with -1, -7, -10, -603          retryable (Retry-After honoured)
//	-101                                ErrNotLinked, not retryable
//	anything else (400/401/403/404...)  not retryable
func classify(op string, status int, h http.Header, body []byte, adminKey string, now time.Time) *APIError {
	e := &APIError{Op: op, Retry: httpx.Retry{Status: status}}
	var kb struct {
		Code        *int   `json:"code"`
		Msg         string `json:"msg"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &kb) == nil {
		if kb.Code != nil {
			e.Code = *kb.Code
		}
		msg := kb.Msg
		if msg == "" {
			msg = strings.TrimSpace(kb.Error + " " + kb.Description)
		}
		e.Msg = sanitize(msg, adminKey)
	}
	if e.Msg == "" {
		e.Msg = http.StatusText(status)
	}
	switch {
	case e.Code == CodeNotLinked:
		e.CanRetry = false
	case status == http.StatusTooManyRequests, status == http.StatusRequestTimeout, status >= 500:
		e.CanRetry = true
	case retryableCodes[e.Code]:
		e.CanRetry = true
	}
	if e.CanRetry {
		e.Delay, _ = parseRetryAfter(h.Get("Retry-After"), now)
	}
	return e
}

// parseRetryAfter reads both forms of RFC 9110 Retry-After: delay-seconds and
// an HTTP-date. A date in the past means "now" (0).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	return httpx.ParseRetryAfter(v, now)
}

var emailRE = regexp.MustCompile(`[^\s@"'<>]+@[^\s@"'<>]+\.[A-Za-z]{2,}`)

// sanitize makes a server message safe to put in an error: no admin key (a
// misbehaving proxy may echo headers), no email-like text, no control
// characters, at most 200 characters.
func sanitize(s, adminKey string) string {
	if adminKey != "" {
		s = strings.ReplaceAll(s, adminKey, "[redacted]")
	}
	s = emailRE.ReplaceAllString(s, "[redacted]")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}
