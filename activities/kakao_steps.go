package activities

import (
	"context"
	"errors"

	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
)

// KakaoLogout ends the user's Kakao session for the app. A user who is no
// longer linked has no session to end: that is done, not a failure.
func (a *Activities) KakaoLogout(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if err := in.RequireSubject("kakao logout"); err != nil {
		return reaction.StepResult{}, err
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	if a.Kakao == nil {
		return skipped("kakao api not configured"), nil
	}
	err := a.Kakao.Logout(ctx, in.Event.Subject.UserID)
	if errors.Is(err, kakaoapi.ErrNotLinked) {
		return skipped("user no longer linked"), nil
	}
	if err != nil {
		return reaction.StepResult{}, adapterError("kakao logout", err)
	}
	return done(nil), nil
}

// profileFields reads profile fields from a KAKAO user-profile-changed payload.
// Kakao has not documented the field names: the user API's names are tried
// (email, nickname, phone_number, also nested under kakao_account/profile).
func profileFields(p map[string]any) map[userstate.Field]string {
	out := map[userstate.Field]string{}
	pick := func(m map[string]any, key string, f userstate.Field) {
		if v, ok := m[key].(string); ok && v != "" {
			if _, seen := out[f]; !seen {
				out[f] = v
			}
		}
	}
	for _, m := range []map[string]any{p, asMap(p["kakao_account"]), asMap(asMap(p["kakao_account"])["profile"]), asMap(p["profile"])} {
		if m == nil {
			continue
		}
		pick(m, "email", userstate.Email)
		pick(m, "nickname", userstate.Nickname)
		pick(m, "phone_number", userstate.Phone)
	}
	return out
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}
