package policy

import "github.com/setflow/setflow/event"

func s(name string) Step { return Step{Name: name} }

// Default is product.md's reaction table.
func Default() *Policy {
	notice := func(kind string, when map[string]string) Step {
		return Step{Name: SendNotice, Params: map[string]string{"notice": kind}, When: when}
	}
	// State steps (mark_*, lock/unlock, require_reauth, update_*,
	// refresh_profile, schedule/cancel_purge, purge_data) say which parts of
	// the user's state an event may change; the state machine decides by
	// event time whether it does. CRM steps mark the events whose change is
	// synced; the sync always sends the current state (userstate.Contact).
	unlinked := Reaction{Steps: []Step{s(RevokeSessions), s(MarkUnlinked), s(CRMUpsert), s(SchedulePurge)}}
	revokeOnly := Reaction{Steps: []Step{s(RevokeSessions)}}
	reauth := Reaction{Steps: []Step{s(RequireReauth)}}
	identifier := Reaction{Steps: []Step{s(UpdateIdentifier), s(CRMUpsert)}}
	channel := Reaction{Steps: []Step{s(RecordChannel), s(CRMMarketing)}}
	return &Policy{byType: map[string]Reaction{
		"user-linked":                        {Steps: []Step{s(MarkLinked), s(CancelPurge), s(CRMUpsert)}},
		event.NameUserUnlinked:               unlinked,
		"user-scope-consent":                 {Steps: []Step{s(UpdateConsents), s(CRMUpsert)}},
		"user-scope-withdraw":                {Steps: []Step{s(UpdateConsents), s(CRMDeleteFields)}},
		"tokens-revoked":                     revokeOnly,
		"token-revoked":                      revokeOnly,
		"account-disabled":                   {Steps: []Step{s(RevokeSessions), s(LockAccount), notice(NoticeAccountHijacked, map[string]string{"reason": "hijacking"})}},
		"account-enabled":                    {Steps: []Step{s(UnlockAccount)}},
		"account-purged":                     {Steps: []Step{s(RevokeSessions), s(PurgeData), s(CRMDelete)}},
		"account-credential-change-required": reauth,
		"assurance-level-change":             reauth,
		"credential-compromise":              {Steps: []Step{s(RevokeSessions), s(RequireReauth), notice(NoticeCredentialCompromise, nil)}},
		"identifier-changed":                 identifier,
		"identifier-recycled":                identifier,
		"session-revoked":                    revokeOnly,
		"sessions-revoked":                   revokeOnly,
		"credential-change":                  {Steps: []Step{s(RevokeSessions), notice(NoticePasswordChanged, nil)}},
		"user-profile-changed":               {Steps: []Step{s(RefreshProfile), s(CRMUpsert)}},
		// By type, so that statuses Kakao may add later are recorded too.
		"kakao:talk-channel": channel,
		"talk-share":         {Steps: []Step{s(RecordTalkShare), s(TalkShareHook)}},
		// verification, stream-updated and unknown types: stored and audited only.
	}}
}
