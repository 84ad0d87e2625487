package activities

import (
	"context"
	"strings"

	"github.com/setflow/setflow/profile"
)

// MarkLinked records that the user linked the app (OAUTH user-linked).
func (a *Activities) MarkLinked(ctx context.Context, in StepInput) (StepResult, error) {
	return a.setLinked(ctx, in, true)
}

// MarkUnlinked records that the user unlinked the app.
func (a *Activities) MarkUnlinked(ctx context.Context, in StepInput) (StepResult, error) {
	return a.setLinked(ctx, in, false)
}

func (a *Activities) setLinked(ctx context.Context, in StepInput, linked bool) (StepResult, error) {
	if err := in.requireSubject("link status"); err != nil {
		return StepResult{}, err
	}
	ok, err := a.Profiles.SetLinked(ctx, in.key(), linked, in.eventTime())
	return appliedOr(ok, "a newer link change was already applied"), err
}

// LockAccount locks the account (RISC account-disabled).
func (a *Activities) LockAccount(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("lock"); err != nil {
		return StepResult{}, err
	}
	ok, err := a.Profiles.SetLocked(ctx, in.key(), true, in.eventTime())
	return appliedOr(ok, "a newer enable was already applied"), err
}

// UnlockAccount unlocks the account (RISC account-enabled) unless a later
// disable already happened.
func (a *Activities) UnlockAccount(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("unlock"); err != nil {
		return StepResult{}, err
	}
	ok, err := a.Profiles.SetLocked(ctx, in.key(), false, in.eventTime())
	return appliedOr(ok, "a later disable supersedes this enable"), err
}

// RequireReauth makes sessions from before the event re-authenticate.
func (a *Activities) RequireReauth(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("require re-authentication"); err != nil {
		return StepResult{}, err
	}
	ok, err := a.Profiles.RequireReauth(ctx, in.key(), in.eventTime())
	return appliedOr(ok, "a later re-authentication mark exists"), err
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

// UpdateConsents records granted or withdrawn scopes; a withdrawal deletes the
// withdrawn scopes' fields from the profile.
func (a *Activities) UpdateConsents(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("consents"); err != nil {
		return StepResult{}, err
	}
	scopes := scopesOf(in.payload())
	var granted, withdrawn []string
	if strings.HasSuffix(in.Event.Name, "withdraw") {
		withdrawn = scopes
	} else {
		granted = scopes
	}
	cleared, err := a.Profiles.UpdateConsents(ctx, in.key(), granted, withdrawn, in.eventTime())
	if err != nil {
		return StepResult{}, err
	}
	return done(map[string]any{"granted": len(granted), "withdrawn": len(withdrawn), "cleared_fields": cleared}), nil
}

// UpdateIdentifier applies RISC identifier-changed (new email or phone) and
// identifier-recycled (the identifier now belongs to someone else: detach it).
func (a *Activities) UpdateIdentifier(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("identifier"); err != nil {
		return StepResult{}, err
	}
	if in.Event.Name == "identifier-recycled" {
		ok, err := a.Profiles.DetachIdentifier(ctx, in.key(), in.eventTime())
		return appliedOr(ok, "a newer profile change exists"), err
	}
	p := in.payload()
	nv, _ := p["new-value"].(string)
	if nv == "" {
		nv, _ = p["new_value"].(string)
	}
	if nv == "" {
		return skipped("the event carries no new value"), nil
	}
	var f profile.Fields
	field := "phone_number"
	if strings.Contains(nv, "@") {
		f.Email, field = &nv, "email"
	} else {
		f.PhoneNumber = &nv
	}
	ok, err := a.Profiles.UpdateFields(ctx, in.key(), f, in.eventTime())
	if err != nil {
		return StepResult{}, err
	}
	r := appliedOr(ok, "a newer profile change exists")
	if ok {
		r.Detail = map[string]any{"field": field}
	}
	return r, nil
}
