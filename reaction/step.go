package reaction

import (
	"encoding/json"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/event"
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

// StepResult is what a step reports for the audit trail. Detail must not carry
// PII: counts, flags and reasons only.
type StepResult struct {
	Outcome string         `json:"outcome"`
	Detail  map[string]any `json:"detail,omitempty"`
}

// RequireSubject refuses, without retry, a user step for an event without a user.
func (in StepInput) RequireSubject(step string) error {
	if in.Event.Subject.UserID == "" {
		return temporal.NewNonRetryableApplicationError(step+": the event names no user", ErrTypeMissingSubject, nil)
	}
	return nil
}

// EventTime is when the event happened; zero falls back to now.
func (in StepInput) EventTime() time.Time {
	if in.Event.Time.IsZero() {
		return time.Now()
	}
	return in.Event.Time
}

// Payload decodes the event's payload object.
func (in StepInput) Payload() map[string]any {
	var m map[string]any
	if len(in.Event.Payload) > 0 {
		_ = json.Unmarshal(in.Event.Payload, &m)
	}
	return m
}
