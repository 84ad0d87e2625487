package userstate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// t0 is the reference event time; at(n) is n seconds after it.
var t0 = time.Date(2025, time.March, 1, 9, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// retention is the purge delay an unlink schedules (PurgeAfter).
const retention = 30 * 24 * time.Hour

func ptr[T any](v T) *T { return &v }

// Changes as the policy derives them from events.

// linkC is user-linked: linked, and a link may cancel a pending purge.
func linkC(t time.Time, key string) Change {
	return Change{Time: t, EventKey: key, Link: ptr(true), CancelPurge: true}
}

// unlinkC is user-unlinked (SET or webhook): unlinked, purge after retention.
func unlinkC(t time.Time, key string) Change {
	return Change{Time: t, EventKey: key, Link: ptr(false), PurgeAfter: ptr(retention)}
}

// purgeNowC is account-purged: unlinked, purged now with cutoff t.
func purgeNowC(t time.Time, key string) Change {
	return Change{Time: t, EventKey: key, PurgeNow: true, Now: t.Add(time.Hour)}
}

func lockC(t time.Time, key string, locked bool) Change {
	return Change{Time: t, EventKey: key, Lock: ptr(locked)}
}

func reauthC(t time.Time, key string) Change {
	return Change{Time: t, EventKey: key, Reauth: true}
}

func consentC(t time.Time, key, scope string, granted bool) Change {
	return Change{Time: t, EventKey: key, Consents: map[string]bool{scope: granted}}
}

func fieldsC(t time.Time, key string, fields map[Field]string) Change {
	return Change{Time: t, EventKey: key, Fields: fields}
}

func channelC(t time.Time, key, v string) Change {
	return Change{Time: t, EventKey: key, Channel: v}
}

// applyAll applies cs in order to s, checking on the way that Apply never
// mutates its input and that Version counts exactly the changes that changed
// something.
func applyAll(t *testing.T, s State, cs ...Change) (State, []Decision) {
	t.Helper()
	ds := make([]Decision, 0, len(cs))
	for _, c := range cs {
		before := render(s, s.Contact())
		n, d := Apply(s, c)
		if after := render(s, s.Contact()); after != before {
			t.Fatalf("Apply(%s) mutated its input state:\nbefore %s\nafter  %s", describe(c), before, after)
		}
		want := s.Version
		if d.Changed() {
			want++
		}
		if n.Version != want {
			t.Fatalf("Apply(%s): Version %d, want %d (Changed=%v)", describe(c), n.Version, want, d.Changed())
		}
		if got := n.Contact() != s.Contact(); got != d.ContactChanged {
			t.Fatalf("Apply(%s): ContactChanged %v, contact went %+v -> %+v", describe(c), d.ContactChanged, s.Contact(), n.Contact())
		}
		s = n
		ds = append(ds, d)
	}
	return s, ds
}

func apply1(t *testing.T, s State, c Change) (State, Decision) {
	t.Helper()
	n, ds := applyAll(t, s, c)
	return n, ds[0]
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

func pick(cs []Change, order []int) []Change {
	out := make([]Change, len(order))
	for i, j := range order {
		out[i] = cs[j]
	}
	return out
}

func keysOf(cs []Change) string {
	ks := make([]string, len(cs))
	for i, c := range cs {
		ks[i] = c.EventKey
	}
	return strings.Join(ks, ",")
}

// ---------------------------------------------------------------------------
// 1. The register rule.

type registerKind struct {
	name, part   string
	get          func(State) Register
	change       func(v string, t time.Time) Change
	safe, unsafe string
}

func registerKinds() []registerKind {
	return []registerKind{
		{
			name: "link", part: "link", safe: Unlinked, unsafe: Linked,
			get: func(s State) Register { return s.Link },
			change: func(v string, t time.Time) Change {
				return Change{Time: t, EventKey: "link-" + v, Link: ptr(v == Linked)}
			},
		},
		{
			name: "lock", part: "lock", safe: Locked, unsafe: Unlocked,
			get: func(s State) Register { return s.Lock },
			change: func(v string, t time.Time) Change {
				return Change{Time: t, EventKey: "lock-" + v, Lock: ptr(v == Locked)}
			},
		},
		{
			name: "consent", part: "consent:phone_number", safe: Withdrawn, unsafe: Granted,
			get: func(s State) Register { return s.Consents["phone_number"] },
			change: func(v string, t time.Time) Change {
				return consentC(t, "consent-"+v, "phone_number", v == Granted)
			},
		},
		{
			name: "field", part: "field:nickname", safe: Blank, unsafe: "neo",
			get: func(s State) Register { return s.Fields[Nickname] },
			change: func(v string, t time.Time) Change {
				return fieldsC(t, "field-"+v, map[Field]string{Nickname: v})
			},
		},
		{
			name: "channel", part: "channel", safe: Blocked, unsafe: Added,
			get: func(s State) Register { return s.Channel },
			change: func(v string, t time.Time) Change {
				return channelC(t, "channel-"+v, v)
			},
		},
	}
}

func TestRegisterRule(t *testing.T) {
	type offer struct {
		safe bool
		sec  int
	}
	S := func(sec int) offer { return offer{true, sec} }
	U := func(sec int) offer { return offer{false, sec} }
	cases := []struct {
		name          string
		first, second offer
		want          Outcome
		wantSafe      bool
		wantSec       int
	}{
		{"later less-safe value wins over older safer one", S(0), U(10), Applied, false, 10},
		{"later safer value wins over older less-safe one", U(0), S(10), Applied, true, 10},
		{"same value later moves the time", U(0), U(10), Applied, false, 10},
		{"older less-safe value is superseded", S(10), U(0), Superseded, true, 10},
		{"older safer value is superseded", U(10), S(0), Superseded, false, 10},
		{"older same value is superseded", U(10), U(0), Superseded, false, 10},
		{"equal time safer value arriving second wins", U(0), S(0), Applied, true, 0},
		{"equal time less-safe value arriving second is superseded", S(0), U(0), Superseded, true, 0},
		{"same safer value same time is unchanged", S(0), S(0), Unchanged, true, 0},
		{"same less-safe value same time is unchanged", U(0), U(0), Unchanged, false, 0},
	}
	for _, k := range registerKinds() {
		val := func(safe bool) string {
			if safe {
				return k.safe
			}
			return k.unsafe
		}
		for _, tc := range cases {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				s, d1 := apply1(t, State{}, k.change(val(tc.first.safe), at(tc.first.sec)))
				if got := d1.Parts[k.part]; got != Applied {
					t.Fatalf("first offer on an empty register: %s = %q, want applied", k.part, got)
				}
				if got := k.get(s); got.Value != val(tc.first.safe) || !got.At.Equal(at(tc.first.sec)) {
					t.Fatalf("after first offer register = %+v", got)
				}
				s, d := apply1(t, s, k.change(val(tc.second.safe), at(tc.second.sec)))
				if got := d.Parts[k.part]; got != tc.want {
					t.Errorf("Parts[%q] = %q, want %q (parts %v)", k.part, got, tc.want, d.Parts)
				}
				if got := d.Of(k.part); got != tc.want {
					t.Errorf("Of(%q) = %q, want %q", k.part, got, tc.want)
				}
				got := k.get(s)
				if got.Value != val(tc.wantSafe) || !got.At.Equal(at(tc.wantSec)) {
					t.Errorf("register = {%q %s}, want {%q %s}", got.Value, got.At.Format(time.RFC3339),
						val(tc.wantSafe), at(tc.wantSec).Format(time.RFC3339))
				}
			})
		}
	}
}

// Two field values at the same time (neither blank) end the same in any
// order: the larger string wins.
func TestFieldTieBetweenTwoValuesIsOrderIndependent(t *testing.T) {
	a := fieldsC(at(0), "a", map[Field]string{Email: "a@example.com"})
	b := fieldsC(at(0), "b", map[Field]string{Email: "b@example.com"})
	for _, order := range [][]Change{{a, b}, {b, a}} {
		s, _ := applyAll(t, State{}, order...)
		if got := s.Field(Email); got != "b@example.com" {
			t.Errorf("order %s: email %q, want b@example.com", keysOf(order), got)
		}
	}
}

func TestReauthKeepsTheLatestTime(t *testing.T) {
	cases := []struct {
		name   string
		first  int
		second int
		want   Outcome
		wantAt int
	}{
		{"later requirement moves it", 0, 10, Applied, 10},
		{"older requirement is superseded", 10, 0, Superseded, 10},
		{"same time is unchanged", 10, 10, Unchanged, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, d1 := apply1(t, State{}, reauthC(at(tc.first), "r1"))
			if d1.Parts["reauth"] != Applied {
				t.Fatalf("first reauth: %v", d1.Parts)
			}
			s, d := apply1(t, s, reauthC(at(tc.second), "r2"))
			if got := d.Parts["reauth"]; got != tc.want {
				t.Errorf("Parts[reauth] = %q, want %q", got, tc.want)
			}
			if !s.Reauth.Equal(at(tc.wantAt)) {
				t.Errorf("Reauth = %s, want %s", s.Reauth, at(tc.wantAt))
			}
		})
	}
}

func TestWithdrawalBlanksTheScopesFields(t *testing.T) {
	full := fieldsC(at(0), "p", map[Field]string{Email: "e@x", Nickname: "neo", Phone: "+82 10"})
	cases := []struct {
		scope string
		blank []Field
	}{
		{"account_email", []Field{Email}},
		{"profile_nickname", []Field{Nickname}},
		{"profile", []Field{Nickname}},
		{"phone_number", []Field{Phone}},
		{"talk_message", nil},
	}
	for _, tc := range cases {
		t.Run(tc.scope, func(t *testing.T) {
			s, _ := apply1(t, State{}, full)
			s, d := apply1(t, s, consentC(at(10), "w", tc.scope, false))
			if got := s.Consents[tc.scope]; got.Value != Withdrawn || !got.At.Equal(at(10)) {
				t.Errorf("consent register %+v", got)
			}
			for _, f := range AllFields {
				blanked := slices.Contains(tc.blank, f)
				if got := s.Field(f) == Blank; got != blanked {
					t.Errorf("field %s = %q, blanked %v, want %v", f, s.Field(f), got, blanked)
				}
				part, ok := d.Parts["field:"+string(f)]
				if blanked && (part != Applied || !s.Fields[f].At.Equal(at(10))) {
					t.Errorf("field %s: part %q at %s, want applied at the withdrawal", f, part, s.Fields[f].At)
				}
				if !blanked && ok {
					t.Errorf("field %s not in scope but part %q reported", f, part)
				}
			}
			// A grant never brings a value back.
			s, _ = apply1(t, s, consentC(at(20), "g", tc.scope, true))
			for _, f := range tc.blank {
				if s.Field(f) != Blank {
					t.Errorf("re-consent brought %s back: %q", f, s.Field(f))
				}
			}
		})
	}
}

func TestDecisionOf(t *testing.T) {
	d := Decision{Parts: map[string]Outcome{
		"link":           Applied,
		"purge":          Superseded,
		"consent:a":      Superseded,
		"consent:b":      Unchanged,
		"field:email":    Superseded,
		"field:nickname": Superseded,
		"channel":        Unchanged,
	}}
	cases := []struct {
		name     string
		prefixes []string
		want     Outcome
	}{
		{"single applied part", []string{"link"}, Applied},
		{"single superseded part", []string{"purge"}, Superseded},
		{"single unchanged part", []string{"channel"}, Unchanged},
		{"absent part is unchanged", []string{"lock"}, Unchanged},
		{"no prefixes is unchanged", nil, Unchanged},
		{"prefix with superseded and unchanged members is unchanged", []string{"consent"}, Unchanged},
		{"prefix whose members are all superseded", []string{"field"}, Superseded},
		{"exact sub-part", []string{"consent:a"}, Superseded},
		{"exact sub-part unchanged", []string{"consent:b"}, Unchanged},
		{"prefix must end at a colon (field:e)", []string{"field:e"}, Unchanged},
		{"prefix must end at a colon (fiel)", []string{"fiel"}, Unchanged},
		{"prefix must end at a colon (lin)", []string{"lin"}, Unchanged},
		{"several prefixes all superseded", []string{"purge", "field"}, Superseded},
		{"several prefixes one applied", []string{"purge", "link"}, Applied},
		{"several prefixes superseded and unchanged", []string{"purge", "channel"}, Unchanged},
		{"several prefixes one absent", []string{"purge", "lock"}, Superseded},
		{"same prefix twice", []string{"purge", "purge"}, Superseded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := d.Of(tc.prefixes...); got != tc.want {
				t.Errorf("Of(%q) = %q, want %q", tc.prefixes, got, tc.want)
			}
		})
	}
	if got := (Decision{}).Of("link"); got != Unchanged {
		t.Errorf("empty decision Of(link) = %q", got)
	}
}

func TestDecisionChanged(t *testing.T) {
	cases := []struct {
		name string
		d    Decision
		want bool
	}{
		{"empty", Decision{}, false},
		{"only superseded and unchanged", Decision{Parts: map[string]Outcome{"a": Superseded, "b": Unchanged}}, false},
		{"one applied", Decision{Parts: map[string]Outcome{"a": Superseded, "b": Applied}}, true},
		{"purge action without applied parts", Decision{Purge: PurgeCancelled}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.d.Changed(); got != tc.want {
				t.Errorf("Changed() = %v, want %v", got, tc.want)
			}
		})
	}
}

// A part offered twice by one change keeps the strongest outcome.
func TestDecisionPartsKeepTheStrongestOutcome(t *testing.T) {
	t.Run("two scopes blanking the same field", func(t *testing.T) {
		c := Change{Time: at(10), EventKey: "w", Consents: map[string]bool{"profile": false, "profile_nickname": false}}
		s, _ := apply1(t, State{}, fieldsC(at(0), "p", map[Field]string{Nickname: "neo"}))
		s, d := apply1(t, s, c)
		if d.Parts["field:nickname"] != Applied || s.Field(Nickname) != Blank {
			t.Errorf("parts %v nickname %q", d.Parts, s.Field(Nickname))
		}
	})
	t.Run("withdrawal and a value at the same time", func(t *testing.T) {
		c := Change{Time: at(10), EventKey: "w", Consents: map[string]bool{"account_email": false},
			Fields: map[Field]string{Email: "x@x"}}
		s, d := apply1(t, State{}, c)
		if d.Parts["field:email"] != Applied {
			t.Errorf("field:email = %q, want applied (blank then a superseded value)", d.Parts["field:email"])
		}
		if s.Field(Email) != Blank {
			t.Errorf("email %q, want blank: blank wins a tie", s.Field(Email))
		}
	})
	t.Run("parts of a profile change", func(t *testing.T) {
		s, _ := apply1(t, State{}, fieldsC(at(10), "e", map[Field]string{Email: "new@x"}))
		_, d := apply1(t, s, fieldsC(at(5), "p", map[Field]string{Email: "old@x", Nickname: "neo"}))
		want := map[string]Outcome{"field:email": Superseded, "field:nickname": Applied}
		if fmt.Sprint(d.Parts) != fmt.Sprint(want) {
			t.Errorf("parts %v, want %v", d.Parts, want)
		}
		if d.Of("field") != Applied || d.Of("field:email") != Superseded || d.Of("field:nickname") != Applied {
			t.Errorf("Of: field=%s email=%s nickname=%s", d.Of("field"), d.Of("field:email"), d.Of("field:nickname"))
		}
	})
}

func TestVersionCountsChangingApplies(t *testing.T) {
	s, _ := apply1(t, State{}, lockC(at(10), "l", true))
	if s.Version != 1 {
		t.Fatalf("Version %d", s.Version)
	}
	s, d := apply1(t, s, lockC(at(10), "l", true)) // duplicate
	if d.Changed() || s.Version != 1 {
		t.Errorf("duplicate changed something: %+v version %d", d, s.Version)
	}
	s, d = apply1(t, s, lockC(at(5), "u", false)) // older
	if d.Changed() || s.Version != 1 {
		t.Errorf("older change changed something: %+v version %d", d, s.Version)
	}
	s, _ = apply1(t, s, lockC(at(20), "u2", false))
	if s.Version != 2 {
		t.Errorf("Version %d, want 2", s.Version)
	}
}

func TestContactChanged(t *testing.T) {
	base, _ := applyAll(t, State{},
		linkC(at(0), "link"),
		fieldsC(at(0), "p", map[Field]string{Email: "e@x"}),
		channelC(at(0), "ch", Added))
	cases := []struct {
		name string
		c    Change
		want bool
	}{
		{"reauth does not touch the contact", reauthC(at(10), "r"), false},
		{"consent grant does not touch the contact", consentC(at(10), "g", "talk_message", true), false},
		{"email change", fieldsC(at(10), "e", map[Field]string{Email: "f@x"}), true},
		{"older email change", fieldsC(at(-10), "e", map[Field]string{Email: "f@x"}), false},
		{"email withdrawal", consentC(at(10), "w", "account_email", false), true},
		{"channel blocked", channelC(at(10), "b", Blocked), true},
		{"lock", lockC(at(10), "l", true), true},
		{"unlink", unlinkC(at(10), "u"), true},
		{"account purged", purgeNowC(at(10), "p"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, d := apply1(t, base, tc.c)
			if d.ContactChanged != tc.want {
				t.Errorf("ContactChanged = %v, want %v", d.ContactChanged, tc.want)
			}
		})
	}
}

func TestApplyAndRunPurgeDoNotMutateTheirInput(t *testing.T) {
	s, _ := applyAll(t, State{},
		linkC(at(0), "l"),
		consentC(at(0), "c", "account_email", true),
		fieldsC(at(0), "p", map[Field]string{Email: "e@x", Nickname: "neo"}),
		purgeNowC(at(5), "pn"),
		linkC(at(10), "l2"),
		fieldsC(at(11), "p2", map[Field]string{Email: "e2@x"}),
		unlinkC(at(20), "u"))
	snapshot := render(s, s.Contact())
	purge, tomb := *s.Purge, *s.Tombstone
	Apply(s, Change{Time: at(30), EventKey: "w", Consents: map[string]bool{"account_email": false, "x": true},
		Fields: map[Field]string{Nickname: "x"}, PurgeNow: true, Now: at(31)})
	Apply(s, linkC(at(30), "l3"))
	RunPurge(s, at(20), at(40))
	if got := render(s, s.Contact()); got != snapshot {
		t.Errorf("input mutated:\nbefore %s\nafter  %s", snapshot, got)
	}
	if *s.Purge != purge || *s.Tombstone != tomb {
		t.Errorf("pointers mutated: %+v %+v", *s.Purge, *s.Tombstone)
	}
	c := s.Clone()
	c.Fields[Email] = Register{Value: "z", At: at(99)}
	c.Consents["z"] = Register{Value: Granted, At: at(99)}
	c.Purge.Cutoff = at(99)
	c.Tombstone.Cutoff = at(99)
	if got := render(s, s.Contact()); got != snapshot {
		t.Errorf("Clone is shallow:\nbefore %s\nafter  %s", snapshot, got)
	}
}

func TestGranted(t *testing.T) {
	s, _ := applyAll(t, State{},
		consentC(at(0), "1", "phone_number", true),
		consentC(at(0), "2", "account_email", true),
		consentC(at(0), "3", "profile_nickname", true),
		consentC(at(5), "4", "profile_nickname", false))
	if got := s.Granted(); !slices.Equal(got, []string{"account_email", "phone_number"}) {
		t.Errorf("Granted() = %v", got)
	}
	if got := (State{}).Granted(); len(got) != 0 {
		t.Errorf("empty Granted() = %v", got)
	}
}

// ---------------------------------------------------------------------------
// 2. The reproduced bugs of the issue, at state level.

// (a) account-purged at t2, then an older profile change (t1 < t2) with an
// email: the email stays blank and there is no contact.
func TestBugOlderProfileChangeAfterAccountPurged(t *testing.T) {
	s, _ := applyAll(t, State{},
		linkC(at(0), "link"),
		fieldsC(at(0), "p0", map[Field]string{Email: "old@x", Nickname: "neo"}),
		purgeNowC(at(20), "purged"))
	if s.Contact().Present {
		t.Fatalf("contact present right after account-purged: %+v", s.Contact())
	}
	s, d := apply1(t, s, fieldsC(at(10), "p1", map[Field]string{Email: "late@x"}))
	if got := d.Of("field:email"); got != Superseded {
		t.Errorf("older profile change after purge: field:email %q, want superseded", got)
	}
	if s.Field(Email) != Blank || s.Field(Nickname) != Blank {
		t.Errorf("purged fields came back: email %q nickname %q", s.Field(Email), s.Field(Nickname))
	}
	if c := s.Contact(); c.Present || c != (Contact{}) {
		t.Errorf("Contact() = %+v, want absent", c)
	}
	if d.ContactChanged {
		t.Error("ContactChanged reported")
	}
}

// (b) user-linked (t0) delivered after an unlink (t0+20s) whose purge ran:
// the link stays unlinked.
func TestBugLateLinkAfterPurgeRan(t *testing.T) {
	s, _ := applyAll(t, State{},
		fieldsC(at(-10), "p", map[Field]string{Email: "e@x"}),
		unlinkC(at(20), "unlink"))
	s, rd := RunPurge(s, at(20), at(20).Add(retention))
	if rd.Purge != PurgeRun {
		t.Fatalf("RunPurge: %+v", rd)
	}
	s, d := apply1(t, s, linkC(at(0), "link"))
	if got := d.Of("link"); got != Superseded {
		t.Errorf("Of(link) = %q, want superseded", got)
	}
	if got := d.Of("purge"); got != Superseded {
		t.Errorf("Of(purge) = %q, want superseded", got)
	}
	if d.Purge != "" || d.Changed() {
		t.Errorf("late link changed something: %+v", d)
	}
	if s.Link.Value != Unlinked || !s.Link.At.Equal(at(20)) {
		t.Errorf("link %+v, want unlinked at t0+20s", s.Link)
	}
	if s.Contact().Present {
		t.Errorf("contact present: %+v", s.Contact())
	}
}

// (c) an older user-linked after a newer unlink with a pending purge: the
// purge stays pending and the link's purge part is superseded.
func TestBugOlderLinkDoesNotCancelNewerPendingPurge(t *testing.T) {
	s, d0 := apply1(t, State{}, unlinkC(at(20), "unlink"))
	if d0.Purge != PurgeScheduled {
		t.Fatalf("unlink: %+v", d0)
	}
	s, d := apply1(t, s, linkC(at(0), "link"))
	if got := d.Of("purge"); got != Superseded {
		t.Errorf("Of(purge) = %q, want superseded", got)
	}
	if got := d.Of("link"); got != Superseded {
		t.Errorf("Of(link) = %q, want superseded", got)
	}
	if d.Purge != "" {
		t.Errorf("Decision.Purge = %q, want none", d.Purge)
	}
	want := PendingPurge{Cutoff: at(20), Due: at(20).Add(retention), EventKey: "unlink"}
	if s.Purge == nil || *s.Purge != want {
		t.Errorf("Purge = %+v, want %+v", s.Purge, want)
	}
}

// (c, second half) a superseded scope withdrawal (re-consent and a new email
// later) does not blank the email.
func TestBugSupersededWithdrawalKeepsNewerEmail(t *testing.T) {
	cases := []struct {
		name        string
		consent     int
		email       int
		withdrawing int
	}{
		{"re-consent and new email both later", 10, 20, 5},
		{"re-consent and new email at the same later time", 10, 10, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := applyAll(t, State{},
				consentC(at(tc.consent), "consent", "account_email", true),
				fieldsC(at(tc.email), "email", map[Field]string{Email: "new@x"}))
			s, d := apply1(t, s, consentC(at(tc.withdrawing), "withdraw", "account_email", false))
			if got := d.Of("consent:account_email"); got != Superseded {
				t.Errorf("consent part %q, want superseded", got)
			}
			if got := d.Of("field:email"); got != Superseded {
				t.Errorf("field:email %q, want superseded", got)
			}
			if got := d.Of("consent", "field"); got != Superseded {
				t.Errorf("Of(consent, field) = %q, want superseded", got)
			}
			if d.Changed() {
				t.Errorf("superseded withdrawal changed something: %+v", d)
			}
			if s.Field(Email) != "new@x" || s.Contact().Email != "new@x" {
				t.Errorf("email %q contact %q, want new@x", s.Field(Email), s.Contact().Email)
			}
			if s.Consents["account_email"].Value != Granted {
				t.Errorf("consent %+v", s.Consents["account_email"])
			}
		})
	}
}

// (d) unlink → re-link → unlink: the second unlink schedules a pending purge
// with its own cutoff whatever the delivery order.
func TestBugUnlinkRelinkUnlinkSchedulesNewPurge(t *testing.T) {
	cs := []Change{unlinkC(at(0), "unlink1"), linkC(at(10), "relink"), unlinkC(at(20), "unlink2")}
	for _, order := range permutations(len(cs)) {
		seq := pick(cs, order)
		t.Run(keysOf(seq), func(t *testing.T) {
			s, ds := applyAll(t, State{}, seq...)
			for i, c := range seq {
				if c.EventKey == "unlink2" {
					if p := ds[i].Purge; p != PurgeScheduled && p != PurgeMoved {
						t.Errorf("second unlink: Decision.Purge = %q, want scheduled or moved", p)
					}
					if ds[i].Of("purge") != Applied {
						t.Errorf("second unlink: Of(purge) = %q", ds[i].Of("purge"))
					}
				}
			}
			want := PendingPurge{Cutoff: at(20), Due: at(20).Add(retention), EventKey: "unlink2"}
			if s.Purge == nil || *s.Purge != want {
				t.Errorf("Purge = %+v, want %+v", s.Purge, want)
			}
			if s.Link.Value != Unlinked || !s.Link.At.Equal(at(20)) {
				t.Errorf("link %+v", s.Link)
			}
			// The purge of the first unlink is gone: its timer is superseded.
			if _, d := RunPurge(s, at(0), at(0).Add(retention)); d.Of("purge") != Superseded {
				t.Errorf("first unlink's timer: %+v", d)
			}
		})
	}
}

// (e) a withdrawal of account_email at t2 then an older profile change with
// an email (t1): the email is not stored.
func TestBugOlderEmailAfterWithdrawal(t *testing.T) {
	withdraw := consentC(at(20), "withdraw", "account_email", false)
	profile := fieldsC(at(10), "profile", map[Field]string{Email: "e@x", Nickname: "neo"})
	for _, seq := range [][]Change{{withdraw, profile}, {profile, withdraw}} {
		t.Run(keysOf(seq), func(t *testing.T) {
			s, ds := applyAll(t, State{}, seq...)
			if s.Field(Email) != Blank || s.Contact().Email != Blank {
				t.Errorf("email stored: %q", s.Field(Email))
			}
			if !s.Fields[Email].At.Equal(at(20)) {
				t.Errorf("email time %s, want the withdrawal's", s.Fields[Email].At)
			}
			if s.Field(Nickname) != "neo" {
				t.Errorf("nickname %q: another scope's field must stay", s.Field(Nickname))
			}
			if seq[1].EventKey == "profile" {
				if got := ds[1].Of("field:email"); got != Superseded {
					t.Errorf("late profile change: field:email %q, want superseded", got)
				}
			}
		})
	}
}

// (f) each field has its own time: an older nickname-only change after a
// newer email change is applied to the nickname.
func TestBugPerFieldTimes(t *testing.T) {
	s, _ := apply1(t, State{}, fieldsC(at(20), "email", map[Field]string{Email: "new@x"}))
	s, d := apply1(t, s, fieldsC(at(10), "nick", map[Field]string{Nickname: "neo"}))
	if got := d.Of("field:nickname"); got != Applied {
		t.Errorf("nickname part %q, want applied", got)
	}
	if _, ok := d.Parts["field:email"]; ok {
		t.Errorf("email part reported for a nickname-only change: %v", d.Parts)
	}
	if s.Field(Nickname) != "neo" || s.Field(Email) != "new@x" {
		t.Errorf("fields %v", s.Fields)
	}
	if !s.Fields[Nickname].At.Equal(at(10)) || !s.Fields[Email].At.Equal(at(20)) {
		t.Errorf("field times %v", s.Fields)
	}
	if c := s.Contact(); c.Nickname != "neo" || c.Email != "new@x" {
		t.Errorf("contact %+v", c)
	}
}

// (g) channel added (t1) and blocked (t2) in any order: blocked.
func TestBugChannelAddedThenBlocked(t *testing.T) {
	cases := []struct {
		name            string
		added, blocked  int
		wantMarketing   string
		wantChannelTime int
	}{
		{"blocked later", 10, 20, Blocked, 20},
		{"blocked at the same time", 10, 10, Blocked, 10},
		{"added later", 20, 10, Added, 20},
	}
	for _, tc := range cases {
		cs := []Change{channelC(at(tc.added), "added", Added), channelC(at(tc.blocked), "blocked", Blocked)}
		for _, order := range permutations(2) {
			seq := pick(cs, order)
			t.Run(tc.name+"/"+keysOf(seq), func(t *testing.T) {
				s, _ := applyAll(t, State{}, seq...)
				if got := s.Contact().Marketing; got != tc.wantMarketing {
					t.Errorf("Marketing = %q, want %q", got, tc.wantMarketing)
				}
				if !s.Channel.At.Equal(at(tc.wantChannelTime)) {
					t.Errorf("channel time %s", s.Channel.At)
				}
			})
		}
	}
}

// (h) account-disabled and account-enabled at the same time: locked.
func TestBugDisabledAndEnabledAtTheSameTime(t *testing.T) {
	cs := []Change{lockC(at(10), "disabled", true), lockC(at(10), "enabled", false)}
	for _, order := range permutations(2) {
		seq := pick(cs, order)
		t.Run(keysOf(seq), func(t *testing.T) {
			s, ds := applyAll(t, State{}, seq...)
			if s.Lock.Value != Locked || !s.Contact().Locked {
				t.Errorf("lock %+v contact.Locked %v", s.Lock, s.Contact().Locked)
			}
			want := Applied
			if seq[1].EventKey == "enabled" {
				want = Superseded
			}
			if got := ds[1].Of("lock"); got != want {
				t.Errorf("second: Of(lock) = %q, want %q", got, want)
			}
		})
	}
}

// An unlink and a link at the same time: unlinked, purge pending, in both
// orders.
func TestLinkAndUnlinkAtTheSameTime(t *testing.T) {
	cs := []Change{linkC(at(10), "link"), unlinkC(at(10), "unlink")}
	for _, order := range permutations(2) {
		seq := pick(cs, order)
		t.Run(keysOf(seq), func(t *testing.T) {
			s, ds := applyAll(t, State{}, seq...)
			if s.Link.Value != Unlinked {
				t.Errorf("link %+v", s.Link)
			}
			if s.Purge == nil || !s.Purge.Cutoff.Equal(at(10)) {
				t.Errorf("purge %+v", s.Purge)
			}
			if seq[1].EventKey == "link" && ds[1].Of("purge") != Superseded {
				t.Errorf("link at the cutoff: Of(purge) = %q, want superseded", ds[1].Of("purge"))
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Purge scheduling and account-purged.

func TestPurgeScheduling(t *testing.T) {
	due := func(sec int) time.Time { return at(sec).Add(retention) }
	cases := []struct {
		name       string
		before     []Change
		c          Change
		wantAction PurgeAction
		wantPart   Outcome
		wantCutoff int // -1: no pending purge
	}{
		{"first unlink schedules", nil, unlinkC(at(10), "u"), PurgeScheduled, Applied, 10},
		{"newer unlink moves", []Change{unlinkC(at(10), "u1")}, unlinkC(at(20), "u2"), PurgeMoved, Applied, 20},
		{"older unlink is superseded", []Change{unlinkC(at(20), "u2")}, unlinkC(at(10), "u1"), "", Superseded, 20},
		{"duplicate unlink is unchanged", []Change{unlinkC(at(10), "u")}, unlinkC(at(10), "u"), "", Unchanged, 10},
		{"unlink older than a link is superseded", []Change{linkC(at(20), "l")}, unlinkC(at(10), "u"), "", Superseded, -1},
		{"link later than the cutoff cancels", []Change{unlinkC(at(10), "u")}, linkC(at(20), "l"), PurgeCancelled, Applied, -1},
		{"link at the cutoff is superseded", []Change{unlinkC(at(10), "u")}, linkC(at(10), "l"), "", Superseded, 10},
		{"link before the cutoff is superseded", []Change{unlinkC(at(10), "u")}, linkC(at(5), "l"), "", Superseded, 10},
		{"link without a pending purge is unchanged", nil, linkC(at(5), "l"), "", Unchanged, -1},
		{"link without the cancel step keeps the purge", []Change{unlinkC(at(10), "u")},
			Change{Time: at(20), EventKey: "l", Link: ptr(true)}, "", "", 10},
		{"unlink without the purge step schedules nothing", nil,
			Change{Time: at(20), EventKey: "u", Link: ptr(false)}, "", "", -1},
		{"unlink at a tombstone's cutoff is superseded", []Change{purgeNowC(at(10), "p")}, unlinkC(at(10), "u"), "", Superseded, -1},
		{"unlink after a tombstone schedules", []Change{purgeNowC(at(10), "p")}, unlinkC(at(20), "u"), PurgeScheduled, Applied, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := applyAll(t, State{}, tc.before...)
			s, d := apply1(t, s, tc.c)
			if d.Purge != tc.wantAction {
				t.Errorf("Decision.Purge = %q, want %q", d.Purge, tc.wantAction)
			}
			if got := d.Parts["purge"]; got != tc.wantPart {
				t.Errorf("Parts[purge] = %q, want %q", got, tc.wantPart)
			}
			switch {
			case tc.wantCutoff < 0 && s.Purge != nil:
				t.Errorf("pending purge %+v, want none", *s.Purge)
			case tc.wantCutoff >= 0 && (s.Purge == nil || !s.Purge.Cutoff.Equal(at(tc.wantCutoff)) || !s.Purge.Due.Equal(due(tc.wantCutoff))):
				t.Errorf("pending purge %+v, want cutoff +%ds", s.Purge, tc.wantCutoff)
			}
		})
	}
}

func TestAccountPurged(t *testing.T) {
	setup := []Change{
		linkC(at(0), "link"),
		consentC(at(0), "c", "account_email", true),
		fieldsC(at(0), "p", map[Field]string{Email: "e@x", Nickname: "neo", Phone: "+82"}),
		channelC(at(0), "ch", Added),
	}
	t.Run("runs now", func(t *testing.T) {
		s, _ := applyAll(t, State{}, setup...)
		now := at(5000)
		s, d := apply1(t, s, Change{Time: at(20), EventKey: "purged", PurgeNow: true, Now: now})
		if d.Purge != PurgeRun || !d.Cutoff.Equal(at(20)) || d.Of("purge") != Applied || !d.ContactChanged {
			t.Errorf("decision %+v", d)
		}
		want := Tombstone{Cutoff: at(20), At: now, EventKey: "purged"}
		if s.Tombstone == nil || *s.Tombstone != want {
			t.Errorf("tombstone %+v, want %+v", s.Tombstone, want)
		}
		for _, f := range AllFields {
			if r := s.Fields[f]; r.Value != Blank || !r.At.Equal(at(20)) {
				t.Errorf("field %s = %+v, want blank at the cutoff", f, r)
			}
		}
		if s.Link.Value != Unlinked || !s.Link.At.Equal(at(20)) {
			t.Errorf("link %+v", s.Link)
		}
		if s.Contact() != (Contact{}) {
			t.Errorf("contact %+v", s.Contact())
		}
		// An older or equal account-purged is superseded.
		for _, sec := range []int{10, 20} {
			_, d := apply1(t, s, purgeNowC(at(sec), "again"))
			if d.Of("purge") != Superseded || d.Purge != "" {
				t.Errorf("account-purged at +%ds after one at +20s: %+v", sec, d)
			}
		}
		// A newer one moves the tombstone.
		s2, d := apply1(t, s, purgeNowC(at(30), "newer"))
		if d.Purge != PurgeRun || !s2.Tombstone.Cutoff.Equal(at(30)) {
			t.Errorf("newer account-purged: %+v tombstone %+v", d, s2.Tombstone)
		}
	})
	t.Run("drops a pending purge at or before its cutoff", func(t *testing.T) {
		for _, sec := range []int{10, 20} {
			s, _ := applyAll(t, State{}, append(slices.Clone(setup), unlinkC(at(sec), "unlink"), purgeNowC(at(20), "purged"))...)
			if s.Purge != nil {
				t.Errorf("unlink at +%ds: pending purge %+v survived account-purged at +20s", sec, *s.Purge)
			}
		}
	})
	t.Run("keeps a pending purge after its cutoff", func(t *testing.T) {
		s, _ := applyAll(t, State{}, append(slices.Clone(setup), unlinkC(at(30), "unlink"), purgeNowC(at(20), "purged"))...)
		if s.Purge == nil || !s.Purge.Cutoff.Equal(at(30)) {
			t.Errorf("pending purge %+v", s.Purge)
		}
		if s.Tombstone == nil || !s.Tombstone.Cutoff.Equal(at(20)) {
			t.Errorf("tombstone %+v", s.Tombstone)
		}
	})
	t.Run("a later link brings the contact back", func(t *testing.T) {
		s, _ := applyAll(t, State{}, append(slices.Clone(setup), purgeNowC(at(20), "purged"))...)
		s, d := apply1(t, s, linkC(at(20), "link-same-time"))
		if d.Of("link") != Superseded || s.Contact().Present {
			t.Errorf("link at the purge time: %+v contact %+v", d, s.Contact())
		}
		s, d = apply1(t, s, linkC(at(30), "relink"))
		want := Contact{Present: true, Linked: Linked, Marketing: Added}
		if got := s.Contact(); got != want || !d.ContactChanged {
			t.Errorf("contact %+v, want %+v", got, want)
		}
	})
	t.Run("a link later than the purge already known", func(t *testing.T) {
		s, _ := applyAll(t, State{}, append(slices.Clone(setup), linkC(at(30), "relink"))...)
		s, d := apply1(t, s, purgeNowC(at(20), "purged"))
		if d.Of("link") != Superseded || d.Purge != PurgeRun {
			t.Errorf("decision %+v", d)
		}
		if c := s.Contact(); !c.Present || c.Email != Blank || c.Linked != Linked {
			t.Errorf("contact %+v, want present with blank fields", c)
		}
	})
}

// Two unlinks at the same time (the unlink SET and the webhook, or two
// deliveries with different event keys) schedule one pending purge; which
// event it names must not depend on the delivery order, or the stored state
// (and the tombstone RunPurge derives from it) differs between orders. The
// same holds for two account-purged events at the same time.
func TestTiedPurgesNameTheSameEventInAnyOrder(t *testing.T) {
	cases := []struct {
		name string
		a, b Change
		key  func(State) string
	}{
		{"pending purge of two unlinks at the same time",
			unlinkC(at(20), "set-unlinked"), unlinkC(at(20), "webhook-unlink"),
			func(s State) string { return s.Purge.EventKey }},
		{"tombstone of two account-purged at the same time",
			purgeNowC(at(20), "purged-1"), purgeNowC(at(20), "purged-2"),
			func(s State) string { return s.Tombstone.EventKey }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ab, _ := applyAll(t, State{}, tc.a, tc.b)
			ba, _ := applyAll(t, State{}, tc.b, tc.a)
			if ka, kb := tc.key(ab), tc.key(ba); ka != kb {
				t.Errorf("order %s,%s names %q; order %s,%s names %q",
					tc.a.EventKey, tc.b.EventKey, ka, tc.b.EventKey, tc.a.EventKey, kb)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// 3. RunPurge.

func TestRunPurge(t *testing.T) {
	setup := []Change{
		linkC(at(0), "link"),
		lockC(at(0), "lock", true),
		fieldsC(at(0), "p", map[Field]string{Email: "e@x", Nickname: "neo", Phone: "+82"}),
		channelC(at(0), "ch", Added),
		unlinkC(at(20), "unlink"),
	}
	fire := at(20).Add(retention)

	t.Run("runs for the pending cutoff", func(t *testing.T) {
		s, _ := applyAll(t, State{}, setup...)
		n, d := RunPurge(s, at(20), fire)
		if d.Purge != PurgeRun || !d.Cutoff.Equal(at(20)) || d.Parts["purge"] != Applied || !d.ContactChanged {
			t.Errorf("decision %+v", d)
		}
		if n.Version != s.Version+1 {
			t.Errorf("Version %d, want %d", n.Version, s.Version+1)
		}
		if n.Purge != nil {
			t.Errorf("pending purge left: %+v", *n.Purge)
		}
		want := Tombstone{Cutoff: at(20), At: fire, EventKey: "unlink"}
		if n.Tombstone == nil || *n.Tombstone != want {
			t.Errorf("tombstone %+v, want %+v", n.Tombstone, want)
		}
		for _, f := range AllFields {
			if r := n.Fields[f]; r.Value != Blank || !r.At.Equal(at(20)) {
				t.Errorf("field %s = %+v, want blank at the cutoff", f, r)
			}
		}
		if n.Contact() != (Contact{}) {
			t.Errorf("contact %+v", n.Contact())
		}
		// The other registers keep their values and times.
		if n.Link != s.Link || n.Lock != s.Lock || n.Channel != s.Channel {
			t.Errorf("registers changed: link %+v lock %+v channel %+v", n.Link, n.Lock, n.Channel)
		}
		// Firing twice: the second is superseded.
		n2, d2 := RunPurge(n, at(20), fire.Add(time.Minute))
		if d2.Of("purge") != Superseded || d2.Purge != "" || n2.Version != n.Version || *n2.Tombstone != want {
			t.Errorf("second RunPurge: %+v tombstone %+v", d2, n2.Tombstone)
		}
	})

	t.Run("other cutoff is superseded", func(t *testing.T) {
		s, _ := applyAll(t, State{}, setup...)
		for _, sec := range []int{10, 30} {
			n, d := RunPurge(s, at(sec), fire)
			if d.Of("purge") != Superseded || d.Purge != "" || d.Changed() {
				t.Errorf("cutoff +%ds: %+v", sec, d)
			}
			if render(n, n.Contact()) != render(s, s.Contact()) || n.Version != s.Version {
				t.Errorf("cutoff +%ds changed the state", sec)
			}
		}
	})

	t.Run("no pending purge is superseded", func(t *testing.T) {
		n, d := RunPurge(State{}, at(20), fire)
		if d.Of("purge") != Superseded || n.Tombstone != nil || n.Version != 0 {
			t.Errorf("%+v %+v", d, n)
		}
	})

	t.Run("moved cutoff makes the old timer superseded", func(t *testing.T) {
		s, _ := applyAll(t, State{}, append(slices.Clone(setup), unlinkC(at(40), "unlink2"))...)
		s, d := RunPurge(s, at(20), fire)
		if d.Of("purge") != Superseded || s.Tombstone != nil {
			t.Errorf("old timer: %+v", d)
		}
		s, d = RunPurge(s, at(40), at(40).Add(retention))
		if d.Purge != PurgeRun || !d.Cutoff.Equal(at(40)) || s.Tombstone == nil || s.Tombstone.EventKey != "unlink2" {
			t.Errorf("new timer: %+v tombstone %+v", d, s.Tombstone)
		}
	})

	t.Run("a link later than the cutoff cancels", func(t *testing.T) {
		// The link's own cancel step did not run (policy without it), so
		// the timer still fires; RunPurge sees the later link and cancels.
		s, _ := applyAll(t, State{}, append(slices.Clone(setup), Change{Time: at(30), EventKey: "relink", Link: ptr(true)})...)
		if s.Purge == nil {
			t.Fatal("setup: purge not pending")
		}
		n, d := RunPurge(s, at(20), fire)
		if d.Purge != PurgeCancelled || d.Parts["purge"] != Applied || d.ContactChanged {
			t.Errorf("decision %+v", d)
		}
		if n.Purge != nil || n.Tombstone != nil || n.Field(Email) != "e@x" || !n.Contact().Present {
			t.Errorf("state after cancel: purge %+v tombstone %+v email %q", n.Purge, n.Tombstone, n.Field(Email))
		}
		if n.Version != s.Version+1 {
			t.Errorf("Version %d", n.Version)
		}
	})

	t.Run("a link cancelling the pending purge makes the timer superseded", func(t *testing.T) {
		s, _ := applyAll(t, State{}, append(slices.Clone(setup), linkC(at(30), "relink"))...)
		if s.Purge != nil {
			t.Fatalf("link did not cancel: %+v", *s.Purge)
		}
		_, d := RunPurge(s, at(20), fire)
		if d.Of("purge") != Superseded {
			t.Errorf("%+v", d)
		}
	})

	t.Run("a link at the cutoff does not cancel", func(t *testing.T) {
		s, _ := applyAll(t, State{}, append(slices.Clone(setup), Change{Time: at(20), EventKey: "l", Link: ptr(true)})...)
		_, d := RunPurge(s, at(20), fire)
		if d.Purge != PurgeRun {
			t.Errorf("%+v", d)
		}
	})

	t.Run("older events cannot bring data back", func(t *testing.T) {
		s, _ := applyAll(t, State{}, setup...)
		s, _ = RunPurge(s, at(20), fire)
		late := []Change{
			fieldsC(at(10), "p-late", map[Field]string{Email: "late@x", Nickname: "late", Phone: "+1"}),
			fieldsC(at(20), "p-at-cutoff", map[Field]string{Email: "cut@x"}),
			consentC(at(10), "c-late", "account_email", true),
			linkC(at(10), "l-late"),
			linkC(at(20), "l-at-cutoff"),
		}
		for _, c := range late {
			n, d := apply1(t, s, c)
			if n.Contact() != (Contact{}) || d.ContactChanged {
				t.Errorf("%s brought the contact back: %+v", c.EventKey, n.Contact())
			}
			for _, f := range AllFields {
				if n.Field(f) != Blank {
					t.Errorf("%s brought %s back: %q", c.EventKey, f, n.Field(f))
				}
			}
			if d.Of("field", "link") == Applied {
				t.Errorf("%s applied: %v", c.EventKey, d.Parts)
			}
		}
	})

	t.Run("a link after the cutoff makes the contact present again", func(t *testing.T) {
		s, _ := applyAll(t, State{}, setup...)
		s, _ = RunPurge(s, at(20), fire)
		s, d := apply1(t, s, linkC(at(30), "relink"))
		if d.Of("link") != Applied || !d.ContactChanged {
			t.Errorf("%+v", d)
		}
		want := Contact{Present: true, Linked: Linked, Locked: true, Marketing: Added}
		if got := s.Contact(); got != want {
			t.Errorf("contact %+v, want %+v (fields blank)", got, want)
		}
		s, _ = apply1(t, s, fieldsC(at(31), "p", map[Field]string{Email: "back@x"}))
		if s.Contact().Email != "back@x" {
			t.Errorf("contact %+v", s.Contact())
		}
	})
}

// ---------------------------------------------------------------------------
// 4. Property: the final state does not depend on the delivery order, nor on
// re-delivered duplicates, and equals the spec's oracle.

var (
	propScopes = []string{"account_email", "profile_nickname", "phone_number"}
	propValues = map[Field][]string{
		Email:    {Blank, "a@example.com", "b@example.com", "c@example.com"},
		Nickname: {Blank, "neo", "trinity"},
		Phone:    {Blank, "+82 10-1111-1111", "+82 10-2222-2222"},
	}
)

func randomChange(r *rand.Rand, i, times int) Change {
	c := Change{Time: at(10 * r.IntN(times)), EventKey: fmt.Sprintf("ev%02d", i)}
	switch r.IntN(14) {
	case 0, 1:
		c.Link, c.CancelPurge = ptr(true), true
	case 2, 3:
		c.Link, c.PurgeAfter = ptr(false), ptr(retention)
	case 4:
		c.PurgeNow = true
	case 5:
		c.Lock = ptr(r.IntN(2) == 0)
	case 6:
		c.Reauth = true
	case 7, 8:
		c.Consents = map[string]bool{}
		for range 1 + r.IntN(2) {
			c.Consents[propScopes[r.IntN(len(propScopes))]] = r.IntN(2) == 0
		}
	case 9, 10:
		c.Fields = map[Field]string{}
		for range 1 + r.IntN(3) {
			f := AllFields[r.IntN(len(AllFields))]
			c.Fields[f] = propValues[f][r.IntN(len(propValues[f]))]
		}
	case 11:
		c.Channel = []string{Added, Blocked}[r.IntN(2)]
	case 12, 13:
		c.Notice = &NoticeRecord{Key: "notice-" + c.EventKey, Kind: "password-changed"}
	}
	return c
}

func describe(c Change) string {
	var parts []string
	if c.PurgeNow {
		parts = append(parts, "PurgeNow")
	} else if c.Link != nil {
		s := "Link=" + map[bool]string{true: Linked, false: Unlinked}[*c.Link]
		if c.CancelPurge {
			s += "+CancelPurge"
		}
		if c.PurgeAfter != nil {
			s += "+PurgeAfter=" + c.PurgeAfter.String()
		}
		parts = append(parts, s)
	}
	if c.Lock != nil {
		parts = append(parts, fmt.Sprintf("Lock=%v", *c.Lock))
	}
	if c.Reauth {
		parts = append(parts, "Reauth")
	}
	for _, k := range sortedKeys(c.Consents) {
		parts = append(parts, fmt.Sprintf("Consent[%s]=%v", k, c.Consents[k]))
	}
	for _, f := range AllFields {
		if v, ok := c.Fields[f]; ok {
			parts = append(parts, fmt.Sprintf("Field[%s]=%q", f, v))
		}
	}
	if c.Channel != "" {
		parts = append(parts, "Channel="+c.Channel)
	}
	if c.Notice != nil {
		parts = append(parts, "Notice")
	}
	return fmt.Sprintf("%s@%s{%s}", c.EventKey, rel(c.Time), strings.Join(parts, " "))
}

func rel(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return "+" + t.Sub(t0).String()
}

func renderReg(r Register) string {
	if !r.Set() {
		return "-"
	}
	return fmt.Sprintf("%q%s", r.Value, rel(r.At))
}

// render is the order-independent part of a state: everything but Version,
// Tombstone.At/EventKey and the pending purge's EventKey.
func render(s State, c Contact) string {
	var b strings.Builder
	fmt.Fprintf(&b, "link=%s lock=%s reauth=%s channel=%s", renderReg(s.Link), renderReg(s.Lock), rel(s.Reauth), renderReg(s.Channel))
	for _, k := range sortedKeys(s.Consents) {
		if r := s.Consents[k]; r.Set() {
			fmt.Fprintf(&b, " consent:%s=%s", k, renderReg(r))
		}
	}
	for _, f := range AllFields {
		if r := s.Fields[f]; r.Set() {
			fmt.Fprintf(&b, " field:%s=%s", f, renderReg(r))
		}
	}
	if s.Purge != nil {
		fmt.Fprintf(&b, " purge=pending(cutoff %s, due %s)", rel(s.Purge.Cutoff), rel(s.Purge.Due))
	} else {
		b.WriteString(" purge=none")
	}
	if s.Tombstone != nil {
		fmt.Fprintf(&b, " tombstone=%s", rel(s.Tombstone.Cutoff))
	}
	b.WriteString(" emails=")
	for _, r := range s.Emails {
		b.WriteString(renderReg(r))
	}
	b.WriteString(" notices=")
	for _, n := range s.Notices {
		fmt.Fprintf(&b, "%s%s", n.Key, rel(n.At))
	}
	fmt.Fprintf(&b, " contact=%+v", c)
	return b.String()
}

// Oracle: an independent reading of user-state.md. Each register is the
// greatest (time, safety, value) offered to it; the pending purge is the
// latest unlink's unless a later link or an account-purged at or after it
// happened; the tombstone is the latest account-purged.

func oracleRank(v string) int {
	switch v {
	case Blank:
		return 2
	case Unlinked, Locked, Withdrawn, Blocked:
		return 1
	}
	return 0
}

func oracleOffer(r *Register, v string, t time.Time) {
	switch {
	case !r.Set() || t.After(r.At):
	case t.Before(r.At):
		return
	case oracleRank(v) > oracleRank(r.Value):
	case oracleRank(v) == oracleRank(r.Value) && v > r.Value:
	default:
		return
	}
	*r = Register{Value: v, At: t}
}

func oracle(cs []Change) (State, Contact) {
	var s State
	s.Consents = map[string]Register{}
	s.Fields = map[Field]Register{}
	var emails []Register
	notices := map[string]NoticeRecord{}
	field := func(f Field, v string, t time.Time) {
		r := s.Fields[f]
		oracleOffer(&r, v, t)
		s.Fields[f] = r
		if f == Email {
			emails = append(emails, Register{Value: v, At: t})
		}
	}
	var lastUnlink, lastLink, lastPurge time.Time
	for _, c := range cs {
		t := c.Time
		switch {
		case c.PurgeNow:
			oracleOffer(&s.Link, Unlinked, t)
			for _, f := range AllFields {
				field(f, Blank, t)
			}
			if t.After(lastPurge) {
				lastPurge = t
			}
		case c.Link != nil && *c.Link:
			oracleOffer(&s.Link, Linked, t)
			if t.After(lastLink) {
				lastLink = t
			}
		case c.Link != nil:
			oracleOffer(&s.Link, Unlinked, t)
			if t.After(lastUnlink) {
				lastUnlink = t
			}
		}
		if c.Lock != nil {
			oracleOffer(&s.Lock, map[bool]string{true: Locked, false: Unlocked}[*c.Lock], t)
		}
		if c.Reauth && t.After(s.Reauth) {
			s.Reauth = t
		}
		for scope, granted := range c.Consents {
			r := s.Consents[scope]
			if granted {
				oracleOffer(&r, Granted, t)
			} else {
				oracleOffer(&r, Withdrawn, t)
				for _, f := range ScopeFields[scope] {
					field(f, Blank, t)
				}
			}
			s.Consents[scope] = r
		}
		for f, v := range c.Fields {
			field(f, v, t)
		}
		if c.Channel != "" {
			oracleOffer(&s.Channel, c.Channel, t)
		}
		if c.Notice != nil {
			notices[c.Notice.Key] = NoticeRecord{Key: c.Notice.Key, Kind: c.Notice.Kind, At: t}
		}
	}
	s.Emails, s.Notices = oracleEmails(emails), oracleNotices(notices)
	if !lastUnlink.IsZero() && !lastLink.After(lastUnlink) && (lastPurge.IsZero() || lastPurge.Before(lastUnlink)) {
		s.Purge = &PendingPurge{Cutoff: lastUnlink, Due: lastUnlink.Add(retention)}
	}
	if !lastPurge.IsZero() {
		s.Tombstone = &Tombstone{Cutoff: lastPurge}
	}
	if s.Tombstone != nil && !(s.Link.Value == Linked && s.Link.At.After(s.Tombstone.Cutoff)) {
		return s, Contact{}
	}
	return s, Contact{
		Present: true, Email: s.Fields[Email].Value, Nickname: s.Fields[Nickname].Value, Phone: s.Fields[Phone].Value,
		Linked: s.Link.Value, Locked: s.Lock.Value == Locked, Marketing: s.Channel.Value,
	}
}

// oracleEmails is the address history of every email offer: what the
// latest blank left (the blank and the addresses after it), the newest
// EmailHistoryLimit of them.
func oracleEmails(offers []Register) []Register {
	var lastBlank *time.Time
	for _, o := range offers {
		if o.Value == Blank && (lastBlank == nil || o.At.After(*lastBlank)) {
			lastBlank = &o.At
		}
	}
	var h []Register
	for _, o := range offers {
		kept := lastBlank == nil || o.At.After(*lastBlank) || (o.Value == Blank && o.At.Equal(*lastBlank))
		if kept && !slices.Contains(h, o) {
			h = append(h, o)
		}
	}
	sort.Slice(h, func(a, b int) bool {
		if !h[a].At.Equal(h[b].At) {
			return h[a].At.Before(h[b].At)
		}
		if oracleRank(h[a].Value) != oracleRank(h[b].Value) {
			return oracleRank(h[a].Value) < oracleRank(h[b].Value)
		}
		return h[a].Value < h[b].Value
	})
	return h[max(0, len(h)-EmailHistoryLimit):]
}

// oracleNotices is the newest NoticeLimit notices by (time, key).
func oracleNotices(m map[string]NoticeRecord) []NoticeRecord {
	var out []NoticeRecord
	for _, n := range m {
		out = append(out, n)
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].At.Equal(out[b].At) {
			return out[a].At.Before(out[b].At)
		}
		return out[a].Key < out[b].Key
	})
	return out[max(0, len(out)-NoticeLimit):]
}

// propWindow is the previous-address window of the property test (its
// events are 10 s apart).
const propWindow = 25 * time.Second

// told is what a stream that sends notices as the state says would have
// told: notice key → addresses. A notice goes to the addresses in effect in
// the window before its event when it is recorded, and again when a change
// names it in Renotify.
type told map[string]map[string]bool

func (tl told) tell(s State, n NoticeRecord) {
	if tl[n.Key] == nil {
		tl[n.Key] = map[string]bool{}
	}
	for _, a := range s.AddressesDuring(n.At.Add(-propWindow), n.At) {
		tl[n.Key][a.Value] = true
	}
}

// deliver applies the changes in order (indices into cs, repeats are
// re-deliveries) and returns the rendered final state and who was told of
// each notice, or a description of the first re-delivery that changed
// something.
func deliver(r *rand.Rand, cs []Change, order []int) (string, told, error) {
	var s State
	seen := map[int]bool{}
	tl := told{}
	for _, i := range order {
		c := cs[i]
		c.Now = at(1000 + r.IntN(1000)) // when it is applied varies
		before := render(s, s.Contact())
		n, d := Apply(s, c)
		if c.Notice != nil {
			tl.tell(n, NoticeRecord{Key: c.Notice.Key, At: c.Time})
		}
		for _, rec := range d.Renotify {
			tl.tell(n, rec)
		}
		if seen[i] {
			if d.Changed() || n.Version != s.Version || render(n, n.Contact()) != before {
				return "", nil, fmt.Errorf("re-delivery of %s changed the state: decision %+v\nbefore %s\nafter  %s",
					describe(c), d, before, render(n, n.Contact()))
			}
		}
		seen[i] = true
		s = n
	}
	return render(s, s.Contact()), tl, nil
}

// check delivers cs in order and compares with the oracle: the final state,
// and every address the oracle's history has in a notice's window was told.
func check(cs []Change, order []int) error {
	got, tl, err := deliver(rand.New(rand.NewPCG(1, 2)), cs, order)
	if err != nil {
		return err
	}
	o, oc := oracle(cs)
	if want := render(o, oc); got != want {
		return fmt.Errorf("final state differs from the oracle:\ngot    %s\noracle %s", got, want)
	}
	for _, n := range o.Notices {
		for _, a := range o.AddressesDuring(n.At.Add(-propWindow), n.At) {
			if !tl[n.Key][a.Value] {
				return fmt.Errorf("notice %s%s never went to %q (in effect since %s); told %v", n.Key, rel(n.At), a.Value, rel(a.At), tl[n.Key])
			}
		}
	}
	return nil
}

// shrink removes changes and re-deliveries while the failure persists.
func shrink(cs []Change, order []int) ([]Change, []int) {
	for progress := true; progress; {
		progress = false
		for j := range cs {
			ncs := slices.Delete(slices.Clone(cs), j, j+1)
			var nord []int
			for _, i := range order {
				switch {
				case i < j:
					nord = append(nord, i)
				case i > j:
					nord = append(nord, i-1)
				}
			}
			if check(ncs, nord) != nil {
				cs, order, progress = ncs, nord, true
				break
			}
		}
		if progress {
			continue
		}
		for p := range order {
			count := 0
			for _, i := range order {
				if i == order[p] {
					count++
				}
			}
			if count < 2 {
				continue
			}
			nord := slices.Delete(slices.Clone(order), p, p+1)
			if check(cs, nord) != nil {
				order, progress = nord, true
				break
			}
		}
	}
	return cs, order
}

func TestPropertyDeliveryOrderDoesNotMatter(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 20250301} {
		r := rand.New(rand.NewPCG(seed, 0x5e7f10))
		for iter := range 500 {
			n := 8 + r.IntN(8)
			times := 2 + r.IntN(3)
			cs := make([]Change, n)
			for i := range cs {
				cs[i] = randomChange(r, i, times)
			}
			given := make([]int, n)
			for i := range given {
				given[i] = i
			}
			orders := [][]int{given, slices.Clone(given)}
			slices.Reverse(orders[1])
			byTime := slices.Clone(given)
			sort.SliceStable(byTime, func(a, b int) bool { return cs[byTime[a]].Time.Before(cs[byTime[b]].Time) })
			orders = append(orders, byTime)
			for range 5 {
				p := slices.Clone(given)
				r.Shuffle(len(p), func(a, b int) { p[a], p[b] = p[b], p[a] })
				for range r.IntN(4) {
					dup := p[r.IntN(len(p))]
					pos := 1 + r.IntN(len(p))
					// A re-delivery comes after the first delivery.
					if first := slices.Index(p, dup); pos <= first {
						pos = first + 1
					}
					p = slices.Insert(p, pos, dup)
				}
				orders = append(orders, p)
			}
			for _, order := range orders {
				if err := check(cs, order); err != nil {
					scs, sord := shrink(cs, order)
					var b strings.Builder
					for _, i := range sord {
						b.WriteString("\n  " + describe(scs[i]))
					}
					t.Fatalf("seed %d iteration %d: %v\nshrunk delivery:%s\nshrunk failure: %v", seed, iter, err, b.String(), check(scs, sord))
				}
			}
		}
	}
}

// The oracle is only as good as its own reading of the spec; pin it on a
// hand-computed case.
func TestOracleSanity(t *testing.T) {
	cs := []Change{
		unlinkC(at(0), "u1"), linkC(at(10), "l"), unlinkC(at(20), "u2"),
		fieldsC(at(5), "p", map[Field]string{Email: "e@x"}), consentC(at(30), "w", "account_email", false),
	}
	o, c := oracle(cs)
	if o.Purge == nil || !o.Purge.Cutoff.Equal(at(20)) || o.Fields[Email].Value != Blank || c.Linked != Unlinked || !c.Present {
		t.Errorf("oracle %s", render(o, c))
	}
	o, c = oracle(append(cs, purgeNowC(at(20), "p")))
	if o.Purge != nil || o.Tombstone == nil || c.Present {
		t.Errorf("oracle with account-purged %s", render(o, c))
	}
}

// ---------------------------------------------------------------------------
// 5. Clamp.

func TestClamp(t *testing.T) {
	recv := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	iat := recv.Add(-time.Minute)
	kst := time.FixedZone("KST", 9*3600)
	day := 24 * time.Hour
	cases := []struct {
		name        string
		b           Bounds
		t, iat, rcv time.Time
		want        time.Time
		clamped     bool
	}{
		{"in range", DefaultBounds, recv.Add(-time.Hour), iat, recv, recv.Add(-time.Hour), false},
		{"future clamped to receipt+Future", DefaultBounds, recv.Add(time.Hour), iat, recv, recv.Add(5 * time.Minute), true},
		{"exactly receipt+Future is kept", DefaultBounds, recv.Add(5 * time.Minute), iat, recv, recv.Add(5 * time.Minute), false},
		{"just after receipt+Future", DefaultBounds, recv.Add(5*time.Minute + time.Microsecond), iat, recv, recv.Add(5 * time.Minute), true},
		{"too old clamped to iat-Past", DefaultBounds, iat.Add(-8 * day), iat, recv, iat.Add(-7 * day), true},
		{"exactly iat-Past is kept", DefaultBounds, iat.Add(-7 * day), iat, recv, iat.Add(-7 * day), false},
		{"without iat the past bound is from the receipt", DefaultBounds, recv.Add(-8 * day), time.Time{}, recv, recv.Add(-7 * day), true},
		{"zero time is the receipt", DefaultBounds, time.Time{}, iat, recv, recv, false},
		{"zero time is the receipt, truncated and UTC", DefaultBounds, time.Time{}, iat, recv.Add(1234 * time.Nanosecond).In(kst), recv.Add(time.Microsecond), false},
		{"custom bounds future", Bounds{Past: time.Hour, Future: time.Second}, recv.Add(time.Minute), iat, recv, recv.Add(time.Second), true},
		{"custom bounds past", Bounds{Past: time.Hour, Future: time.Second}, iat.Add(-2 * time.Hour), iat, recv, iat.Add(-time.Hour), true},
		{"zero bounds are the defaults", Bounds{}, iat.Add(-8 * day), iat, recv, iat.Add(-7 * day), true},
		{"negative bounds are the defaults", Bounds{Past: -1, Future: -1}, recv.Add(time.Hour), iat, recv, recv.Add(5 * time.Minute), true},
		{"iat far in the future: both bounds are receipt+Future", DefaultBounds, recv, recv.Add(30 * day), recv, recv.Add(5 * time.Minute), true},
		{"microsecond truncation", DefaultBounds, recv.Add(-time.Hour + 123456789*time.Nanosecond), iat, recv, recv.Add(-time.Hour + 123456*time.Microsecond), false},
		{"clamped bound is truncated", DefaultBounds, recv.Add(time.Hour), iat, recv.Add(999 * time.Nanosecond), recv.Add(5 * time.Minute), true},
		{"other zones come back as UTC", DefaultBounds, recv.Add(-time.Hour).In(kst), iat.In(kst), recv.In(kst), recv.Add(-time.Hour), false},
		{"no receipt time: nothing to bound by (future kept)", DefaultBounds, recv.Add(time.Hour), iat, time.Time{}, recv.Add(time.Hour), false},
		{"no receipt time: nothing to bound by (old kept, truncated, UTC)", DefaultBounds, iat.Add(-30*day + 1500*time.Nanosecond).In(kst), iat, time.Time{}, iat.Add(-30*day + time.Microsecond), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, clamped := tc.b.Clamp(tc.t, tc.iat, tc.rcv)
			if !got.Equal(tc.want) || clamped != tc.clamped {
				t.Errorf("Clamp = %s, %v; want %s, %v", got.Format(time.RFC3339Nano), clamped, tc.want.Format(time.RFC3339Nano), tc.clamped)
			}
			if got.Location() != time.UTC {
				t.Errorf("location %s, want UTC", got.Location())
			}
			if got.Nanosecond()%1000 != 0 {
				t.Errorf("not truncated to microseconds: %s", got.Format(time.RFC3339Nano))
			}
		})
	}
}
