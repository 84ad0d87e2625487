package relay

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/workflows"
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

// waitCanceled waits for Run to return its context's cancellation.
func waitCanceled(t *testing.T, done <-chan error, timeout string) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(timeout)
	}
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
	waitCanceled(t, done, "Run did not return after its batch")
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
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run after the stop: %v, want context.Canceled", err)
		}
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

// startCall is one call of a recordingStarter.
type startCall struct {
	signal   string // "" for ExecuteWorkflow
	arg      any
	opts     client.StartWorkflowOptions
	workflow any
	args     []any
	deadline time.Duration // left on the call's context
}

// recordingStarter records every call and answers with err.
type recordingStarter struct {
	calls       []startCall
	signalErr   error
	executeErr  error
	workflowIDs []string
}

func left(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return -1
	}
	return time.Until(d)
}

func (s *recordingStarter) ExecuteWorkflow(ctx context.Context, o client.StartWorkflowOptions, wf any, args ...any) (client.WorkflowRun, error) {
	s.calls = append(s.calls, startCall{opts: o, workflow: wf, args: args, deadline: left(ctx)})
	return nil, s.executeErr
}

func (s *recordingStarter) SignalWithStartWorkflow(ctx context.Context, id, signal string, arg any, o client.StartWorkflowOptions, wf any, args ...any) (client.WorkflowRun, error) {
	s.workflowIDs = append(s.workflowIDs, id)
	s.calls = append(s.calls, startCall{signal: signal, arg: arg, opts: o, workflow: wf, args: args, deadline: left(ctx)})
	return nil, s.signalErr
}

func sameFunc(a, b any) bool { return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer() }

// An entry's events about users go to each user's stream (Signal-With-Start,
// the event indexes of that user only); events that name no user start one
// reaction workflow named by the dedupe key, with only those events.
func TestDeliverSplitsAnEntryByUser(t *testing.T) {
	alice := event.Subject{Issuer: "iss", UserID: "alice"}
	bob := event.Subject{Issuer: "iss", UserID: "bob"}
	env := event.Envelope{Key: "k1", Source: event.SourceSET, Subject: alice, Events: []event.Event{
		{Name: "account-disabled"},                  // the envelope's subject: alice
		{Name: "sessions-revoked", Subject: bob},    // bob
		{Name: "credential-change", Subject: alice}, // alice again
	}}
	st := &recordingStarter{}
	r := &Relay{Temporal: st, Subjects: plainHasher{}, IdleAfter: 7 * time.Minute}
	ids, err := r.Deliver(context.Background(), inbox.Entry{Envelope: env})
	if err != nil {
		t.Fatal(err)
	}
	wantA, wantB := workflows.UserStreamID("iss/alice"), workflows.UserStreamID("iss/bob")
	if ids != wantA+" "+wantB {
		t.Fatalf("ids %q", ids)
	}
	if len(st.calls) != 2 {
		t.Fatalf("%d calls, want one signal per user", len(st.calls))
	}
	for i, c := range st.calls {
		hash, events := "iss/alice", []int{0, 2}
		if i == 1 {
			hash, events = "iss/bob", []int{1}
		}
		if c.signal != workflows.SignalEvent || c.opts.ID != workflows.UserStreamID(hash) || st.workflowIDs[i] != c.opts.ID {
			t.Errorf("call %d: signal %q to %q (options %q)", i, c.signal, st.workflowIDs[i], c.opts.ID)
		}
		if se := c.arg.(workflows.StreamEvent); !reflect.DeepEqual(se.Events, events) || se.Envelope.Key != "k1" {
			t.Errorf("call %d: stream event %v of %s, want %v", i, se.Events, se.Envelope.Key, events)
		}
		if c.opts.TaskQueue != workflows.TaskQueue || c.opts.WorkflowIDReusePolicy != enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE {
			t.Errorf("call %d: queue %q, reuse %v: an idle stream completes and the next event starts a new run", i, c.opts.TaskQueue, c.opts.WorkflowIDReusePolicy)
		}
		if !sameFunc(c.workflow, workflows.UserStream) || !reflect.DeepEqual(c.args, []any{workflows.UserStreamInput{SubjectHash: hash, IdleAfter: 7 * time.Minute}}) {
			t.Errorf("call %d: workflow args %+v", i, c.args)
		}
	}
}

// Events that name no user (and an entry without events) start the reaction
// workflow: it joins a running one, refuses a new run after a completed one
// and allows one only after a failure.
func TestDeliverStartsAReactionForEventsWithoutAUser(t *testing.T) {
	env := event.Envelope{Key: "talk:1", Source: event.SourceTalkShare, Events: []event.Event{{Name: "talk-share"}}}
	for name, env := range map[string]event.Envelope{"userless": env, "no events": {Key: "talk:1"}} {
		st := &recordingStarter{}
		r := &Relay{Temporal: st, Subjects: plainHasher{}}
		ids, err := r.Deliver(context.Background(), inbox.Entry{Envelope: env})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.calls) != 1 || st.calls[0].signal != "" {
			t.Fatalf("%s: calls %+v", name, st.calls)
		}
		c := st.calls[0]
		want := workflows.EventWorkflowID("talk:1")
		if ids != want || c.opts.ID != want || c.opts.TaskQueue != workflows.TaskQueue {
			t.Errorf("%s: ids %q, options id %q queue %q", name, ids, c.opts.ID, c.opts.TaskQueue)
		}
		if c.opts.WorkflowIDReusePolicy != enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY ||
			c.opts.WorkflowIDConflictPolicy != enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING {
			t.Errorf("%s: reuse %v, conflict %v", name, c.opts.WorkflowIDReusePolicy, c.opts.WorkflowIDConflictPolicy)
		}
		if !sameFunc(c.workflow, workflows.Reaction) || len(c.args) != 1 || c.args[0].(event.Envelope).Key != "talk:1" {
			t.Errorf("%s: workflow args %+v", name, c.args)
		}
	}
}

// A mixed entry: the user's events go to the stream, the reaction gets only
// the events that name no user.
func TestDeliverGivesTheReactionOnlyTheUserlessEvents(t *testing.T) {
	env := event.Envelope{Key: "ssf:1", Events: []event.Event{
		{Name: "verification"},
		{Name: "account-disabled", Subject: event.Subject{Issuer: "iss", UserID: "u"}},
	}}
	st := &recordingStarter{}
	r := &Relay{Temporal: st, Subjects: plainHasher{}}
	if _, err := r.Deliver(context.Background(), inbox.Entry{Envelope: env}); err != nil {
		t.Fatal(err)
	}
	if len(st.calls) != 2 {
		t.Fatalf("%d calls", len(st.calls))
	}
	got := st.calls[1].args[0].(event.Envelope)
	if len(got.Events) != 1 || got.Events[0].Name != "verification" {
		t.Fatalf("reaction events %+v", got.Events)
	}
	if len(env.Events) != 2 {
		t.Fatal("the entry's envelope was changed")
	}
}

// A reaction already started (a repeated delivery after a relay crash) is
// delivered; any other Temporal error is the delivery's error, so the inbox
// retries the entry later.
func TestDeliverErrors(t *testing.T) {
	user := event.Envelope{Key: "k", Events: []event.Event{{Subject: event.Subject{Issuer: "iss", UserID: "u"}}}}
	loose := event.Envelope{Key: "k"}
	unavailable := serviceerror.NewUnavailable("temporal is down")
	cases := map[string]struct {
		env     event.Envelope
		st      *recordingStarter
		wantErr bool
	}{
		"already started":  {loose, &recordingStarter{executeErr: serviceerror.NewWorkflowExecutionAlreadyStarted("running", "", "")}, false},
		"start failed":     {loose, &recordingStarter{executeErr: unavailable}, true},
		"signal failed":    {user, &recordingStarter{signalErr: unavailable}, true},
		"signal delivered": {user, &recordingStarter{}, false},
	}
	for name, c := range cases {
		r := &Relay{Temporal: c.st, Subjects: plainHasher{}}
		ids, err := r.Deliver(context.Background(), inbox.Entry{Envelope: c.env})
		if (err != nil) != c.wantErr {
			t.Errorf("%s: error %v", name, err)
		}
		if c.wantErr && (ids != "" || !errors.Is(err, unavailable)) {
			t.Errorf("%s: ids %q, error %v does not wrap Temporal's", name, ids, err)
		}
	}
	if _, err := (&Relay{Temporal: &recordingStarter{}}).Deliver(context.Background(), inbox.Entry{Envelope: user}); err == nil {
		t.Error("delivered without a subject hasher")
	}
}

// Each start call is bounded by StartTimeout (five seconds when unset), so a
// hung Temporal only delays a batch.
func TestDeliverBoundsEachCall(t *testing.T) {
	for set, want := range map[time.Duration]time.Duration{0: 5 * time.Second, 300 * time.Millisecond: 300 * time.Millisecond} {
		st := &recordingStarter{}
		r := &Relay{Temporal: st, Subjects: plainHasher{}, StartTimeout: set}
		if _, err := r.Deliver(context.Background(), inbox.Entry{Envelope: event.Envelope{Key: "k"}}); err != nil {
			t.Fatal(err)
		}
		if d := st.calls[0].deadline; d <= 0 || d > want || d < want-time.Second/10 {
			t.Errorf("StartTimeout %v: the call had %v left, want about %v", set, d, want)
		}
	}
}

// failingInbox fails the claims numbered in fail (from 1), and otherwise
// claims from Memory.
type failingInbox struct {
	*inbox.Memory
	fail   map[int]bool
	claims int
	prunes int
}

func (f *failingInbox) Relay(ctx context.Context, limit int, deliver inbox.Deliver, backoff inbox.Backoff) (int, error) {
	f.claims++
	if f.fail[f.claims] {
		return 0, errors.New("database is down")
	}
	return f.Memory.Relay(ctx, limit, deliver, backoff)
}

func (f *failingInbox) Prune(ctx context.Context, retention time.Duration, finished inbox.Finished) (int64, error) {
	f.prunes++
	return f.Memory.Prune(ctx, retention, finished)
}

// While the inbox is unavailable Run waits by its backoff, counting the
// failures in a row; a claim that works starts the count again. It prunes
// once per PruneEvery (at least a minute), not on every poll.
func TestRunBacksOffWhileTheInboxIsDown(t *testing.T) {
	in := &failingInbox{Memory: inbox.NewMemory(), fail: map[int]bool{1: true, 2: true, 3: true, 5: true, 6: true}}
	put(t, in.Memory, "k1", "u1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var attempts []int
	r := &Relay{Inbox: in, Temporal: &recordingStarter{}, Subjects: plainHasher{}, Poll: time.Millisecond,
		Retention: time.Hour, PruneEvery: time.Millisecond, Log: slog.New(slog.DiscardHandler),
		Finished: func(context.Context, []event.Envelope) (map[string]bool, error) { return nil, nil },
		Backoff: func(n int) time.Duration {
			if attempts = append(attempts, n); len(attempts) == 5 {
				cancel()
			}
			return time.Millisecond
		}}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitCanceled(t, done, "Run did not stop")
	if !reflect.DeepEqual(attempts, []int{1, 2, 3, 1, 2}) {
		t.Fatalf("backoff attempts %v, want 1, 2, 3, then 1, 2 after a claim worked", attempts)
	}
	if s := status(t, in.Memory, "k1"); s != inbox.StatusDispatched {
		t.Fatalf("k1 is %s once the inbox is back", s)
	}
	if in.prunes != 1 {
		t.Fatalf("%d prunes, want one per PruneEvery (at least a minute)", in.prunes)
	}
}
