package inbox

import (
	"context"
	"fmt"
	"time"
)

// Backlog is the inbox's state for the backlog gauges and the worker's
// scaling: how much is waiting to be handed to Temporal, for how long, and
// how much is parked.
type Backlog struct {
	Pending          int64
	OldestPendingAge time.Duration
	Parked           int64
}

// Backlog reads the backlog in one statement. Pending rows are found
// through the partial index the relay uses; parked rows are few by design
// (each waits for an operator).
func (p *Postgres) Backlog(ctx context.Context) (Backlog, error) {
	var b Backlog
	var ageSeconds float64
	err := p.db.QueryRowContext(ctx, `
		SELECT
		  (SELECT count(*) FROM setflow_inbox WHERE status = 'pending'),
		  COALESCE((SELECT EXTRACT(EPOCH FROM now() - min(received_at)) FROM setflow_inbox WHERE status = 'pending'), 0),
		  (SELECT count(*) FROM setflow_inbox WHERE status = 'parked')`).Scan(&b.Pending, &ageSeconds, &b.Parked)
	if err != nil {
		return Backlog{}, fmt.Errorf("inbox: backlog: %w", err)
	}
	b.OldestPendingAge = time.Duration(ageSeconds * float64(time.Second))
	return b, nil
}
