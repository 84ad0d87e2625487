package activities

import (
	"context"
	"fmt"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/sessions"
	"github.com/setflow/setflow/userstate"
)

// RunPurge runs the pending purge with the given cutoff, if it is still
// pending: a newer unlink moved it, a later link cancelled it. Before anything
// is deleted, Kakao's user API (when configured) says whether the user is
// still unlinked — the unlink webhook carries no event time, so this settles
// a delayed webhook against a newer re-link: if Kakao says linked, the link
// becomes linked as of now and the purge is cancelled. The state becomes a
// tombstone: fields blank, every time guard kept.
func (a *Activities) RunPurge(ctx context.Context, in reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
	var out reaction.RunPurgeResult
	key := "purge@" + in.Cutoff.UTC().Format(time.RFC3339Nano)
	if a.Kakao != nil {
		linked, err := a.kakaoLinked(ctx, in.Subject.UserID)
		if err != nil {
			return out, err
		}
		out.KakaoCheck = reaction.KakaoUnlinked
		if linked {
			out.KakaoCheck = reaction.KakaoLinked
			now, yes := a.now(), true
			res, err := a.States.Apply(ctx, in.Subject, "kakao-linked@"+in.Cutoff.UTC().Format(time.RFC3339Nano), func(s userstate.State) (userstate.State, userstate.Decision) {
				return userstate.Apply(s, userstate.Change{Time: now, Now: now, Link: &yes, CancelPurge: true})
			})
			out.Decision = res.Decision
			return out, err
		}
	}
	res, err := a.States.Apply(ctx, in.Subject, key, func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.RunPurge(s, in.Cutoff, a.now())
	})
	out.Decision = res.Decision
	return out, err
}

// PurgeSessions deletes the user's sessions created at or before the purge's
// cutoff (param cutoff, RFC 3339; to the end of its second when it is in
// whole seconds, see event.SessionsUpTo); sessions created later survive —
// the user may have linked again and signed in since.
func (a *Activities) PurgeSessions(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if err := in.RequireSubject("purge sessions"); err != nil {
		return reaction.StepResult{}, err
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	cutoff, err := time.Parse(time.RFC3339Nano, in.Params["cutoff"])
	if err != nil {
		return reaction.StepResult{}, classify("purge sessions", fmt.Errorf("bad cutoff: %w", err), false, 0)
	}
	p, ok := a.Sessions.(sessions.Purger)
	if !ok {
		return skipped("the session store cannot delete sessions"), nil
	}
	return a.eachSessionAccount(ctx, "purge sessions", "sessions_deleted", in, func(ctx context.Context, id string) (int64, error) {
		return p.Purge(ctx, id, event.SessionsUpTo(cutoff))
	})
}
