package activities

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

const day = 24 * time.Hour

// previousFixture is a notice fixture whose user's address history is in
// a state store: the account's address changed at the given times before
// the event, the last one is the profile's.
func previousFixture(t *testing.T, changes map[time.Duration]string) (*noticeFixture, *statedb.Memory) {
	t.Helper()
	f := newNoticeFixture()
	states := statedb.NewMemory()
	f.a.States, f.a.Subjects, f.a.NoticePreviousWithin = states, audit.SubjectHasher{Key: []byte("k")}, 30*day
	last := time.Duration(1 << 62)
	for before, addr := range changes {
		f.setEmail(t, states, f.at.Add(-before), addr)
		if before < last {
			last = before
			f.a.Profiles = profiles{{Issuer: noticeIssuer, UserID: noticeUser}: {Email: sql.NullString{String: addr, Valid: true}}}
		}
	}
	return f, states
}

// setEmail applies an address change at t to the user's state.
func (f *noticeFixture) setEmail(t *testing.T, states statedb.States, at time.Time, addr string) userstate.Decision {
	t.Helper()
	sub := userstate.Subject{Hash: f.a.Subjects.Hash(noticeIssuer, noticeUser), Issuer: noticeIssuer, UserID: noticeUser}
	key := "email@" + at.String()
	res, err := states.Apply(context.Background(), sub, key, func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, userstate.Change{Time: at, EventKey: key, Fields: map[userstate.Field]string{userstate.Email: addr}})
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Decision
}

// The notice goes to the current address and, as its own message with its
// own stable Message-ID, to every other address the account had in the 30
// days before the event (owner@x was set earlier, but in effect then); an
// address replaced earlier than that is not told, and a retry sends nothing
// twice.
func TestSendNoticeTellsThePreviousAddresses(t *testing.T) {
	f, _ := previousFixture(t, map[time.Duration]string{60 * day: "ancient@x", 35 * day: "owner@x", day: "attacker@x"})
	res, err := f.send("k")
	if err != nil || res.Outcome != reaction.OutcomeDone || res.Detail["previous_addresses"] != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if !slices.Equal(f.mailer.to, []string{"attacker@x", "owner@x"}) {
		t.Fatalf("sent to %v, want the current address then the previous one", f.mailer.to)
	}
	if f.mailer.ids[0] == f.mailer.ids[1] {
		t.Error("the two messages share a Message-ID")
	}
	for _, id := range f.mailer.ids {
		if strings.Contains(id, "owner") || strings.Contains(id, "attacker") {
			t.Errorf("Message-ID %s names an address", id)
		}
	}
	if res, err := f.send("k"); err != nil || res.Outcome != reaction.OutcomeDuplicate || f.mailer.sends() != 2 {
		t.Fatalf("retry: %+v %v, %d sends", res, err, f.mailer.sends())
	}

	f.a.NoticePreviousWithin = 0
	if _, err := f.send("k2"); err != nil || !slices.Equal(f.mailer.to[2:], []string{"attacker@x"}) {
		t.Fatalf("window off: sent to %v (%v)", f.mailer.to[2:], err)
	}
}

// An address change that arrives after the notice (it happened before the
// event) names the notice, and the renotify step tells that address only.
func TestSendNoticeRenotifyTellsALateAddress(t *testing.T) {
	f, states := previousFixture(t, map[time.Duration]string{day: "attacker@x"})
	if _, err := f.send("k"); err != nil || !slices.Equal(f.mailer.to, []string{"attacker@x"}) {
		t.Fatalf("sent to %v (%v)", f.mailer.to, err)
	}
	d := f.setEmail(t, states, f.at.Add(-5*day), "owner@x")
	if len(d.Renotify) != 1 || d.Renotify[0].Key != "k" {
		t.Fatalf("renotify %+v", d.Renotify)
	}
	in := f.input("renotify-step")
	in.Params = map[string]string{"notice": d.Renotify[0].Kind, "renotify": "true", "notice_key": d.Renotify[0].Key,
		"event_time": d.Renotify[0].At.Format(time.RFC3339Nano)}
	res, err := f.a.SendNotice(context.Background(), in)
	if err != nil || res.Outcome != reaction.OutcomeDone || !slices.Equal(f.mailer.to, []string{"attacker@x", "owner@x"}) ||
		res.Detail["renotify"] != "k" {
		t.Fatalf("renotify: %+v %v, sent to %v", res, err, f.mailer.to)
	}
	// A second renotify (another late change) tells nobody twice.
	if res, err := f.a.SendNotice(context.Background(), in); err != nil || res.Outcome != reaction.OutcomeDuplicate || f.mailer.sends() != 2 {
		t.Fatalf("second renotify: %+v %v, %d sends", res, err, f.mailer.sends())
	}
	in.Params["event_time"] = "yesterday"
	if _, err := f.a.SendNotice(context.Background(), in); err == nil || retryable(err) {
		t.Fatalf("a renotify without its event time: %v, want a non-retryable error", err)
	}
}

// The user's previous address is told even when the current one was taken
// back (no address on file).
func TestSendNoticeWithoutACurrentAddress(t *testing.T) {
	f, _ := previousFixture(t, map[time.Duration]string{day: "owner@x"})
	f.a.Profiles = profiles{{Issuer: noticeIssuer, UserID: noticeUser}: profile.Profile{}}
	if res, err := f.send("k"); err != nil || res.Outcome != reaction.OutcomeDone || !slices.Equal(f.mailer.to, []string{"owner@x"}) {
		t.Fatalf("%+v %v, sent to %v", res, err, f.mailer.to)
	}
}

// A late address that is now the current one was never told (the notice's
// own message went to the address current then): the renotify tells it,
// and not the address that got the notice's own message.
func TestSendNoticeRenotifyTellsALateCurrentAddress(t *testing.T) {
	f, states := previousFixture(t, map[time.Duration]string{2 * day: "a@x"})
	if _, err := f.send("k"); err != nil || !slices.Equal(f.mailer.to, []string{"a@x"}) {
		t.Fatalf("sent to %v (%v)", f.mailer.to, err)
	}
	d := f.setEmail(t, states, f.at.Add(-day), "b@x")
	f.a.Profiles = profiles{{Issuer: noticeIssuer, UserID: noticeUser}: {Email: sql.NullString{String: "b@x", Valid: true}}}
	in := f.input("renotify-step")
	in.Params = map[string]string{"notice": d.Renotify[0].Kind, "renotify": "true", "notice_key": d.Renotify[0].Key,
		"event_time": d.Renotify[0].At.Format(time.RFC3339Nano)}
	if res, err := f.a.SendNotice(context.Background(), in); err != nil || res.Outcome != reaction.OutcomeDone ||
		!slices.Equal(f.mailer.to, []string{"a@x", "b@x"}) {
		t.Fatalf("renotify: %+v %v, sent to %v", res, err, f.mailer.to)
	}
}
