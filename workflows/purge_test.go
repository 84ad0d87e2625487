package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/activities"
)

// purgeInput is the purge an unlink webhook schedules.
func purgeInput(after time.Duration) PurgeInput {
	envl := unlinkEnvelope("unlink:purge")
	return PurgeInput{EventKey: envl.Key, Event: envl.Events[0], SubjectHash: testHash, After: after}
}

// runPurge runs the Purge workflow as the root, under its real id.
func (h *harness) runPurge(in PurgeInput) (PurgeResult, error) {
	h.t.Helper()
	h.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: PurgeWorkflowID(in.SubjectHash), TaskQueue: TaskQueue})
	h.env.ExecuteWorkflow(Purge, in)
	require.True(h.t, h.env.IsWorkflowCompleted(), "workflow did not complete")
	if err := h.env.GetWorkflowError(); err != nil {
		return PurgeResult{}, err
	}
	var res PurgeResult
	require.NoError(h.t, h.env.GetWorkflowResult(&res))
	return res, nil
}

func (h *harness) recordTimers() *[]time.Duration {
	var timers []time.Duration
	h.env.SetOnTimerScheduledListener(func(_ string, d time.Duration) {
		h.mu.Lock()
		defer h.mu.Unlock()
		timers = append(timers, d)
	})
	return &timers
}

// After the retention period the purge deletes the user's data — only if the
// user did not link again since the unlink — then the CRM contact.
func TestPurgeAfterRetention(t *testing.T) {
	h := newHarness(t, harnessOptions{realPurge: true})
	timers := h.recordTimers()
	in := purgeInput(30 * 24 * time.Hour)
	// The event time is compared in UTC whatever zone it was decoded in.
	in.Event.Time = t0.In(time.FixedZone("KST", 9*3600))
	start := h.env.Now()
	res, err := h.runPurge(in)
	require.NoError(t, err)
	require.Equal(t, PurgeResult{Outcome: "purged"}, res)

	require.Equal(t, []time.Duration{30 * 24 * time.Hour}, *timers)
	require.Equal(t, []string{
		"PurgeData", "audit user-unlinked/purge_data=done",
		"CRMDelete", "audit user-unlinked/crm_delete=done",
	}, h.timeline)
	require.GreaterOrEqual(t, h.steps[0].At.Sub(start), 30*24*time.Hour, "purged before the retention ended")

	require.Equal(t, map[string]string{"unlinked_before": "2025-03-04T05:06:07.890123456Z"}, h.steps[0].In.Params)
	require.Nil(t, h.steps[1].In.Params)
	ev := in.Event
	ev.Time = t0
	assertRuns(t, h, unlinkEnvelope(in.EventKey), ev, [][2]string{{"PurgeData", "purge_data"}, {"CRMDelete", "crm_delete"}}, h.steps)
	for _, r := range h.audits {
		require.Equal(t, in.EventKey, r.EventKey)
		require.Equal(t, unlinkEventType, r.EventType)
		require.Equal(t, testHash, r.SubjectHash)
	}
}

// The default retention is none: the purge runs at once, without a timer.
func TestPurgeImmediate(t *testing.T) {
	h := newHarness(t, harnessOptions{realPurge: true})
	timers := h.recordTimers()
	start := h.env.Now()
	res, err := h.runPurge(purgeInput(0))
	require.NoError(t, err)
	require.Equal(t, "purged", res.Outcome)
	require.Empty(t, *timers)
	require.Equal(t, []string{"PurgeData", "CRMDelete"}, activityNames(h.steps))
	require.Less(t, h.steps[0].At.Sub(start), time.Minute)
}

// A user who linked again keeps their data: PurgeData says skipped and the
// CRM contact is not deleted.
func TestPurgeSkippedWhenUserLinkedAgain(t *testing.T) {
	h := newHarness(t, harnessOptions{realPurge: true})
	h.stepFuncs["PurgeData"] = func(int, activities.StepInput) (activities.StepResult, error) {
		return activities.StepResult{Outcome: activities.OutcomeSkipped, Detail: map[string]any{"reason": "the user linked again"}}, nil
	}
	res, err := h.runPurge(purgeInput(30 * 24 * time.Hour))
	require.NoError(t, err)
	require.Equal(t, PurgeResult{Outcome: "skipped"}, res)
	require.Equal(t, []string{"PurgeData", "audit user-unlinked/purge_data=skipped"}, h.timeline)
	require.Equal(t, 0, h.calls["CRMDelete"])
	require.Equal(t, "the user linked again", h.auditFor("user-unlinked/purge_data").Detail["reason"])
}

// Cancelling the purge during its timer (a new user-linked event does)
// audits the cancellation and purges nothing.
func TestPurgeCancelledDuringTimer(t *testing.T) {
	h := newHarness(t, harnessOptions{realPurge: true})
	h.env.RegisterDelayedCallback(h.env.CancelWorkflow, 3*24*time.Hour)
	start := h.env.Now()
	res, err := h.runPurge(purgeInput(30 * 24 * time.Hour))
	require.NoError(t, err)
	require.Equal(t, PurgeResult{Outcome: "cancelled"}, res)
	require.Equal(t, []string{"audit user-unlinked/purge=cancelled"}, h.timeline)
	require.Empty(t, h.steps)
	require.Equal(t, "the user linked again", h.auditFor("user-unlinked/purge").Detail["reason"])
	require.Less(t, h.env.Now().Sub(start), 30*24*time.Hour)
}

// A purge step that fails parks the purge workflow itself (the id operators
// signal), and a retry re-runs the step under the same idempotency key.
func TestPurgeParksAndRetries(t *testing.T) {
	h := newHarness(t, harnessOptions{realPurge: true})
	h.stepFuncs["CRMDelete"] = func(n int, _ activities.StepInput) (activities.StepResult, error) {
		if n == 1 {
			return activities.StepResult{}, temporal.NewNonRetryableApplicationError("crm: 403 forbidden", activities.ErrTypePermanent, nil)
		}
		return activities.StepResult{Outcome: activities.OutcomeDone}, nil
	}
	h.signalRetry(time.Hour, 1)
	in := purgeInput(0)
	res, err := h.runPurge(in)
	require.NoError(t, err)
	require.Equal(t, "purged", res.Outcome)
	require.Equal(t, []string{
		"PurgeData", "audit user-unlinked/purge_data=done",
		"CRMDelete", "audit user-unlinked/crm_delete@1=failed", "ParkEvent", "signal", "UnparkEvent",
		"CRMDelete", "audit user-unlinked/crm_delete=done",
	}, h.timeline)
	require.Len(t, h.parks, 1)
	require.Equal(t, PurgeWorkflowID(testHash), h.parks[0].WorkflowID)
	require.Equal(t, in.EventKey, h.parks[0].EventKey)
	require.Equal(t, "user-unlinked/crm_delete", h.parks[0].Step)
	require.Equal(t, h.steps[1].In.IdempotencyKey, h.steps[2].In.IdempotencyKey)
}

// The reaction's schedule_purge starts the real Purge child, which purges
// with the unlink's time as the cut-off.
func TestReactionStartsPurgeChild(t *testing.T) {
	h := newHarness(t, harnessOptions{realPurge: true})
	envl := unlinkEnvelope("unlink:child")
	_, err := h.runReaction(envl)
	require.NoError(t, err)
	require.Len(t, h.children, 1)
	require.Equal(t, PurgeWorkflowID(testHash), h.children[0].ID)
	var purge *stepCall
	for i := range h.steps {
		if h.steps[i].Activity == "PurgeData" {
			purge = &h.steps[i]
		}
	}
	require.NotNil(t, purge, "the purge child did not run: %v", h.timeline)
	require.Equal(t, t0.Format(time.RFC3339Nano), purge.In.Params["unlinked_before"])
	require.Equal(t, StepKey(envl.Key, "user-unlinked", "purge_data"), purge.In.IdempotencyKey)
	require.Equal(t, activities.OutcomeDone, h.auditFor("user-unlinked/crm_delete").Outcome)
	require.Equal(t, "0s", h.auditFor("user-unlinked/schedule_purge").Detail["after"])
}
