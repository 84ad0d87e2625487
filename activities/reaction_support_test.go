package activities

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/reaction"
)

// A parked step shows in the inbox with the step and why, and names the
// workflow `setflow events retry` signals; unparking clears it.
func TestParkEventMarksTheInboxEntry(t *testing.T) {
	ctx := context.Background()
	in := inbox.NewMemory()
	if _, err := in.Put(ctx, inbox.Entry{Raw: []byte("token"), Envelope: event.Envelope{Key: "set:1", Source: event.SourceSET, ReceivedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	a := &Activities{Backends: Backends{Parking: in}}
	if err := a.ParkEvent(ctx, reaction.ParkInput{EventKey: "set:1", Step: "account-disabled/send_notice", Reason: "smtp down", WorkflowID: "setflow-user/h"}); err != nil {
		t.Fatal(err)
	}
	e, err := in.Get(ctx, "set:1")
	if err != nil || e.Status != inbox.StatusParked || e.LastError != "account-disabled/send_notice: smtp down" || e.WorkflowID != "setflow-user/h" {
		t.Fatalf("parked: %+v %v", e, err)
	}
	// Operators find it by its step.
	if got, _ := in.List(ctx, inbox.Filter{Status: inbox.StatusParked, Step: "send_notice"}); len(got) != 1 {
		t.Fatalf("listed %d parked at send_notice, want 1", len(got))
	}
	if err := a.UnparkEvent(ctx, "set:1"); err != nil {
		t.Fatal(err)
	}
	if e, _ := in.Get(ctx, "set:1"); e.Status != inbox.StatusDispatched || e.LastError != "" {
		t.Fatalf("unparked: %+v", e)
	}
	// A long reason is clipped, not refused.
	if err := a.ParkEvent(ctx, reaction.ParkInput{EventKey: "set:1", Step: "purge/run", Reason: strings.Repeat("x", 2000), WorkflowID: "w"}); err != nil {
		t.Fatal(err)
	}
	if e, _ := in.Get(ctx, "set:1"); len(e.LastError) != inbox.MaxErrorLen || !strings.HasPrefix(e.LastError, "purge/run: x") {
		t.Fatalf("long reason stored as %d bytes: %.20q", len(e.LastError), e.LastError)
	}
}

// A step that parks after its inbox entry is gone stays listed and
// retryable: a placeholder names the parked workflow.
func TestParkEventWithoutAnInboxEntry(t *testing.T) {
	ctx := context.Background()
	in := inbox.NewMemory()
	a := &Activities{Backends: Backends{Parking: in}}
	if err := a.ParkEvent(ctx, reaction.ParkInput{EventKey: "unlink:old", Step: "purge/run", Reason: "broken", WorkflowID: "setflow-user/h"}); err != nil {
		t.Fatal(err)
	}
	e, err := in.Get(ctx, "unlink:old")
	if err != nil || e.Status != inbox.StatusParked || e.LastError != "purge/run: broken" || e.WorkflowID != "setflow-user/h" || e.Envelope.Source != inbox.SourceParked {
		t.Fatalf("placeholder %+v %v", e, err)
	}
	// Parked again later: the same entry, updated; then unparked.
	if err := a.ParkEvent(ctx, reaction.ParkInput{EventKey: "unlink:old", Step: "purge/sessions", Reason: "down", WorkflowID: "setflow-user/h"}); err != nil {
		t.Fatal(err)
	}
	if e, _ := in.Get(ctx, "unlink:old"); e.LastError != "purge/sessions: down" || in.Len() != 1 {
		t.Fatalf("parked again: %+v (%d entries)", e, in.Len())
	}
	if err := a.UnparkEvent(ctx, "unlink:old"); err != nil {
		t.Fatal(err)
	}
	if e, _ := in.Get(ctx, "unlink:old"); e.Status != inbox.StatusDispatched {
		t.Fatalf("after unpark: %+v", e)
	}
}
