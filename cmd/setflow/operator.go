package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/config"
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

type inboxRow struct {
	Key        string     `db:"dedupe_key"`
	Source     string     `db:"source"`
	Status     string     `db:"status"`
	Attempts   int        `db:"attempts"`
	LastError  *string    `db:"last_error"`
	ReceivedAt time.Time  `db:"received_at"`
	Dispatched *time.Time `db:"dispatched_at"`
	WorkflowID *string    `db:"workflow_id"`
}

// runEvents implements `setflow events list|show|retry`.
func runEvents(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: setflow events list [-status parked] | show [--payload] <key> | retry <key> | unknowns")
	}
	sub, rest := args[0], args[1:]
	c := newCommon("events " + sub)
	var tmp config.Temporal
	tmp.Register(c.fs)
	registerUILinks(c.fs, &tmp)
	status := c.fs.String("status", "", "list only events in this status (pending, dispatched, parked)")
	var lf listFilter
	c.fs.StringVar(&lf.eventType, "type", "", "list only events of this type (short name such as account-disabled, or the full URI)")
	c.fs.StringVar(&lf.source, "source", "", "list only events from this webhook (set, unlink, talk-share, talk-channel)")
	c.fs.DurationVar(&lf.since, "since", 0, "list / retry -all-parked: only events received within this long (e.g. 6h)")
	c.fs.DurationVar(&lf.until, "until", 0, "list only events received at least this long ago")
	limit := c.fs.Int("limit", 50, "list at most this many events, newest first")
	var bulk parkedFilter
	c.fs.BoolVar(&bulk.all, "all-parked", false, "retry: every parked event (narrow with -step and -since)")
	c.fs.StringVar(&bulk.step, "step", "", "retry -all-parked: only events parked at this step (e.g. send_notice or account-disabled/send_notice)")
	c.fs.BoolVar(&bulk.dryRun, "dry-run", false, "retry -all-parked: list what would be retried, retry nothing")
	payload := c.fs.Bool("payload", false, "show: also print the delivery's verified claims or fields (personal data)")
	if err := parseFlagsAnywhere(c.fs, rest); err != nil {
		return err
	}
	bulk.since = lf.since
	log, err := c.log.Logger()
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	get := func(key string) (inboxRow, error) {
		var r inboxRow
		err := db.GetContext(ctx, &r, `SELECT dedupe_key, source, status, attempts, last_error, received_at, dispatched_at, workflow_id FROM setflow_inbox WHERE dedupe_key = $1`, key)
		if err != nil {
			return r, fmt.Errorf("event %q: %w", key, err)
		}
		return r, nil
	}
	switch sub {
	case "list":
		lf.status, lf.limit = *status, *limit
		rows, err := listEvents(ctx, db, lf)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KEY\tSOURCE\tSTATUS\tATTEMPTS\tRECEIVED\tLAST ERROR")
		for _, r := range rows {
			le := ""
			if r.LastError != nil {
				le = *r.LastError
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Key, r.Source, r.Status, r.Attempts, r.ReceivedAt.Format(time.RFC3339), le)
		}
		return w.Flush()
	case "show":
		if c.fs.NArg() != 1 {
			return errors.New("usage: setflow events show <key>")
		}
		r, err := get(c.fs.Arg(0))
		if err != nil {
			return err
		}
		// The relay records where it handed the event: the user's stream, or a
		// reaction workflow for events that name no user.
		wf := workflows.EventWorkflowID(r.Key)
		if r.WorkflowID != nil && *r.WorkflowID != "" {
			wf = *r.WorkflowID
		}
		fmt.Printf("key:        %s\nsource:     %s\nstatus:     %s\nattempts:   %d\nreceived:   %s\nworkflow:   %s\n",
			r.Key, r.Source, r.Status, r.Attempts, r.ReceivedAt.Format(time.RFC3339), wf)
		if r.LastError != nil {
			fmt.Printf("last error: %s\n", *r.LastError)
		}
		recs, err := audit.NewPostgres(db).ForEvent(ctx, r.Key)
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
		if err := printAudit(recs); err != nil || !*payload {
			return err
		}
		return printPayload(ctx, db, r.Key, os.Stdout, os.Stderr)
	case "unknowns":
		return printUnknowns(ctx, db, os.Stdout)
	case "retry":
		if bulk.all == (c.fs.NArg() == 1) || c.fs.NArg() > 1 {
			return errors.New("usage: setflow events retry <key> | retry -all-parked [-step S] [-since 6h] [-dry-run]")
		}
		topts, err := temporalOptions(&tmp, log)
		if err != nil {
			return err
		}
		if bulk.all {
			var tc client.Client
			if !bulk.dryRun {
				if tc, err = client.DialContext(ctx, topts); err != nil {
					return fmt.Errorf("temporal: %w", err)
				}
				defer tc.Close()
			}
			_, err := retryParked(ctx, db, tc, bulk, os.Stdout)
			return err
		}
		if strings.HasPrefix(c.fs.Arg(0), workflows.CRMSyncKeyPrefix) {
			tc, err := client.DialContext(ctx, topts)
			if err != nil {
				return fmt.Errorf("temporal: %w", err)
			}
			defer tc.Close()
			return retryCRMSync(ctx, tc, c.fs.Arg(0))
		}
		r, err := get(c.fs.Arg(0))
		if err != nil {
			return err
		}
		tc, err := client.DialContext(ctx, topts)
		if err != nil {
			return fmt.Errorf("temporal: %w", err)
		}
		defer tc.Close()
		return retryEvent(ctx, db, tc, r)
	}
	return fmt.Errorf("unknown events command %q (list, show, retry, unknowns)", sub)
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
func retryParked(ctx context.Context, db *sqlx.DB, tc client.Client, f parkedFilter, out io.Writer) (int, error) {
	var rows []inboxRow
	err := db.SelectContext(ctx, &rows, `
		SELECT dedupe_key, source, status, attempts, last_error, received_at, dispatched_at, workflow_id FROM setflow_inbox
		WHERE status = 'parked'
		  AND ($1 = '' OR split_part(last_error, ': ', 1) = $1 OR split_part(split_part(last_error, ': ', 1), '/', 2) = $1)
		  AND ($2 = 0 OR received_at >= now() - $2 * interval '1 millisecond')
		ORDER BY id`, f.step, f.since.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("parked events: %w", err)
	}
	var failed []string
	for _, r := range rows {
		if f.dryRun {
			reason := ""
			if r.LastError != nil {
				reason = *r.LastError
			}
			fmt.Fprintf(out, "would retry %s\t%s\n", r.Key, reason)
			continue
		}
		if err := retryEvent(ctx, db, tc, r); err != nil {
			fmt.Fprintf(out, "%s: %v\n", r.Key, err)
			failed = append(failed, r.Key)
		}
	}
	verb := "retried"
	if f.dryRun {
		verb = "would retry"
	}
	fmt.Fprintf(out, "%s %d parked event(s)\n", verb, len(rows)-len(failed))
	if len(failed) > 0 {
		return len(rows) - len(failed), fmt.Errorf("%d parked event(s) could not be retried", len(failed))
	}
	return len(rows), nil
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
func retryEvent(ctx context.Context, db *sqlx.DB, tc client.Client, r inboxRow) error {
	// A parked step names its workflow: the reaction, or the user's stream.
	id := workflows.EventWorkflowID(r.Key)
	if r.WorkflowID != nil && *r.WorkflowID != "" {
		id = *r.WorkflowID
	}
	// The key tells a user's stream which of its parked steps to retry.
	err := tc.SignalWorkflow(ctx, id, "", workflows.SignalRetry, r.Key)
	if err == nil {
		fmt.Printf("signalled %s to retry\n", id)
		return nil
	}
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		return fmt.Errorf("signal %s: %w", id, err)
	}
	if r.Status != "parked" {
		return fmt.Errorf("event %s is %s and its workflow is not running: nothing to retry", r.Key, r.Status)
	}
	if _, err := db.ExecContext(ctx, `UPDATE setflow_inbox SET status = 'pending', next_attempt_at = now() WHERE dedupe_key = $1 AND status = 'parked'`, r.Key); err != nil {
		return err
	}
	fmt.Printf("event %s queued for a new run\n", r.Key)
	return nil
}
