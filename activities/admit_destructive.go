package activities

import (
	"context"

	"github.com/setflow/setflow/guard"
)

// AdmitDestructive asks the blast-radius guard whether an event's destructive
// steps may run now, are held for an operator, or were decided by one. It is
// idempotent per event key, so the workflow asks it again after a decision.
func (a *Activities) AdmitDestructive(ctx context.Context, req guard.Request) (guard.Verdict, error) {
	if a.Guard == nil {
		return guard.Verdict{Decision: guard.Admitted}, nil
	}
	return a.Guard.Admit(ctx, req)
}
