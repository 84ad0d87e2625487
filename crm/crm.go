// Package crm keeps a service's CRM in step with what Kakao tells setflow
// about a user: create or update the contact, delete it (GDPR-style), switch
// marketing consent on or off, and blank the properties whose consent was
// withdrawn.
//
// Two adapters implement Client: HubSpot, for a HubSpot-style contacts API,
// and Webhook, which POSTs a signed JSON document to a URL of the service's
// choosing (see Verify for the receiving side).
//
// Every failure is an *Error that says whether trying again can help and how
// long the server asked to wait, so a Temporal activity can map it to a
// retryable or non-retryable application error (httpx.RetryOf).
// Error texts never carry the contact's personal data, its external id (the
// Kakao user id) or the credentials, nor does the printed or logged form of a
// Contact: callers that must name the user use a keyed hash of the id.
// The adapters do not rate-limit or retry by themselves: the caller owns that.
package crm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/setflow/setflow/internal/httpx"
)

// Contact is the CRM view of one Kakao user.
type Contact struct {
	ExternalID string // the Kakao user id; the CRM's unique key for the contact
	Email      string
	Nickname   string
	Phone      string
	// Properties are extra CRM properties, by the CRM's property name.
	Properties map[string]string
}

// Client is what a reaction needs from a CRM. Each call carries an
// idempotency key that is derived from the event and the step and is the same
// on every retry; it must not be empty. Every operation is safe to repeat.
type Client interface {
	// Upsert creates the contact or updates the fields that are non-empty.
	Upsert(ctx context.Context, idempotencyKey string, c Contact) error
	// Delete removes the contact for good; a contact that is already gone is
	// a success.
	Delete(ctx context.Context, idempotencyKey, externalID string) error
	// SetMarketing records marketing consent (e.g. Kakao Talk Channel added or
	// blocked).
	SetMarketing(ctx context.Context, idempotencyKey, externalID string, subscribed bool) error
	// DeleteFields blanks the named fields after consent was withdrawn. Names
	// are FieldEmail, FieldNickname, FieldPhone or a CRM property name.
	DeleteFields(ctx context.Context, idempotencyKey, externalID string, fields []string) error
}

// Field names accepted by DeleteFields for the typed Contact fields; any other
// name is taken as a CRM property name.
const (
	FieldEmail    = "email"
	FieldNickname = "nickname"
	FieldPhone    = "phone"
)

// String hides the user id and the personal data, so a Contact can be
// printed or logged.
func (c Contact) String() string {
	return fmt.Sprintf("crm.Contact{ExternalID: %s, Email: %s, Nickname: %s, Phone: %s, Properties: %d}",
		mask(c.ExternalID), mask(c.Email), mask(c.Nickname), mask(c.Phone), len(c.Properties))
}

// GoString keeps %#v from printing personal data.
func (c Contact) GoString() string { return c.String() }

// LogValue keeps slog handlers (including JSON ones) from logging personal data.
func (c Contact) LogValue() slog.Value {
	return slog.GroupValue(slog.Bool("has_external_id", c.ExternalID != ""),
		slog.Bool("has_email", c.Email != ""),
		slog.Bool("has_nickname", c.Nickname != ""),
		slog.Bool("has_phone", c.Phone != ""),
		slog.Int("properties", len(c.Properties)))
}

func mask(s string) string {
	if s == "" {
		return `""`
	}
	return "[redacted]"
}

// ErrRateLimited matches (errors.Is) an *Error for an HTTP 429 answer.
var ErrRateLimited = errors.New("crm: rate limited")

// Adapter names used in errors: Error prefixes them with "crm". A
// PostSigned caller's adapter is printed alone: its errors are not the CRM's.
const (
	adapterHubSpot = "hubspot"
	adapterWebhook = "webhook"
)

// Error is every failure of this package: an error answer (Status set), a
// transport failure (Err set, Status 0) or a call refused locally (both
// zero). Reason is safe to log: personal data and credentials are removed.
// Its retry half (httpx.Retry) makes it an httpx.RetryableError.
type Error struct {
	Adapter string // "hubspot", "webhook" or a PostSigned caller's name
	Op      string // "upsert", "delete", "marketing" or "delete_fields"
	Reason  string
	Err     error
	httpx.Retry
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Adapter == adapterHubSpot || e.Adapter == adapterWebhook {
		b.WriteString("crm ")
	}
	fmt.Fprintf(&b, "%s %s:", e.Adapter, e.Op)
	e.WriteStatus(&b)
	if e.Reason != "" {
		b.WriteString(" ")
		b.WriteString(e.Reason)
	}
	e.WriteSuffix(&b, e.Err)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRateLimited) hold for a 429.
func (e *Error) Is(target error) bool {
	return target == ErrRateLimited && e.Status == http.StatusTooManyRequests
}

// classify builds the error for a non-success status, shared by both
// adapters:
//
//	408, 423, 425, 429, 5xx  retryable (Retry-After honoured)
//	other statuses           not retryable
func classify(adapter, op string, status int, h http.Header, reason string, now time.Time) *Error {
	e := &Error{Adapter: adapter, Op: op, Reason: reason, Retry: httpx.Retry{Status: status}}
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusLocked,
		status == http.StatusTooEarly, status == http.StatusTooManyRequests, status >= 500:
		e.CanRetry = true
		e.Delay, _ = parseRetryAfter(h.Get("Retry-After"), now)
	}
	if e.Reason == "" {
		e.Reason = http.StatusText(status)
	}
	return e
}

// transportError wraps a failure to get a complete answer. Those are worth
// retrying, except when the caller cancelled: then nobody waits for a result.
// The *url.Error layer is dropped: its text repeats the URL, which for a
// webhook may carry a token in its query and for HubSpot names the contact
// in its path. Known values (the contact's id and data, credentials) that
// the remaining text still quotes — a transport that repeats the URL — are
// masked.
func transportError(adapter, op string, err error, known ...string) *Error {
	err = withoutURL(err)
	return &Error{Adapter: adapter, Op: op, Reason: "request failed",
		Retry: httpx.Retry{CanRetry: !errors.Is(err, context.Canceled)}, Err: scrub(err, known)}
}

// withoutURL drops the *url.Error layer net/http puts around its errors.
func withoutURL(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// scrubbed is an error whose text was sanitized; it unwraps to the original,
// so errors.Is and errors.As still see the cause.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// scrub masks known values in err's text, if it quotes any.
func scrub(err error, known []string) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	masked := text
	for _, k := range known {
		if len([]rune(strings.TrimSpace(k))) >= 2 {
			masked = strings.ReplaceAll(masked, k, "[redacted]")
		}
	}
	if masked == text {
		return err
	}
	return &scrubbed{msg: masked, err: err}
}

// invalid is a call refused before sending: it can never succeed.
func invalid(adapter, op, reason string) *Error {
	return &Error{Adapter: adapter, Op: op, Reason: reason}
}

// parseRetryAfter reads both forms of RFC 9110 Retry-After: delay-seconds and
// an HTTP-date. A date in the past means "now" (0).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	return httpx.ParseRetryAfter(v, now)
}

var (
	emailRE = regexp.MustCompile(`[^\s@"'<>\[\]{}(),;:]+@[^\s@"'<>\[\]{}(),;:]+\.[A-Za-z]{2,}`)
	// phoneRE catches phone-like digit runs (7+ digits, optional +, spaces,
	// dashes, dots or parentheses between them).
	phoneRE = regexp.MustCompile(`\+?\d(?:[\s\-.()]*\d){6,}`)
)

// sanitize makes text from a server safe to keep in an error: the values we
// sent (personal data, credentials) and anything email- or phone-like are
// replaced, control characters removed, length capped at 300 characters.
func sanitize(s string, known ...string) string {
	for _, k := range known {
		// One-character values would shred the message; they identify no one.
		if len([]rune(strings.TrimSpace(k))) >= 2 {
			s = strings.ReplaceAll(s, k, "[redacted]")
		}
	}
	s = emailRE.ReplaceAllString(s, "[redacted]")
	s = phoneRE.ReplaceAllString(s, "[redacted]")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "…"
	}
	return s
}

// redirectedAway reports whether the client followed a redirect that changed
// the method (301/302/303 turn a POST into a bodiless GET): the answer then
// is not about our request, and a 2xx must not count as success.
func redirectedAway(resp *http.Response, method string) bool {
	return resp.Request != nil && resp.Request.Method != method
}

// timeoutOr returns d, or def when d is not positive.
func timeoutOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
