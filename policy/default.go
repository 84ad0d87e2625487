package policy

// Built-in step names. Each is an activity (or, for the purge timer, workflow
// logic) in the worker; a policy may also name steps a service registered.
const (
	RevokeSessions  = "revoke_sessions"
	KakaoLogout     = "kakao_logout"
	LockAccount     = "lock_account"
	UnlockAccount   = "unlock_account"
	RequireReauth   = "require_reauth"
	MarkLinked      = "mark_linked"
	MarkUnlinked    = "mark_unlinked"
	RefreshProfile  = "refresh_profile"
	UpdateConsents  = "update_consents"
	UpdateIdentity  = "update_identifier"
	CRMUpsert       = "crm_upsert"
	CRMDelete       = "crm_delete"
	CRMMarketing    = "crm_marketing"
	CRMDeleteFields = "crm_delete_fields"
	SendNotice      = "send_notice"
	SchedulePurge   = "schedule_purge"
	CancelPurge     = "cancel_purge"
	PurgeData       = "purge_data"
	RecordChannel   = "record_channel"
	RecordTalkShare = "record_talk_share"
	// TalkShareHook runs the service's talk.ShareHook, if it set one.
	TalkShareHook = "talk_share_hook"
	// NotifyService POSTs a signed document (event, key, resulting state)
	// to the service's own endpoint; usable for any event type.
	NotifyService = "notify_service"
)

// Notices that send_notice knows.
var Notices = []string{"account-hijacked", "credential-compromise", "password-changed"}

// catalogue returns the known steps with their parameter checks; extension
// steps (extra) accept any parameters.
func catalogue(extra []string) map[string]map[string]paramCheck {
	none := map[string]paramCheck{}
	c := map[string]map[string]paramCheck{
		RevokeSessions:  none,
		KakaoLogout:     none,
		LockAccount:     none,
		UnlockAccount:   none,
		RequireReauth:   none,
		MarkLinked:      none,
		MarkUnlinked:    none,
		RefreshProfile:  {"source": oneOf("auto", "payload", "kakao")},
		UpdateConsents:  none,
		UpdateIdentity:  none,
		CRMUpsert:       none,
		CRMDelete:       none,
		CRMMarketing:    none,
		CRMDeleteFields: none,
		SendNotice:      {"notice": oneOf(Notices...)},
		SchedulePurge:   {"after": durationParam},
		CancelPurge:     none,
		PurgeData:       none,
		RecordChannel:   none,
		RecordTalkShare: none,
		TalkShareHook:   none,
		NotifyService:   none,
	}
	for _, e := range extra {
		if _, builtin := c[e]; !builtin {
			c[e] = nil
		}
	}
	return c
}

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
	identifier := Reaction{Steps: []Step{s(UpdateIdentity), s(CRMUpsert)}}
	channel := Reaction{Steps: []Step{s(RecordChannel), s(CRMMarketing)}}
	return &Policy{byType: map[string]Reaction{
		"user-linked":                        {Steps: []Step{s(MarkLinked), s(CancelPurge), s(CRMUpsert)}},
		"user-unlinked":                      unlinked,
		"user-scope-consent":                 {Steps: []Step{s(UpdateConsents), s(CRMUpsert)}},
		"user-scope-withdraw":                {Steps: []Step{s(UpdateConsents), s(CRMDeleteFields)}},
		"tokens-revoked":                     revokeOnly,
		"token-revoked":                      revokeOnly,
		"account-disabled":                   {Steps: []Step{s(RevokeSessions), s(LockAccount), notice("account-hijacked", map[string]string{"reason": "hijacking"})}},
		"account-enabled":                    {Steps: []Step{s(UnlockAccount)}},
		"account-purged":                     {Steps: []Step{s(RevokeSessions), s(PurgeData), s(CRMDelete)}},
		"account-credential-change-required": reauth,
		"assurance-level-change":             reauth,
		"credential-compromise":              {Steps: []Step{s(RevokeSessions), s(RequireReauth), notice("credential-compromise", nil)}},
		"identifier-changed":                 identifier,
		"identifier-recycled":                identifier,
		"session-revoked":                    revokeOnly,
		"sessions-revoked":                   revokeOnly,
		"credential-change":                  {Steps: []Step{s(RevokeSessions), notice("password-changed", nil)}},
		"user-profile-changed":               {Steps: []Step{s(RefreshProfile), s(CRMUpsert)}},
		// By type, so that statuses Kakao may add later are recorded too.
		"kakao:talk-channel": channel,
		"talk-share":         {Steps: []Step{s(RecordTalkShare), s(TalkShareHook)}},
		// verification, stream-updated and unknown types: stored and audited only.
	}}
}

// Destructive reports whether a step ends or removes something of the user's
// (sessions, access, data, the CRM contact): the steps the blast-radius guard
// holds when they come too fast (package guard).
func Destructive(step string) bool {
	switch step {
	case RevokeSessions, KakaoLogout, LockAccount, SchedulePurge, PurgeData, CRMDelete, CRMDeleteFields:
		return true
	}
	return false
}
