package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/metrics"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/sideeffects"
)

// errPreviousAttempt is a retryable refusal to send while an earlier
// attempt, whose outcome is not known yet, may still be sending.
var errPreviousAttempt = errors.New("an earlier attempt may still be sending this notice")

// SendNotice emails the user a security notice (params: notice). The address
// and name come from the profile store; without an address the step is
// skipped. Notices are delivered at least once: an attempt that may have
// handed the message over and then failed, or vanished with its worker, is
// followed by another send with the same Message-ID (a lost notice is worse
// than a recognisable repeat), counted in setflow_notice_repeats_total and
// audited as repeat.
func (a *Activities) SendNotice(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if err := in.RequireSubject("send notice"); err != nil {
		return reaction.StepResult{}, err
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	kind := mailer.Kind(in.Params["notice"])
	if !kind.Valid() {
		return reaction.StepResult{}, classify("send notice", fmt.Errorf("unknown notice %q", kind), false, 0)
	}
	if a.Mailer == nil {
		return skipped("email not configured"), nil
	}
	p, err := a.Profiles.Get(ctx, profileKey(in))
	if errors.Is(err, profile.ErrNotFound) || (err == nil && !p.Email.Valid) {
		return skipped("no email address on file"), nil
	}
	if err != nil {
		return reaction.StepResult{}, err
	}
	deadline := noticeDeadline
	if activity.IsActivity(ctx) && activity.GetInfo(ctx).StartToCloseTimeout > 0 {
		deadline = activity.GetInfo(ctx).StartToCloseTimeout
	}
	// Notices are delivered at least once with a stable Message-ID: a key
	// seen before is sent again unless an attempt finished it, and while an
	// attempt that vanished (its worker died) may still be running — until
	// its deadline — this attempt waits (a retryable error).
	claim, err := a.SideEffects.Claim(ctx, in.IdempotencyKey, sideeffects.KindEmail, deadline)
	if err != nil {
		return reaction.StepResult{}, err
	}
	if !claim.Act {
		if claim.Status == sideeffects.StatusDone {
			return reaction.StepResult{Outcome: reaction.OutcomeDuplicate, Detail: map[string]any{"previous_attempt": "done"}}, nil
		}
		return reaction.StepResult{}, classify("send notice", errPreviousAttempt, true, 0)
	}
	id, err := a.Mailer.Send(ctx, mailer.Notice{
		Kind: kind, To: p.Email.String, Name: nullString(p.Nickname), Locale: nullString(p.Locale),
		EventTime: in.EventTime(), IdempotencyKey: in.IdempotencyKey,
	})
	if err != nil {
		// Whether the server may have the message decides how the retry
		// sends it: first time, or as a recognisable repeat (same
		// Message-ID). A failed takeover stays uncertain: the earlier
		// attempt may have delivered it. The claim is settled on a fresh context: this
		// attempt's may be the one that just ran out.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if serr := a.SideEffects.Settle(sctx, in.IdempotencyKey, claim.Repeat || !notAccepted(err)); serr != nil {
			return reaction.StepResult{}, serr
		}
		return reaction.StepResult{}, classify("send notice", err, !mailer.IsPermanent(err), 0)
	}
	if err := a.SideEffects.Finish(ctx, in.IdempotencyKey, id); err != nil {
		return reaction.StepResult{}, err
	}
	detail := map[string]any{"notice": string(kind), "message_id": id}
	if claim.Repeat {
		// An earlier attempt may have delivered it too: the user may get
		// two copies with the same Message-ID, which is better than none.
		detail["repeat"] = true
		metrics.NoticeRepeats.Inc()
	}
	return done(detail), nil
}

// noticeDeadline bounds an attempt when the activity has no StartToClose.
const noticeDeadline = 30 * time.Second

// notAccepted reports whether a failed send certainly did not hand the message
// over: the notice was invalid, the session failed before the message was
// sent, or the server answered with a refusal. An error that is not a
// *mailer.Error (a service's own Mailer) is taken as a refusal unless it is a
// context's cancellation or deadline.
func notAccepted(err error) bool {
	var e *mailer.Error
	if !errors.As(err, &e) {
		// A send cut off by its context (the worker stopping, the
		// attempt's deadline) may have been mid-DATA.
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	}
	if e.Permanent || e.Code >= 400 {
		return true
	}
	switch e.Op {
	case "notice", "render", "connect", "tls", "starttls", "session", "auth", "mail-from", "rcpt":
		return true
	}
	return false
}

func nullString(s sql.NullString) string {
	if s.Valid {
		return s.String
	}
	return ""
}
