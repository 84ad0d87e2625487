package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
)

// ParkTimeout is how long a parked step waits for an operator's retry before
// the workflow gives up and fails (the event stays parked in the inbox and can
// still be re-driven: a failed run may be followed by a new one).
const ParkTimeout = 30 * 24 * time.Hour

// DefaultStepRetryFor is how long a step's transient failures (a dependency
// down: connection refused, 5xx, timeouts, 429) are retried before it parks
// for an operator, when the worker's configuration does not say
// (activities.Backends.StepRetryFor, SETFLOW_STEP_RETRY_FOR).
const DefaultStepRetryFor = 6 * time.Hour

// stepOptions bounds each attempt and the retry schedule: transient errors
// are retried with capped backoff (at most five minutes apart) for retryFor,
// then the step parks; permanent errors park at once.
func stepOptions(retryFor time.Duration) workflow.ActivityOptions {
	if retryFor <= 0 {
		retryFor = DefaultStepRetryFor
	}
	return workflow.ActivityOptions{
		StartToCloseTimeout:    30 * time.Second,
		ScheduleToCloseTimeout: retryFor,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        5 * time.Minute,
			NonRetryableErrorTypes: []string{reaction.ErrTypePermanent, reaction.ErrTypeMissingSubject},
		},
	}
}

func auditOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		// The audit trail must be written: retry as long as it takes.
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
	}
}

// runner runs the steps of one event and writes its audit rows.
type runner struct {
	ctx         workflow.Context
	eventKey    string
	ev          event.Event
	subjectHash string
	labels      map[string]int
	revoked     int64
	// retryFor is how long a step's transient failures are retried before
	// it parks (0: DefaultStepRetryFor).
	retryFor time.Duration
	// armRetry is called before a park is recorded; the wait it returns
	// waits for an operator's retry of this event sent since, false when
	// ParkTimeout passed first.
	armRetry func() (wait func() bool)
	// onAudit and onPark tell the workflow's operator view (nil: nothing).
	onAudit func(step, outcome string)
	onPark  func(step string)
	// lane, when set, is entered for each attempt of a step (its activity
	// and the activity's own retries) and left before the step parks.
	lane *lane
}

// lane lets one step at a time through, across the coroutines of a
// workflow. A step waiting for an operator is outside the lane, so a parked
// step does not hold up the next one. Waiters are let through in the
// workflow's deterministic coroutine order, not necessarily arrival order.
type lane struct{ busy bool }

// enter waits until the lane is free and takes it; a nil lane is always free.
func (l *lane) enter(ctx workflow.Context) error {
	if l == nil {
		return nil
	}
	if err := workflow.Await(ctx, func() bool { return !l.busy }); err != nil {
		return err
	}
	l.busy = true
	return nil
}

func (l *lane) leave() {
	if l != nil {
		l.busy = false
	}
}

func newRunner(ctx workflow.Context, eventKey string, ev event.Event, subjectHash string) *runner {
	r := &runner{ctx: ctx, eventKey: eventKey, ev: ev, subjectHash: subjectHash, labels: map[string]int{}}
	r.armRetry = r.awaitRetrySignal(workflow.GetSignalChannel(ctx, SignalRetry))
	return r
}

// awaitRetrySignal waits on the workflow's own retry signal channel (a
// reaction workflow has one parked step at a time).
func (r *runner) awaitRetrySignal(retry workflow.ReceiveChannel) func() func() bool {
	return func() func() bool {
		// A request that arrived before this park (a duplicate of the one
		// that ended the previous park) must not end it.
		for retry.ReceiveAsync(nil) {
		}
		return func() bool {
			retried := false
			sel := workflow.NewSelector(r.ctx)
			sel.AddReceive(retry, func(c workflow.ReceiveChannel, _ bool) {
				c.Receive(r.ctx, nil)
				retried = true
			})
			// The timer is cancelled on retry so that a long-running workflow is
			// not woken by it a month later.
			tctx, cancelTimer := workflow.WithCancel(r.ctx)
			timer := workflow.NewTimer(tctx, ParkTimeout)
			sel.AddFuture(timer, func(workflow.Future) {})
			sel.Select(r.ctx)
			cancelTimer()
			// Requests delivered with this one are the same retry.
			for retry.ReceiveAsync(nil) {
			}
			return retried
		}
	}
}

// label names a step uniquely within its event (a policy may repeat a step).
func (r *runner) label(step string) string {
	r.labels[step]++
	if n := r.labels[step]; n > 1 {
		return fmt.Sprintf("%s#%d", step, n)
	}
	return step
}

// audit writes one row; (event key, step) makes it write-once.
//
// Audit rows are written by local activities: one short, idempotent insert
// does not need a task-queue round trip, and each reaction writes several, so
// this is most of the difference to a plain workflow's throughput. A local
// activity that is re-run after a crash finds its row and writes nothing.
func (r *runner) audit(step, outcome string, detail map[string]any) error {
	ctx := workflow.WithLocalActivityOptions(r.ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		// The audit trail must be written: retry as long as it takes.
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
	})
	err := localUntilDone(ctx, reaction.RecordAudit, audit.Record{
		EventKey:    r.eventKey,
		EventType:   r.ev.Type,
		SubjectHash: r.subjectHash,
		Step:        r.ev.Name + "/" + step,
		Outcome:     outcome,
		Detail:      detail,
	}, nil)
	if err == nil && r.onAudit != nil {
		r.onAudit(step, outcome)
	}
	return err
}

// localUntilDone runs a local activity until it succeeds. Its own retry
// policy covers a failing database; this loop covers the attempt that ends
// because the worker running it went away (a deploy stops workers): the SDK
// then hands the workflow a cancellation, which must not end an event's
// steps half-way. Only a non-retryable error, or the workflow's own
// cancellation, is returned.
func localUntilDone(ctx workflow.Context, activity, arg, result any) error {
	for {
		err := workflow.ExecuteLocalActivity(ctx, activity, arg).Get(ctx, result)
		if err == nil || ctx.Err() != nil {
			return err
		}
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && appErr.NonRetryable() {
			return err
		}
		workflow.GetLogger(ctx).Warn("local activity interrupted: trying again", "error", err)
		if serr := workflow.Sleep(ctx, time.Second); serr != nil {
			return err
		}
	}
}

// step runs one policy step until it succeeds. When its retries are exhausted
// it parks: the failure is audited, the inbox entry is marked parked, and the
// workflow waits for an operator's retry signal.
func (r *runner) step(st policy.Step, label string) (reaction.StepResult, error) {
	log := workflow.GetLogger(r.ctx)
	if label == "" {
		label = r.label(st.Name)
	}
	in := reaction.StepInput{
		IdempotencyKey: StepKey(r.eventKey, r.ev.Name, label),
		EventKey:       r.eventKey,
		Event:          r.ev,
		Params:         st.Params,
	}
	ctx := workflow.WithActivityOptions(r.ctx, withSummary(stepOptions(r.retryFor), r.ev.Name+" · "+label))
	for attempt := 1; ; attempt++ {
		var res reaction.StepResult
		if err := r.lane.enter(ctx); err != nil {
			return res, err
		}
		err := workflow.ExecuteActivity(ctx, policy.ActivityFor(st.Name), in).Get(ctx, &res)
		r.lane.leave()
		if err == nil {
			if n, ok := res.Detail["revoked"].(float64); ok {
				r.revoked += int64(n)
			}
			return res, r.audit(label, res.Outcome, res.Detail)
		}
		log.Warn("reaction step parked", "event", r.eventKey, "step", label, "attempt", attempt, "error", err)
		if aerr := r.audit(fmt.Sprintf("%s@%d", label, attempt), OutcomeFailed, map[string]any{"error": err.Error()}); aerr != nil {
			return res, aerr
		}
		if err := r.park(label, err); err != nil {
			return res, err
		}
	}
}

// park marks the event parked and waits for a retry or ParkTimeout.
func (r *runner) park(label string, cause error) error {
	// Armed before the inbox shows the event parked: a retry sent from then
	// on ends this park.
	wait := r.armRetry()
	if r.onPark != nil {
		r.onPark(r.ev.Name + "/" + label)
	}
	ctx := workflow.WithActivityOptions(r.ctx, auditOptions())
	info := workflow.GetInfo(r.ctx)
	if err := workflow.ExecuteActivity(ctx, reaction.ParkEvent, reaction.ParkInput{
		EventKey: r.eventKey, Step: r.ev.Name + "/" + label, Reason: cause.Error(), WorkflowID: info.WorkflowExecution.ID,
	}).Get(ctx, nil); err != nil {
		return err
	}
	if !wait() {
		return fmt.Errorf("%s/%s: %w", r.ev.Name, label, errParkedTooLong)
	}
	return workflow.ExecuteActivity(ctx, reaction.UnparkEvent, r.eventKey).Get(ctx, nil)
}

var errParkedTooLong = errors.New("parked step was not retried in time")
