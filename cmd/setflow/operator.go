package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/workflows"
)

func printAuditWithKeys(recs []audit.Record) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tEVENT\tSTEP\tOUTCOME")
	for _, r := range recs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.CreatedAt.Format(time.RFC3339), r.EventKey, r.Step, r.Outcome)
	}
	return w.Flush()
}

func printAudit(recs []audit.Record) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tSTEP\tOUTCOME\tDETAIL")
	for _, r := range recs {
		d, _ := json.Marshal(r.Detail)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.CreatedAt.Format(time.RFC3339), r.Step, r.Outcome, d)
	}
	return w.Flush()
}

const (
	eventsUsage = "usage: setflow events list [-status parked] | show [--payload] <key> | retry <key> | unknowns"
	retryUsage  = "usage: setflow events retry <key> | retry -all-parked [-step S] [-since 6h] [-dry-run]"
)

// runEvents implements `setflow events list|show|retry|unknowns`.
func runEvents(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(eventsUsage)
	}
	sub := args[0]
	c := newCommon("events " + sub)
	o := registerEventsFlags(c)
	log, db, err := c.openTool(ctx, args[1:])
	if err != nil {
		return err
	}
	defer db.Close()
	o.bulk.since = o.list.since
	store := inbox.NewPostgres(db)
	switch sub {
	case "list":
		return printEventList(ctx, store, o.list)
	case "show":
		if c.fs.NArg() != 1 {
			return errors.New("usage: setflow events show <key>")
		}
		return showEvent(ctx, db, store, c.fs.Arg(0), o.payload)
	case "unknowns":
		return printUnknowns(ctx, db, os.Stdout)
	case "retry":
		return retryCommand(ctx, c, log, store, o.bulk)
	}
	return fmt.Errorf("unknown events command %q (list, show, retry, unknowns)", sub)
}

// eventsOptions are the flags of `setflow events`.
type eventsOptions struct {
	list    listFilter
	bulk    parkedFilter
	payload bool
}

func registerEventsFlags(c *common) *eventsOptions {
	o := &eventsOptions{}
	c.tmp.Register(c.fs)
	registerUILinks(c.fs, &c.tmp)
	c.fs.StringVar(&o.list.status, "status", "", "list only events in this status (pending, dispatched, parked)")
	c.fs.StringVar(&o.list.eventType, "type", "", "list only events of this type (short name such as account-disabled, or the full URI)")
	c.fs.StringVar(&o.list.source, "source", "", "list only events from this webhook (set, unlink, talk-share, talk-channel)")
	c.fs.DurationVar(&o.list.since, "since", 0, "list / retry -all-parked: only events received within this long (e.g. 6h)")
	c.fs.DurationVar(&o.list.until, "until", 0, "list only events received at least this long ago")
	c.fs.IntVar(&o.list.limit, "limit", 50, "list at most this many events, newest first")
	c.fs.BoolVar(&o.bulk.all, "all-parked", false, "retry: every parked event (narrow with -step and -since)")
	c.fs.StringVar(&o.bulk.step, "step", "", "retry -all-parked: only events parked at this step (e.g. send_notice or account-disabled/send_notice)")
	c.fs.BoolVar(&o.bulk.dryRun, "dry-run", false, "retry -all-parked: list what would be retried, retry nothing")
	c.fs.BoolVar(&o.payload, "payload", false, "show: also print the delivery's verified claims or fields (personal data)")
	return o
}

// getEvent is the inbox entry under key; its error names the key.
func getEvent(ctx context.Context, store inbox.Store, key string) (inbox.Entry, error) {
	e, err := store.Get(ctx, key)
	if err != nil {
		return e, fmt.Errorf("event %q: %w", key, err)
	}
	return e, nil
}

// printEventList is `setflow events list`.
func printEventList(ctx context.Context, store inbox.Store, lf listFilter) error {
	entries, err := listEvents(ctx, store, lf)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tSOURCE\tSTATUS\tATTEMPTS\tRECEIVED\tLAST ERROR")
	for _, e := range entries {
		last := e.LastError
		if e.Unreadable != "" {
			last = strings.TrimSuffix("unreadable envelope; "+last, "; ")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", e.Envelope.Key, e.Envelope.Source, e.Status, e.Attempts, e.ReceivedAt.Format(time.RFC3339), last)
	}
	return w.Flush()
}

// showEvent is `setflow events show [--payload] <key>`: the entry, links to
// its work in the Temporal UI, its audit rows, and with payload the delivery.
func showEvent(ctx context.Context, db *sqlx.DB, store inbox.Store, key string, payload bool) error {
	e, err := getEvent(ctx, store, key)
	if err != nil {
		return err
	}
	key = e.Envelope.Key
	// The relay records where it handed the event: the user's stream, or a
	// reaction workflow for events that name no user.
	wf := workflows.EventWorkflowID(key)
	if e.WorkflowID != "" {
		wf = e.WorkflowID
	}
	fmt.Printf("key:        %s\nsource:     %s\nstatus:     %s\nattempts:   %d\nreceived:   %s\nworkflow:   %s\n",
		key, e.Envelope.Source, e.Status, e.Attempts, e.ReceivedAt.Format(time.RFC3339), wf)
	if e.LastError != "" {
		fmt.Printf("last error: %s\n", e.LastError)
	}
	if e.Unreadable != "" {
		fmt.Printf("unreadable: %s\n", e.Unreadable)
	}
	recs, err := auditdb.NewStore(db).ForEvent(ctx, key)
	if err != nil {
		return err
	}
	fmt.Printf("temporal ui: %s\n", uiWorkflowLink(strings.Fields(wf)[0]))
	for _, rec := range recs {
		if rec.SubjectHash != "" {
			fmt.Printf("user's work: %s\n", uiQueryLink(subjectQuery(rec.SubjectHash)))
			break
		}
	}
	fmt.Println()
	if err := printAudit(recs); err != nil || !payload {
		return err
	}
	return printPayload(ctx, store, key, os.Stdout, os.Stderr)
}

// retryCommand is `setflow events retry <key>` (an inbox event, or a user's
// parked CRM sync) and `retry -all-parked`.
func retryCommand(ctx context.Context, c *common, log *slog.Logger, store inbox.Store, bulk parkedFilter) error {
	if bulk.all == (c.fs.NArg() == 1) || c.fs.NArg() > 1 {
		return errors.New(retryUsage)
	}
	topts, err := temporalOptions(&c.tmp, log)
	if err != nil {
		return err
	}
	if bulk.all {
		return retryAllParked(ctx, store, topts, bulk)
	}
	key := c.fs.Arg(0)
	crmSync := strings.HasPrefix(key, workflows.CRMSyncKeyPrefix)
	var e inbox.Entry
	if !crmSync {
		if e, err = getEvent(ctx, store, key); err != nil {
			return err
		}
	}
	tc, err := dialOnce(ctx, topts)
	if err != nil {
		return err
	}
	defer tc.Close()
	if crmSync {
		return retryCRMSync(ctx, tc, key)
	}
	return retryEvent(ctx, store, tc, e)
}

// retryAllParked is `retry -all-parked`; a dry run does not dial Temporal.
func retryAllParked(ctx context.Context, store inbox.Store, topts client.Options, bulk parkedFilter) error {
	var tc client.Client
	if !bulk.dryRun {
		var err error
		if tc, err = dialOnce(ctx, topts); err != nil {
			return err
		}
		defer tc.Close()
	}
	_, err := retryParked(ctx, store, tc, bulk, os.Stdout)
	return err
}

// parkedFilter selects parked events for a bulk retry.
type parkedFilter struct {
	all    bool
	step   string        // the parked step, with or without its event name
	since  time.Duration // received within this long; 0: any age
	dryRun bool
}

// retryParked re-drives every parked event the filter selects (oldest
// first) and returns how many it retried (or, in a dry run, would retry).
// One that cannot be re-driven is reported and the rest go on.
func retryParked(ctx context.Context, store inbox.Store, tc client.Client, f parkedFilter, out io.Writer) (int, error) {
	sel := inbox.Filter{Status: inbox.StatusParked, Step: f.step, OldestFirst: true}
	if f.since > 0 {
		sel.From = time.Now().Add(-f.since)
	}
	entries, err := store.List(ctx, sel)
	if err != nil {
		return 0, fmt.Errorf("parked events: %w", err)
	}
	var failed []string
	for _, e := range entries {
		if f.dryRun {
			fmt.Fprintf(out, "would retry %s\t%s\n", e.Envelope.Key, e.LastError)
			continue
		}
		if err := retryEvent(ctx, store, tc, e); err != nil {
			fmt.Fprintf(out, "%s: %v\n", e.Envelope.Key, err)
			failed = append(failed, e.Envelope.Key)
		}
	}
	verb := "retried"
	if f.dryRun {
		verb = "would retry"
	}
	fmt.Fprintf(out, "%s %d parked event(s)\n", verb, len(entries)-len(failed))
	if len(failed) > 0 {
		return len(entries) - len(failed), fmt.Errorf("%d parked event(s) could not be retried", len(failed))
	}
	return len(entries), nil
}

// retryCRMSync re-drives a user's parked CRM sync (key crm-sync/<subject
// hash>, as the audit trail shows it): it has no inbox row; its stream waits
// for a retry under that key.
func retryCRMSync(ctx context.Context, tc client.Client, key string) error {
	id := workflows.UserStreamID(strings.TrimPrefix(key, workflows.CRMSyncKeyPrefix))
	if err := tc.SignalWorkflow(ctx, id, "", workflows.SignalRetry, key); err != nil {
		return fmt.Errorf("signal %s: %w", id, err)
	}
	fmt.Printf("signalled %s to retry its crm sync\n", id)
	return nil
}

// retryEvent signals a parked reaction that still waits, or — when its
// workflow gave up and failed — puts the event back in the relay's queue; the
// workflow id policy allows a new run after a failed one, and every step is
// idempotent, so steps already done are not repeated.
func retryEvent(ctx context.Context, store inbox.Store, tc client.Client, e inbox.Entry) error {
	key := e.Envelope.Key
	// A parked step names its workflow: the reaction, or the user's stream.
	id := workflows.EventWorkflowID(key)
	if e.WorkflowID != "" {
		id = e.WorkflowID
	}
	// The key tells a user's stream which of its parked steps to retry.
	err := tc.SignalWorkflow(ctx, id, "", workflows.SignalRetry, key)
	if err == nil {
		fmt.Printf("signalled %s to retry\n", id)
		return nil
	}
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		return fmt.Errorf("signal %s: %w", id, err)
	}
	if e.Status != inbox.StatusParked {
		return fmt.Errorf("event %s is %s and its workflow is not running: nothing to retry", key, e.Status)
	}
	if err := store.Requeue(ctx, key); err != nil {
		return err
	}
	fmt.Printf("event %s queued for a new run\n", key)
	return nil
}
