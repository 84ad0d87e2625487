package activities

import (
	"encoding/json"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/internal/httpx"
	"github.com/setflow/setflow/profile"
)

// StepInput is what every policy step activity receives, so that a policy can
// name any step — built-in or a service's own activity — without code changes.
type StepInput struct {
	// IdempotencyKey is derived from the event key and the step: stable across
	// retries, worker crashes and replays. Side effects carry it.
	IdempotencyKey string            `json:"idempotency_key"`
	EventKey       string            `json:"event_key"`
	Event          event.Event       `json:"event"`
	Params         map[string]string `json:"params,omitempty"`
}

// Step outcomes, as written to the audit trail.
const (
	OutcomeDone       = "done"
	OutcomeSkipped    = "skipped"    // nothing to do (not configured, no recipient, ...)
	OutcomeSuperseded = "superseded" // a newer event already decided this
	OutcomeDuplicate  = "duplicate"  // already done by an earlier run of the same key
	// OutcomeNoAccount: the identity mapping knows no service account of the
	// user; nothing of the service's to change, and not an error.
	OutcomeNoAccount = "no_account"
)

// StepResult is what a step reports for the audit trail. Detail must not carry
// PII: counts, flags and reasons only.
type StepResult struct {
	Outcome string         `json:"outcome"`
	Detail  map[string]any `json:"detail,omitempty"`
}

func done(detail map[string]any) StepResult { return StepResult{Outcome: OutcomeDone, Detail: detail} }
func skipped(reason string) StepResult {
	return StepResult{Outcome: OutcomeSkipped, Detail: map[string]any{"reason": reason}}
}

func appliedOr(applied bool, superseded string) StepResult {
	if applied {
		return done(nil)
	}
	return StepResult{Outcome: OutcomeSuperseded, Detail: map[string]any{"reason": superseded}}
}

func (in StepInput) key() profile.Key {
	return profile.Key{Issuer: in.Event.Subject.Issuer, UserID: in.Event.Subject.UserID}
}

// requireSubject refuses, without retry, a user step for an event without a user.
func (in StepInput) requireSubject(step string) error {
	if in.Event.Subject.UserID == "" {
		return temporal.NewNonRetryableApplicationError(step+": the event names no user", "MissingSubject", nil)
	}
	return nil
}

// eventTime is when the event happened; zero falls back to now.
func (in StepInput) eventTime() time.Time {
	if in.Event.Time.IsZero() {
		return time.Now()
	}
	return in.Event.Time
}

// payload decodes the event's payload object.
func (in StepInput) payload() map[string]any {
	var m map[string]any
	if len(in.Event.Payload) > 0 {
		_ = json.Unmarshal(in.Event.Payload, &m)
	}
	return m
}

// Error types setflow's activities return; the workflow and operators read them.
const (
	ErrTypePermanent   = "Permanent"
	ErrTypeRateLimited = "RateLimited"
	ErrTypeUnavailable = "Unavailable"
)

// classify turns a back end's error into a Temporal error: non-retryable with a
// clear reason when retrying cannot help, else retryable, after retryAfter
// when the far end asked for it (429 Retry-After).
func classify(what string, err error, retryable bool, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	if !retryable {
		return temporal.NewApplicationErrorWithOptions(msg, ErrTypePermanent, temporal.ApplicationErrorOptions{NonRetryable: true})
	}
	// A far end may ask for hours (a daily quota); past this cap the retry
	// schedule takes over and the step parks rather than sleeping for a day.
	const maxRetryAfter = 10 * time.Minute
	if retryAfter > maxRetryAfter {
		retryAfter = maxRetryAfter
	}
	if retryAfter > 0 {
		return temporal.NewApplicationErrorWithOptions(msg, ErrTypeRateLimited, temporal.ApplicationErrorOptions{NextRetryDelay: retryAfter})
	}
	return temporal.NewApplicationError(msg, ErrTypeUnavailable)
}

// adapterError classifies an API client's failure (crm, kakaoapi, the
// service webhook) by what the error says about retrying
// (httpx.RetryableError); any other error is permanent.
func adapterError(what string, err error) error {
	retryable, after := httpx.RetryOf(err)
	return classify(what, err, retryable, after)
}
