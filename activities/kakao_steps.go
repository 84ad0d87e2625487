package activities

import (
	"context"
	"errors"

	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/profile"
)

func kakaoError(what string, err error) error {
	d, _ := kakaoapi.RetryAfter(err)
	return classify(what, err, kakaoapi.IsRetryable(err), d)
}

// KakaoLogout ends the user's Kakao session for the app. A user who is no
// longer linked has no session to end: that is done, not a failure.
func (a *Activities) KakaoLogout(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("kakao logout"); err != nil {
		return StepResult{}, err
	}
	if a.Kakao == nil {
		return skipped("kakao api not configured"), nil
	}
	err := a.Kakao.Logout(ctx, in.Event.Subject.UserID)
	if errors.Is(err, kakaoapi.ErrNotLinked) {
		return skipped("user no longer linked"), nil
	}
	if err != nil {
		return StepResult{}, kakaoError("kakao logout", err)
	}
	return done(nil), nil
}

// profileFields reads profile fields from a KAKAO user-profile-changed payload.
// Kakao has not documented the field names: the user API's names are tried
// (email, nickname, phone_number, also nested under kakao_account/profile).
func profileFields(p map[string]any) (profile.Fields, bool) {
	var f profile.Fields
	found := false
	pick := func(m map[string]any, key string, dst **string) {
		if v, ok := m[key].(string); ok && v != "" && *dst == nil {
			*dst, found = &v, true
		}
	}
	for _, m := range []map[string]any{p, asMap(p["kakao_account"]), asMap(asMap(p["kakao_account"])["profile"]), asMap(p["profile"])} {
		if m == nil {
			continue
		}
		pick(m, "email", &f.Email)
		pick(m, "nickname", &f.Nickname)
		pick(m, "phone_number", &f.PhoneNumber)
	}
	return f, found
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// RefreshProfile updates the stored profile from the event payload, or from
// Kakao's user API when the payload carries no usable fields (source=auto), or
// always from one of them (source=payload|kakao).
func (a *Activities) RefreshProfile(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("refresh profile"); err != nil {
		return StepResult{}, err
	}
	source := in.Params["source"]
	if source == "" {
		source = "auto"
	}
	f, found := profileFields(in.payload())
	from := "payload"
	if source == "kakao" || (source == "auto" && !found) {
		if a.Kakao == nil {
			return skipped("no usable profile fields in the event and kakao api not configured"), nil
		}
		{
			p, err := a.Kakao.Profile(ctx, in.Event.Subject.UserID)
			if errors.Is(err, kakaoapi.ErrNotLinked) {
				return skipped("user no longer linked"), nil
			}
			if err != nil {
				return StepResult{}, kakaoError("kakao profile", err)
			}
			f, from = profile.Fields{}, "kakao"
			if e := p.UsableEmail(); e != "" {
				f.Email = &e
			}
			if p.Nickname != "" {
				f.Nickname = &p.Nickname
			}
			if p.PhoneNumber != "" {
				f.PhoneNumber = &p.PhoneNumber
			}
		}
	}
	ok, err := a.Profiles.UpdateFields(ctx, in.key(), f, in.eventTime())
	if err != nil {
		return StepResult{}, err
	}
	r := appliedOr(ok, "a newer profile change was already applied")
	if ok {
		r.Detail = map[string]any{"source": from, "email": f.Email != nil, "nickname": f.Nickname != nil, "phone_number": f.PhoneNumber != nil}
	}
	return r, nil
}
