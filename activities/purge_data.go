package activities

import (
	"context"
	"time"

	"github.com/setflow/setflow/sessions"
)

// PurgeData deletes the user's data from the profile store and sessions. With
// the parameter unlinked_before (RFC 3339, set by the purge timer) it purges
// only a user who has not linked again since — the timer may fire long after
// the unlink.
func (a *Activities) PurgeData(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("purge"); err != nil {
		return StepResult{}, err
	}
	var cutoff *time.Time
	if s := in.Params["unlinked_before"]; s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return StepResult{}, classify("purge", err, false, 0)
		}
		cutoff = &t
		still, err := a.Profiles.StillUnlinked(ctx, in.key(), t)
		if err != nil {
			return StepResult{}, err
		}
		if !still {
			return skipped("the user linked again"), nil
		}
	}
	var n int64
	if p, ok := a.Sessions.(sessions.Purger); ok {
		var err error
		if n, err = p.Purge(ctx, in.Event.Subject.UserID); err != nil {
			return StepResult{}, err
		}
	}
	purged, err := a.Profiles.Purge(ctx, in.key(), cutoff)
	if err != nil {
		return StepResult{}, err
	}
	return done(map[string]any{"sessions_deleted": n, "profile_deleted": purged}), nil
}
