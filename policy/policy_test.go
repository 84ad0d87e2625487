package policy

import (
	"strings"
	"testing"
)

func names(r Reaction) string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return strings.Join(out, ",")
}

// The default follows product.md's reaction table.
func TestDefaultFollowsReactionTable(t *testing.T) {
	p := Default()
	cases := map[string]string{
		"user-linked":          "mark_linked,cancel_purge,crm_upsert",
		"user-unlinked":        "revoke_sessions,mark_unlinked,crm_upsert,schedule_purge",
		"user-scope-withdraw":  "update_consents,crm_delete_fields",
		"account-disabled":     "revoke_sessions,lock_account,send_notice",
		"account-enabled":      "unlock_account",
		"account-purged":       "revoke_sessions,purge_data,crm_delete",
		"credential-change":    "revoke_sessions,send_notice",
		"user-profile-changed": "refresh_profile,crm_upsert",
		"talk-share":           "record_talk_share,talk_share_hook",
		"verification":         "",
		"no-such-event":        "",
	}
	for name, want := range cases {
		if got := names(p.For("urn:x:"+name, name)); got != want {
			t.Errorf("%s: steps %q, want %q", name, got, want)
		}
	}
	for _, status := range []string{"channel-added", "channel-blocked", "channel-muted"} {
		if got := names(p.For("kakao:talk-channel", status)); got != "record_channel,crm_marketing" {
			t.Errorf("%s: steps %q", status, got)
		}
	}
	hijack := p.For("", "account-disabled").Steps[2]
	if hijack.Params["notice"] != "account-hijacked" || hijack.When["reason"] != "hijacking" {
		t.Fatalf("account-disabled notice step %+v", hijack)
	}
}

func TestParseOverridesPerTypeAndKeepsTheRest(t *testing.T) {
	p, err := Parse([]byte(`
version: 1
events:
  account-disabled:
    steps:
      - revoke_sessions
      - send_notice: {notice: account-hijacked, when: {reason: bulk-account}}
  https://schemas.openid.net/secevent/caep/event-type/credential-change:
    shadow: true
    steps: [revoke_sessions]
  user-unlinked:
    steps:
      - schedule_purge: {after: 720h}
  "*":
    steps: [my_custom_step]
`), "my_custom_step")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(p.For("x", "account-disabled")); got != "revoke_sessions,send_notice" {
		t.Fatalf("override: %s", got)
	}
	if w := p.For("x", "account-disabled").Steps[1].When["reason"]; w != "bulk-account" {
		t.Fatalf("when: %q", w)
	}
	cc := p.For("https://schemas.openid.net/secevent/caep/event-type/credential-change", "credential-change")
	if !cc.Shadow || names(cc) != "revoke_sessions" {
		t.Fatalf("URI entry must win and be shadow: %+v", cc)
	}
	if got := p.For("https://schemas.openid.net/secevent/risc/event-type/credential-change", "credential-change"); got.Shadow {
		t.Fatal("a URI entry must not apply to another URI with the same short name")
	}
	if got := p.For("x", "user-unlinked").Steps[0].Params["after"]; got != "720h" {
		t.Fatalf("after = %q", got)
	}
	if got := names(p.For("x", "account-purged")); got != "revoke_sessions,purge_data,crm_delete" {
		t.Fatalf("types not in the file keep the default, got %s", got)
	}
	if got := names(p.For("x", "totally-unknown")); got != "my_custom_step" {
		t.Fatalf("* entry: %s", got)
	}
}

func TestParseErrorsAreSpecific(t *testing.T) {
	cases := map[string]struct{ doc, want string }{
		"unknown step":   {"version: 1\nevents:\n  user-linked:\n    steps: [revoke_everything]\n", `unknown step "revoke_everything"`},
		"bad notice":     {"version: 1\nevents:\n  x:\n    steps:\n      - send_notice: {notice: hello}\n", "notice must be one of"},
		"bad duration":   {"version: 1\nevents:\n  x:\n    steps:\n      - schedule_purge: {after: soon}\n", "after must be a duration"},
		"negative":       {"version: 1\nevents:\n  x:\n    steps:\n      - schedule_purge: {after: -1h}\n", "must not be negative"},
		"unknown param":  {"version: 1\nevents:\n  x:\n    steps:\n      - revoke_sessions: {scope: all}\n", `has no parameter "scope"`},
		"wrong version":  {"version: 2\nevents: {}\n", "version must be 1"},
		"unknown field":  {"version: 1\nevents:\n  x:\n    stepz: []\n", "field stepz not found"},
		"two keys":       {"version: 1\nevents:\n  x:\n    steps:\n      - {a: {}, b: {}}\n", "single `name: {params}`"},
		"line reported":  {"version: 1\nevents:\n  x:\n    steps:\n      - nope\n", "(line 5)"},
		"not yaml":       {"{{{", "not a valid policy document"},
		"nested param":   {"version: 1\nevents:\n  x:\n    steps:\n      - send_notice: {notice: [a]}\n", "must be a scalar"},
		"bad when shape": {"version: 1\nevents:\n  x:\n    steps:\n      - send_notice: {when: hijacking}\n", "when must map"},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", name, err, c.want)
		}
	}
}

func TestEveryDefaultStepIsInTheCatalogue(t *testing.T) {
	known := catalogue(nil)
	p := Default()
	for _, typ := range p.Types() {
		for _, st := range p.For(typ, typ).Steps {
			if err := validate(st, known); err != nil {
				t.Errorf("%s: %v", typ, err)
			}
		}
	}
}

// notify_service is usable for any event type, including unknown ones ("*").
func TestNotifyServiceForAnyEventType(t *testing.T) {
	p, err := Parse([]byte("version: 1\nevents:\n  account-disabled:\n    steps: [revoke_sessions, lock_account, notify_service]\n  \"*\":\n    steps: [notify_service]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := p.For("urn:example:new-type", "new-type"); len(r.Steps) != 1 || r.Steps[0].Name != NotifyService {
		t.Fatalf("unknown type: %+v", r)
	}
	if r := p.For("", "account-disabled"); len(r.Steps) != 3 || r.Steps[2].Name != NotifyService {
		t.Fatalf("account-disabled: %+v", r)
	}
}

// Activity names derive from step names; a legacy name recorded in the table
// wins, so that running workflows and recorded histories keep their types.
func TestActivityNames(t *testing.T) {
	cases := map[string]string{
		RecordChannel:      "RecordChannel",
		RevokeSessions:     "RevokeSessions",
		NotifyService:      "NotifyService",
		TalkShareHook:      "RunTalkShareHook",
		PurgeData:          "PurgeSessions",
		MarkUnlinked:       "",
		CRMUpsert:          "",
		"my_custom_step":   "my_custom_step",
		"freeze_wallet_v2": "freeze_wallet_v2",
	}
	for step, want := range cases {
		if got := ActivityFor(step); got != want {
			t.Errorf("ActivityFor(%s) = %q, want %q", step, got, want)
		}
	}
	if got := (StepDef{Name: "freeze_wallet", Kind: ActivityStep}).Activity(); got != "FreezeWallet" {
		t.Errorf("derived name %q", got)
	}
	if KindOf("my_custom_step") != ActivityStep || Destructive("my_custom_step") {
		t.Error("an extension step is a plain activity step")
	}
}

// Each row of the steps table is consistent with its kind.
func TestStepsTable(t *testing.T) {
	parts := map[string]bool{"link": true, "lock": true, "reauth": true, "consent": true, "field": true, "purge": true}
	activities := map[string]string{}
	for _, d := range Steps() {
		switch d.Kind {
		case StateStep:
			if len(d.Parts) == 0 {
				t.Errorf("%s: a state step names the state parts it carries", d.Name)
			}
			for _, p := range d.Parts {
				if !parts[p] {
					t.Errorf("%s: unknown state part %q", d.Name, p)
				}
			}
			if d.Activity() != "" {
				t.Errorf("%s: a state step runs no activity", d.Name)
			}
		case CRMStep:
			if len(d.Parts) != 0 || d.Activity() != "" {
				t.Errorf("%s: a CRM step carries no state part and runs no activity", d.Name)
			}
		case ActivityStep, PurgeStep:
			if len(d.Parts) != 0 {
				t.Errorf("%s: only state steps carry state parts", d.Name)
			}
			if other, dup := activities[d.Activity()]; dup {
				t.Errorf("%s and %s run the same activity %s", d.Name, other, d.Activity())
			}
			activities[d.Activity()] = d.Name
		default:
			t.Errorf("%s: no kind", d.Name)
		}
		if strings.ToLower(d.Name) != d.Name || strings.ContainsAny(d.Name, " -") {
			t.Errorf("%s: step names are snake_case", d.Name)
		}
	}
	for _, d := range []string{RevokeSessions, KakaoLogout, LockAccount, SchedulePurge, PurgeData, CRMDelete, CRMDeleteFields} {
		if !Destructive(d) {
			t.Errorf("%s is destructive", d)
		}
	}
	if Destructive(SendNotice) || Destructive(MarkLinked) {
		t.Error("notices and links are not destructive")
	}
}
