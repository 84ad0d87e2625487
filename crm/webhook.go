package crm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/setflow/setflow/internal/httpx"
)

// Document types sent by Webhook.
const (
	TypeUpsert        = "contact.upsert"
	TypeDelete        = "contact.delete"
	TypeMarketing     = "contact.marketing"
	TypeFieldsDeleted = "contact.fields_deleted"
)

// Headers sent by Webhook.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderTimestamp      = "X-Setflow-Timestamp"
	HeaderSignature      = "X-Setflow-Signature"
)

// DefaultTolerance is how far X-Setflow-Timestamp may be from the receiver's
// clock, as in Stripe's scheme.
const DefaultTolerance = 5 * time.Minute

// Document is the JSON body Webhook POSTs.
type Document struct {
	Type           string          `json:"type"`
	IdempotencyKey string          `json:"idempotency_key"`
	OccurredAt     time.Time       `json:"occurred_at"` // when this attempt was sent
	Contact        DocumentContact `json:"contact"`
}

// DocumentContact carries what the document type needs: the typed fields and
// properties for contact.upsert, marketing_subscribed for contact.marketing,
// deleted_fields for contact.fields_deleted, only external_id for
// contact.delete.
type DocumentContact struct {
	ExternalID          string            `json:"external_id"`
	Email               string            `json:"email,omitempty"`
	Nickname            string            `json:"nickname,omitempty"`
	Phone               string            `json:"phone,omitempty"`
	Properties          map[string]string `json:"properties,omitempty"`
	MarketingSubscribed *bool             `json:"marketing_subscribed,omitempty"`
	DeletedFields       []string          `json:"deleted_fields,omitempty"`
}

// Webhook POSTs a signed JSON Document to a URL the service runs. It signs
// like Stripe:
//
//	X-Setflow-Timestamp: <unix seconds>
//	X-Setflow-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//	Idempotency-Key:     <the call's idempotency key, same on every retry>
//
// The receiver verifies with Verify, rejects stale timestamps (replay), and
// deduplicates on Idempotency-Key (also in the body as idempotency_key),
// answering 409 or 2xx to a key it has already processed.
//
// Answers: 2xx and 409 are success; 408, 423, 425, 429 and 5xx are retryable
// (Retry-After honoured); any other status, including 404 (possibly a wrong
// URL), is permanent.
type Webhook struct {
	URL     string
	Secret  []byte        // shared HMAC key
	HTTP    *http.Client  // http.DefaultClient when nil
	Timeout time.Duration // per call, DefaultTimeout when zero
	// Now is the clock for the timestamp; time.Now when nil (for tests).
	Now func() time.Time
}

var _ Client = (*Webhook)(nil)

// Upsert sends contact.upsert with the contact's fields.
func (w *Webhook) Upsert(ctx context.Context, idempotencyKey string, c Contact) error {
	dc := DocumentContact{ExternalID: c.ExternalID, Email: c.Email, Nickname: c.Nickname, Phone: c.Phone, Properties: c.Properties}
	pii := []string{c.Email, c.Nickname, c.Phone}
	for _, v := range c.Properties {
		pii = append(pii, v)
	}
	return w.send(ctx, "upsert", TypeUpsert, idempotencyKey, dc, pii)
}

// Delete sends contact.delete.
func (w *Webhook) Delete(ctx context.Context, idempotencyKey, externalID string) error {
	return w.send(ctx, "delete", TypeDelete, idempotencyKey, DocumentContact{ExternalID: externalID}, nil)
}

// SetMarketing sends contact.marketing with marketing_subscribed.
func (w *Webhook) SetMarketing(ctx context.Context, idempotencyKey, externalID string, subscribed bool) error {
	dc := DocumentContact{ExternalID: externalID, MarketingSubscribed: &subscribed}
	return w.send(ctx, "marketing", TypeMarketing, idempotencyKey, dc, nil)
}

// DeleteFields sends contact.fields_deleted naming the fields to blank; with
// no fields there is nothing to send.
func (w *Webhook) DeleteFields(ctx context.Context, idempotencyKey, externalID string, fields []string) error {
	if len(fields) == 0 {
		return nil
	}
	dc := DocumentContact{ExternalID: externalID, DeletedFields: fields}
	return w.send(ctx, "delete_fields", TypeFieldsDeleted, idempotencyKey, dc, nil)
}

func (w *Webhook) send(ctx context.Context, op, typ, key string, dc DocumentContact, pii []string) error {
	if e := w.refuse(adapterWebhook, op, key); e != nil {
		return e
	}
	if dc.ExternalID == "" {
		return invalid(adapterWebhook, op, "empty external id")
	}
	t := w.now()
	body, err := json.Marshal(Document{Type: typ, IdempotencyKey: key, OccurredAt: t.UTC(), Contact: dc})
	if err != nil {
		return invalid(adapterWebhook, op, "cannot encode document")
	}
	return w.post(ctx, adapterWebhook, op, key, body, t, append(pii, dc.ExternalID))
}

func (w *Webhook) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// PostSigned POSTs a JSON document the caller built, signed and answered
// exactly like Webhook's own documents (headers, Idempotency-Key, answer
// classification into *Error), for other signed deliveries to a service —
// the notify_service step. sentAt must be the time the body says it was sent
// (its clock is also the signature's timestamp); pii lists values no error
// text may quote. adapter names the caller in errors.
func (w *Webhook) PostSigned(ctx context.Context, adapter, op, key string, body []byte, sentAt time.Time, pii []string) error {
	if e := w.refuse(adapter, op, key); e != nil {
		return e
	}
	return w.post(ctx, adapter, op, key, body, sentAt, pii)
}

// refuse is the error for a call that cannot be sent: no URL, no secret or
// no idempotency key; nil when it can.
func (w *Webhook) refuse(adapter, op, key string) error {
	switch {
	case w.URL == "":
		return invalid(adapter, op, "no URL configured")
	case len(w.Secret) == 0:
		return invalid(adapter, op, "no signing secret configured")
	case key == "":
		return invalid(adapter, op, "empty idempotency key")
	}
	return nil
}

// Clock is the time a document about to be sent should carry (Now, or
// time.Now), for PostSigned's callers.
func (w *Webhook) Clock() time.Time { return w.now() }

func (w *Webhook) post(ctx context.Context, adapter, op, key string, body []byte, t time.Time, pii []string) error {
	ts := strconv.FormatInt(t.Unix(), 10)
	// No error text may quote what was sent, the secret or a token in the URL.
	pii = append(pii, string(w.Secret))
	if u, err := url.Parse(w.URL); err == nil {
		pii = append(pii, u.RawQuery)
		for _, vs := range u.Query() {
			pii = append(pii, vs...)
		}
		if pw, ok := u.User.Password(); ok {
			pii = append(pii, pw)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, timeoutOr(w.Timeout, DefaultTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return &Error{Adapter: adapter, Op: op, Reason: "invalid URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderIdempotencyKey, key)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sign(w.Secret, ts, body))
	resp, err := httpClient(w.HTTP).Do(req)
	if err != nil {
		return transportError(adapter, op, err, pii...)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		e := transportError(adapter, op, err, pii...)
		e.Status = resp.StatusCode
		return e
	}
	if redirectedAway(resp, http.MethodPost) {
		return &Error{Adapter: adapter, Op: op, Retry: httpx.Retry{Status: resp.StatusCode},
			Reason: "endpoint redirected the POST to a " + resp.Request.Method + "; configure the final URL"}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 || resp.StatusCode == http.StatusConflict {
		return nil
	}
	reason := receiverReason(resp.Header.Get("Content-Type"), rb, pii)
	return classify(adapter, op, resp.StatusCode, resp.Header, reason, time.Now())
}

// receiverReason takes the receiver's explanation from a JSON body
// ({"error"|"message"|"reason": ...}) or a short text body, sanitized.
func receiverReason(contentType string, body []byte, pii []string) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		var m struct{ Error, Message, Reason string }
		if json.Unmarshal(body, &m) == nil {
			return sanitize(strings.TrimSpace(m.Error+" "+m.Message+" "+m.Reason), pii...)
		}
	case mt == "text/plain":
		return sanitize(string(body), pii...)
	}
	return ""
}

// Sign returns the X-Setflow-Signature value for a body sent at timestamp
// (unix seconds): "v1=" + hex HMAC-SHA256 of "<timestamp>.<body>".
func Sign(secret []byte, timestamp int64, body []byte) string {
	return sign(secret, strconv.FormatInt(timestamp, 10), body)
}

func sign(secret []byte, ts string, body []byte) string {
	return "v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verification errors returned by Verify.
var (
	ErrNoSignature        = errors.New("crm: no v1 signature in header")
	ErrBadTimestamp       = errors.New("crm: timestamp is not unix seconds")
	ErrTimestampTolerance = errors.New("crm: timestamp outside tolerance")
	ErrSignatureMismatch  = errors.New("crm: signature does not match")
)

// Verify checks a received document, for receivers: header is the
// X-Setflow-Signature value, timestamp the X-Setflow-Timestamp value, body the
// raw request body exactly as received. The timestamp must be within tolerance
// of the local clock in either direction (DefaultTolerance when tolerance is
// not positive), which bounds replays; the receiver still deduplicates on the
// idempotency key. The header may list several comma-separated v1= values
// (e.g. during a secret rotation); one match suffices. Comparison is
// constant-time.
func Verify(secret []byte, header, timestamp string, body []byte, tolerance time.Duration) error {
	return verifyAt(time.Now(), secret, header, timestamp, body, tolerance)
}

func verifyAt(now time.Time, secret []byte, header, timestamp string, body []byte, tolerance time.Duration) error {
	if len(secret) == 0 {
		return errors.New("crm: empty verification secret")
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || ts <= 0 || strconv.FormatInt(ts, 10) != timestamp {
		return ErrBadTimestamp
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w (%s)", ErrTimestampTolerance, d.Round(time.Second))
	}
	want := mac(secret, timestamp, body)
	found := false
	for _, part := range strings.Split(header, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(part), "v1=")
		if !ok {
			continue // other schemes, for forward compatibility
		}
		found = true
		if got, err := hex.DecodeString(v); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	if !found {
		return ErrNoSignature
	}
	return ErrSignatureMismatch
}

// String hides the secret.
func (w Webhook) String() string {
	return fmt.Sprintf("crm.Webhook{URL: %q, Secret: %s}", shownURL(w.URL), mask(string(w.Secret)))
}

// shownURL is a URL as it may be printed: no password, no query (either may
// carry a token).
func shownURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	u.Fragment = ""
	return u.String()
}

// GoString keeps %#v from printing the secret.
func (w Webhook) GoString() string { return w.String() }

// LogValue keeps slog handlers from logging the secret.
func (w Webhook) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", shownURL(w.URL)), slog.Bool("has_secret", len(w.Secret) > 0))
}
