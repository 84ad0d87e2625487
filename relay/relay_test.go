package relay

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
)

type plainHasher struct{}

func (plainHasher) Hash(issuer, userID string) string { return issuer + "/" + userID }

// heldStarter answers every signal once release is closed (or fails with
// the caller's context); started receives each call.
type heldStarter struct {
	started chan string
	release chan struct{}
	calls   atomic.Int32
}

func (s *heldStarter) ExecuteWorkflow(context.Context, client.StartWorkflowOptions, any, ...any) (client.WorkflowRun, error) {
	return nil, errors.New("unexpected start")
}

func (s *heldStarter) SignalWithStartWorkflow(ctx context.Context, id, _ string, _ any, _ client.StartWorkflowOptions, _ any, _ ...any) (client.WorkflowRun, error) {
	s.calls.Add(1)
	s.started <- id
	select {
	case <-s.release:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func put(t *testing.T, in *inbox.Memory, key, user string) {
	t.Helper()
	env := event.Envelope{Key: key, Source: event.SourceSET, Subject: event.Subject{Issuer: "iss", UserID: user},
		Events: []event.Event{{Type: "t", Name: "account-disabled", Subject: event.Subject{Issuer: "iss", UserID: user}}}}
	if _, err := in.Put(context.Background(), inbox.Entry{Envelope: env}); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, in *inbox.Memory, key string) inbox.Status {
	t.Helper()
	e, err := in.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return e.Status
}

// A stop while a batch is being delivered lets the batch finish and record
// what it delivered; no new batch starts.
func TestStopFinishesTheClaimedBatch(t *testing.T) {
	in := inbox.NewMemory()
	put(t, in, "k1", "u1")
	put(t, in, "k2", "u2")
	st := &heldStarter{started: make(chan string, 10), release: make(chan struct{})}
	r := &Relay{Inbox: in, Temporal: st, Subjects: plainHasher{}, Poll: 10 * time.Millisecond, StartTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-st.started
	cancel()
	put(t, in, "k3", "u3")
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Run returned %v with a delivery in flight", err)
	default:
	}
	close(st.release)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its batch")
	}
	for _, k := range []string{"k1", "k2"} {
		if s := status(t, in, k); s != inbox.StatusDispatched {
			t.Fatalf("%s is %s after the stop, want dispatched", k, s)
		}
	}
	if s := status(t, in, "k3"); s != inbox.StatusPending || st.calls.Load() != 2 {
		t.Fatalf("a new batch ran after the stop: k3 %s, %d deliveries", s, st.calls.Load())
	}
}

// A batch that cannot finish is given up StopTimeout after the stop.
func TestStopGivesUpAHungBatchAfterTheStopTimeout(t *testing.T) {
	in := inbox.NewMemory()
	put(t, in, "k1", "u1")
	st := &heldStarter{started: make(chan string, 10), release: make(chan struct{})}
	r := &Relay{Inbox: in, Temporal: st, Subjects: plainHasher{}, StartTimeout: time.Minute, StopTimeout: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-st.started
	stopped := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not give up its hung batch")
	}
	if took := time.Since(stopped); took < 200*time.Millisecond {
		t.Fatalf("gave up after %v, before the stop timeout", took)
	}
	if s := status(t, in, "k1"); s != inbox.StatusPending {
		t.Fatalf("undelivered entry is %s", s)
	}
}
