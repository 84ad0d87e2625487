package policy

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Built-in step names, for the Go code that names a step. Each is registered
// in the steps table below: that row, not this list, makes a step known.
const (
	RevokeSessions   = "revoke_sessions"
	KakaoLogout      = "kakao_logout"
	LockAccount      = "lock_account"
	UnlockAccount    = "unlock_account"
	RequireReauth    = "require_reauth"
	MarkLinked       = "mark_linked"
	MarkUnlinked     = "mark_unlinked"
	RefreshProfile   = "refresh_profile"
	UpdateConsents   = "update_consents"
	UpdateIdentifier = "update_identifier"
	CRMUpsert        = "crm_upsert"
	CRMDelete        = "crm_delete"
	CRMMarketing     = "crm_marketing"
	CRMDeleteFields  = "crm_delete_fields"
	SendNotice       = "send_notice"
	SchedulePurge    = "schedule_purge"
	CancelPurge      = "cancel_purge"
	PurgeData        = "purge_data"
	RecordChannel    = "record_channel"
	RecordTalkShare  = "record_talk_share"
	// TalkShareHook runs the service's talk.ShareHook, if it set one.
	TalkShareHook = "talk_share_hook"
	// NotifyService POSTs a signed document (event, key, resulting state)
	// to the service's own endpoint; usable for any event type.
	NotifyService = "notify_service"
)

// The notices send_notice sends; mailer has templates for each (its tests
// check that).
const (
	// NoticeAccountHijacked follows RISC account-disabled with reason=hijacking.
	NoticeAccountHijacked = "account-hijacked"
	// NoticeCredentialCompromise follows RISC credential-compromise.
	NoticeCredentialCompromise = "credential-compromise"
	// NoticePasswordChanged follows CAEP credential-change.
	NoticePasswordChanged = "password-changed"
)

// Notices lists the notices send_notice knows.
var Notices = []string{NoticeAccountHijacked, NoticeCredentialCompromise, NoticePasswordChanged}

// Kind says how the workflows run a step.
type Kind int

const (
	// ActivityStep runs its own activity (StepDef.Activity) with a
	// reaction.StepInput. A service's extension steps are of this kind.
	ActivityStep Kind = iota + 1
	// StateStep is decided by the user's state machine (package userstate)
	// when the event is applied; the user's stream audits the decision.
	StateStep
	// CRMStep marks the events whose change the user's stream syncs to the
	// CRM (one SyncCRM at a time, always the current state).
	CRMStep
	// PurgeStep runs its activity when the state machine decides that the
	// purge runs, with the cutoff it decided.
	PurgeStep
)

// StepDef registers one built-in step: its policy name, how it runs, the
// parameters a policy file may give it, and the activity it runs.
type StepDef struct {
	Name string
	Kind Kind
	// Params checks the parameters a policy file gives the step; a
	// parameter not listed is an error.
	Params map[string]paramCheck
	// Parts names the parts of the user's state a StateStep carries.
	Parts []string
	// Destructive steps end or remove something of the user's (sessions,
	// access, data, the CRM contact): the blast-radius guard holds them when
	// they come too fast (package guard).
	Destructive bool
	// LegacyActivity is the activity type the step was registered under
	// with Temporal before activity names were derived from step names.
	// Running workflows and recorded histories (workflows/testdata) name
	// it, so it stays the step's activity.
	LegacyActivity string
}

// Activity is the Temporal activity type the step runs: its policy name in
// CamelCase (record_channel: RecordChannel) unless it has a legacy name;
// "" for state and CRM steps, which run none of their own.
func (d StepDef) Activity() string {
	switch {
	case d.Kind == StateStep || d.Kind == CRMStep:
		return ""
	case d.LegacyActivity != "":
		return d.LegacyActivity
	}
	var b strings.Builder
	for part := range strings.SplitSeq(d.Name, "_") {
		r, n := utf8.DecodeRuneInString(part)
		b.WriteRune(unicode.ToUpper(r))
		b.WriteString(part[n:])
	}
	return b.String()
}

// steps is the one table of built-in steps: policy validation, the
// workflows' dispatch and the worker's registration read it.
var steps = []StepDef{
	{Name: RevokeSessions, Kind: ActivityStep, Destructive: true},
	{Name: KakaoLogout, Kind: ActivityStep, Destructive: true},
	{Name: SendNotice, Kind: ActivityStep, Params: map[string]paramCheck{"notice": oneOf(Notices...)}},
	{Name: RecordChannel, Kind: ActivityStep},
	{Name: RecordTalkShare, Kind: ActivityStep},
	{Name: TalkShareHook, Kind: ActivityStep, LegacyActivity: "RunTalkShareHook"},
	{Name: NotifyService, Kind: ActivityStep},
	{Name: PurgeData, Kind: PurgeStep, Destructive: true, LegacyActivity: "PurgeSessions"},

	{Name: MarkLinked, Kind: StateStep, Parts: []string{"link"}},
	{Name: MarkUnlinked, Kind: StateStep, Parts: []string{"link"}},
	{Name: LockAccount, Kind: StateStep, Parts: []string{"lock"}, Destructive: true},
	{Name: UnlockAccount, Kind: StateStep, Parts: []string{"lock"}},
	{Name: RequireReauth, Kind: StateStep, Parts: []string{"reauth"}},
	{Name: UpdateConsents, Kind: StateStep, Parts: []string{"consent", "field"}},
	{Name: RefreshProfile, Kind: StateStep, Parts: []string{"field"},
		Params: map[string]paramCheck{"source": oneOf("auto", "payload", "kakao")}},
	{Name: UpdateIdentifier, Kind: StateStep, Parts: []string{"field"}},
	{Name: SchedulePurge, Kind: StateStep, Parts: []string{"purge"}, Destructive: true,
		Params: map[string]paramCheck{"after": durationParam}},
	{Name: CancelPurge, Kind: StateStep, Parts: []string{"purge"}},

	{Name: CRMUpsert, Kind: CRMStep},
	{Name: CRMDelete, Kind: CRMStep, Destructive: true},
	{Name: CRMMarketing, Kind: CRMStep},
	{Name: CRMDeleteFields, Kind: CRMStep, Destructive: true},
}

var stepsByName = func() map[string]StepDef {
	m := make(map[string]StepDef, len(steps))
	for _, d := range steps {
		if _, dup := m[d.Name]; dup {
			panic("policy: step " + d.Name + " registered twice")
		}
		m[d.Name] = d
	}
	return m
}()

// Steps lists the built-in steps in table order.
func Steps() []StepDef { return append([]StepDef(nil), steps...) }

// Lookup returns a built-in step's definition; false for any other name.
func Lookup(name string) (StepDef, bool) {
	d, ok := stepsByName[name]
	return d, ok
}

// KindOf says how a step runs. A name that is not built in is an extension
// step: an activity the service registered itself.
func KindOf(step string) Kind {
	if d, ok := stepsByName[step]; ok {
		return d.Kind
	}
	return ActivityStep
}

// ActivityFor returns the activity a step runs: a built-in step's
// StepDef.Activity ("" for state and CRM steps), an extension step's own name.
func ActivityFor(step string) string {
	if d, ok := stepsByName[step]; ok {
		return d.Activity()
	}
	return step
}

// Destructive reports whether a step is destructive (StepDef.Destructive).
func Destructive(step string) bool { return stepsByName[step].Destructive }

// catalogue returns the known steps with their parameter checks; extension
// steps (extra) accept any parameters.
func catalogue(extra []string) map[string]map[string]paramCheck {
	c := make(map[string]map[string]paramCheck, len(steps)+len(extra))
	for _, d := range steps {
		c[d.Name] = d.Params
		if c[d.Name] == nil {
			c[d.Name] = map[string]paramCheck{}
		}
	}
	for _, e := range extra {
		if _, builtin := c[e]; !builtin {
			c[e] = nil
		}
	}
	return c
}
