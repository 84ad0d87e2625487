// Package worker wires setflow's workflows and activities to Temporal workers:
// one on the reactions task queue, and one on the CRM task queue whose
// activity rate is limited across all workers to stay under the CRM's limits.
package worker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/workflows"
)

// DefaultCRMRate is the CRM calls per second across all workers
// (SETFLOW_CRM_RATE's default).
const DefaultCRMRate = config.DefaultCRMRate

// Set is the workers of one setflow worker process.
type Set struct {
	client  client.Client
	acts    *activities.Activities
	opts    sdkworker.Options
	workers []sdkworker.Worker
	// CRMRate bounds CRM activities per second on the CRM task queue, for all
	// workers together (a server-side task queue limit).
	CRMRate float64
	// Extra registers a service's own activities (policy extension steps).
	Extra func(r sdkworker.Registry)
	// Log reports the stop; nothing is logged when nil.
	Log *slog.Logger

	stop     stopper
	stopOnce sync.Once
}

// New returns the workers; Start starts them. opts.WorkerStopTimeout is how
// long Stop lets running activities finish (see Stop).
func New(c client.Client, acts *activities.Activities, opts sdkworker.Options) *Set {
	return &Set{client: c, acts: acts, opts: opts, CRMRate: DefaultCRMRate}
}

// Start registers everything and starts polling.
func (s *Set) Start() error {
	s.stop.init()
	opts := s.opts
	// Applied first, so that the activity (and every other interceptor) sees
	// the context Stop cuts off.
	opts.Interceptors = append([]interceptor.WorkerInterceptor{&s.stop}, opts.Interceptors...)
	acts, err := activities.ByName(s.acts)
	if err != nil {
		return err
	}
	main := sdkworker.New(s.client, workflows.TaskQueue, opts)
	main.RegisterWorkflow(workflows.Reaction)
	main.RegisterWorkflow(workflows.UserStream)
	crmOpts := opts
	crmOpts.TaskQueueActivitiesPerSecond = s.CRMRate
	crm := sdkworker.New(s.client, workflows.CRMTaskQueue, crmOpts)
	// Each under the name the workflows call it by (policy's steps table,
	// package reaction), on both queues.
	for name, fn := range acts {
		main.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
		crm.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
	if s.Extra != nil {
		s.Extra(main)
	}
	s.workers = []sdkworker.Worker{main, crm}
	for i, w := range s.workers {
		if err := w.Start(); err != nil {
			for _, started := range s.workers[:i] {
				started.Stop()
			}
			return err
		}
	}
	return nil
}

// Stop stops polling on every task queue at once and lets running activities
// finish, for up to the stop timeout (sdkworker.Options.WorkerStopTimeout).
// An activity still running shortly before the timeout has its context ended
// (as a deadline: its error counts as transient and is retried), so that its
// failure reaches Temporal before Stop returns and the next attempt starts at
// once on another worker instead of after the activity's StartToClose
// timeout. Stop returns when the workers have stopped; the caller closes the
// client after it, never before.
func (s *Set) Stop() {
	s.stopOnce.Do(func() {
		s.stop.init()
		log := s.Log
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		timeout := s.opts.WorkerStopTimeout
		start := time.Now()
		log.Info("worker stopping: polling stopped, waiting for running activities",
			"running", s.stop.running.Load(), "stop_timeout", timeout)
		s.stop.begin(timeout)
		var wg sync.WaitGroup
		for _, w := range s.workers {
			wg.Go(w.Stop)
		}
		wg.Wait()
		if n := s.stop.running.Load(); n > 0 {
			log.Warn("worker stopped with activities still running: they ignored their context; Temporal retries them after their timeout",
				"running", n, "elapsed", time.Since(start).Round(time.Millisecond))
			return
		}
		log.Info("worker stopped", "elapsed", time.Since(start).Round(time.Millisecond))
	})
}

// reportMargin is how long before the stop timeout an activity still running
// is cut off, so that its failure is reported while the worker still waits.
func reportMargin(timeout time.Duration) time.Duration {
	return min(5*time.Second, timeout/4)
}

// stopper is an interceptor that counts running activities and, once Stop
// began, ends the context of those still running shortly before the stop
// timeout.
type stopper struct {
	interceptor.WorkerInterceptorBase
	running  atomic.Int64
	stopping chan struct{}
	cutOnce  sync.Once
	cut      chan struct{}
}

func (st *stopper) init() {
	if st.stopping == nil {
		st.stopping, st.cut = make(chan struct{}), make(chan struct{})
	}
}

// begin marks the stop and schedules the cut-off; a timeout of 0 leaves the
// activities to the SDK, which cancels them at once.
func (st *stopper) begin(timeout time.Duration) {
	close(st.stopping)
	if timeout <= 0 {
		return
	}
	time.AfterFunc(timeout-reportMargin(timeout), func() { st.cutOnce.Do(func() { close(st.cut) }) })
}

func (st *stopper) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &stopActivity{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, st: st}
}

type stopActivity struct {
	interceptor.ActivityInboundInterceptorBase
	st *stopper
}

func (a *stopActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	if activity.GetInfo(ctx).IsLocalActivity {
		// A local activity's result travels with its workflow task: the
		// workflow worker's own stop handles it.
		return a.Next.ExecuteActivity(ctx, in)
	}
	a.st.running.Add(1)
	defer a.st.running.Add(-1)
	cctx := newCutContext(ctx, a.st.cut)
	defer cctx.release()
	return a.Next.ExecuteActivity(cctx, in)
}

// cutContext is its parent until cut closes; then it ends with
// context.DeadlineExceeded: the worker's stop deadline is near. A deadline,
// not a cancellation, because the activity's attempt ran out of time (its
// error is transient and retried: a CRM call is not taken as cancelled for
// good, a notice cut mid-send is re-sent).
type cutContext struct {
	context.Context
	done     chan struct{}
	released chan struct{}
	mu       sync.Mutex
	err      error
}

func newCutContext(parent context.Context, cut <-chan struct{}) *cutContext {
	c := &cutContext{Context: parent, done: make(chan struct{}), released: make(chan struct{})}
	go func() {
		var err error
		select {
		case <-c.released:
			return
		case <-parent.Done():
			err = parent.Err()
		case <-cut:
			err = context.DeadlineExceeded
		}
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	}()
	return c
}

func (c *cutContext) Done() <-chan struct{} { return c.done }

func (c *cutContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// release ends the watching goroutine once the activity returned.
func (c *cutContext) release() { close(c.released) }
