package userstate

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func emailC(t time.Time, key, v string) Change {
	return fieldsC(t, key, map[Field]string{Email: v})
}

func noticeC(t time.Time, key string) Change {
	return Change{Time: t, EventKey: key, Notice: &NoticeRecord{Key: "notice/" + key, Kind: "password-changed"}}
}

func values(rs []Register) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Value)
	}
	return out
}

func TestAddressesDuring(t *testing.T) {
	s, _ := applyAll(t, State{}, emailC(at(0), "e1", "owner@x"), emailC(at(100), "e2", "attacker@x"),
		emailC(at(200), "e3", "third@x"))
	cases := []struct {
		from, to int
		want     []string
	}{
		{150, 250, []string{"attacker@x", "third@x"}},
		{0, 250, []string{"owner@x", "attacker@x", "third@x"}},
		{100, 150, []string{"attacker@x"}}, // owner@x ended at 100
		{99, 100, []string{"owner@x", "attacker@x"}},
		{250, 300, []string{"third@x"}},
		{-50, -1, nil}, // before any address
	}
	for _, c := range cases {
		if got := values(s.AddressesDuring(at(c.from), at(c.to))); !slices.Equal(got, c.want) {
			t.Errorf("during [%d, %d]: %v, want %v", c.from, c.to, got, c.want)
		}
	}

	// Two addresses set at the same time: only the tie's winner (the larger)
	// was ever in effect.
	s, _ = applyAll(t, State{}, emailC(at(0), "a", "a@x"), emailC(at(0), "b", "b@x"))
	if got := values(s.AddressesDuring(at(0), at(10))); !slices.Equal(got, []string{"b@x"}) {
		t.Errorf("tie: %v", got)
	}
	// An address set twice is named once, with its latest time.
	s, _ = applyAll(t, State{}, emailC(at(0), "1", "a@x"), emailC(at(10), "2", "b@x"), emailC(at(20), "3", "a@x"))
	if got := s.AddressesDuring(at(0), at(30)); len(got) != 2 || got[1].Value != "a@x" || !got[1].At.Equal(at(20)) {
		t.Errorf("repeated address: %+v", got)
	}
}

// A blank (withdrawal, detach, purge) deletes the addresses at or before
// it, and an older address arriving later is not stored.
func TestBlankDeletesTheAddressesBeforeIt(t *testing.T) {
	for name, blank := range map[string]Change{
		"withdrawal": consentC(at(50), "w", "account_email", false),
		"detach":     emailC(at(50), "w", ""),
		"purge":      purgeNowC(at(50), "w"),
	} {
		t.Run(name, func(t *testing.T) {
			s, _ := applyAll(t, State{}, emailC(at(0), "e1", "old@x"), blank, emailC(at(60), "e2", "new@x"),
				emailC(at(40), "late", "late@x"), emailC(at(50), "tie", "tie@x"))
			if got := values(s.Emails); !slices.Equal(got, []string{"", "new@x"}) {
				t.Errorf("history %q", got)
			}
			if got := values(s.AddressesDuring(at(0), at(100))); !slices.Equal(got, []string{"new@x"}) {
				t.Errorf("addresses %v", got)
			}
		})
	}
}

func TestHistoryAndNoticesKeepTheNewest(t *testing.T) {
	var cs []Change
	for i := range EmailHistoryLimit + 5 {
		cs = append(cs, emailC(at(i), fmt.Sprint("e", i), fmt.Sprintf("a%d@x", i)))
	}
	for i := range NoticeLimit + 5 {
		cs = append(cs, noticeC(at(i), fmt.Sprint("n", i)))
	}
	s, _ := applyAll(t, State{}, cs...)
	if len(s.Emails) != EmailHistoryLimit || s.Emails[0].Value != "a5@x" {
		t.Errorf("history %d entries from %q", len(s.Emails), s.Emails[0].Value)
	}
	if len(s.Notices) != NoticeLimit || s.Notices[0].Key != "notice/n5" {
		t.Errorf("notices %d from %q", len(s.Notices), s.Notices[0].Key)
	}
	// An address older than the whole history when it is full is not kept.
	n, _ := apply1(t, s, emailC(at(-1), "old", "old@x"))
	if slices.Contains(values(n.Emails), "old@x") {
		t.Error("an address older than a full history was kept")
	}
}

// A state stored before the history existed has its current address as its
// history.
func TestHistoryOfAStateFromBeforeIt(t *testing.T) {
	s := State{Fields: map[Field]Register{Email: {Value: "stored@x", At: at(0)}}}
	if got := values(s.AddressesDuring(at(0), at(10))); !slices.Equal(got, []string{"stored@x"}) {
		t.Errorf("addresses %v", got)
	}
	n, _ := apply1(t, s, emailC(at(5), "e", "new@x"))
	if got := values(n.Emails); !slices.Equal(got, []string{"stored@x", "new@x"}) {
		t.Errorf("history %v", got)
	}
}

// An address change that arrives after a notice for a later event names
// that notice: the address was in effect before it and has not been told.
func TestLateAddressChangeRenotifies(t *testing.T) {
	s, _ := applyAll(t, State{}, emailC(at(100), "e2", "attacker@x"), noticeC(at(150), "n1"), noticeC(at(50), "n0"))
	_, d := apply1(t, s, emailC(at(0), "e1", "owner@x"))
	if len(d.Renotify) != 2 || d.Renotify[0].Key != "notice/n0" || d.Renotify[1].Key != "notice/n1" {
		t.Errorf("renotify %+v, want n0 and n1", d.Renotify)
	}
	// A change after the notice's event, a repeat and a blank name none.
	for _, c := range []Change{emailC(at(200), "e3", "later@x"), emailC(at(100), "e2", "attacker@x"), emailC(at(60), "w", "")} {
		if _, d := apply1(t, s, c); len(d.Renotify) != 0 {
			t.Errorf("%s: renotify %+v", describe(c), d.Renotify)
		}
	}
}
