// Package httpx holds the small HTTP helpers setflow's API clients share.
package httpx

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3). A date in the past means "now"; anything unparsable or
// negative is ignored.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		const maxSecs = int64(1<<63-1) / int64(time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// RetryableError is an API client's failure that says whether the same call
// may succeed later and how long the server asked to wait: crm.Error and
// kakaoapi.APIError, both through Retry. Callers classify through RetryOf.
type RetryableError interface {
	error
	Retryable() bool
	// RetryAfter is the delay the server asked for (Retry-After); 0 when
	// none was named or the error is not retryable.
	RetryAfter() time.Duration
	// HTTPStatus is the answer's status, 0 when no answer arrived.
	HTTPStatus() int
}

// Retry is the shared implementation of RetryableError's methods, embedded
// in the clients' error types.
type Retry struct {
	Status   int           // HTTP status, 0 when no answer arrived
	CanRetry bool          // whether the same call may succeed later
	Delay    time.Duration // delay the server asked for (Retry-After), 0 if none
}

// Retryable reports whether the same call may succeed later.
func (r Retry) Retryable() bool { return r.CanRetry }

// RetryAfter is the delay the server asked for, 0 unless retryable.
func (r Retry) RetryAfter() time.Duration {
	if !r.CanRetry {
		return 0
	}
	return r.Delay
}

// HTTPStatus is the answer's status, 0 when no answer arrived.
func (r Retry) HTTPStatus() int { return r.Status }

// WriteStatus writes " HTTP <status>" when an answer arrived.
func (r Retry) WriteStatus(b *strings.Builder) {
	if r.Status != 0 {
		fmt.Fprintf(b, " HTTP %d", r.Status)
	}
}

// WriteSuffix ends an error message with the wrapped cause, if any, and how
// a caller may retry.
func (r Retry) WriteSuffix(b *strings.Builder, cause error) {
	if cause != nil {
		b.WriteString(": ")
		b.WriteString(cause.Error())
	}
	switch after := r.RetryAfter(); {
	case r.CanRetry && after > 0:
		fmt.Fprintf(b, " (retryable after %s)", after)
	case r.CanRetry:
		b.WriteString(" (retryable)")
	default:
		b.WriteString(" (not retryable)")
	}
}

// RetryOf reports what the first RetryableError in err's chain says about
// trying again. Any other error is not retryable.
func RetryOf(err error) (retryable bool, after time.Duration) {
	var re RetryableError
	if errors.As(err, &re) {
		return re.Retryable(), re.RetryAfter()
	}
	return false, 0
}

// IsRetryable reports whether err's chain holds a RetryableError that may
// succeed if the same call is made again.
func IsRetryable(err error) bool {
	retryable, _ := RetryOf(err)
	return retryable
}
