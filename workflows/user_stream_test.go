package workflows

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/userstate"
)

// UserStream applies a user's events one at a time. Unless a test says
// otherwise, ApplyEvent and RunPurge are answered by the real state machine
// over an in-memory state (memState), and every other activity by a mock.

var testStateSubject = userstate.Subject{Hash: testHash, Issuer: testIssuer, UserID: testUserID}

// streamInput is a stream that waits an hour for more work before it completes.
func streamInput() UserStreamInput {
	return UserStreamInput{SubjectHash: testHash, IdleAfter: time.Hour}
}

func linked(key string, at time.Time) event.Envelope {
	return setEnvelopeAt(key, secevent.EventUserLinked, payloadWith(""), at)
}

func unlinkedSET(key string, at time.Time) event.Envelope {
	return setEnvelopeAt(key, secevent.EventUserUnlinked, payloadWith(""), at)
}

func disabled(key, reason string, at time.Time) event.Envelope {
	extra := ""
	if reason != "" {
		extra = `"reason":"` + reason + `"`
	}
	return setEnvelopeAt(key, secevent.EventAccountDisabled, payloadWith(extra), at)
}

func stepNames(steps []policy.Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Name)
	}
	return out
}

func (h *harness) applyKeys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, c := range h.applies {
		if c.Err == nil {
			out = append(out, c.In.EventKey)
		}
	}
	return out
}

// auditOf is the audit row of an event key's step.
func (h *harness) auditOf(eventKey, step string) audit.Record {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.audits {
		if r.EventKey == eventKey && r.Step == step {
			return r
		}
	}
	h.t.Fatalf("no audit record for %s %s in %v", eventKey, step, h.timeline)
	return audit.Record{}
}

// requireRows checks an event's audit rows. Revocation runs in its own
// coroutine, so its row may come anywhere after "received" and before
// "completed"; the other rows come in policy order.
func (h *harness) requireRows(eventKey string, want ...string) {
	h.t.Helper()
	got := h.auditsOf(eventKey)
	isRevoke := func(row string) bool { return strings.Contains(row, "/revoke_sessions=") }
	var gotRest, wantRest, gotRevoke, wantRevoke []string
	for _, r := range got {
		if isRevoke(r) {
			gotRevoke = append(gotRevoke, r)
		} else {
			gotRest = append(gotRest, r)
		}
	}
	for _, r := range want {
		if isRevoke(r) {
			wantRevoke = append(wantRevoke, r)
		} else {
			wantRest = append(wantRest, r)
		}
	}
	require.Equal(h.t, wantRest, gotRest, "audit rows of %s: %v", eventKey, got)
	require.ElementsMatch(h.t, wantRevoke, gotRevoke, "audit rows of %s: %v", eventKey, got)
	if len(got) > 0 {
		require.False(h.t, isRevoke(got[0]) || isRevoke(got[len(got)-1]), "audit rows of %s: %v", eventKey, got)
	}
}

// indexOf is the position of item in the timeline (-1 if absent).
func (h *harness) indexOf(item string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.timeline {
		if x == item {
			return i
		}
	}
	return -1
}

// Events signalled in order are applied in that order, one at a time: the
// next ApplyEvent starts only after the previous one answered.
func TestUserStreamAppliesEventsInOrder(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.applyDelay = time.Minute
	envls := []event.Envelope{
		disabled("jti-1", "", t0),
		setEnvelopeAt("jti-2", secevent.EventAccountEnabled, payloadWith(""), t0.Add(time.Second)),
		unlinkEnvelopeAt("unlink:3", t0.Add(2*time.Second)),
	}
	h.send(time.Second, envls...)
	last := linked("jti-4", t0.Add(3*time.Second))
	h.send(2*time.Second, last)
	require.NoError(t, h.runStream(streamInput()))

	require.Equal(t, []string{"jti-1", "jti-2", "unlink:3", "jti-4"}, h.applyKeys())
	starts := h.startsOf("ApplyEvent")
	require.Len(t, starts, 4)
	for i := 1; i < 4; i++ {
		require.False(t, starts[i].At.Before(h.applies[i-1].At), "ApplyEvent %d started before %d answered", i, i-1)
	}
	wantSteps := [][]string{
		{policy.RevokeSessions, policy.LockAccount, policy.SendNotice},
		{policy.UnlockAccount},
		{policy.RevokeSessions, policy.MarkUnlinked, policy.CRMUpsert, policy.SchedulePurge},
		{policy.MarkLinked, policy.CancelPurge, policy.CRMUpsert},
	}
	for i, c := range h.applies {
		envl := append(envls, last)[i]
		require.Equal(t, testStateSubject, c.In.Subject)
		require.Equal(t, envl.Source, c.In.Source)
		require.Equal(t, envl.Events[0].Name, c.In.Event.Name)
		require.True(t, envl.Events[0].Time.Equal(c.In.Event.Time))
		require.Equal(t, wantSteps[i], stepNames(c.In.Steps))
	}
	// The purge the unlink scheduled was cancelled by the later link.
	require.Empty(t, h.purges)
	var received []string
	for _, r := range h.audits {
		if strings.HasSuffix(r.Step, "/received") {
			received = append(received, r.EventKey)
		}
	}
	require.Equal(t, []string{"jti-1", "jti-2", "unlink:3", "jti-4"}, received)
	h.requireCompleted("jti-1", "account-disabled")
	h.requireCompleted("jti-2", "account-enabled")
	h.requireCompleted("unlink:3", "user-unlinked")
	h.requireCompleted("jti-4", "user-linked")
	for _, r := range h.audits {
		require.Equal(t, testHash, r.SubjectHash)
	}
}

// A repeated event key (the relay re-sent a signal) is applied once.
func TestUserStreamSkipsRepeatedEvents(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.applyDelay = time.Minute
	envl := disabled("jti-rep", "hijacking", t0)
	h.send(time.Second, envl, envl)
	h.send(time.Hour, envl)
	var st StreamStatus
	h.queryAt(2*time.Hour, &st)
	in := streamInput()
	in.IdleAfter = 10 * time.Hour
	require.NoError(t, h.runStream(in))
	require.Equal(t, []string{"jti-rep"}, h.applyKeys())
	require.Len(t, h.stepsOf("RevokeSessions"), 1)
	require.Len(t, h.stepsOf("SendNotice"), 1)
	h.requireRows("jti-rep",
		"account-disabled/received=received", "account-disabled/revoke_sessions=done", "account-disabled/lock_account=done",
		"account-disabled/send_notice=done", "account-disabled/completed=done")
	require.Equal(t, 1, st.Seen)
	require.Equal(t, 0, st.Queued)
}

// An entry with several events about the user applies each under its own key
// (the entry's key and the event's index), in order; the stream takes only
// the events the relay named for it, and an event without a subject is the
// envelope's.
func TestUserStreamMultiEventEnvelope(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	envl := disabled("jti-multi", "hijacking", t0)
	envl.Events = append(envl.Events, event.Event{
		Type: secevent.EventCredentialCompromise, Name: "credential-compromise", Category: "risc",
		Time: t0.Add(time.Second), Payload: json.RawMessage(`{"credential_type":"password"}`),
	}, event.Event{
		Type: secevent.EventSessionRevoked, Name: "session-revoked", Category: "caep",
		Subject: event.Subject{Issuer: testIssuer, UserID: "someone-else"}, Time: t0, Payload: json.RawMessage(`{}`),
	})
	h.env.RegisterDelayedCallback(func() {
		h.env.SignalWorkflow(SignalEvent, StreamEvent{Envelope: envl, Events: []int{0, 1}})
	}, time.Second)
	require.NoError(t, h.runStream(streamInput()))
	require.Equal(t, []string{"jti-multi#0", "jti-multi#1"}, h.applyKeys())
	require.Equal(t, "credential-compromise", h.applies[1].In.Event.Name)
	require.Equal(t, testSubject, h.applies[1].In.Event.Subject)
	require.Equal(t, testStateSubject, h.applies[1].In.Subject)

	revokes := h.stepsOf("RevokeSessions")
	require.Len(t, revokes, 2)
	keys := []string{revokes[0].In.IdempotencyKey, revokes[1].In.IdempotencyKey}
	require.ElementsMatch(t, []string{
		StepKey("jti-multi", "account-disabled", "revoke_sessions"),
		StepKey("jti-multi", "credential-compromise", "revoke_sessions"),
	}, keys)
	for _, c := range h.steps {
		require.Equal(t, "jti-multi", c.In.EventKey)
		require.Equal(t, testSubject, c.In.Event.Subject)
	}
	out := h.outcomes("jti-multi")
	require.Equal(t, reaction.OutcomeDone, out["account-disabled/completed"])
	require.Equal(t, reaction.OutcomeDone, out["credential-compromise/completed"])
	require.Equal(t, reaction.OutcomeDone, out["credential-compromise/require_reauth"])
	require.NotContains(t, out, "session-revoked/received")
}

// Revocation runs at once, in its own coroutine: it does not wait for the
// state to be applied.
func TestUserStreamRevocationDoesNotWaitForTheState(t *testing.T) {
	t.Run("slow apply", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.applyDelay = 10 * time.Minute
		h.send(time.Second, disabled("jti-slow", "", t0))
		require.NoError(t, h.runStream(streamInput()))
		revokes := h.stepsOf("RevokeSessions")
		require.Len(t, revokes, 1)
		require.Equal(t, t0.Add(time.Second), revokes[0].At, "revoked when the event arrived")
		require.Equal(t, t0.Add(time.Second+10*time.Minute), h.applies[0].At)
		revoked, applied, locked := h.indexOf("audit account-disabled/revoke_sessions=done"), h.indexOf("ApplyEvent"),
			h.indexOf("audit account-disabled/lock_account=done")
		require.True(t, revoked >= 0 && revoked < applied, "revocation audited before the state was applied: %v", h.timeline)
		require.Greater(t, locked, applied, "the state step is audited from the decision")
		h.requireCompleted("jti-slow", "account-disabled")
	})
	t.Run("apply failing then succeeding", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.applyFunc = func(n int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			if n <= 3 {
				return reaction.ApplyResult{}, temporal.NewApplicationError("state store down", reaction.ErrTypeUnavailable)
			}
			return h.state.apply(in, h.now()), nil
		}
		h.send(time.Second, disabled("jti-flaky", "", t0))
		require.NoError(t, h.runStream(streamInput()))
		require.Len(t, h.applies, 4)
		require.Equal(t, int32(4), h.applies[3].Attempt)
		// Retries of 1 s, 2 s and 4 s.
		require.Equal(t, t0.Add(8*time.Second), h.applies[3].At)
		revokes := h.stepsOf("RevokeSessions")
		require.Len(t, revokes, 1)
		require.Equal(t, t0.Add(time.Second), revokes[0].At)
		require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-flaky")["account-disabled/lock_account"])
		h.requireCompleted("jti-flaky", "account-disabled")
	})
}

// A CRM sync that keeps failing is retried in its own loop: the next event's
// revocation runs at once, while the sync is still retrying.
func TestUserStreamRevocationNotDelayedBySyncRetries(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// Retries after 1 s, 2 s, ... 128 s: the ninth attempt, 255 s after the
	// first, succeeds. (The test environment caps retries at ten attempts
	// where the server's policy allows a day of them.)
	h.syncFunc = func(n int) (reaction.StepResult, error) {
		if n <= 8 {
			return reaction.StepResult{}, temporal.NewApplicationError("crm down", reaction.ErrTypeUnavailable)
		}
		return h.sync(), nil
	}
	h.send(time.Second, linked("jti-link", t0))
	h.send(2*time.Minute, disabled("jti-disabled", "", t0.Add(time.Minute)))
	require.NoError(t, h.runStream(streamInput()))

	revokes := h.stepsOf("RevokeSessions")
	require.Len(t, revokes, 1)
	require.Equal(t, t0.Add(2*time.Minute), revokes[0].At, "revoked when the event arrived")
	require.True(t, h.syncs[0].Before(revokes[0].At))
	require.True(t, h.syncs[8].After(revokes[0].At), "the sync was still retrying when the sessions were revoked")
	require.Equal(t, t0.Add(time.Second+255*time.Second), h.syncs[8])
	// The lock changed the contact during the sync: one more sync follows,
	// which finds the state already sent.
	require.Len(t, h.syncs, 10)
	for _, s := range h.startsOf("SyncCRM") {
		require.Equal(t, CRMTaskQueue, s.TaskQueue)
	}
	require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-disabled")["account-disabled/lock_account"])
	h.requireCompleted("jti-link", "user-linked")
	h.requireCompleted("jti-disabled", "account-disabled")
	// The successful sync sent the state as of its attempt: both changes.
	require.Equal(t, []string{"crm-sync/v2=done"}, h.auditsOf("crm-sync/"+testHash))
	require.Equal(t, reaction.SyncInput{SubjectHash: testHash}, h.syncInputs[0])
}

// State steps are audited from the state machine's decision; a CRM step asks
// for a sync only when the contact changed.
func TestUserStreamStateStepsFollowTheDecision(t *testing.T) {
	run := func(t *testing.T, h *harness, envls ...event.Envelope) {
		t.Helper()
		for i, e := range envls {
			h.send(time.Duration(i+1)*time.Second, e)
		}
		require.NoError(t, h.runStream(streamInput()))
		for _, e := range envls {
			h.requireCompleted(e.Key, e.Events[0].Name)
		}
	}
	t.Run("applied", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		run(t, h, linked("jti-a", t0))
		require.Equal(t, []string{
			"user-linked/received=received", "user-linked/mark_linked=done", "user-linked/cancel_purge=skipped",
			"user-linked/crm_upsert=done", "user-linked/completed=done",
		}, h.auditsOf("jti-a"))
		require.Equal(t, "the state already holds this", h.auditFor("user-linked/cancel_purge").Detail["reason"])
		require.Equal(t, "requested", h.auditFor("user-linked/crm_upsert").Detail["sync"])
		require.Len(t, h.syncs, 1)
		require.Equal(t, []string{"crm-sync/v1=done"}, h.auditsOf("crm-sync/"+testHash))
	})
	t.Run("superseded", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.syncDelay = time.Minute // the superseded event arrives while the first sync runs
		run(t, h, linked("jti-new", t0.Add(time.Hour)), linked("jti-old", t0))
		require.Equal(t, []string{
			"user-linked/received=received", "user-linked/mark_linked=superseded", "user-linked/cancel_purge=superseded",
			"user-linked/crm_upsert=superseded", "user-linked/completed=done",
		}, h.auditsOf("jti-old"))
		require.Equal(t, "a newer event already decided this", h.auditOf("jti-old", "user-linked/mark_linked").Detail["reason"])
		require.Len(t, h.syncs, 1, "a superseded event runs no CRM sync")
	})
	t.Run("unchanged", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		run(t, h, linked("jti-1", t0), linked("jti-2", t0))
		require.Equal(t, []string{
			"user-linked/received=received", "user-linked/mark_linked=skipped", "user-linked/cancel_purge=skipped",
			"user-linked/crm_upsert=skipped", "user-linked/completed=done",
		}, h.auditsOf("jti-2"))
		rows := map[string]string{}
		for _, r := range h.audits {
			if r.EventKey == "jti-2" && r.Detail["reason"] != nil {
				rows[r.Step] = r.Detail["reason"].(string)
			}
		}
		require.Equal(t, map[string]string{
			"user-linked/mark_linked":  "the state already holds this",
			"user-linked/cancel_purge": "the state already holds this",
			"user-linked/crm_upsert":   "the contact did not change",
		}, rows)
		require.Len(t, h.syncs, 1)
	})
	t.Run("lock", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		run(t, h, disabled("jti-new", "", t0.Add(time.Hour)), disabled("jti-old", "", t0))
		require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-new")["account-disabled/lock_account"])
		out := h.outcomes("jti-old")
		require.Equal(t, reaction.OutcomeSuperseded, out["account-disabled/lock_account"])
		// Revocation is order-independent: the older event revokes too.
		require.Equal(t, reaction.OutcomeDone, out["account-disabled/revoke_sessions"])
		require.Len(t, h.stepsOf("RevokeSessions"), 2)
	})
	t.Run("purge scheduled and cancelled", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		run(t, h, unlinkedSET("jti-unlinked", t0), linked("jti-relinked", t0.Add(time.Hour)))
		h.requireRows("jti-unlinked",
			"user-unlinked/received=received", "user-unlinked/revoke_sessions=done", "user-unlinked/mark_unlinked=done",
			"user-unlinked/crm_upsert=done", "user-unlinked/schedule_purge=done", "user-unlinked/completed=done")
		sched := h.auditFor("user-unlinked/schedule_purge").Detail
		require.Equal(t, "scheduled", sched["purge"])
		due, err := time.Parse(time.RFC3339Nano, sched["due"].(string))
		require.NoError(t, err)
		require.True(t, t0.Add(testPurgeAfter).Equal(due))
		require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-relinked")["user-linked/cancel_purge"])
		require.Equal(t, "cancelled", h.auditFor("user-linked/cancel_purge").Detail["purge"])
		require.Empty(t, h.purges)
		require.Len(t, h.syncs, 2)
	})
	t.Run("decision details", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.applyFunc = func(_ int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			switch in.EventKey {
			case "jti-profile":
				return reaction.ApplyResult{Version: 1, FieldsFrom: "kakao", Decision: userstate.Decision{
					Parts: map[string]userstate.Outcome{"field:email": userstate.Applied}, ContactChanged: true}}, nil
			default: // a repeat the state store recognised
				return reaction.ApplyResult{Version: 1, Repeat: true}, nil
			}
		}
		run(t, h, setEnvelopeAt("jti-profile", secevent.PrefixKakao+"user-profile-changed", payloadWith(""), t0),
			setEnvelopeAt("jti-enabled", secevent.EventAccountEnabled, payloadWith(""), t0))
		require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-profile")["user-profile-changed/refresh_profile"])
		require.Equal(t, "kakao", h.auditFor("user-profile-changed/refresh_profile").Detail["source"])
		require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-profile")["user-profile-changed/crm_upsert"])
		unlock := h.auditFor("account-enabled/unlock_account")
		require.Equal(t, OutcomeSkipped, unlock.Outcome)
		require.Equal(t, true, unlock.Detail["repeat"])
		require.Len(t, h.syncs, 1)
	})
}

// Several contact changes that arrive while a sync runs are sent by one more
// sync, after it, with the newest state.
func TestUserStreamSyncsOnceForQuickChanges(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.syncDelay = 10 * time.Minute
	for i, email := range []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"} {
		h.send(time.Second+time.Duration(i)*time.Minute, setEnvelopeAt("jti-id-"+email[:1], secevent.EventIdentifierChanged,
			payloadWith(`"new-value":"`+email+`"`), t0.Add(time.Duration(i)*time.Second)))
	}
	require.NoError(t, h.runStream(streamInput()))
	for _, k := range []string{"a", "b", "c", "d"} {
		require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-id-" + k)["identifier-changed/crm_upsert"])
		h.requireCompleted("jti-id-"+k, "identifier-changed")
	}
	starts := h.startsOf("SyncCRM")
	require.Len(t, starts, 2, "one sync for the first change, one for the three during it")
	require.Equal(t, t0.Add(time.Second), starts[0].At)
	require.False(t, starts[1].At.Before(h.syncs[0]), "one sync at a time")
	require.Equal(t, int64(1), starts[0].Version)
	require.Equal(t, int64(4), starts[1].Version, "the second sync sends the newest state")
	require.Equal(t, []string{"crm-sync/v1=done", "crm-sync/v4=done"}, h.auditsOf("crm-sync/"+testHash))
}

// A sync that gives up (a permanent error, or a day of retries) parks the
// user's sync: an operator's retry, or a newer change, starts it again.
func TestUserStreamSyncParks(t *testing.T) {
	syncKey := "crm-sync/" + testHash
	for _, tc := range []struct {
		name string
		wake func(h *harness)
	}{
		{"retried by its key", func(h *harness) { h.signalRetry(time.Hour, 1, syncKey) }},
		{"retried by an empty key (all)", func(h *harness) { h.signalRetry(time.Hour, 1, "") }},
		{"a newer change", func(h *harness) { h.send(time.Hour, disabled("jti-disabled", "", t0.Add(time.Hour))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.syncFunc = func(n int) (reaction.StepResult, error) {
				if n == 1 {
					return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("crm refused", reaction.ErrTypePermanent, nil)
				}
				return h.sync(), nil
			}
			h.send(time.Second, linked("jti-link", t0))
			h.signalRetry(30*time.Minute, 1, "jti-other") // not the sync's
			tc.wake(h)
			var parked StreamStatus
			h.queryAt(45*time.Minute, &parked)
			require.NoError(t, h.runStream(streamInput()))

			require.Equal(t, []string{syncKey}, parked.Parked)
			require.True(t, parked.SyncRunning)
			require.Len(t, h.syncs, 2)
			require.Equal(t, t0.Add(time.Hour), h.syncs[1])
			rows := h.auditsOf(syncKey)
			require.Len(t, rows, 2)
			require.Regexp(t, `^crm-sync/failed@\d+=failed$`, rows[0])
			require.Contains(t, h.auditOf(syncKey, rows[0][:len(rows[0])-len("=failed")]).Detail["error"], "crm refused")
			require.Regexp(t, `^crm-sync/v\d=done$`, rows[1])
			require.Empty(t, h.parks, "a parked sync has no inbox entry to mark")
			h.requireCompleted("jti-link", "user-linked")
		})
	}
}

// With Kakao's user API configured, an unlink webhook's revocation waits for
// Kakao: a stale webhook for a user who linked again ends no sessions.
func TestUserStreamConfirmsUnlinkWithKakao(t *testing.T) {
	t.Run("kakao says linked", func(t *testing.T) {
		h := newHarness(t, harnessOptions{kakao: true})
		h.applyFunc = func(_ int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			return reaction.ApplyResult{Version: 2, KakaoCheck: reaction.KakaoLinked, Decision: userstate.Decision{
				Parts: map[string]userstate.Outcome{"link": userstate.Applied, "purge": userstate.Unchanged}}}, nil
		}
		h.send(time.Second, unlinkEnvelope("unlink:stale"))
		require.NoError(t, h.runStream(streamInput()))
		require.Empty(t, h.stepsOf("RevokeSessions"))
		require.Equal(t, []string{
			"user-unlinked/received=received", "user-unlinked/revoke_sessions=superseded", "user-unlinked/mark_unlinked=superseded",
			"user-unlinked/crm_upsert=skipped", "user-unlinked/schedule_purge=superseded", "user-unlinked/completed=done",
		}, h.auditsOf("unlink:stale"))
		require.Equal(t, "kakao says the user is linked now", h.auditFor("user-unlinked/revoke_sessions").Detail["reason"])
		require.Equal(t, "kakao says the user is linked now", h.auditFor("user-unlinked/mark_unlinked").Detail["reason"])
		require.Empty(t, h.purges)
		require.Empty(t, h.syncs)
	})
	t.Run("kakao says unlinked", func(t *testing.T) {
		h := newHarness(t, harnessOptions{kakao: true})
		h.applyDelay = time.Minute
		h.applyFunc = func(_ int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			res := h.state.apply(in, h.now())
			res.KakaoCheck = reaction.KakaoUnlinked
			return res, nil
		}
		h.send(time.Second, unlinkEnvelope("unlink:confirmed"))
		h.send(time.Hour, linked("jti-relinked", t0.Add(time.Hour)))
		require.NoError(t, h.runStream(streamInput()))
		revokes := h.stepsOf("RevokeSessions")
		require.Len(t, revokes, 1)
		require.Equal(t, t0.Add(time.Second+time.Minute), revokes[0].At, "revoked once Kakao confirmed the unlink")
		require.Equal(t, StepKey("unlink:confirmed", "user-unlinked", "revoke_sessions"), revokes[0].In.IdempotencyKey)
		require.Equal(t, []string{
			"user-unlinked/received=received", "user-unlinked/revoke_sessions=done", "user-unlinked/mark_unlinked=done",
			"user-unlinked/crm_upsert=done", "user-unlinked/schedule_purge=done", "user-unlinked/completed=done",
		}, h.auditsOf("unlink:confirmed"))
		require.Equal(t, reaction.KakaoUnlinked, h.auditFor("user-unlinked/mark_unlinked").Detail["kakao_check"])
	})
	t.Run("an unlink SET is not confirmed", func(t *testing.T) {
		h := newHarness(t, harnessOptions{kakao: true})
		h.applyDelay = time.Minute
		h.send(time.Second, unlinkedSET("jti-unlinked", t0))
		h.send(time.Hour, linked("jti-relinked", t0.Add(time.Hour)))
		require.NoError(t, h.runStream(streamInput()))
		revokes := h.stepsOf("RevokeSessions")
		require.Len(t, revokes, 1)
		require.Equal(t, t0.Add(time.Second), revokes[0].At)
		h.requireCompleted("jti-unlinked", "user-unlinked")
	})
}

// A pending purge is a timer in the stream.
func TestUserStreamPurgeTimer(t *testing.T) {
	t.Run("runs when due", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.send(time.Second, unlinkEnvelope("unlink:1"))
		var before, after StreamStatus
		h.queryAt(time.Hour, &before)
		h.queryAt(testPurgeAfter+time.Hour, &after)
		require.NoError(t, h.runStream(streamInput()))
		require.Equal(t, &userstate.PendingPurge{Cutoff: t0, Due: t0.Add(testPurgeAfter), EventKey: "unlink:1"}, before.Purge)
		require.Nil(t, after.Purge)

		require.Len(t, h.purges, 1)
		require.Equal(t, t0.Add(testPurgeAfter), h.purges[0].At, "the purge runs when it is due")
		require.Equal(t, reaction.RunPurgeInput{Subject: testStateSubject, Cutoff: t0}, h.purges[0].In)
		purges := h.stepsOf("PurgeSessions")
		require.Len(t, purges, 1)
		p := purges[0]
		require.Equal(t, map[string]string{"cutoff": t0.Format(time.RFC3339Nano)}, p.In.Params)
		require.Equal(t, StepKey("unlink:1", "purge", "sessions"), p.In.IdempotencyKey)
		require.Equal(t, "unlink:1", p.In.EventKey)
		require.Equal(t, testUserID, p.In.Event.Subject.UserID)
		require.Equal(t, testIssuer, p.In.Event.Subject.Issuer)
		out := h.outcomes("unlink:1")
		require.Equal(t, reaction.OutcomeDone, out["purge/run"])
		require.Equal(t, reaction.OutcomeDone, out["purge/sessions"])
		// The purge removed the contact: the CRM is synced again.
		require.Len(t, h.syncs, 2)
		require.Equal(t, t0.Add(testPurgeAfter), h.syncs[1])
		require.Equal(t, t0.Add(testPurgeAfter+time.Hour), h.now(), "then the stream idles")
	})
	t.Run("a newer unlink moves it", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.send(time.Second, unlinkedSET("jti-unlinked", t0))
		h.send(time.Hour, unlinkEnvelopeAt("unlink:2", t0.Add(time.Hour)))
		require.NoError(t, h.runStream(streamInput()))
		require.Len(t, h.purges, 1)
		require.Equal(t, t0.Add(time.Hour+testPurgeAfter), h.purges[0].At)
		require.True(t, t0.Add(time.Hour).Equal(h.purges[0].In.Cutoff))
		require.Equal(t, "scheduled", h.auditOf("jti-unlinked", "user-unlinked/schedule_purge").Detail["purge"])
		require.Equal(t, "moved", h.auditOf("unlink:2", "user-unlinked/schedule_purge").Detail["purge"])
		require.Equal(t, reaction.OutcomeDone, h.outcomes("unlink:2")["purge/run"])
	})
	t.Run("moved earlier and cancelled by the decision", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		pp := func(cutoff, due time.Duration, key string) *userstate.PendingPurge {
			return &userstate.PendingPurge{Cutoff: t0.Add(cutoff), Due: t0.Add(due), EventKey: key}
		}
		results := map[string]*userstate.PendingPurge{
			"jti-1": pp(0, 5*time.Hour, "jti-1"),
			"jti-2": pp(time.Minute, 3*time.Hour, "jti-2"), // a newer purge, due earlier
			"jti-3": pp(time.Minute, 3*time.Hour, "jti-2"), // unchanged: the timer stands
			"jti-4": pp(2*time.Minute, 8*time.Hour, "jti-4"),
			"jti-5": nil, // cancelled
		}
		h.applyFunc = func(_ int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			return reaction.ApplyResult{Version: 1, Purge: results[in.EventKey]}, nil
		}
		h.purgeFunc = func(in reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
			return reaction.RunPurgeResult{Decision: userstate.Decision{Purge: userstate.PurgeRun, Cutoff: in.Cutoff}}, nil
		}
		h.send(time.Second, setEnvelopeAt("jti-1", secevent.EventAccountEnabled, payloadWith(""), t0))
		h.send(time.Minute, setEnvelopeAt("jti-2", secevent.EventAccountEnabled, payloadWith(""), t0))
		h.send(2*time.Minute, setEnvelopeAt("jti-3", secevent.EventAccountEnabled, payloadWith(""), t0))
		h.send(3*time.Hour+10*time.Minute, setEnvelopeAt("jti-4", secevent.EventAccountEnabled, payloadWith(""), t0))
		h.send(3*time.Hour+20*time.Minute, setEnvelopeAt("jti-5", secevent.EventAccountEnabled, payloadWith(""), t0))
		require.NoError(t, h.runStream(streamInput()))
		require.Len(t, h.purges, 1, "only the purge due at 3h ran")
		require.Equal(t, t0.Add(3*time.Hour), h.purges[0].At)
		require.True(t, t0.Add(time.Minute).Equal(h.purges[0].In.Cutoff))
		require.Equal(t, reaction.OutcomeDone, h.outcomes("jti-2")["purge/run"])
		require.Len(t, h.stepsOf("PurgeSessions"), 1)
		require.Equal(t, []string{"jti-1", "jti-2", "jti-3", "jti-4", "jti-5"}, h.applyKeys())
		require.Equal(t, t0.Add(3*time.Hour+20*time.Minute+time.Hour), h.now(), "the cancelled purge's timer no longer keeps the stream")
	})
	t.Run("a link cancels it", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.send(time.Second, unlinkEnvelope("unlink:1"))
		h.send(time.Hour, linked("jti-relinked", t0.Add(time.Hour)))
		require.NoError(t, h.runStream(streamInput()))
		require.Empty(t, h.purges)
		require.Empty(t, h.stepsOf("PurgeSessions"))
		require.Equal(t, t0.Add(2*time.Hour), h.now(), "the stream idles once the purge is cancelled")
	})
	t.Run("the purge finds the user linked again", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.purgeFunc = func(in reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
			return reaction.RunPurgeResult{KakaoCheck: reaction.KakaoLinked, Decision: userstate.Decision{
				Purge: userstate.PurgeCancelled, Parts: map[string]userstate.Outcome{"purge": userstate.Applied}}}, nil
		}
		h.send(time.Second, unlinkEnvelope("unlink:1"))
		require.NoError(t, h.runStream(streamInput()))
		require.Len(t, h.purges, 1)
		require.Empty(t, h.stepsOf("PurgeSessions"))
		run := h.auditFor("purge/run")
		require.Equal(t, "cancelled", run.Outcome)
		require.Equal(t, reaction.KakaoLinked, run.Detail["kakao_check"])
		require.Equal(t, "unlink:1", run.EventKey)
	})
	t.Run("a purge carried over Continue-As-New", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.purgeFunc = func(in reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
			return reaction.RunPurgeResult{Decision: userstate.Decision{Purge: userstate.PurgeRun, Cutoff: in.Cutoff}}, nil
		}
		in := streamInput()
		subject := testStateSubject
		in.Subject = &subject
		in.Purge = &userstate.PendingPurge{Cutoff: t0.Add(-time.Hour), Due: t0.Add(2 * time.Hour), EventKey: "unlink:old"}
		require.NoError(t, h.runStream(in))
		require.Len(t, h.purges, 1)
		require.Equal(t, t0.Add(2*time.Hour), h.purges[0].At)
		require.Equal(t, reaction.RunPurgeInput{Subject: testStateSubject, Cutoff: t0.Add(-time.Hour)}, h.purges[0].In)
		purges := h.stepsOf("PurgeSessions")
		require.Len(t, purges, 1)
		require.Equal(t, t0.Add(-time.Hour).Format(time.RFC3339Nano), purges[0].In.Params["cutoff"])
	})
}

// account-purged purges at once: the sessions up to the decision's cutoff,
// and the CRM contact.
func TestUserStreamAccountPurged(t *testing.T) {
	t.Run("purged", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.send(time.Second, setEnvelopeAt("jti-purged", secevent.EventAccountPurged, payloadWith(""), t0))
		require.NoError(t, h.runStream(streamInput()))
		require.Len(t, h.stepsOf("RevokeSessions"), 1)
		purges := h.stepsOf("PurgeSessions")
		require.Len(t, purges, 1)
		require.Equal(t, map[string]string{"cutoff": t0.Format(time.RFC3339Nano)}, purges[0].In.Params)
		require.Equal(t, StepKey("jti-purged", "account-purged", "purge_data"), purges[0].In.IdempotencyKey)
		require.Equal(t, map[string]string{
			"account-purged/received": "received", "account-purged/revoke_sessions": "done", "account-purged/purge_data": "done",
			"account-purged/crm_delete": "done", "account-purged/completed": "done",
		}, h.outcomes("jti-purged"))
		h.requireCompleted("jti-purged", "account-purged")
		require.Len(t, h.syncs, 1)
		require.Empty(t, h.purges, "nothing was pending")
	})
	t.Run("the decision's cutoff", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		cutoff := t0.Add(-3 * time.Hour)
		h.applyFunc = func(_ int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			return reaction.ApplyResult{Version: 3, Decision: userstate.Decision{Purge: userstate.PurgeRun, Cutoff: cutoff,
				Parts: map[string]userstate.Outcome{"purge": userstate.Applied}}}, nil
		}
		h.send(time.Second, setEnvelopeAt("jti-purged", secevent.EventAccountPurged, payloadWith(""), t0))
		require.NoError(t, h.runStream(streamInput()))
		purges := h.stepsOf("PurgeSessions")
		require.Len(t, purges, 1)
		require.Equal(t, cutoff.Format(time.RFC3339Nano), purges[0].In.Params["cutoff"])
	})
	t.Run("covered by a newer purge", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.applyFunc = func(_ int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			return reaction.ApplyResult{Version: 3, Decision: userstate.Decision{
				Parts: map[string]userstate.Outcome{"purge": userstate.Superseded, "link": userstate.Superseded}}}, nil
		}
		h.send(time.Second, setEnvelopeAt("jti-purged", secevent.EventAccountPurged, payloadWith(""), t0))
		require.NoError(t, h.runStream(streamInput()))
		require.Empty(t, h.stepsOf("PurgeSessions"))
		out := h.outcomes("jti-purged")
		require.Equal(t, reaction.OutcomeSuperseded, out["account-purged/purge_data"])
		require.Equal(t, reaction.OutcomeSuperseded, out["account-purged/crm_delete"])
		require.Empty(t, h.syncs)
		h.requireCompleted("jti-purged", "account-purged")
	})
}

// A parked step waits for an operator's retry of its event (or of every
// parked step of the user); a retry for another event does not wake it.
func TestUserStreamParkedStepRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
	}{{"by its event key", "jti-park"}, {"by an empty key (all)", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			h.stepFuncs["SendNotice"] = func(n int, _ reaction.StepInput) (reaction.StepResult, error) {
				if n == 1 {
					return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("no template", reaction.ErrTypePermanent, nil)
				}
				return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
			}
			h.send(time.Second, disabled("jti-park", "hijacking", t0))
			var parked, other, done StreamStatus
			h.queryAt(time.Hour, &parked)
			h.signalRetry(2*time.Hour, 1, "jti-other")
			h.queryAt(2*time.Hour+time.Minute, &other)
			h.signalRetry(3*time.Hour, 1, tc.key)
			h.queryAt(3*time.Hour+time.Minute, &done)
			require.NoError(t, h.runStream(streamInput()))

			require.Equal(t, []string{"jti-park"}, parked.Parked)
			require.Equal(t, 1, parked.Running)
			require.Equal(t, []string{"jti-park"}, other.Parked, "a retry of another event leaves it parked")
			require.Empty(t, done.Parked)
			require.Equal(t, 0, done.Running)

			notices := h.stepsOf("SendNotice")
			require.Len(t, notices, 2)
			require.Equal(t, t0.Add(3*time.Hour), notices[1].At)
			require.Equal(t, notices[0].In.IdempotencyKey, notices[1].In.IdempotencyKey)
			require.Equal(t, []reaction.ParkInput{{EventKey: "jti-park", Step: "account-disabled/send_notice",
				WorkflowID: UserStreamID(testHash), Reason: h.parks[0].Reason}}, h.parks)
			require.Contains(t, h.parks[0].Reason, "no template")
			require.Equal(t, []string{"jti-park"}, h.unparks)
			out := h.outcomes("jti-park")
			require.Equal(t, OutcomeFailed, out["account-disabled/send_notice@1"])
			require.Equal(t, reaction.OutcomeDone, out["account-disabled/send_notice"])
			h.requireCompleted("jti-park", "account-disabled")
			require.Equal(t, t0.Add(4*time.Hour), h.now(), "idle an hour after the retried step")
		})
	}
}

// A retry request that arrives while the park is being recorded (the inbox
// already shows the event parked, so an operator may retry it) is not lost.
func TestUserStreamRetryWhileParkingIsNotLost(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.parkDelay = time.Minute
	h.stepFuncs["SendNotice"] = func(n int, _ reaction.StepInput) (reaction.StepResult, error) {
		if n == 1 {
			return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("no template", reaction.ErrTypePermanent, nil)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	h.send(time.Second, disabled("jti-early", "hijacking", t0))
	h.signalRetry(30*time.Second, 1, "jti-early")
	require.NoError(t, h.runStream(streamInput()))
	require.Len(t, h.stepsOf("SendNotice"), 2, "the retry sent while ParkEvent ran was dropped")
	h.requireCompleted("jti-early", "account-disabled")
}

// The state query reports the stream's work without personal data.
func TestUserStreamStateQuery(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.syncDelay = 10 * time.Minute
	h.send(time.Second, unlinkEnvelope("unlink:q"))
	var syncing, waiting StreamStatus
	h.queryAt(5*time.Minute, &syncing)
	h.queryAt(time.Hour, &waiting)
	require.NoError(t, h.runStream(streamInput()))
	pending := &userstate.PendingPurge{Cutoff: t0, Due: t0.Add(testPurgeAfter), EventKey: "unlink:q"}
	require.Equal(t, StreamStatus{SubjectHash: testHash, SyncRunning: true, Purge: pending, Seen: 1, Outcome: "running"}, syncing)
	require.Equal(t, StreamStatus{SubjectHash: testHash, Purge: pending, Seen: 1, Outcome: "done"}, waiting)
	b, err := json.Marshal(waiting)
	require.NoError(t, err)
	require.NotContains(t, string(b), testUserID)
}

// A stream with nothing to do completes after IdleAfter.
func TestUserStreamCompletesWhenIdle(t *testing.T) {
	t.Run("no events", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		require.NoError(t, h.runStream(streamInput()))
		require.Equal(t, t0.Add(time.Hour), h.now())
	})
	t.Run("default", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		require.NoError(t, h.runStream(UserStreamInput{SubjectHash: testHash}))
		require.Equal(t, t0.Add(DefaultIdleAfter), h.now())
	})
	t.Run("after the last work", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.syncDelay = 10 * time.Minute
		h.send(time.Second, linked("jti-1", t0))
		h.send(30*time.Minute, setEnvelopeAt("jti-2", secevent.EventAccountEnabled, payloadWith(""), t0))
		require.NoError(t, h.runStream(streamInput()))
		require.Equal(t, []string{"jti-1", "jti-2"}, h.applyKeys(), "an event within IdleAfter keeps the stream")
		require.Equal(t, t0.Add(30*time.Minute+time.Hour), h.now())
	})
}

func continuedAs(t *testing.T, err error) UserStreamInput {
	t.Helper()
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(err, &can), "want Continue-As-New, got %v", err)
	require.Equal(t, "UserStream", can.WorkflowType.Name)
	require.Equal(t, TaskQueue, can.TaskQueueName)
	var in UserStreamInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &in))
	return in
}

// A quiet stream whose history is long continues as new, carrying what it
// must not forget: the event keys it saw, its pending purge, the user.
func TestUserStreamContinuesAsNew(t *testing.T) {
	t.Run("long history", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.env.SetCurrentHistoryLength(historyLimit + 1)
		in := streamInput()
		// A queued event's key is in Seen (it was remembered when it arrived).
		in.Seen = []string{"jti-old", "unlink:can"}
		in.Queue = []StreamEvent{streamEvent(unlinkEnvelope("unlink:can"))}
		got := continuedAs(t, h.runStream(in))
		subject := testStateSubject
		require.Equal(t, UserStreamInput{
			SubjectHash: testHash, IdleAfter: time.Hour, Subject: &subject,
			Seen:  []string{"jti-old", "unlink:can"},
			Purge: &userstate.PendingPurge{Cutoff: t0, Due: t0.Add(testPurgeAfter), EventKey: "unlink:can"},
			// What an operator searches the stream by travels too.
			Types: []string{"user-unlinked"}, Categories: []string{"kakao-webhook"}, Webhooks: []string{"unlink"}, Last: "done",
		}, got)
		require.Equal(t, []string{"unlink:can"}, h.applyKeys())
		h.requireCompleted("unlink:can", "user-unlinked")
		require.Len(t, h.syncs, 1, "the sync ran before the stream continued")
	})
	t.Run("suggested by the server", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.env.SetContinueAsNewSuggested(true)
		got := continuedAs(t, h.runStream(streamInput()))
		require.Equal(t, UserStreamInput{SubjectHash: testHash, IdleAfter: time.Hour}, got)
		require.Equal(t, t0, h.now())
	})
	t.Run("waits until quiet", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.syncDelay = 10 * time.Minute
		h.env.SetCurrentHistoryLength(historyLimit + 1)
		in := streamInput()
		in.Seen = []string{"jti-can"}
		in.Queue = []StreamEvent{streamEvent(linked("jti-can", t0))}
		got := continuedAs(t, h.runStream(in))
		require.Equal(t, t0.Add(10*time.Minute), h.now(), "continued once the sync was through")
		require.False(t, got.Sync)
		require.Equal(t, []string{"jti-can"}, got.Seen)
		require.Equal(t, []string{"crm-sync/v1=done"}, h.auditsOf("crm-sync/"+testHash))
	})
	t.Run("the new run remembers the keys", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		in := streamInput()
		in.Seen = []string{"jti-seen"}
		h.send(time.Second, disabled("jti-seen", "", t0), disabled("jti-new", "", t0))
		require.NoError(t, h.runStream(in))
		require.Equal(t, []string{"jti-new"}, h.applyKeys())
	})
}

// Shadow mode audits what would run and runs nothing — no state change, no
// revocation; a step whose condition is not met would not run, and says so.
func TestUserStreamShadowMode(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  account-disabled:
    shadow: true
    steps:
      - revoke_sessions
      - lock_account
      - send_notice: {notice: account-hijacked, when: {reason: hijacking}}
`))
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{policy: p})
	h.send(time.Second, disabled("jti-shadow", "hijacking", t0), disabled("jti-shadow-2", "bulk-account", t0))
	require.NoError(t, h.runStream(streamInput()))
	require.Empty(t, h.steps)
	require.Empty(t, h.applies)
	require.Equal(t, []string{
		"account-disabled/received=received", "account-disabled/revoke_sessions=shadow", "account-disabled/lock_account=shadow",
		"account-disabled/send_notice=shadow", "account-disabled/completed=done",
	}, h.auditsOf("jti-shadow"))
	require.Equal(t, []string{
		"account-disabled/received=received", "account-disabled/revoke_sessions=shadow", "account-disabled/lock_account=shadow",
		"account-disabled/send_notice=skipped", "account-disabled/completed=done",
	}, h.auditsOf("jti-shadow-2"), "the condition applies in shadow too")
}

// An event whose state change fails for good parks in its own coroutine:
// the user's next event is applied meanwhile, and an operator's retry applies
// the parked one and runs the rest of its steps.
func TestUserStreamPermanentApplyFailureParksWithoutBlocking(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	mem := newMemState()
	h.applyFunc = func(n int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
		if in.EventKey == "jti-bad" && n == 1 {
			return reaction.ApplyResult{}, temporal.NewNonRetryableApplicationError("bad payload", reaction.ErrTypePermanent, nil)
		}
		return mem.apply(in, h.now()), nil
	}
	h.send(time.Second, disabled("jti-bad", "hijacking", t0), setEnvelope("jti-next", "session-revoked", payloadWith("")))
	var parked, done StreamStatus
	h.queryAt(time.Hour, &parked)
	h.signalRetry(2*time.Hour, 1, "jti-bad")
	h.queryAt(2*time.Hour+time.Minute, &done)
	require.NoError(t, h.runStream(streamInput()))

	require.Equal(t, []string{"jti-bad"}, parked.Parked)
	h.requireCompleted("jti-next", "session-revoked")
	require.Empty(t, done.Parked)
	out := h.outcomes("jti-bad")
	require.Equal(t, OutcomeFailed, out["account-disabled/apply@1"])
	require.Equal(t, reaction.OutcomeDone, out["account-disabled/lock_account"])
	h.requireCompleted("jti-bad", "account-disabled")
	require.Len(t, h.parks, 1)
	require.Equal(t, "account-disabled/apply", h.parks[0].Step)
}

// Transient failures retry for hours before a step parks: the configured
// window (SETFLOW_STEP_RETRY_FOR), else DefaultStepRetryFor, reaches every
// step of a user's stream and of a reaction.
func TestStepsRetryForTheConfiguredWindow(t *testing.T) {
	for _, tc := range []struct {
		configured, want time.Duration
	}{{0, DefaultStepRetryFor}, {90 * time.Minute, 90 * time.Minute}} {
		h := newHarness(t, harnessOptions{retryFor: tc.configured})
		h.send(time.Second, disabled("jti-window", "hijacking", t0))
		require.NoError(t, h.runStream(streamInput()))
		for _, name := range []string{"RevokeSessions", "SendNotice"} {
			calls := h.stepsOf(name)
			require.NotEmpty(t, calls, name)
			require.Equal(t, tc.want, calls[0].RetryFor, name)
		}
		h = newHarness(t, harnessOptions{retryFor: tc.configured})
		_, err := h.runReaction(talkShareEnvelope("talk-share:window"))
		require.NoError(t, err)
		require.Equal(t, tc.want, h.stepsOf("RecordTalkShare")[0].RetryFor)
	}
}

// A purge whose state change fails for good parks for an operator instead of
// being dropped; the retry (of the unlink's key) runs it.
func TestUserStreamFailedPurgeParksAndRetryRunsIt(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	failed := false
	h.purgeFunc = func(in reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
		if !failed {
			failed = true
			return reaction.RunPurgeResult{}, temporal.NewNonRetryableApplicationError("broken state", reaction.ErrTypePermanent, nil)
		}
		return h.state.runPurge(in, h.now()), nil
	}
	h.send(time.Second, unlinkEnvelope("unlink:1"))
	var parked StreamStatus
	h.queryAt(testPurgeAfter+time.Hour, &parked)
	h.signalRetry(testPurgeAfter+2*time.Hour, 1, "unlink:1")
	require.NoError(t, h.runStream(streamInput()))

	require.Equal(t, []string{"unlink:1"}, parked.Parked)
	require.Len(t, h.purges, 2)
	out := h.outcomes("unlink:1")
	require.Equal(t, OutcomeFailed, out["purge/run@1"])
	require.Equal(t, reaction.OutcomeDone, out["purge/run"])
	require.Equal(t, reaction.OutcomeDone, out["purge/sessions"])
	require.Len(t, h.stepsOf("PurgeSessions"), 1)
}

// An address change that names earlier notices (it arrived after them but
// happened before) runs each again for the previous addresses only, under
// that notice's key, as steps of the change's own event.
func TestUserStreamRenotifiesPreviousAddresses(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	notices := []userstate.NoticeRecord{
		{Key: "jti-pw/credential-change/send_notice", Kind: "password-changed", At: t0.Add(time.Hour)},
		{Key: "jti-hijack/account-disabled/send_notice", Kind: "account-hijacked", At: t0.Add(2 * time.Hour)},
	}
	h.applyFunc = func(_ int, in reaction.ApplyInput) (reaction.ApplyResult, error) {
		return reaction.ApplyResult{Version: 1, Decision: userstate.Decision{
			Parts: map[string]userstate.Outcome{"field:email": userstate.Superseded}, Renotify: notices}}, nil
	}
	h.send(time.Second, setEnvelopeAt("jti-profile", secevent.PrefixKakao+"user-profile-changed", payloadWith(""), t0))
	require.NoError(t, h.runStream(streamInput()))
	h.requireCompleted("jti-profile", "user-profile-changed")
	sends := h.stepsOf("SendNotice")
	require.Len(t, sends, 2)
	for i, call := range sends {
		require.Equal(t, map[string]string{"notice": notices[i].Kind, "renotify": "true", "notice_key": notices[i].Key,
			"event_time": notices[i].At.Format(time.RFC3339Nano)}, call.In.Params)
		require.Equal(t, "jti-profile", call.In.EventKey)
	}
	rows := h.auditsOf("jti-profile")
	require.Equal(t, []string{"user-profile-changed/send_notice=done", "user-profile-changed/send_notice#2=done", "user-profile-changed/completed=done"},
		rows[len(rows)-3:])
}

// notifyPolicy sends the service a document for each lock and unlock.
func notifyPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(`
version: 1
events:
  account-disabled:
    steps: [lock_account, notify_service]
  account-enabled:
    steps: [unlock_account, notify_service]
`))
	require.NoError(t, err)
	return p
}

// notifyCalls maps each event key to the times its NotifyService attempts ran.
func (h *harness) notifyCalls() map[string][]time.Time {
	out := map[string][]time.Time{}
	for _, c := range h.stepsOf("NotifyService") {
		out[c.In.EventKey] = append(out[c.In.EventKey], c.At)
	}
	return out
}

// The service gets one document at a time per user: a later event's
// notify_service waits while an earlier one's is retried (each document
// carries the state as it is when sent, so the service never sees
// state.version go back).
func TestUserStreamNotifiesTheServiceOneAtATime(t *testing.T) {
	h := newHarness(t, harnessOptions{policy: notifyPolicy(t)})
	failures := 0
	h.stepFuncs["NotifyService"] = func(_ int, in reaction.StepInput) (reaction.StepResult, error) {
		if in.EventKey == "jti-first" && failures < 3 {
			failures++
			return reaction.StepResult{}, temporal.NewApplicationError("service answered 503", "Unavailable")
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	h.send(time.Second, disabled("jti-first", "", t0))
	h.send(2*time.Second, setEnvelopeAt("jti-second", secevent.EventAccountEnabled, payloadWith(""), t0.Add(time.Second)))
	require.NoError(t, h.runStream(streamInput()))
	h.requireCompleted("jti-first", "account-disabled")
	h.requireCompleted("jti-second", "account-enabled")

	calls := h.notifyCalls()
	require.Len(t, calls["jti-first"], 4, "three transient failures, then the document")
	require.Len(t, calls["jti-second"], 1)
	last := calls["jti-first"][3]
	require.False(t, calls["jti-second"][0].Before(last),
		"the second document was sent at %v, while the first was still being retried (until %v)", calls["jti-second"][0], last)
}

// A document the service refused for good parks outside the lane: the
// user's later documents go on, and an operator's retry sends it then.
func TestUserStreamParkedNotifyDoesNotHoldUpTheNext(t *testing.T) {
	h := newHarness(t, harnessOptions{policy: notifyPolicy(t)})
	h.stepFuncs["NotifyService"] = func(n int, in reaction.StepInput) (reaction.StepResult, error) {
		if in.EventKey == "jti-first" && n == 1 {
			return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("service answered 400", reaction.ErrTypePermanent, nil)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	h.send(time.Second, disabled("jti-first", "", t0))
	h.send(time.Minute, setEnvelopeAt("jti-second", secevent.EventAccountEnabled, payloadWith(""), t0.Add(time.Second)))
	h.signalRetry(time.Hour, 1, "jti-first")
	require.NoError(t, h.runStream(streamInput()))
	h.requireCompleted("jti-first", "account-disabled")
	h.requireCompleted("jti-second", "account-enabled")

	calls := h.notifyCalls()
	require.Len(t, calls["jti-second"], 1)
	require.True(t, calls["jti-second"][0].Before(t0.Add(time.Hour)), "the second document waited for the parked one's retry")
	require.Equal(t, []time.Time{t0.Add(time.Second), t0.Add(time.Hour)}, calls["jti-first"])
}
