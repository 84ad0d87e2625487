package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/metrics"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/sideeffects"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
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
//
// The notice also goes, each as its own message with its own stable
// Message-ID, to every other address the user had within
// NoticePreviousWithin before the event (user-state.md): an attacker who
// changed the address must not be the only one told. The notice is recorded
// in the user's state first, under the user's row lock, so that an address
// change that arrives later names it (Decision.Renotify) and the stream runs
// this step again for the previous addresses only (params: renotify=true,
// notice_key, event_time).
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
	n, err := noticeOf(in, kind)
	if err != nil {
		return reaction.StepResult{}, err
	}
	previous, err := a.previousAddresses(ctx, in, n)
	if err != nil {
		return reaction.StepResult{}, err
	}
	p, err := a.Profiles.Get(ctx, profileKey(in))
	if err != nil && !errors.Is(err, profile.ErrNotFound) {
		return reaction.StepResult{}, err
	}
	n.Name, n.Locale = nullString(p.Nickname), nullString(p.Locale)
	detail := map[string]any{"notice": string(kind)}
	if n.renotify {
		detail["renotify"] = n.IdempotencyKey
	}
	current, outcome := nullString(p.Email), ""
	if !n.renotify && current != "" {
		first := n.Notice
		first.To = current
		sent, err := a.sendOnce(ctx, first)
		if err != nil {
			return reaction.StepResult{}, err
		}
		outcome = sent.record(detail)
	}
	count, prevOutcome, err := a.tellPrevious(ctx, n, previous, current)
	if err != nil {
		return reaction.StepResult{}, err
	}
	outcome = stronger(outcome, prevOutcome)
	if count > 0 {
		detail["previous_addresses"] = count
	}
	switch {
	case outcome == "" && n.renotify:
		return skipped("no previous address to tell"), nil
	case outcome == "":
		return skipped("no email address on file"), nil
	case outcome == reaction.OutcomeDuplicate:
		return reaction.StepResult{Outcome: reaction.OutcomeDuplicate, Detail: map[string]any{"previous_attempt": "done"}}, nil
	}
	return done(detail), nil
}

// tellPrevious sends n to each previous address (current got the notice's
// own message, unless this is a renotify) and returns how many messages it
// sent and the outcome they stand for ("" when there were none).
func (a *Activities) tellPrevious(ctx context.Context, n stepNotice, previous []userstate.Register, current string) (int, string, error) {
	count, outcome := 0, ""
	for _, addr := range previous {
		other := n.Notice
		other.To = addr.Value
		// Keyed by when the address was set, not by the address: keys
		// and Message-IDs carry no personal data.
		other.IdempotencyKey = fmt.Sprintf("%s/previous@%d", n.IdempotencyKey, addr.At.UnixNano())
		if !n.renotify && strings.EqualFold(addr.Value, current) {
			// Told by the notice's own message: a later renotify must
			// not tell it again under this key.
			if err := a.markTold(ctx, other.IdempotencyKey, n.IdempotencyKey); err != nil {
				return 0, "", err
			}
			continue
		}
		sent, err := a.sendOnce(ctx, other)
		if err != nil {
			return 0, "", err
		}
		if !sent.duplicate {
			count++
		}
		outcome = stronger(outcome, sent.record(nil))
	}
	return count, outcome, nil
}

// stronger is the step outcome of two messages' outcomes: done when either
// was sent now, duplicate when every one was sent before, "" for none.
func stronger(a, b string) string {
	if a == "" || (a == reaction.OutcomeDuplicate && b != "") {
		return b
	}
	return a
}

// markTold records key as done without sending: its address got the
// message of the notice mainKey. An attempt in flight under key is left be.
func (a *Activities) markTold(ctx context.Context, key, mainKey string) error {
	claim, err := a.SideEffects.Claim(ctx, key, sideeffects.KindEmail, noticeDeadline)
	if err != nil || !claim.Act {
		return err
	}
	return a.SideEffects.Finish(ctx, key, "sent as "+mainKey)
}

// stepNotice is a notice as SendNotice builds it: for the event's own step,
// or again for the previous addresses of an earlier notice (renotify).
type stepNotice struct {
	mailer.Notice
	renotify bool
}

// noticeOf reads the notice a step sends: its own, keyed by the step, or
// the earlier notice a renotify step names.
func noticeOf(in reaction.StepInput, kind mailer.Kind) (stepNotice, error) {
	n := stepNotice{Notice: mailer.Notice{Kind: kind, EventTime: in.EventTime(), IdempotencyKey: in.IdempotencyKey}}
	if in.Params["renotify"] != "true" {
		return n, nil
	}
	at, err := time.Parse(time.RFC3339Nano, in.Params["event_time"])
	if err != nil || in.Params["notice_key"] == "" {
		return n, classify("send notice", errors.New("a renotify step needs notice_key and event_time"), false, 0)
	}
	n.renotify, n.EventTime, n.IdempotencyKey = true, at, in.Params["notice_key"]
	return n, nil
}

// previousAddresses records the notice in the user's state (its own step)
// and returns the addresses the user had within NoticePreviousWithin before
// its event.
func (a *Activities) previousAddresses(ctx context.Context, in reaction.StepInput, n stepNotice) ([]userstate.Register, error) {
	if a.States == nil || a.NoticePreviousWithin <= 0 {
		return nil, nil
	}
	hash := a.Subjects.Hash(in.Event.Subject.Issuer, in.Event.Subject.UserID)
	var st userstate.State
	if n.renotify {
		snap, err := a.States.Get(ctx, hash)
		if errors.Is(err, statedb.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		st = snap.State
	} else {
		sub := userstate.Subject{Hash: hash, Issuer: in.Event.Subject.Issuer, UserID: in.Event.Subject.UserID}
		rec := &userstate.NoticeRecord{Key: n.IdempotencyKey, Kind: string(n.Kind)}
		res, err := a.States.Apply(ctx, sub, "notice:"+n.IdempotencyKey, func(s userstate.State) (userstate.State, userstate.Decision) {
			return userstate.Apply(s, userstate.Change{Time: n.EventTime, EventKey: "notice:" + n.IdempotencyKey, Notice: rec})
		})
		if err != nil {
			return nil, err
		}
		st = res.State
	}
	return st.AddressesDuring(n.EventTime.Add(-a.NoticePreviousWithin), n.EventTime), nil
}

// sent is what sendOnce did with one message.
type sent struct {
	id                string
	repeat, duplicate bool
}

// record adds a message's outcome to detail (nil: none) and returns the
// step outcome it stands for.
func (s sent) record(detail map[string]any) string {
	if s.duplicate {
		return reaction.OutcomeDuplicate
	}
	if detail != nil {
		detail["message_id"] = s.id
		if s.repeat {
			detail["repeat"] = true
		}
	}
	return reaction.OutcomeDone
}

// sendOnce sends one message at least once under its idempotency key.
func (a *Activities) sendOnce(ctx context.Context, n mailer.Notice) (sent, error) {
	deadline := noticeDeadline
	if activity.IsActivity(ctx) && activity.GetInfo(ctx).StartToCloseTimeout > 0 {
		deadline = activity.GetInfo(ctx).StartToCloseTimeout
	}
	// Notices are delivered at least once with a stable Message-ID: a key
	// seen before is sent again unless an attempt finished it, and while an
	// attempt that vanished (its worker died) may still be running — until
	// its deadline — this attempt waits (a retryable error).
	claim, err := a.SideEffects.Claim(ctx, n.IdempotencyKey, sideeffects.KindEmail, deadline)
	if err != nil {
		return sent{}, err
	}
	if !claim.Act {
		if claim.Status == sideeffects.StatusDone {
			return sent{duplicate: true}, nil
		}
		return sent{}, classify("send notice", errPreviousAttempt, true, 0)
	}
	id, err := a.Mailer.Send(ctx, n)
	if err != nil {
		// Whether the server may have the message decides how the retry
		// sends it: first time, or as a recognisable repeat (same
		// Message-ID). A failed takeover stays uncertain: the earlier
		// attempt may have delivered it. The claim is settled on a fresh context: this
		// attempt's may be the one that just ran out.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if serr := a.SideEffects.Settle(sctx, n.IdempotencyKey, claim.Repeat || !notAccepted(err)); serr != nil {
			return sent{}, serr
		}
		return sent{}, classify("send notice", err, !mailer.IsPermanent(err), 0)
	}
	if err := a.SideEffects.Finish(ctx, n.IdempotencyKey, id); err != nil {
		return sent{}, err
	}
	if claim.Repeat {
		// An earlier attempt may have delivered it too: the user may get
		// two copies with the same Message-ID, which is better than none.
		metrics.NoticeRepeats.Inc()
	}
	return sent{id: id, repeat: claim.Repeat}, nil
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
