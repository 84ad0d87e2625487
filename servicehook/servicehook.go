// Package servicehook is what a service needs to receive setflow's
// notify_service step: the document it is sent and the verification of its
// signature. The document is POSTed as JSON and signed like setflow's CRM
// webhook (crm.Webhook):
//
//	X-Setflow-Timestamp: <unix seconds>
//	X-Setflow-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
//	Idempotency-Key:     <the step's idempotency key, the same on every retry>
//
// A receiver verifies the signature over the raw body (Verify, or Handler),
// rejects timestamps more than five minutes off (replays), deduplicates on
// the idempotency key, and answers 2xx (or 409 for a key it has already
// processed). 408, 423, 425, 429 and 5xx are retried (Retry-After honoured)
// for the step's retry window; any other status parks the step for an
// operator. setflow sends a user's documents one at a time, each with the
// state as it is when sent; still, a request that timed out may arrive after
// its retry, and a key may arrive more than once: apply a document only if
// its state.version is newer than what you hold.
package servicehook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/statusapi"
)

// TypeUserEvent is the document type of notify_service.
const TypeUserEvent = "setflow.user_event"

// Headers, as crm.Webhook sends them.
const (
	HeaderIdempotencyKey = crm.HeaderIdempotencyKey
	HeaderTimestamp      = crm.HeaderTimestamp
	HeaderSignature      = crm.HeaderSignature
)

// Document is the JSON body of a notify_service delivery.
type Document struct {
	Type           string    `json:"type"`
	IdempotencyKey string    `json:"idempotency_key"`
	OccurredAt     time.Time `json:"occurred_at"` // when this attempt was sent
	Event          Event     `json:"event"`
	// AccountIDs are the service's accounts of the user (identity mapping);
	// empty when the service has none.
	AccountIDs []string `json:"account_ids"`
	// State is the user's state after the event (and any event applied
	// since): the status API's answer. Absent for events about no user.
	State *statusapi.Subject `json:"state,omitempty"`
}

// Event is the normalised event.
type Event struct {
	Key         string          `json:"key"`
	Type        string          `json:"type"` // full type URI, or kakao:<webhook>
	Name        string          `json:"name"` // short name, e.g. account-disabled
	Category    string          `json:"category,omitempty"`
	Issuer      string          `json:"issuer,omitempty"`
	KakaoUserID string          `json:"kakao_user_id,omitempty"`
	Time        time.Time       `json:"time"` // when it happened (clamped)
	Payload     json.RawMessage `json:"payload,omitempty"`
}

// Verification errors (crm's).
var (
	ErrNoSignature        = crm.ErrNoSignature
	ErrBadTimestamp       = crm.ErrBadTimestamp
	ErrTimestampTolerance = crm.ErrTimestampTolerance
	ErrSignatureMismatch  = crm.ErrSignatureMismatch
	ErrNotADocument       = errors.New("servicehook: body is not a notify_service document")
)

// MaxBody bounds the body Verify reads.
const MaxBody = 1 << 20

// VerifyBody checks the signature of a raw body and decodes it.
func VerifyBody(secret []byte, signature, timestamp string, body []byte) (Document, error) {
	var d Document
	if err := crm.Verify(secret, signature, timestamp, body, crm.DefaultTolerance); err != nil {
		return d, err
	}
	if err := json.Unmarshal(body, &d); err != nil || d.Type == "" || d.IdempotencyKey == "" {
		return Document{}, ErrNotADocument
	}
	return d, nil
}

// Verify reads and checks a request.
func Verify(secret []byte, r *http.Request) (Document, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return Document{}, fmt.Errorf("servicehook: read body: %w", err)
	}
	if len(body) > MaxBody {
		return Document{}, ErrNotADocument
	}
	return VerifyBody(secret, r.Header.Get(HeaderSignature), r.Header.Get(HeaderTimestamp), body)
}

// Handler verifies each delivery and hands it to fn: 401 for a bad
// signature or timestamp, 400 for a body that is not a document, 503 when
// fn fails (setflow retries), 204 when it succeeds. fn deduplicates on
// d.IdempotencyKey.
func Handler(secret []byte, fn func(r *http.Request, d Document) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		d, err := Verify(secret, r)
		switch {
		case errors.Is(err, ErrNotADocument):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, "signature not valid", http.StatusUnauthorized)
			return
		}
		if err := fn(r, d); err != nil {
			http.Error(w, "not processed, retry later", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
