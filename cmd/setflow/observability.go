package main

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/metrics"
)

func init() { metrics.SetBuildInfo(buildVersion()) }

// heldCount is the hook for the setflow_held gauge: the number of events or
// steps the blast-radius guard holds for an operator. Nil until the guard
// exists; the gauge is then absent (not a misleading zero) and the
// SetflowHeldWork alert stays silent.
var heldCount func(ctx context.Context, db *sqlx.DB) (int64, error)

// reportBacklog makes this process export the backlog gauges from db (the
// relay and `setflow dev` do: they own the hand-off the backlog measures).
func reportBacklog(db *sqlx.DB) {
	store := inbox.NewPostgres(db)
	metrics.SetBacklogSource(func(ctx context.Context) (metrics.Backlog, error) {
		b, err := store.Backlog(ctx)
		if err != nil {
			return metrics.Backlog{}, err
		}
		out := metrics.Backlog{Pending: b.Pending, OldestPendingAge: b.OldestPendingAge, Parked: b.Parked}
		if heldCount != nil {
			n, err := heldCount(ctx, db)
			if err != nil {
				return metrics.Backlog{}, err
			}
			out.Held = &n
		}
		return out, nil
	})
}
