package activities

import (
	"context"

	"github.com/setflow/setflow/audit"
)

// RecordAudit appends one audit row; (event key, step) makes it write-once.
func (a *Activities) RecordAudit(ctx context.Context, r audit.Record) error {
	_, err := a.Audit.Append(ctx, r)
	return err
}
