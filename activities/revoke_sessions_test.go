package activities

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/sessions"
)

// memSessions is an in-memory session table: per account, the creation
// times of its live sessions.
type memSessions struct {
	mu   sync.Mutex
	live map[string][]time.Time
	err  error
}

func (s *memSessions) end(userID string, cutoff time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	var kept []time.Time
	for _, c := range s.live[userID] {
		if c.After(cutoff) {
			kept = append(kept, c)
		}
	}
	n := int64(len(s.live[userID]) - len(kept))
	s.live[userID] = kept
	return n, nil
}

func (s *memSessions) Revoke(_ context.Context, userID string, before time.Time) (int64, error) {
	return s.end(userID, before)
}

func (s *memSessions) Purge(_ context.Context, userID string, cutoff time.Time) (int64, error) {
	return s.end(userID, cutoff)
}

// RevokeSessions ends the sessions created at or before the event time,
// under every account of the user: a session created after the event (the
// user signed in again) survives, and a retry ends nothing more.
func TestRevokeSessionsEndsOnlySessionsFromBeforeTheEvent(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &memSessions{live: map[string][]time.Time{
		"acct-1": {at.Add(-time.Hour), at, at.Add(time.Minute)},
		"acct-2": {at.Add(-time.Minute)},
		"acct-9": {at.Add(-time.Hour)},
	}}
	a := &Activities{Sessions: s, Backends: Backends{Accounts: fixedMapper{ids: map[string][]string{"k1": {"acct-1", "acct-2"}}}}}
	in := stepFor("k1")
	in.Event.Time = at
	res, err := a.RevokeSessions(context.Background(), in)
	if err != nil || res.Outcome != reaction.OutcomeDone || res.Detail["revoked"] != int64(3) || res.Detail["accounts"] != 2 {
		t.Fatalf("revoke: %+v %v, want 3 sessions of 2 accounts", res, err)
	}
	if len(s.live["acct-1"]) != 1 || !s.live["acct-1"][0].Equal(at.Add(time.Minute)) || len(s.live["acct-9"]) != 1 {
		t.Fatalf("left %v, want only acct-1's later session and the other user's", s.live)
	}
	if res, err := a.RevokeSessions(context.Background(), in); err != nil || res.Detail["revoked"] != int64(0) {
		t.Fatalf("retry: %+v %v, want nothing more revoked", res, err)
	}
}

// A SET's event time is in whole seconds: a session created later in that
// second may predate the event (and be the intruder's), so it ends too; one
// created in the next second survives.
func TestRevokeSessionsCoversTheEventsWholeSecond(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &memSessions{live: map[string][]time.Time{"acct-1": {at.Add(500 * time.Millisecond), at.Add(999 * time.Millisecond), at.Add(time.Second)}}}
	a := &Activities{Sessions: s, Backends: Backends{Accounts: fixedMapper{ids: map[string][]string{"k1": {"acct-1"}}}}}
	in := stepFor("k1")
	in.Event.Time = at
	if res, err := a.RevokeSessions(context.Background(), in); err != nil || res.Detail["revoked"] != int64(2) {
		t.Fatalf("revoke: %+v %v, want the 2 sessions of the event's second ended", res, err)
	}
	if len(s.live["acct-1"]) != 1 || !s.live["acct-1"][0].Equal(at.Add(time.Second)) {
		t.Fatalf("left %v, want only the session of the next second", s.live["acct-1"])
	}
}

// A callback that rejects the request will reject its retry too: the step
// fails for good; any other failure is retried.
func TestRevokeSessionsClassifiesFailures(t *testing.T) {
	for _, c := range []struct {
		err       error
		retryable bool
	}{
		{fmt.Errorf("answer 400: %w", sessions.ErrCallbackRejected), false},
		{errors.New("connection refused"), true},
	} {
		s := &memSessions{live: map[string][]time.Time{}, err: c.err}
		a := &Activities{Sessions: s}
		for name, step := range map[string]func(context.Context, reaction.StepInput) (reaction.StepResult, error){
			"revoke": a.RevokeSessions, "purge": a.PurgeSessions,
		} {
			_, err := step(context.Background(), stepFor("k1"))
			if err == nil || retryable(err) != c.retryable {
				t.Errorf("%s with %v: %v, want retryable=%v", name, c.err, err, c.retryable)
			}
		}
	}
}

// PurgeSessions deletes the sessions created at or before the purge's
// cutoff; a bad cutoff is a non-retryable error; a session store that cannot
// delete is skipped.
func TestPurgeSessionsUsesTheCutoff(t *testing.T) {
	cutoff := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &memSessions{live: map[string][]time.Time{"k1": {cutoff.Add(-time.Hour), cutoff, cutoff.Add(time.Second)}}}
	a := &Activities{Sessions: s}
	in := stepFor("k1")
	in.Params["cutoff"] = cutoff.Format(time.RFC3339Nano)
	res, err := a.PurgeSessions(context.Background(), in)
	if err != nil || res.Outcome != reaction.OutcomeDone || res.Detail["sessions_deleted"] != int64(2) || len(s.live["k1"]) != 1 {
		t.Fatalf("purge: %+v %v, left %v", res, err, s.live["k1"])
	}
	// A cutoff in whole seconds covers its second; a fractional one (the
	// unlink webhook's receipt time) is taken as it is.
	s.live["k1"] = []time.Time{cutoff.Add(500 * time.Millisecond), cutoff.Add(time.Second)}
	if res, err := a.PurgeSessions(context.Background(), in); err != nil || res.Detail["sessions_deleted"] != int64(1) ||
		len(s.live["k1"]) != 1 || !s.live["k1"][0].Equal(cutoff.Add(time.Second)) {
		t.Fatalf("purge at a whole second: %+v %v, left %v, want the session half a second in deleted", res, err, s.live["k1"])
	}
	received := cutoff.Add(250 * time.Millisecond)
	in.Params["cutoff"] = received.Format(time.RFC3339Nano)
	s.live["k1"] = []time.Time{received, received.Add(time.Millisecond)}
	if res, err := a.PurgeSessions(context.Background(), in); err != nil || res.Detail["sessions_deleted"] != int64(1) ||
		len(s.live["k1"]) != 1 || !s.live["k1"][0].Equal(received.Add(time.Millisecond)) {
		t.Fatalf("purge at a receipt time: %+v %v, left %v, want only the session at the cutoff deleted", res, err, s.live["k1"])
	}
	in.Params["cutoff"] = "yesterday"
	if _, err := a.PurgeSessions(context.Background(), in); err == nil || retryable(err) {
		t.Fatalf("bad cutoff: %v, want a non-retryable error", err)
	}
	in.Params["cutoff"] = cutoff.Format(time.RFC3339Nano)
	a.Sessions = revokeOnly{s}
	if res, err := a.PurgeSessions(context.Background(), in); err != nil || res.Outcome != reaction.OutcomeSkipped {
		t.Fatalf("a store that cannot delete: %+v %v, want skipped", res, err)
	}
}

// revokeOnly is a session store that can revoke but not delete.
type revokeOnly struct{ s *memSessions }

func (r revokeOnly) Revoke(ctx context.Context, userID string, before time.Time) (int64, error) {
	return r.s.Revoke(ctx, userID, before)
}
