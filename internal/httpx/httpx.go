// Package httpx holds the small HTTP helpers setflow's API clients share.
package httpx

import (
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

// RetrySuffix ends an error message with how a caller may retry it.
func RetrySuffix(b *strings.Builder, retryable bool, after time.Duration) {
	switch {
	case retryable && after > 0:
		fmt.Fprintf(b, " (retryable after %s)", after)
	case retryable:
		b.WriteString(" (retryable)")
	default:
		b.WriteString(" (not retryable)")
	}
}
