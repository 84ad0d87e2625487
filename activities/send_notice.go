package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/profile"
)

// claimSideEffect records that a side effect is about to happen. It reports
// false when the key was claimed before: by a completed attempt, or by one that
// crashed or timed out mid-way — in which case the effect may or may not have
// happened, and sending again could duplicate it. Email is at-most-once.
func (a *Activities) claimSideEffect(ctx context.Context, key, kind string) (claimed bool, status string, err error) {
	res, err := a.DB.ExecContext(ctx, `
		INSERT INTO setflow_side_effects (idempotency_key, kind, status) VALUES ($1, $2, 'started')
		ON CONFLICT (idempotency_key) DO NOTHING`, key, kind)
	if err != nil {
		return false, "", fmt.Errorf("side effect log: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, "", nil
	}
	err = a.DB.GetContext(ctx, &status, `SELECT status FROM setflow_side_effects WHERE idempotency_key = $1`, key)
	return false, status, err
}

func (a *Activities) finishSideEffect(ctx context.Context, key, detail string) error {
	_, err := a.DB.ExecContext(ctx, `UPDATE setflow_side_effects SET status = 'done', done_at = now(), detail = $2 WHERE idempotency_key = $1`, key, detail)
	return err
}

// releaseSideEffect forgets a claim whose effect certainly did not happen (the
// SMTP server refused it), so that the retry may try again.
func (a *Activities) releaseSideEffect(ctx context.Context, key string) error {
	_, err := a.DB.ExecContext(ctx, `DELETE FROM setflow_side_effects WHERE idempotency_key = $1 AND status = 'started'`, key)
	return err
}

// SendNotice emails the user a security notice (params: notice). The address
// and name come from the profile store; without an address the step is
// skipped. A retry after a crash never sends a second email.
func (a *Activities) SendNotice(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("send notice"); err != nil {
		return StepResult{}, err
	}
	kind := mailer.Kind(in.Params["notice"])
	if !kind.Valid() {
		return StepResult{}, classify("send notice", fmt.Errorf("unknown notice %q", kind), false, 0)
	}
	if a.Mailer == nil {
		return skipped("email not configured"), nil
	}
	p, err := a.Profiles.Get(ctx, in.key())
	if errors.Is(err, profile.ErrNotFound) || (err == nil && !p.Email.Valid) {
		return skipped("no email address on file"), nil
	}
	if err != nil {
		return StepResult{}, err
	}
	claimed, status, err := a.claimSideEffect(ctx, in.IdempotencyKey, "email")
	if err != nil {
		return StepResult{}, err
	}
	if !claimed {
		return StepResult{Outcome: OutcomeDuplicate, Detail: map[string]any{"previous_attempt": status}}, nil
	}
	id, err := a.Mailer.Send(ctx, mailer.Notice{
		Kind: kind, To: p.Email.String, Name: nullString(p.Nickname), Locale: nullString(p.Locale),
		EventTime: in.eventTime(), IdempotencyKey: in.IdempotencyKey,
	})
	if err != nil {
		// When the message certainly was not accepted, let a retry send it.
		// Otherwise (the connection broke or the attempt was interrupted once
		// the message was on its way) the server may have it: the claim stays
		// and a retry reports a duplicate rather than sending a second email.
		if notAccepted(err) {
			if rerr := a.releaseSideEffect(ctx, in.IdempotencyKey); rerr != nil {
				return StepResult{}, rerr
			}
		}
		return StepResult{}, classify("send notice", err, !mailer.IsPermanent(err), 0)
	}
	if err := a.finishSideEffect(ctx, in.IdempotencyKey, id); err != nil {
		return StepResult{}, err
	}
	return done(map[string]any{"notice": string(kind), "message_id": id}), nil
}

// notAccepted reports whether a failed send certainly did not hand the message
// over: the notice was invalid, the session failed before the message was
// sent, or the server answered with a refusal. An error that is not a
// *mailer.Error (a service's own Mailer) is taken as a refusal.
func notAccepted(err error) bool {
	var e *mailer.Error
	if !errors.As(err, &e) {
		return true
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
