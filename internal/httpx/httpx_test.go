package httpx

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// clientError is an API client's error shaped like crm.Error and
// kakaoapi.APIError: its own fields plus the embedded Retry.
type clientError struct {
	Retry
	cause error
}

func (e *clientError) Error() string {
	var b strings.Builder
	b.WriteString("client op:")
	e.WriteStatus(&b)
	b.WriteString(" failed")
	e.WriteSuffix(&b, e.cause)
	return b.String()
}

func TestRetryOf(t *testing.T) {
	for _, c := range []struct {
		name      string
		err       error
		retryable bool
		after     time.Duration
	}{
		{"retryable with a delay, wrapped", fmt.Errorf("step: %w", &clientError{Retry: Retry{Status: 429, CanRetry: true, Delay: 3 * time.Second}}), true, 3 * time.Second},
		{"retryable without a delay", &clientError{Retry: Retry{CanRetry: true}}, true, 0},
		{"permanent keeps no delay", &clientError{Retry: Retry{Status: 400, Delay: time.Second}}, false, 0},
		{"foreign error", errors.New("other"), false, 0},
		{"nil", nil, false, 0},
	} {
		retryable, after := RetryOf(c.err)
		if retryable != c.retryable || after != c.after || IsRetryable(c.err) != c.retryable {
			t.Errorf("%s: RetryOf = %v, %s; want %v, %s", c.name, retryable, after, c.retryable, c.after)
		}
	}
}

func TestErrorText(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&clientError{Retry: Retry{Status: 503, CanRetry: true, Delay: 2 * time.Second}}, "client op: HTTP 503 failed (retryable after 2s)"},
		{&clientError{Retry: Retry{CanRetry: true}, cause: errors.New("reset")}, "client op: failed: reset (retryable)"},
		{&clientError{Retry: Retry{Status: 404, Delay: time.Second}}, "client op: HTTP 404 failed (not retryable)"},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}
