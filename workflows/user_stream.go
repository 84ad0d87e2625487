package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/internal/searchattr"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
)

// UserStreamID names the stream of one user. The subject hash is keyed, so
// the id reveals nothing about the user.
func UserStreamID(subjectHash string) string { return "setflow-user/" + subjectHash }

// SignalEvent delivers one inbox entry's events to a user's stream (the relay
// sends it with Signal-With-Start).
const SignalEvent = "event"

// CRMSyncKeyPrefix starts the audit event key of a user's CRM syncs
// ("crm-sync/<subject hash>"); a parked sync is retried under that key.
const CRMSyncKeyPrefix = "crm-sync/"

// QueryState returns a stream's StreamStatus.
const QueryState = "state"

// StreamEvent is one inbox entry for one user's stream.
type StreamEvent struct {
	Envelope event.Envelope `json:"envelope"`
	// Events are the indexes of the envelope's events about this user.
	Events []int `json:"events"`
}

// UserStreamInput starts a user's stream; the fields other than SubjectHash
// are what a run carries over Continue-As-New.
type UserStreamInput struct {
	SubjectHash string `json:"subject_hash"`
	// IdleAfter is how long a stream with nothing to do waits for more
	// events before it completes (DefaultIdleAfter when zero).
	IdleAfter time.Duration           `json:"idle_after,omitempty"`
	Subject   *userstate.Subject      `json:"subject,omitempty"`
	Queue     []StreamEvent           `json:"queue,omitempty"`
	Seen      []string                `json:"seen,omitempty"`
	Sync      bool                    `json:"sync,omitempty"`
	Purge     *userstate.PendingPurge `json:"purge,omitempty"`
	// RetryFor is the step retry window of the latest plan.
	RetryFor time.Duration `json:"retry_for,omitempty"`
	// Seen names of the search attributes (carried so that an operator still
	// finds the user's stream by an event type it handled before).
	Types      []string `json:"types,omitempty"`
	Categories []string `json:"categories,omitempty"`
	Webhooks   []string `json:"webhooks,omitempty"`
	Last       string   `json:"last,omitempty"`
}

// StreamStatus is what the state query answers (no personal data).
type StreamStatus struct {
	SubjectHash string   `json:"subject_hash"`
	Queued      int      `json:"queued"`
	Running     int      `json:"running"`
	Parked      []string `json:"parked,omitempty"`
	// Held are the events whose destructive steps wait for an operator
	// (`setflow holds approve|reject`).
	Held        []string                `json:"held,omitempty"`
	Outcome     string                  `json:"outcome,omitempty"`
	SyncPending bool                    `json:"sync_pending"`
	SyncRunning bool                    `json:"sync_running"`
	Purge       *userstate.PendingPurge `json:"purge,omitempty"`
	Seen        int                     `json:"seen"`
}

const (
	// DefaultIdleAfter is how long an idle stream lives.
	DefaultIdleAfter = 10 * time.Minute
	// seenLimit bounds the event keys a stream remembers across
	// Continue-As-New; older repeats are caught by the state store, which
	// keeps every applied key.
	seenLimit = 2000
	// historyLimit is the history length past which a quiet stream continues
	// as new (Temporal suggests it well before its hard limits too).
	historyLimit = 10000
)

// UserStream is the one ordered stream of work of one user. Events arrive as
// signals; each is applied to the user's state (reaction.ApplyEvent) one at
// a time, in arrival order, and the state machine decides by event time what
// it changes. Then:
//   - session revocation runs at once, in its own coroutine, before the
//     event is even applied, so it never waits behind another step's
//     retries (it is order-independent: sessions created after the event
//     survive);
//   - steps that carry a state change report what the state machine decided
//     (done, or superseded: a newer event decided that part);
//   - CRM steps ask the stream's sync loop to bring the CRM to the current
//     state, one sync at a time;
//   - notify_service steps go through the user's notify lane, one at a
//     time across the user's events, so the service gets the user's state
//     one document at a time;
//   - other steps (notices, Kakao logout, a service's own) run in the
//     event's coroutine.
//
// A pending purge is a timer in the stream. Repeated event keys are skipped
// (signals are not deduplicated); the set travels over Continue-As-New. A
// stream with nothing to do completes after IdleAfter.
//
// Versioning: a change to the commands this workflow issues for the same
// history (added, removed or reordered activities, timers or coroutines) must
// be guarded with workflow.GetVersion, keyed by a change id, so that streams
// in flight replay; the replay tests over testdata/histories catch an
// unguarded change.
func UserStream(ctx workflow.Context, in UserStreamInput) error {
	s := newStream(ctx, in)
	if err := workflow.SetQueryHandler(ctx, QueryState, func() (StreamStatus, error) { return s.status(), nil }); err != nil {
		return err
	}
	// Versioned: search attributes, current details and the blast-radius
	// guard issue commands that streams recorded before them did not.
	s.ops = workflow.GetVersion(ctx, "operators", workflow.DefaultVersion, 1) >= 1
	if s.ops {
		s.upsert(searchattr.Subject.ValueSet(s.hash))
		workflow.Go(ctx, s.receiveHoldDecisions)
	}
	// Versioned: streams recorded before it ran notify_service steps of
	// different events side by side.
	if workflow.GetVersion(ctx, "notify-service-one-at-a-time", workflow.DefaultVersion, 1) >= 1 {
		s.notifyLane = &lane{}
	}
	workflow.Go(ctx, s.receiveRetries)
	workflow.Go(ctx, s.syncLoop)
	if in.Purge != nil {
		s.setPurge(in.Purge)
	}
	for {
		s.drainSignals()
		if len(s.queue) > 0 {
			se := s.queue[0]
			s.queue = s.queue[1:]
			if err := s.process(se); err != nil {
				// Only a non-retryable error gets here (a broken plan or
				// audit): the stream must go on with the user's other events
				// rather than fail and lose its queue.
				workflow.GetLogger(ctx).Error("user stream: event not processed", "event", se.Envelope.Key, "error", err)
			}
			continue
		}
		if s.quiet() && s.historyLong() {
			// Signals that arrived with this task travel in the new run's queue.
			s.drainSignals()
			return workflow.NewContinueAsNewError(ctx, UserStream, s.carry())
		}
		s.refresh()
		idle := s.idle()
		timedOut := false
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(s.events, func(c workflow.ReceiveChannel, _ bool) {
			var se StreamEvent
			c.Receive(ctx, &se)
			s.enqueue(se)
		})
		sel.AddReceive(s.wake, func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, nil) })
		var cancelTimer workflow.CancelFunc
		if idle {
			var tctx workflow.Context
			tctx, cancelTimer = workflow.WithCancel(ctx)
			sel.AddFuture(workflow.NewTimer(tctx, s.idleAfter), func(workflow.Future) { timedOut = true })
		}
		sel.Select(ctx)
		if cancelTimer != nil && !timedOut {
			cancelTimer()
		}
		if timedOut {
			s.drainSignals()
			if len(s.queue) == 0 && s.idle() {
				workflow.GetLogger(ctx).Info("user stream idle: completing", "subject", s.hash)
				return nil
			}
		}
	}
}

type stream struct {
	ctx       workflow.Context
	hash      string
	subject   *userstate.Subject
	idleAfter time.Duration
	events    workflow.ReceiveChannel
	wake      workflow.Channel

	queue     []StreamEvent
	seen      map[string]bool
	seenOrder []string

	running     int
	parked      map[string]bool
	syncPending bool
	syncRunning bool

	// notifyLane lets one notify_service step of this user through at a
	// time (nil in runs recorded before it): the service gets the user's
	// state one document at a time, so state.version never goes back.
	notifyLane *lane

	purge       *userstate.PendingPurge
	cancelPurge workflow.CancelFunc
	retryFor    time.Duration

	retryAll int
	retryKey map[string]int

	// Operators' view (see visibility.go); ops is false for runs recorded
	// before it existed.
	ops        bool
	held       map[string]string // event key → event name, while held
	parkedStep map[string]string // event key → the step that parked
	holdAll    int
	holdKey    map[string]int
	types      []string
	categories []string
	webhooks   []string
	last       string
	tallies    map[string]*tally
	shown      shown
}

func newStream(ctx workflow.Context, in UserStreamInput) *stream {
	s := &stream{
		ctx: ctx, hash: in.SubjectHash, subject: in.Subject, idleAfter: in.IdleAfter,
		events: workflow.GetSignalChannel(ctx, SignalEvent), wake: workflow.NewBufferedChannel(ctx, 1),
		seen: map[string]bool{}, parked: map[string]bool{}, retryKey: map[string]int{}, syncPending: in.Sync,
		retryFor: in.RetryFor,
		held:     map[string]string{}, parkedStep: map[string]string{}, holdKey: map[string]int{}, tallies: map[string]*tally{},
		types: in.Types, categories: in.Categories, webhooks: in.Webhooks, last: in.Last,
	}
	if s.idleAfter <= 0 {
		s.idleAfter = DefaultIdleAfter
	}
	for _, k := range in.Seen {
		s.remember(k)
	}
	s.queue = append(s.queue, in.Queue...)
	return s
}

func (s *stream) remember(key string) {
	if s.seen[key] {
		return
	}
	s.seen[key] = true
	s.seenOrder = append(s.seenOrder, key)
	if len(s.seenOrder) > seenLimit {
		delete(s.seen, s.seenOrder[0])
		s.seenOrder = s.seenOrder[1:]
	}
}

// enqueue takes an event unless its key was seen: a signal may be repeated
// (the relay re-sends an entry whose dispatch it could not record).
func (s *stream) enqueue(se StreamEvent) {
	if s.seen[se.Envelope.Key] {
		workflow.GetLogger(s.ctx).Info("user stream: repeated event skipped", "event", se.Envelope.Key)
		return
	}
	s.remember(se.Envelope.Key)
	s.queue = append(s.queue, se)
}

func (s *stream) drainSignals() {
	var se StreamEvent
	for s.events.ReceiveAsync(&se) {
		s.enqueue(se)
		se = StreamEvent{}
	}
}

// quiet: nothing runs, so the run can continue as new without losing work.
func (s *stream) quiet() bool { return s.running == 0 && !s.syncRunning }

func (s *stream) idle() bool {
	return s.quiet() && !s.syncPending && s.purge == nil && len(s.queue) == 0
}

func (s *stream) historyLong() bool {
	info := workflow.GetInfo(s.ctx)
	return info.GetContinueAsNewSuggested() || info.GetCurrentHistoryLength() > historyLimit
}

func (s *stream) carry() UserStreamInput {
	return UserStreamInput{SubjectHash: s.hash, IdleAfter: s.idleAfter, Subject: s.subject,
		Queue: s.queue, Seen: s.seenOrder, Sync: s.syncPending, Purge: s.purge, RetryFor: s.retryFor,
		Types: s.types, Categories: s.categories, Webhooks: s.webhooks, Last: s.last}
}

func (s *stream) status() StreamStatus {
	st := StreamStatus{SubjectHash: s.hash, Queued: len(s.queue), Running: s.running,
		SyncPending: s.syncPending, SyncRunning: s.syncRunning, Purge: s.purge, Seen: len(s.seen)}
	if len(s.parked) > 0 {
		st.Parked = slices.Sorted(maps.Keys(s.parked))
	}
	if len(s.held) > 0 {
		st.Held = slices.Sorted(maps.Keys(s.held))
	}
	if s.ops {
		st.Outcome = s.outcome()
	}
	return st
}

func (s *stream) notify() { s.wake.SendAsync(true) }

// spawn runs fn in a coroutine that counts as running work.
func (s *stream) spawn(fn func(ctx workflow.Context)) {
	s.running++
	workflow.Go(s.ctx, func(ctx workflow.Context) {
		defer func() { s.running--; s.notify() }()
		fn(ctx)
	})
}

// receiveRetries takes operators' retry requests: the payload names the
// event key to retry, or nothing for every parked step of this user.
func (s *stream) receiveRetries(ctx workflow.Context) {
	ch := workflow.GetSignalChannel(ctx, SignalRetry)
	for {
		var key string
		ch.Receive(ctx, &key)
		if key == "" {
			s.retryAll++
		} else {
			s.retryKey[key]++
		}
		s.notify()
	}
}

func (s *stream) retries(key string) int { return s.retryAll + s.retryKey[key] }

// awaitRetry is a parked step's wait: a retry request for its key (or all)
// that arrives after it parked, or ParkTimeout.
func (s *stream) awaitRetry(ctx workflow.Context, key string) func() func() bool {
	return func() func() bool {
		before := s.retries(key)
		return func() bool {
			s.parked[key] = true
			s.refresh()
			defer func() { delete(s.parked, key); delete(s.parkedStep, key); s.refresh() }()
			ok, err := workflow.AwaitWithOptions(ctx, workflow.AwaitOptions{Timeout: ParkTimeout,
				TimerOptions: workflow.TimerOptions{Summary: "parked: waiting for setflow events retry"}},
				func() bool { return s.retries(key) > before })
			return ok && err == nil
		}
	}
}

func applyOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		// The state must be applied before anything that depends on it: retry
		// as long as the database (or Kakao, for an unlink check) is away.
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute,
			NonRetryableErrorTypes: []string{reaction.ErrTypePermanent}},
	}
}

// process applies one inbox entry's events for this user, in order.
func (s *stream) process(se StreamEvent) error {
	env := se.Envelope
	var plans []reaction.PlannedEvent
	lctx := workflow.WithLocalActivityOptions(s.ctx, workflow.LocalActivityOptions{StartToCloseTimeout: 10 * time.Second})
	if err := localUntilDone(lctx, reaction.PlanReaction, env, &plans); err != nil {
		return err
	}
	if len(plans) != len(env.Events) {
		return temporal.NewNonRetryableApplicationError("plan does not match the events", "BadPlan", nil)
	}
	for _, i := range se.Events {
		if i < 0 || i >= len(env.Events) {
			continue
		}
		ev := env.Events[i]
		if ev.Subject.UserID == "" {
			ev.Subject = env.Subject
		}
		if s.subject == nil {
			s.subject = &userstate.Subject{Hash: s.hash, Issuer: ev.Subject.Issuer, UserID: ev.Subject.UserID}
		}
		ev.Time = plans[i].Time
		s.retryFor = plans[i].RetryFor
		applyKey := env.Key
		if len(env.Events) > 1 {
			applyKey = fmt.Sprintf("%s#%d", env.Key, i)
		}
		if err := s.event(env, applyKey, ev, plans[i]); err != nil {
			return err
		}
	}
	return nil
}

// event runs one event: received, revocation at once, the state change, and
// the rest of its steps in a coroutine.
func (s *stream) event(env event.Envelope, applyKey string, ev event.Event, plan reaction.PlannedEvent) error {
	r := s.newRunner(s.ctx, env.Key, ev)
	received := map[string]any{"source": string(env.Source), "event_time": ev.Time, "shadow": plan.Reaction.Shadow,
		"test_account": plan.TestAccount,
		"steps":        len(plan.Reaction.Steps)}
	if plan.Clamped {
		received["clamped"] = true
	}
	if err := r.audit("received", OutcomeReceived, received); err != nil {
		return err
	}
	steps := plan.Reaction.Steps
	labels := make([]string, len(steps))
	for i, st := range steps {
		labels[i] = r.label(st.Name)
	}
	payload := map[string]any{}
	_ = json.Unmarshal(ev.Payload, &payload)
	s.observeEvent(env, ev)
	if plan.Reaction.Shadow {
		for i, st := range steps {
			outcome, detail := OutcomeShadow, map[string]any{"params": st.Params}
			if !matches(st.When, payload) {
				outcome, detail = OutcomeSkipped, map[string]any{"reason": "condition not met"}
			}
			if err := r.audit(labels[i], outcome, detail); err != nil {
				return err
			}
		}
		return r.audit(StepCompleted, reaction.OutcomeDone, nil)
	}
	if s.ops {
		if destructive := destructiveSteps(steps, payload); len(destructive) > 0 {
			v, err := s.admit(s.ctx, env.Key, ev, destructive)
			if err != nil {
				return err
			}
			if v.Decision != guard.Admitted {
				s.spawn(func(ctx workflow.Context) {
					s.holdEvent(ctx, env, applyKey, ev, plan, labels, payload, destructive, v)
				})
				return nil
			}
		}
	}
	return s.act(s.ctx, env, applyKey, ev, plan, labels, payload)
}

// act runs an admitted event: revocation at once, the state change, then the
// rest of its steps in a coroutine.
func (s *stream) act(ctx workflow.Context, env event.Envelope, applyKey string, ev event.Event, plan reaction.PlannedEvent,
	labels []string, payload map[string]any) error {
	steps := plan.Reaction.Steps
	// Revocation first, unless an unlink webhook must be confirmed with
	// Kakao before it may end a re-linked user's sessions.
	var revocations []workflow.Future
	if !plan.ConfirmUnlink {
		for i, st := range steps {
			if st.Name == policy.RevokeSessions && matches(st.When, payload) {
				st, label := st, labels[i]
				f, settle := workflow.NewFuture(s.ctx)
				revocations = append(revocations, f)
				s.spawn(func(ctx workflow.Context) { settle.Set(nil, s.runStep(ctx, env.Key, ev, st, label)) })
			}
		}
	}
	in := reaction.ApplyInput{Subject: *s.subject, EventKey: applyKey, Source: env.Source, Event: ev, Steps: steps}
	apply := func(ctx workflow.Context) (reaction.ApplyResult, error) {
		var res reaction.ApplyResult
		actx := workflow.WithActivityOptions(ctx, withSummary(applyOptions(), "apply "+ev.Name+" to the user's state"))
		err := workflow.ExecuteActivity(actx, reaction.ApplyEvent, in).Get(actx, &res)
		return res, err
	}
	// The rest of the event runs in its own coroutine once the state says
	// what changed.
	applied := func(res reaction.ApplyResult) {
		s.setPurge(res.Purge)
		if res.Decision.ContactChanged {
			// The CRM follows the state, whichever event changed it.
			s.requestSync()
		}
	}
	rest := func(ctx workflow.Context, res reaction.ApplyResult) {
		if !s.finish(ctx, env.Key, ev, plan, labels, payload, res) || !s.renotify(ctx, env.Key, ev, res.Decision.Renotify) {
			s.failed(env.Key)
			return
		}
		for _, f := range revocations {
			if f.Get(ctx, nil) != nil {
				s.failed(env.Key)
				return
			}
		}
		// Every step of the event is through: operators (and tests) read
		// this row as the event's end.
		r := s.newRunner(ctx, env.Key, ev)
		_ = r.audit(StepCompleted, reaction.OutcomeDone, nil)
	}
	res, err := apply(ctx)
	if err == nil {
		applied(res)
		s.spawn(func(ctx workflow.Context) { rest(ctx, res) })
		return nil
	}
	// A permanent error: the event parks for an operator, in its own
	// coroutine — the user's later events go on, which is safe because the
	// state machine does not depend on the order it sees events in.
	s.spawn(func(ctx workflow.Context) {
		r := s.newRunner(ctx, env.Key, ev)
		for attempt := 1; ; attempt++ {
			if aerr := r.audit(fmt.Sprintf("apply@%d", attempt), OutcomeFailed, map[string]any{"error": err.Error()}); aerr != nil {
				return
			}
			if perr := r.park("apply", err); perr != nil {
				workflow.GetLogger(ctx).Error("user stream: event gave up", "event", env.Key, "error", perr)
				s.failed(env.Key)
				return
			}
			if res, err = apply(ctx); err == nil {
				applied(res)
				rest(ctx, res)
				return
			}
		}
	})
	return nil
}

// StepCompleted is the audit step written when all of an event's steps are
// through (as "<event name>/completed").
const StepCompleted = "completed"

// newRunner is a runner for one event's steps in this stream: parked steps
// wait for a retry of their event key, transient failures retry for the
// configured time.
func (s *stream) newRunner(ctx workflow.Context, eventKey string, ev event.Event) *runner {
	r := newRunner(ctx, eventKey, ev, s.hash)
	r.armRetry = s.awaitRetry(ctx, eventKey)
	r.retryFor = s.retryFor
	if s.ops {
		r.onAudit = func(step, outcome string) { s.observeOutcome(eventKey, step, outcome) }
		r.onPark = func(step string) { s.parkedStep[eventKey] = step }
	}
	return r
}

// runStep runs one activity step with its own runner (audit and parking).
func (s *stream) runStep(ctx workflow.Context, eventKey string, ev event.Event, st policy.Step, label string) error {
	r := s.newRunner(ctx, eventKey, ev)
	_, err := r.step(st, label)
	if err != nil {
		workflow.GetLogger(ctx).Error("user stream: step gave up", "event", eventKey, "step", label, "error", err)
	}
	return err
}

// finish audits the state steps as the state machine decided and runs the
// event's other steps, in policy order.
func (s *stream) finish(ctx workflow.Context, eventKey string, ev event.Event, plan reaction.PlannedEvent,
	labels []string, payload map[string]any, res reaction.ApplyResult) bool {
	r := s.newRunner(ctx, eventKey, ev)
	log := workflow.GetLogger(ctx)
	d := res.Decision
	stale := res.KakaoCheck == reaction.KakaoLinked
	for i, st := range plan.Reaction.Steps {
		label := labels[i]
		if !matches(st.When, payload) {
			if err := r.audit(label, OutcomeSkipped, map[string]any{"reason": "condition not met"}); err != nil {
				log.Error("audit failed", "error", err)
				return false
			}
			continue
		}
		var err error
		switch {
		case st.Name == policy.RevokeSessions && !plan.ConfirmUnlink:
			continue // already running
		case st.Name == policy.RevokeSessions && stale:
			err = r.audit(label, reaction.OutcomeSuperseded, map[string]any{"reason": "kakao says the user is linked now"})
		case policy.KindOf(st.Name) == policy.CRMStep:
			err = s.crmStep(r, label, d)
		case st.Name == policy.NotifyService:
			r.lane = s.notifyLane
			_, err = r.step(st, label)
			r.lane = nil
		case st.Name == policy.PurgeData:
			if d.Purge != userstate.PurgeRun {
				err = r.audit(label, reaction.OutcomeSuperseded, map[string]any{"reason": "a newer purge already covers this"})
				break
			}
			_, err = r.step(policy.Step{Name: policy.PurgeData, Params: map[string]string{"cutoff": d.Cutoff.Format(time.RFC3339Nano)}}, label)
		case policy.KindOf(st.Name) == policy.StateStep:
			err = s.stateStep(r, label, st.Name, res)
		default:
			_, err = r.step(st, label)
		}
		if err != nil {
			log.Error("user stream: step gave up", "event", eventKey, "step", label, "error", err)
			return false
		}
	}
	return true
}

// renotify runs the notices that an address change arriving late owes the
// address it revealed (userstate.Decision.Renotify): each sends the earlier
// notice to the previous addresses only, under that notice's keys, so an
// address told before is not told again. They are this event's steps.
func (s *stream) renotify(ctx workflow.Context, eventKey string, ev event.Event, recs []userstate.NoticeRecord) bool {
	// Versioned: a result recorded by a newer activity worker than the
	// workflow code that ran it has a Renotify that history never acted on.
	if len(recs) == 0 || workflow.GetVersion(ctx, "renotify-previous-addresses", workflow.DefaultVersion, 1) < 1 {
		return true
	}
	r := s.newRunner(ctx, eventKey, ev)
	for _, rec := range recs {
		st := policy.Step{Name: policy.SendNotice, Params: map[string]string{
			"notice": rec.Kind, "renotify": "true", "notice_key": rec.Key, "event_time": rec.At.Format(time.RFC3339Nano)}}
		// Labelled as the notice step it is, so that the audit and a bulk
		// re-drive of parked notices (-step send_notice) find it.
		if _, err := r.step(st, r.label(policy.SendNotice)); err != nil {
			workflow.GetLogger(ctx).Error("user stream: renotify gave up", "event", eventKey, "error", err)
			return false
		}
	}
	return true
}

// stateStep audits what the state machine decided for a step's parts.
func (s *stream) stateStep(r *runner, label, step string, res reaction.ApplyResult) error {
	d := res.Decision
	if res.KakaoCheck == reaction.KakaoLinked && (step == policy.MarkUnlinked || step == policy.SchedulePurge) {
		return r.audit(label, reaction.OutcomeSuperseded, map[string]any{"reason": "kakao says the user is linked now"})
	}
	detail := map[string]any{}
	if res.KakaoCheck != "" {
		detail["kakao_check"] = res.KakaoCheck
	}
	if res.Repeat {
		detail["repeat"] = true
	}
	switch step {
	case policy.SchedulePurge, policy.CancelPurge:
		if d.Purge != "" {
			detail["purge"] = string(d.Purge)
			if res.Purge != nil && step == policy.SchedulePurge {
				detail["due"] = res.Purge.Due
			}
			return r.audit(label, reaction.OutcomeDone, detail)
		}
	case policy.RefreshProfile:
		if res.FieldsFrom != "" {
			detail["source"] = res.FieldsFrom
		}
	}
	def, _ := policy.Lookup(step)
	switch d.Of(def.Parts...) {
	case userstate.Applied:
		return r.audit(label, reaction.OutcomeDone, detail)
	case userstate.Superseded:
		detail["reason"] = "a newer event already decided this"
		return r.audit(label, reaction.OutcomeSuperseded, detail)
	}
	detail["reason"] = "the state already holds this"
	return r.audit(label, OutcomeSkipped, detail)
}

// crmStep audits the CRM step: the event asked for a sync (requested in
// event, for any change of the desired contact) or changed nothing to sync.
func (s *stream) crmStep(r *runner, label string, d userstate.Decision) error {
	if d.ContactChanged {
		return r.audit(label, reaction.OutcomeDone, map[string]any{"sync": "requested"})
	}
	if !d.Changed() && len(d.Parts) > 0 && d.Of("link", "lock", "field", "channel", "purge", "consent", "reauth") == userstate.Superseded {
		return r.audit(label, reaction.OutcomeSuperseded, map[string]any{"reason": "a newer event already decided the contact"})
	}
	return r.audit(label, OutcomeSkipped, map[string]any{"reason": "the contact did not change"})
}

func (s *stream) requestSync() {
	s.syncPending = true
	s.notify()
}

func syncOptions(retryFor time.Duration) workflow.ActivityOptions {
	if retryFor <= 0 {
		retryFor = DefaultStepRetryFor
	}
	return workflow.ActivityOptions{
		TaskQueue:           CRMTaskQueue,
		StartToCloseTimeout: 30 * time.Second,
		// A sync always sends the current state, so retrying it is always
		// right: retry as long as any step does, then wait for an operator
		// or a newer change.
		ScheduleToCloseTimeout: retryFor,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 5 * time.Minute,
			NonRetryableErrorTypes: []string{reaction.ErrTypePermanent}},
	}
}

// syncLoop brings the CRM to the user's current state, one sync at a time:
// changes that arrive during a sync are sent by the next one.
func (s *stream) syncLoop(ctx workflow.Context) {
	for {
		if err := workflow.Await(ctx, func() bool { return s.syncPending }); err != nil {
			return
		}
		s.syncPending, s.syncRunning = false, true
		var res reaction.StepResult
		actx := workflow.WithActivityOptions(ctx, syncOptions(s.retryFor))
		err := workflow.ExecuteActivity(actx, reaction.SyncCRM, reaction.SyncInput{SubjectHash: s.hash}).Get(actx, &res)
		key := CRMSyncKeyPrefix + s.hash
		ev := event.Event{Type: "setflow:crm-sync", Name: "crm-sync"}
		r := s.newRunner(ctx, key, ev)
		if err == nil {
			if v, ok := res.Detail["version"]; ok && res.Outcome == reaction.OutcomeDone {
				_ = r.audit(fmt.Sprintf("v%v", v), res.Outcome, res.Detail)
			}
			s.syncRunning = false
			s.notify()
			continue
		}
		workflow.GetLogger(ctx).Warn("user stream: crm sync parked", "subject", s.hash, "error", err)
		_ = r.audit(fmt.Sprintf("failed@%d", workflow.Now(ctx).Unix()), OutcomeFailed, map[string]any{"error": err.Error()})
		s.parked[key] = true
		s.parkedStep[key] = "crm-sync"
		s.refresh()
		before := s.retries(key)
		_ = workflow.Await(ctx, func() bool { return s.retries(key) > before || s.syncPending })
		delete(s.parked, key)
		delete(s.parkedStep, key)
		s.refresh()
		s.syncPending, s.syncRunning = true, false
	}
}

// setPurge follows the user's pending purge: a timer until it is due, reset
// when a newer unlink moves it, stopped when a link cancels it.
func (s *stream) setPurge(p *userstate.PendingPurge) {
	if p != nil && s.purge != nil && p.Cutoff.Equal(s.purge.Cutoff) && p.Due.Equal(s.purge.Due) {
		return
	}
	if s.cancelPurge != nil {
		s.cancelPurge()
		s.cancelPurge = nil
	}
	s.purge = p
	if p == nil {
		return
	}
	pending := *p
	tctx, cancel := workflow.WithCancel(s.ctx)
	s.cancelPurge = cancel
	workflow.Go(tctx, func(ctx workflow.Context) {
		if wait := pending.Due.Sub(workflow.Now(ctx)); wait > 0 {
			if err := workflow.Sleep(ctx, wait); err != nil {
				return // moved or cancelled
			}
		}
		s.spawn(func(ctx workflow.Context) { s.runPurge(ctx, pending) })
	})
}

// runPurge runs a due purge: the state becomes a tombstone, then the
// sessions up to the cutoff are deleted and the CRM synced (deleted).
func (s *stream) runPurge(ctx workflow.Context, p userstate.PendingPurge) {
	log := workflow.GetLogger(ctx)
	ev := event.Event{Type: "setflow:purge", Name: "purge", Time: p.Cutoff}
	if s.subject != nil {
		ev.Subject.Issuer, ev.Subject.UserID = s.subject.Issuer, s.subject.UserID
	}
	r := s.newRunner(ctx, p.EventKey, ev)
	if s.subject == nil {
		_ = r.audit("run", OutcomeFailed, map[string]any{"error": "the stream does not know the user"})
		return
	}
	// A purge is never dropped: a permanent failure parks it for an
	// operator, and a park that times out parks again.
	var res reaction.RunPurgeResult
	actx := workflow.WithActivityOptions(ctx, applyOptions())
	for attempt := 1; ; attempt++ {
		err := workflow.ExecuteActivity(actx, reaction.RunPurge, reaction.RunPurgeInput{Subject: *s.subject, Cutoff: p.Cutoff}).Get(actx, &res)
		if err == nil {
			break
		}
		if aerr := r.audit(fmt.Sprintf("run@%d", attempt), OutcomeFailed, map[string]any{"error": err.Error()}); aerr != nil {
			return
		}
		if perr := r.park("run", err); perr != nil && !errors.Is(perr, errParkedTooLong) {
			log.Error("user stream: purge gave up", "error", perr)
			return
		}
	}
	if s.purge != nil && s.purge.Cutoff.Equal(p.Cutoff) {
		s.purge, s.cancelPurge = nil, nil
	}
	detail := map[string]any{"cutoff": p.Cutoff}
	if res.KakaoCheck != "" {
		detail["kakao_check"] = res.KakaoCheck
	}
	switch res.Decision.Purge {
	case userstate.PurgeRun:
		if err := r.audit("run", reaction.OutcomeDone, detail); err != nil {
			log.Error("audit failed", "error", err)
			return
		}
		st := policy.Step{Name: policy.PurgeData, Params: map[string]string{"cutoff": p.Cutoff.Format(time.RFC3339Nano)}}
		for {
			_, err := r.step(st, "sessions")
			if err == nil {
				break
			}
			if !errors.Is(err, errParkedTooLong) {
				log.Error("user stream: purge gave up", "error", err)
				return
			}
		}
	case userstate.PurgeCancelled:
		detail["reason"] = "the user linked again"
		_ = r.audit("run", "cancelled", detail)
	default:
		detail["reason"] = "the purge was moved or cancelled"
		_ = r.audit("run", reaction.OutcomeSuperseded, detail)
	}
	if res.Decision.ContactChanged {
		s.requestSync()
	}
}
