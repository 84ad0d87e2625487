package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/unknowns"
)

// recordUnknowns makes the ingress take note of deliveries of an unexpected
// shape (setflow_unknowns) off the request path; the returned stop writes
// what is still collected and waits for it.
func recordUnknowns(ctx context.Context, log *slog.Logger, db *sqlx.DB, srv *ingress.Server) (stop func()) {
	rec := unknowns.NewRecorder(unknowns.NewPostgres(db), log)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	srv.Unknowns = rec
	return func() { cancel(); <-done }
}

// printUnknowns is `setflow events unknowns`: the shapes Kakao sent that the
// wire-format notes did not expect, one line per kind.
func printUnknowns(ctx context.Context, db *sqlx.DB, out io.Writer) error {
	rows, err := unknowns.NewPostgres(db).List(ctx)
	if err != nil {
		return fmt.Errorf("unknowns: %w", err)
	}
	if len(rows) == 0 {
		fmt.Fprintln(out, "no unexpected delivery shapes recorded")
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ROUTE\tKIND\tDETAIL\tSEEN\tFIRST SEEN\tLAST SEEN")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Route, r.Kind.Kind, r.Detail, r.Seen,
			r.FirstSeen.UTC().Format(time.RFC3339), r.LastSeen.UTC().Format(time.RFC3339))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nCompare with docs/webhooks.md; `setflow events show <key> --payload` shows one delivery in full.")
	return nil
}
