package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// SyncCRM brings the CRM contact to the user's current state — never to one
// event's delta: absent after a purge (until a later link), otherwise the
// current fields (blank where withdrawn or detached), link, lock and
// marketing consent. Each attempt reads the state anew, so a retry after a
// newer change sends the newer state. Every call's idempotency key is derived
// from the subject and the state version, so a retry of the same version is
// recognisable at the far end. The user's stream runs one sync at a time.
func (a *Activities) SyncCRM(ctx context.Context, in reaction.SyncInput) (reaction.StepResult, error) {
	if a.CRM == nil {
		return skipped("crm not configured"), nil
	}
	snap, err := a.States.Get(ctx, in.SubjectHash)
	if errors.Is(err, statedb.ErrNotFound) {
		return skipped("no state for this user"), nil
	}
	if err != nil {
		return reaction.StepResult{}, err
	}
	v := snap.State.Version
	if snap.CRMVersion >= v {
		// An earlier attempt synced this version and its report was lost
		// (a worker or Temporal restart): the CRM holds it.
		return done(map[string]any{"version": v, "already_synced": true}), nil
	}
	key := fmt.Sprintf("crm-sync/%s/v%d", in.SubjectHash, v)
	id := snap.Subject.UserID
	c := snap.State.Contact()
	detail := map[string]any{"version": v}
	if !c.Present {
		if err := a.CRM.Delete(ctx, key+"/delete", id); err != nil {
			return reaction.StepResult{}, adapterError("crm delete", err)
		}
		detail["contact"] = "deleted"
	} else {
		contact := crm.Contact{ExternalID: id, Email: c.Email, Nickname: c.Nickname, Phone: c.Phone,
			Properties: map[string]string{"kakao_locked": fmt.Sprint(c.Locked)}}
		if c.Linked != "" {
			contact.Properties["kakao_linked"] = fmt.Sprint(c.Linked == userstate.Linked)
		}
		if err := a.CRM.Upsert(ctx, key+"/upsert", contact); err != nil {
			return reaction.StepResult{}, adapterError("crm upsert", err)
		}
		// An upsert leaves empty fields alone: blank explicitly the ones the
		// state blanked (withdrawn, detached, purged).
		var blank []string
		for f, name := range map[userstate.Field]string{userstate.Email: crm.FieldEmail, userstate.Nickname: crm.FieldNickname, userstate.Phone: crm.FieldPhone} {
			if r := snap.State.Fields[f]; r.Set() && r.Value == userstate.Blank {
				blank = append(blank, name)
			}
		}
		if len(blank) > 0 {
			slices.Sort(blank)
			if err := a.CRM.DeleteFields(ctx, key+"/blank", id, blank); err != nil {
				return reaction.StepResult{}, adapterError("crm delete fields", err)
			}
			detail["blanked"] = blank
		}
		if c.Marketing != "" {
			if err := a.CRM.SetMarketing(ctx, key+"/marketing", id, c.Marketing == userstate.Added); err != nil {
				return reaction.StepResult{}, adapterError("crm marketing", err)
			}
			detail["subscribed"] = c.Marketing == userstate.Added
		}
		detail["contact"] = "upserted"
	}
	if err := a.States.MarkSynced(ctx, in.SubjectHash, v); err != nil {
		return reaction.StepResult{}, err
	}
	return done(detail), nil
}
