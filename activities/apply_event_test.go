package activities

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
)

// An event changes only the parts whose steps its policy runs, read from its
// payload as Kakao sends it.
func TestChangeOfFollowsThePolicySteps(t *testing.T) {
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	now := at.Add(time.Minute)
	in := func(name, payload string, steps ...policy.Step) reaction.ApplyInput {
		return reaction.ApplyInput{EventKey: "k", Event: event.Event{Name: name, Time: at, Payload: json.RawMessage(payload)}, Steps: steps}
	}
	st := func(name string, params ...string) policy.Step {
		s := policy.Step{Name: name}
		if len(params) == 2 {
			s.Params = map[string]string{params[0]: params[1]}
		}
		return s
	}
	c := ChangeOf(in("user-unlinked", `{}`, st(policy.RevokeSessions), st(policy.MarkUnlinked), st(policy.SchedulePurge)), now, time.Hour)
	if c.Link == nil || *c.Link || c.PurgeAfter == nil || *c.PurgeAfter != time.Hour || !c.Time.Equal(at) || !c.Now.Equal(now) {
		t.Fatalf("unlink: %+v", c)
	}
	if c := ChangeOf(in("user-unlinked", `{}`, st(policy.SchedulePurge, "after", "720h")), now, time.Hour); *c.PurgeAfter != 720*time.Hour {
		t.Fatalf("schedule_purge after: %v", *c.PurgeAfter)
	}
	if c := ChangeOf(in("user-linked", `{}`, st(policy.MarkLinked)), now, 0); c.Link == nil || !*c.Link || c.CancelPurge {
		t.Fatalf("link without cancel_purge: %+v", c)
	}
	if c := ChangeOf(in("account-disabled", `{"reason":"hijacking"}`, st(policy.RevokeSessions)), now, 0); c.Lock != nil {
		t.Fatal("a policy without lock_account locked the account")
	}
	if c := ChangeOf(in("account-purged", `{}`, st(policy.PurgeData)), now, 0); !c.PurgeNow {
		t.Fatal("purge_data did not purge")
	}
	c = ChangeOf(in("user-scope-withdraw", `{"scopes":["account_email"],"scope":"phone_number"}`, st(policy.UpdateConsents)), now, 0)
	if len(c.Consents) != 2 || c.Consents["account_email"] || c.Consents["phone_number"] {
		t.Fatalf("withdraw: %+v", c.Consents)
	}
	if c := ChangeOf(in("identifier-changed", `{"new-value":"+82 10-1234-5678"}`, st(policy.UpdateIdentifier)), now, 0); c.Fields[userstate.Phone] != "+82 10-1234-5678" {
		t.Fatalf("identifier-changed phone: %+v", c.Fields)
	}
	c = ChangeOf(in("identifier-recycled", `{}`, st(policy.UpdateIdentifier)), now, 0)
	if v, ok := c.Fields[userstate.Email]; !ok || v != userstate.Blank || len(c.Fields) != 2 {
		t.Fatalf("identifier-recycled: %+v", c.Fields)
	}
	if c := ChangeOf(in("channel-blocked", `{"event":" Blocked "}`, st(policy.RecordChannel)), now, 0); c.Channel != userstate.Blocked {
		t.Fatalf("channel: %q", c.Channel)
	}
	if c := ChangeOf(in("channel-x", `{"event":"unknown-status"}`, st(policy.RecordChannel)), now, 0); c.Channel != "" {
		t.Fatalf("a status of unknown meaning changed the channel: %q", c.Channel)
	}
	if c := ChangeOf(reaction.ApplyInput{Event: event.Event{Name: "user-linked"}}, now, 0); !c.Time.Equal(now) {
		t.Fatalf("no event time: %v, want now", c.Time)
	}
}
