package activities

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
)

// kakaoCheckAttempts is how many attempts an unlink webhook waits for Kakao's
// user API before it is applied as received.
const kakaoCheckAttempts = 5

// ApplyEvent applies one event to the user's state, once per event key, and
// projects the state into the service's profile table in the same transaction.
func (a *Activities) ApplyEvent(ctx context.Context, in reaction.ApplyInput) (reaction.ApplyResult, error) {
	if in.Subject.UserID == "" {
		return reaction.ApplyResult{}, classify("apply event", errors.New("the event names no user"), false, 0)
	}
	c, from, err := a.change(ctx, in)
	if err != nil {
		return reaction.ApplyResult{}, err
	}
	out := reaction.ApplyResult{FieldsFrom: from}
	if in.Source == event.SourceUnlink && c.Link != nil && !*c.Link && a.Kakao != nil {
		// The unlink webhook carries no event time: its receipt time may be
		// later than a re-link that it actually preceded. Kakao says what
		// is true now.
		linked, err := a.kakaoLinked(ctx, in.Subject.UserID)
		switch {
		case err == nil && linked:
			out.KakaoCheck = reaction.KakaoLinked
		case err == nil:
			out.KakaoCheck = reaction.KakaoUnlinked
		case activity.GetInfo(ctx).Attempt < kakaoCheckAttempts:
			return reaction.ApplyResult{}, err
		default:
			out.KakaoCheck = reaction.KakaoUnavailable
		}
		if out.KakaoCheck == reaction.KakaoLinked {
			linked, now := true, a.now()
			c = userstate.Change{Time: now, Now: now, EventKey: in.EventKey, Link: &linked, CancelPurge: true}
		}
	}
	res, err := a.States.Apply(ctx, in.Subject, in.EventKey, func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, c)
	})
	if err != nil {
		return reaction.ApplyResult{}, err
	}
	if err := a.writeServiceUsers(ctx, in.Subject); err != nil {
		return reaction.ApplyResult{}, err
	}
	out.Decision, out.Repeat, out.Version, out.Purge = res.Decision, res.Repeat, res.State.Version, res.State.Purge
	return out, nil
}

// kakaoLinked asks Kakao's user API whether the user is linked now.
func (a *Activities) kakaoLinked(ctx context.Context, userID string) (bool, error) {
	_, err := a.Kakao.Profile(ctx, userID)
	if errors.Is(err, kakaoapi.ErrNotLinked) {
		return false, nil
	}
	if err != nil {
		return false, adapterError("kakao link check", err)
	}
	return true, nil
}

func (a *Activities) now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// change derives the state change of an event (ChangeOf), with profile
// fields from Kakao's user API where the policy asks for them.
func (a *Activities) change(ctx context.Context, in reaction.ApplyInput) (userstate.Change, string, error) {
	c := ChangeOf(in, a.now(), a.PurgeAfter)
	from := ""
	for _, st := range in.Steps {
		if st.Name != policy.RefreshProfile {
			continue
		}
		fields, src, err := a.profileChange(ctx, in, st.Params["source"], reaction.StepInput{Event: in.Event}.Payload())
		if err != nil {
			return c, "", err
		}
		from = src
		c.Fields = mergeFields(c.Fields, fields)
	}
	return c, from, nil
}

// ChangeOf is the state change an event carries, from its payload and the
// steps its policy runs: a part whose step is not in the policy is left
// alone. Pure; refresh_profile's fields from Kakao's API are the activity's.
// now stamps a tombstone and stands in for a missing event time; purgeAfter
// is the retention of a schedule_purge step without its own.
func ChangeOf(in reaction.ApplyInput, now time.Time, purgeAfter time.Duration) userstate.Change {
	t, f := true, false
	c := userstate.Change{Time: in.Event.Time.UTC(), Now: now, EventKey: in.EventKey}
	if c.Time.IsZero() {
		c.Time = c.Now
	}
	p := reaction.StepInput{Event: in.Event}.Payload()
	for _, st := range in.Steps {
		switch st.Name {
		case policy.MarkLinked:
			c.Link = &t
		case policy.CancelPurge:
			c.CancelPurge = true
		case policy.MarkUnlinked:
			c.Link = &f
		case policy.SchedulePurge:
			after := purgeAfter
			if d, err := time.ParseDuration(st.Params["after"]); err == nil {
				after = d
			}
			c.PurgeAfter = &after
		case policy.PurgeData:
			c.PurgeNow = true
		case policy.LockAccount:
			c.Lock = &t
		case policy.UnlockAccount:
			c.Lock = &f
		case policy.RequireReauth:
			c.Reauth = true
		case policy.UpdateConsents:
			granted := !strings.HasSuffix(in.Event.Name, "withdraw")
			for _, s := range scopesOf(p) {
				if c.Consents == nil {
					c.Consents = map[string]bool{}
				}
				c.Consents[s] = granted
			}
		case policy.UpdateIdentifier:
			c.Fields = mergeFields(c.Fields, identifierChange(in.Event.Name, p))
		case policy.RecordChannel:
			switch s, _ := p["event"].(string); strings.ToLower(strings.TrimSpace(s)) {
			case userstate.Added:
				c.Channel = userstate.Added
			case userstate.Blocked:
				c.Channel = userstate.Blocked
			}
		}
	}
	return c
}

func mergeFields(dst, src map[userstate.Field]string) map[userstate.Field]string {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = map[userstate.Field]string{}
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

// identifierChange: identifier-changed carries the new e-mail or phone number;
// identifier-recycled detaches both (the identifier now belongs to someone else).
func identifierChange(name string, p map[string]any) map[userstate.Field]string {
	if name == "identifier-recycled" {
		return map[userstate.Field]string{userstate.Email: userstate.Blank, userstate.Phone: userstate.Blank}
	}
	nv, _ := p["new-value"].(string)
	if nv == "" {
		nv, _ = p["new_value"].(string)
	}
	switch {
	case nv == "":
		return nil
	case strings.Contains(nv, "@"):
		return map[userstate.Field]string{userstate.Email: nv}
	}
	return map[userstate.Field]string{userstate.Phone: nv}
}

// profileChange reads the fields of a profile change from the payload, or
// from Kakao's user API when the payload has none (source auto) or always
// (source kakao).
func (a *Activities) profileChange(ctx context.Context, in reaction.ApplyInput, source string, p map[string]any) (map[userstate.Field]string, string, error) {
	if source == "" {
		source = "auto"
	}
	fields := profileFields(p)
	if source == "payload" || (source == "auto" && len(fields) > 0) {
		return fields, "payload", nil
	}
	if a.Kakao == nil {
		return nil, "", nil
	}
	kp, err := a.Kakao.Profile(ctx, in.Subject.UserID)
	if errors.Is(err, kakaoapi.ErrNotLinked) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", adapterError("kakao profile", err)
	}
	fields = map[userstate.Field]string{}
	if e := kp.UsableEmail(); e != "" {
		fields[userstate.Email] = e
	}
	if kp.Nickname != "" {
		fields[userstate.Nickname] = kp.Nickname
	}
	if kp.PhoneNumber != "" {
		fields[userstate.Phone] = kp.PhoneNumber
	}
	return fields, "kakao", nil
}

// scopesOf reads OAUTH scope-consent/withdraw scopes: the field name is not
// documented by Kakao, so both `scopes` (array) and `scope` (space-separated)
// are read.
func scopesOf(p map[string]any) []string {
	var out []string
	if arr, ok := p["scopes"].([]any); ok {
		for _, s := range arr {
			if str, ok := s.(string); ok && str != "" {
				out = append(out, str)
			}
		}
	}
	if s, ok := p["scope"].(string); ok {
		out = append(out, strings.Fields(s)...)
	}
	return out
}
