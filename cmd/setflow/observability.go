package main

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/guard/guarddb"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/metrics"
)

func init() { metrics.SetBuildInfo(buildVersion()) }

// heldCount feeds the setflow_held gauge: the events the blast-radius guard
// (package guard) holds for an operator's decision.
var heldCount = func(ctx context.Context, db *sqlx.DB) (int64, error) {
	n, err := guarddb.NewStore(db, guard.Limit{}).Pending(ctx)
	return int64(n), err
}

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
