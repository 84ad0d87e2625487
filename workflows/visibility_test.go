package workflows

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/reaction"
)

// fakeGuard answers AdmitDestructive: held until decide is called.
type fakeGuard struct {
	mu       sync.Mutex
	decision guard.Verdict
	requests []guard.Request
	held     map[string]bool
}

func (g *fakeGuard) admit(_ context.Context, req guard.Request) (guard.Verdict, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requests = append(g.requests, req)
	if !g.held[req.EventKey] {
		return guard.Verdict{Decision: guard.Admitted}, nil
	}
	return g.decision, nil
}

func (g *fakeGuard) decide(v guard.Verdict) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.decision = v
}

func withGuard(h *harness, heldKeys ...string) *fakeGuard {
	g := &fakeGuard{decision: guard.Verdict{Decision: guard.Held, Reason: "too many"}, held: map[string]bool{}}
	for _, k := range heldKeys {
		g.held[k] = true
	}
	h.env.OnActivity("AdmitDestructive", mock.Anything, mock.Anything).Return(g.admit)
	return g
}

// signalDecision records an operator's decision in the guard and signals the
// stream after d, as `setflow holds approve|reject` does.
func (h *harness) signalDecision(d time.Duration, g *fakeGuard, v guard.Verdict, key string) {
	h.env.RegisterDelayedCallback(func() {
		g.decide(v)
		h.env.SignalWorkflow(SignalHoldDecision, key)
	}, d)
}

func TestUserStreamHeldEventRunsWhenApproved(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	g := withGuard(h, "jti-held")
	h.send(time.Second, disabled("jti-held", "hijacking", t0))
	// A non-destructive event of the same user goes on while the other waits.
	h.send(time.Minute, linked("jti-linked", t0.Add(time.Second)))
	var waiting, done StreamStatus
	h.queryAt(time.Hour, &waiting)
	// A signal before the guard has a decision changes nothing.
	h.env.RegisterDelayedCallback(func() { h.env.SignalWorkflow(SignalHoldDecision, "jti-held") }, 90*time.Minute)
	h.signalDecision(2*time.Hour, g, guard.Verdict{Decision: guard.Approved, By: "alice", Note: "confirmed"}, "jti-held")
	h.queryAt(2*time.Hour+time.Minute, &done)
	require.NoError(t, h.runStream(streamInput()))

	require.Equal(t, []string{"jti-held"}, waiting.Held)
	require.Equal(t, OutcomeHeld, waiting.Outcome)
	require.Empty(t, done.Held)
	require.Equal(t, []string{"jti-linked", "jti-held"}, h.applyKeys(), "the held event applied after the later one")
	revokes := h.stepsOf("RevokeSessions")
	require.Len(t, revokes, 1)
	require.Equal(t, t0.Add(2*time.Hour), revokes[0].At, "revocation waited for the approval")

	hold := h.auditOf("jti-held", "account-disabled/hold")
	require.Equal(t, OutcomeHeld, hold.Outcome)
	require.Equal(t, []any{"revoke_sessions", "lock_account"}, hold.Detail["steps"])
	decision := h.auditOf("jti-held", "account-disabled/decision")
	require.Equal(t, "approved", decision.Outcome)
	require.Equal(t, "alice", decision.Detail["by"])
	require.Equal(t, "confirmed", decision.Detail["note"])
	h.requireCompleted("jti-held", "account-disabled")
	h.requireCompleted("jti-linked", "user-linked")

	g.mu.Lock()
	defer g.mu.Unlock()
	require.Equal(t, "jti-held", g.requests[0].EventKey)
	require.Equal(t, UserStreamID(testHash), g.requests[0].WorkflowID)
	require.Equal(t, testHash, g.requests[0].SubjectHash)
	require.GreaterOrEqual(t, len(g.requests), 3, "asked again after each decision signal")
}

func TestUserStreamHeldEventRejected(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	g := withGuard(h, "jti-held")
	h.send(time.Second, disabled("jti-held", "hijacking", t0))
	// Every hold of the stream: an empty key.
	h.signalDecision(time.Hour, g, guard.Verdict{Decision: guard.Rejected, By: "bob"}, "")
	require.NoError(t, h.runStream(streamInput()))

	require.Empty(t, h.stepsOf("RevokeSessions"))
	require.Empty(t, h.applyKeys(), "a rejected event changes no state")
	require.Empty(t, h.stepsOf("SendNotice"))
	out := h.outcomes("jti-held")
	require.Equal(t, "rejected", out["account-disabled/decision"])
	for step, o := range out {
		if strings.HasPrefix(step, "account-disabled/") && step != "account-disabled/received" &&
			step != "account-disabled/hold" && step != "account-disabled/decision" && step != "account-disabled/completed" {
			require.Equal(t, OutcomeRejected, o, step)
		}
	}
	require.Equal(t, "bob", h.auditOf("jti-held", "account-disabled/decision").Detail["by"])
	h.requireCompleted("jti-held", "account-disabled")
}

// A held event asks the guard again now and then, so a lost signal does not
// leave it waiting for ever.
func TestUserStreamHeldEventRechecksWithoutSignal(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	g := withGuard(h, "jti-held")
	h.send(time.Second, disabled("jti-held", "", t0))
	h.env.RegisterDelayedCallback(func() { g.decide(guard.Verdict{Decision: guard.Approved, By: "carol"}) }, time.Hour)
	require.NoError(t, h.runStream(streamInput()))
	revokes := h.stepsOf("RevokeSessions")
	require.Len(t, revokes, 1)
	require.LessOrEqual(t, revokes[0].At, t0.Add(time.Hour+holdRecheck+time.Minute))
	h.requireCompleted("jti-held", "account-disabled")
}

// Events without destructive steps never ask the guard.
func TestUserStreamGuardOnlyForDestructiveSteps(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	g := withGuard(h)
	h.send(time.Second, linked("jti-linked", t0))
	require.NoError(t, h.runStream(streamInput()))
	h.requireCompleted("jti-linked", "user-linked")
	require.Empty(t, g.requests)
}

// A parked reaction says so: its state query names the step, and its outcome
// is parked until the retry, then done.
func TestReactionStateQueryShowsParking(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["RecordTalkShare"] = func(n int, _ reaction.StepInput) (reaction.StepResult, error) {
		if n == 1 {
			return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("bad row", reaction.ErrTypePermanent, nil)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	var parked, done ReactionStatus
	h.env.RegisterDelayedCallback(func() {
		v, err := h.env.QueryWorkflow(QueryState)
		require.NoError(t, err)
		require.NoError(t, v.Get(&parked))
	}, time.Hour)
	h.signalRetry(2*time.Hour, 1, nil)
	h.env.RegisterDelayedCallback(func() {
		v, err := h.env.QueryWorkflow(QueryState)
		require.NoError(t, err)
		require.NoError(t, v.Get(&done))
	}, 2*time.Hour+time.Second)
	_, err := h.runReaction(talkShareEnvelope("talk-share:q"))
	require.NoError(t, err)
	require.Equal(t, "parked", parked.Outcome)
	require.Equal(t, "talk-share/record_talk_share", parked.Parked)
	require.Equal(t, "talk-share:q", parked.EventKey)
	require.Equal(t, 2, parked.Steps)
	require.Empty(t, done.Parked)
	require.NotEqual(t, "parked", done.Outcome)
}
