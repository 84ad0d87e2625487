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
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/metrics"
	"github.com/setflow/setflow/workflows"
)

// Starter is the part of the Temporal client the relay needs.
type Starter interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any, args ...any) (client.WorkflowRun, error)
}

// Relay polls the inbox and starts one reaction workflow per entry.
type Relay struct {
	Inbox    inbox.Store
	Temporal Starter
	Log      *slog.Logger
	// Batch is how many entries one claim takes.
	Batch int
	// Poll is the idle poll interval; a notification wakes the relay earlier.
	Poll time.Duration
	// StartTimeout bounds one start call, so a hung Temporal only delays a batch.
	StartTimeout time.Duration
	Backoff      inbox.Backoff
	// Wake, when set, delivers hints that new entries arrived (inbox.Listen).
	Wake <-chan struct{}
	// Retention, when set, prunes dispatched entries older than it (raw tokens
	// may carry personal data; the inbox is not an archive). It must exceed the
	// ingress's replay window, since an entry is also its key's dedupe record.
	Retention time.Duration
	// PruneEvery is how often to prune; hourly when zero.
	PruneEvery time.Duration
}

// Deliver starts the reaction workflow for e. The workflow id comes from the
// dedupe key; the id policies join a running workflow and refuse a new run
// after a completed one, so a redelivered entry is reported as started, never
// run twice. Only after a failed run (a step parked past its timeout) may an
// operator's `setflow events retry` start a new one, whose steps are idempotent.
// (The dev server forgets closed workflows after a day; the inbox's unique key
// is the long-term guard.)
func (r *Relay) Deliver(ctx context.Context, e inbox.Entry) (string, error) {
	id := workflows.EventWorkflowID(e.Envelope.Key)
	ctx, cancel := context.WithTimeout(ctx, r.startTimeout())
	defer cancel()
	_, err := r.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                workflows.TaskQueue,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
	}, workflows.Reaction, e.Envelope)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if err != nil && !errors.As(err, &started) {
		metrics.Relayed.WithLabelValues("error").Inc()
		return "", fmt.Errorf("start workflow: %w", err)
	}
	metrics.Relayed.WithLabelValues("ok").Inc()
	return id, nil
}

func (r *Relay) startTimeout() time.Duration {
	if r.StartTimeout > 0 {
		return r.StartTimeout
	}
	return 5 * time.Second
}

// Run relays until ctx ends. Errors are logged and retried; Run only returns
// ctx's error.
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
	failures := 0
	var lastPrune time.Time
	for {
		if r.Retention > 0 && time.Since(lastPrune) >= max(r.PruneEvery, time.Minute) {
			lastPrune = time.Now()
			if n, err := r.Inbox.Prune(ctx, r.Retention); err != nil {
				log.Warn("relay: prune failed", "error", err)
			} else if n > 0 {
				log.Info("relay: pruned dispatched inbox entries", "count", n, "retention", r.Retention)
			}
		}
		n, err := r.Inbox.Relay(ctx, batch, r.Deliver, backoff)
		if ctx.Err() != nil {
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
