// Package relay moves accepted events from the inbox to Temporal. It is the only
// place where the ingress path meets Temporal, so that the ingress keeps
// answering while Temporal is down: events wait in the inbox and flow when it
// is back.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/metrics"
	"github.com/setflow/setflow/workflows"
)

// Starter is the part of the Temporal client the relay needs.
type Starter interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
	SignalWithStartWorkflow(ctx context.Context, workflowID string, signalName string, signalArg any,
		options client.StartWorkflowOptions, workflow any, workflowArgs ...any) (client.WorkflowRun, error)
}

// SubjectHasher names a user by a keyed hash (audit.SubjectHasher).
type SubjectHasher interface {
	Hash(issuer, userID string) string
}

// Relay polls the inbox and hands each entry to Temporal: the events about a
// user to that user's stream, the others to a reaction workflow of their own.
type Relay struct {
	Inbox    inbox.Store
	Temporal Starter
	// Subjects names users' streams (the same key as the worker's).
	Subjects SubjectHasher
	// IdleAfter is how long a user's stream waits for more events before it
	// completes (workflows.DefaultIdleAfter when zero).
	IdleAfter time.Duration
	Log       *slog.Logger
	// Batch is how many entries one claim takes.
	Batch int
	// Poll is the idle poll interval; a notification wakes the relay earlier.
	Poll time.Duration
	// StartTimeout bounds one start call, so a hung Temporal only delays a batch.
	StartTimeout time.Duration
	Backoff      inbox.Backoff
	// Wake, when set, delivers hints that new entries arrived (inbox.Listen).
	Wake <-chan struct{}
	// Retention, when set, prunes dispatched entries older than it whose
	// work is finished (raw tokens may carry personal data; the inbox is not
	// an archive). It must exceed the ingress's replay window, since an entry
	// is also its key's dedupe record. Finished tells which entries' work is
	// finished (WorkFinished); without it nothing is pruned.
	Retention time.Duration
	Finished  inbox.Finished
	// PruneEvery is how often to prune; hourly when zero.
	PruneEvery time.Duration
	// StopTimeout bounds the batch claimed before Run's context ended: it is
	// still delivered and recorded (no new batch starts), for up to this
	// long; DefaultStopTimeout when zero.
	StopTimeout time.Duration
}

// Completions tells, per event key, the names of the events whose reaction
// completed (auditdb.Store).
type Completions interface {
	Completed(ctx context.Context, keys []string) (map[string][]string, error)
}

// PendingPurges tells which event keys a user's pending purge still names
// (statedb.Store).
type PendingPurges interface {
	PendingPurges(ctx context.Context, keys []string) (map[string]bool, error)
}

// WorkFinished is retention's rule: an inbox entry's work is finished once
// every event of it completed (a "<name>/completed" audit row each, and at
// least one) and no pending purge still names it (the purge parks and audits
// under the unlink's key).
func WorkFinished(audit Completions, states PendingPurges) inbox.Finished {
	return func(ctx context.Context, envs []event.Envelope) (map[string]bool, error) {
		keys := make([]string, len(envs))
		for i, env := range envs {
			keys[i] = env.Key
		}
		completed, err := audit.Completed(ctx, keys)
		if err != nil || len(completed) == 0 {
			return nil, err
		}
		pending, err := states.PendingPurges(ctx, keys)
		if err != nil {
			return nil, err
		}
		done := map[string]bool{}
		for _, env := range envs {
			names := completed[env.Key]
			if len(names) == 0 || pending[env.Key] {
				continue
			}
			done[env.Key] = !slices.ContainsFunc(env.Events, func(ev event.Event) bool { return !slices.Contains(names, ev.Name) })
		}
		return done, nil
	}
}

// DefaultStopTimeout is how long a claimed batch may still take after a stop.
const DefaultStopTimeout = 15 * time.Second

// Deliver hands an inbox entry to Temporal. Events about a user are signalled
// to the user's stream with Signal-With-Start (one ordered stream per user,
// across relay replicas): the signal is in the stream's history once this
// returns, and a repeated delivery (the relay crashed before recording the
// dispatch) is skipped by the stream's dedupe of event keys. Events that name
// no user start a reaction workflow named by the dedupe key, whose id
// policies join a running workflow and refuse a new run after a completed one.
func (r *Relay) Deliver(ctx context.Context, e inbox.Entry) (string, error) {
	if r.Subjects == nil {
		return "", errors.New("relay: no subject hasher configured")
	}
	ctx, cancel := context.WithTimeout(ctx, r.startTimeout())
	defer cancel()
	env := e.Envelope
	byUser := map[string][]int{}
	var users []string
	var loose bool
	for i, ev := range env.Events {
		sub := ev.Subject
		if sub.UserID == "" {
			sub = env.Subject
		}
		if sub.UserID == "" {
			loose = true
			continue
		}
		h := r.Subjects.Hash(sub.Issuer, sub.UserID)
		if _, ok := byUser[h]; !ok {
			users = append(users, h)
		}
		byUser[h] = append(byUser[h], i)
	}
	if len(env.Events) == 0 {
		loose = true
	}
	var ids []string
	for _, h := range users {
		id := workflows.UserStreamID(h)
		_, err := r.Temporal.SignalWithStartWorkflow(ctx, id, workflows.SignalEvent,
			workflows.StreamEvent{Envelope: env, Events: byUser[h]},
			client.StartWorkflowOptions{
				ID:        id,
				TaskQueue: workflows.TaskQueue,
				// A user's stream completes when idle; the next event starts a
				// new run under the same id.
				WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
				StaticSummary:         workflows.StreamSummary(h, env, byUser[h]),
				StaticDetails:         workflows.StreamDetails,
			}, workflows.UserStream, workflows.UserStreamInput{SubjectHash: h, IdleAfter: r.IdleAfter})
		if err != nil {
			metrics.Relayed.WithLabelValues("error").Inc()
			return "", fmt.Errorf("signal user stream: %w", err)
		}
		ids = append(ids, id)
	}
	if loose {
		id := workflows.EventWorkflowID(env.Key)
		_, err := r.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID:                       id,
			TaskQueue:                workflows.TaskQueue,
			WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
			WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
			StaticSummary:            workflows.ReactionSummary(userless(env)),
		}, workflows.Reaction, userless(env))
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if err != nil && !errors.As(err, &started) {
			metrics.Relayed.WithLabelValues("error").Inc()
			return "", fmt.Errorf("start workflow: %w", err)
		}
		ids = append(ids, id)
	}
	metrics.Relayed.WithLabelValues("ok").Inc()
	return strings.Join(ids, " "), nil
}

// userless keeps the events of env that name no user (the user's stream
// takes the others).
func userless(env event.Envelope) event.Envelope {
	out := env
	out.Events = nil
	for _, ev := range env.Events {
		if ev.Subject.UserID == "" {
			out.Events = append(out.Events, ev)
		}
	}
	return out
}

// relayBatch claims and relays one batch on a context that outlives ctx by
// StopTimeout, so that a stop lets the batch finish and record its outcome
// instead of rolling back deliveries Temporal already holds.
func (r *Relay) relayBatch(ctx context.Context, batch int, backoff inbox.Backoff) (int, error) {
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		timeout := r.StopTimeout
		if timeout <= 0 {
			timeout = DefaultStopTimeout
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			cancel()
		}
	}()
	return r.Inbox.Relay(bctx, batch, r.Deliver, backoff)
}

func (r *Relay) startTimeout() time.Duration {
	if r.StartTimeout > 0 {
		return r.StartTimeout
	}
	return 5 * time.Second
}

// Run relays until ctx ends. Errors are logged and retried; Run only returns
// ctx's error. A stop (ctx ending) never cuts a claimed batch half-way: the
// batch under way is delivered and what was delivered is marked dispatched
// (within StopTimeout), and no new batch starts.
func (r *Relay) Run(ctx context.Context) error {
	batch, poll, backoff := r.Batch, r.Poll, r.Backoff
	if batch <= 0 {
		batch = 100
	}
	if poll <= 0 {
		poll = time.Second
	}
	if r.PruneEvery <= 0 {
		r.PruneEvery = time.Hour
	}
	if backoff == nil {
		backoff = inbox.DefaultBackoff
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	if r.Retention > 0 && r.Finished == nil {
		log.Warn("relay: inbox retention is set but nothing tells which entries' work is finished; nothing is pruned")
	}
	failures := 0
	var lastPrune time.Time
	for {
		if r.Retention > 0 && r.Finished != nil && time.Since(lastPrune) >= max(r.PruneEvery, time.Minute) {
			lastPrune = time.Now()
			if n, err := r.Inbox.Prune(ctx, r.Retention, r.Finished); err != nil {
				log.Warn("relay: prune failed", "error", err)
			} else if n > 0 {
				log.Info("relay: pruned dispatched inbox entries", "count", n, "retention", r.Retention)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n, err := r.relayBatch(ctx, batch, backoff)
		if ctx.Err() != nil {
			if err != nil {
				log.Warn("relay: stopped; the batch under way was not recorded, its entries are relayed again", "error", err)
			} else {
				log.Info("relay: stopped after finishing its batch", "entries", n)
			}
			return ctx.Err()
		}
		wait := poll
		switch {
		case err != nil:
			failures++
			wait = backoff(failures)
			log.Warn("relay: inbox unavailable", "error", err, "retry_in", wait)
		case n == batch:
			failures = 0
			continue // more may be due right away
		default:
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-r.Wake:
			t.Stop()
		}
	}
}
