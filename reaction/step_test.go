package reaction

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/event"
)

// A user step for an event without a user fails at once: retrying cannot
// give the event a user.
func TestRequireSubject(t *testing.T) {
	err := StepInput{}.RequireSubject("revoke sessions")
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != ErrTypeMissingSubject {
		t.Fatalf("error %v, want a non-retryable %s", err, ErrTypeMissingSubject)
	}
	in := StepInput{Event: event.Event{Subject: event.Subject{Issuer: "iss", UserID: "u"}}}
	if err := in.RequireSubject("revoke sessions"); err != nil {
		t.Fatal(err)
	}
}

func TestEventTimeAndPayload(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	in := StepInput{Event: event.Event{Time: at, Payload: json.RawMessage(`{"reason":"hijacking"}`)}}
	if !in.EventTime().Equal(at) || in.Payload()["reason"] != "hijacking" {
		t.Fatalf("time %v, payload %v", in.EventTime(), in.Payload())
	}
	before := time.Now()
	if got := (StepInput{}).EventTime(); got.Before(before) {
		t.Fatalf("an event without a time happened now, got %v", got)
	}
	if (StepInput{}).Payload() != nil {
		t.Fatal("an empty payload decodes to nothing")
	}
}
