// Package userstate is setflow's per-user state machine: what each event
// changes, decided by event time (shared/spec/user-state.md). state.go is
// pure — no I/O, no clock — so that it is unit-tested exhaustively and the
// per-user stream can apply a user's events one at a time in any delivery
// order and reach the same state. Package statedb stores it; this package
// links no database code, so the workflows that use its types do not either.
//
// Every part of the state is a register that keeps its value and the event
// time that set it. A change applies only when it is later than the part's
// time; on an equal time the safer value wins. Registers of that kind commute,
// which is why the final state does not depend on the delivery order.
package userstate

import (
	"maps"
	"slices"
	"sort"
	"time"
)

// Field is a profile field setflow keeps.
type Field string

// The profile fields, each with its own change time.
const (
	Email    Field = "email"
	Nickname Field = "nickname"
	Phone    Field = "phone"
)

// AllFields lists the profile fields in a stable order.
var AllFields = []Field{Email, Nickname, Phone}

// ScopeFields maps Kakao consent scopes to the fields a withdrawal blanks.
var ScopeFields = map[string][]Field{
	"account_email":    {Email},
	"profile":          {Nickname},
	"profile_nickname": {Nickname},
	"phone_number":     {Phone},
}

// Register values.
const (
	Linked    = "linked"
	Unlinked  = "unlinked"
	Locked    = "locked"
	Unlocked  = "unlocked"
	Granted   = "granted"
	Withdrawn = "withdrawn"
	Added     = "added"
	Blocked   = "blocked"
	// Blank is a field's value after a withdrawal, a detach or a purge.
	Blank = ""
)

// safer ranks the values that win a tie (same event time).
var safer = map[string]int{Unlinked: 1, Locked: 1, Withdrawn: 1, Blocked: 1}

// Register is one part of the state: a value and the event time that set it.
// A zero At means the part was never set.
type Register struct {
	Value string    `json:"v,omitempty"`
	At    time.Time `json:"at,omitempty"`
}

// Set reports whether an event ever set the register.
func (r Register) Set() bool { return !r.At.IsZero() }

// Outcome is what a change did to one part.
type Outcome string

// Outcomes of a part.
const (
	Applied    Outcome = "applied"
	Unchanged  Outcome = "unchanged"  // the part already holds this fact
	Superseded Outcome = "superseded" // a later event (or a safer one at the same time) decided it
)

// beats reports whether value v at t replaces the register: later wins; on an
// equal time the safer value, then (for two values of equal rank, e.g. two
// e-mail addresses) the larger string, so that any order ends the same.
func (r Register) beats(v string, t time.Time) Outcome {
	if !r.Set() || t.After(r.At) {
		return Applied
	}
	if t.Before(r.At) {
		return Superseded
	}
	if v == r.Value {
		return Unchanged
	}
	if a, b := rankOf(v), rankOf(r.Value); a > b || (a == b && v > r.Value) {
		return Applied
	}
	return Superseded
}

func rankOf(v string) int {
	if v == Blank {
		return 2 // a blanked field is safer than any value
	}
	return safer[v]
}

func (r *Register) offer(v string, t time.Time) Outcome {
	o := r.beats(v, t)
	if o == Applied {
		r.Value, r.At = v, t
	}
	return o
}

// PendingPurge is a purge scheduled by an unlink: it deletes what the user
// left up to Cutoff, once Due has passed, unless a link later than Cutoff
// happens first.
type PendingPurge struct {
	Cutoff   time.Time `json:"cutoff"`
	Due      time.Time `json:"due"`
	EventKey string    `json:"event_key"`
}

// Tombstone records the newest purge that ran. It keeps every register's
// time, so an older event delivered after the purge cannot bring data back.
type Tombstone struct {
	Cutoff   time.Time `json:"cutoff"`
	At       time.Time `json:"at"`
	EventKey string    `json:"event_key"`
}

// State is everything setflow knows about one user.
type State struct {
	// Version counts applied changes; external syncs carry it.
	Version  int64               `json:"version"`
	Link     Register            `json:"link"`
	Lock     Register            `json:"lock"`
	Reauth   time.Time           `json:"reauth,omitempty"`
	Consents map[string]Register `json:"consents,omitempty"`
	Fields   map[Field]Register  `json:"fields,omitempty"`
	Channel  Register            `json:"channel"`
	// Purge is the pending purge, if any; Tombstone the last one that ran.
	Purge     *PendingPurge `json:"purge,omitempty"`
	Tombstone *Tombstone    `json:"tombstone,omitempty"`
	// Emails is the address history and Notices the notices sent, for the
	// notices to previous addresses (notices.go).
	Emails  []Register     `json:"emails,omitempty"`
	Notices []NoticeRecord `json:"notices,omitempty"`
}

// Clone returns a deep copy.
func (s State) Clone() State {
	c := s
	c.Consents = maps.Clone(s.Consents)
	c.Fields = maps.Clone(s.Fields)
	c.Emails = slices.Clone(s.Emails)
	c.Notices = slices.Clone(s.Notices)
	if s.Purge != nil {
		p := *s.Purge
		c.Purge = &p
	}
	if s.Tombstone != nil {
		t := *s.Tombstone
		c.Tombstone = &t
	}
	return c
}

// Field returns a field's value ("" when blank or unknown).
func (s State) Field(f Field) string { return s.Fields[f].Value }

// Change is what one event may change, derived from the event and the policy
// steps it runs (a part whose step is not in the policy is not changed).
type Change struct {
	// Time is the event time, already clamped (Clamp).
	Time     time.Time
	EventKey string
	// Now is when the change is applied; it only stamps a tombstone.
	Now time.Time

	Link   *bool // true: linked; false: unlinked
	Lock   *bool
	Reauth bool
	// Consents maps a scope to true (granted) or false (withdrawn); a
	// withdrawal also blanks the scope's fields at Time.
	Consents map[string]bool
	// Fields maps a field to its new value; Blank detaches it.
	Fields map[Field]string
	// Channel is Added or Blocked.
	Channel string
	// PurgeAfter schedules a purge of the user's data, retention after Time
	// (an unlink); CancelPurge lets a link cancel a pending one; PurgeNow
	// purges at once with cutoff Time (account-purged).
	PurgeAfter  *time.Duration
	CancelPurge bool
	PurgeNow    bool
	// Notice records a security notice sent for an event at Time, keyed by
	// its step's idempotency key (notices.go).
	Notice *NoticeRecord
}

// PurgeAction is what a change did to the purge.
type PurgeAction string

// Purge actions.
const (
	PurgeScheduled PurgeAction = "scheduled" // a new pending purge
	PurgeMoved     PurgeAction = "moved"     // a newer unlink moved the cutoff forward
	PurgeCancelled PurgeAction = "cancelled" // a link later than the cutoff
	PurgeRun       PurgeAction = "run"       // purged now (Decision.Cutoff)
)

// Decision is what Apply did, part by part. Part names: link, lock, reauth,
// consent:<scope>, field:<name>, channel, purge.
type Decision struct {
	Parts  map[string]Outcome `json:"parts,omitempty"`
	Purge  PurgeAction        `json:"purge,omitempty"`
	Cutoff time.Time          `json:"cutoff,omitempty"`
	// ContactChanged says whether the desired CRM contact changed.
	ContactChanged bool `json:"contact_changed,omitempty"`
	// Renotify are the notices sent for events at or after an address this
	// change added to the history: that address may be owed them too.
	Renotify []NoticeRecord `json:"renotify,omitempty"`
}

func (d *Decision) set(part string, o Outcome) {
	if d.Parts == nil {
		d.Parts = map[string]Outcome{}
	}
	// A part offered twice (a withdrawal and a field change) keeps the
	// strongest result: applied over unchanged over superseded.
	if prev, ok := d.Parts[part]; ok && strength(prev) >= strength(o) {
		return
	}
	d.Parts[part] = o
}

func strength(o Outcome) int {
	switch o {
	case Applied:
		return 2
	case Unchanged:
		return 1
	}
	return 0
}

// Changed reports whether any part changed.
func (d Decision) Changed() bool {
	for _, o := range d.Parts {
		if o == Applied {
			return true
		}
	}
	return d.Purge != ""
}

// Of sums up the parts whose names start with one of prefixes: Applied if
// any applied, Superseded if all were superseded, Unchanged otherwise (also
// when the event carried none of them).
func (d Decision) Of(prefixes ...string) Outcome {
	seen, superseded := 0, 0
	for part, o := range d.Parts {
		for _, p := range prefixes {
			if part == p || (len(part) > len(p) && part[:len(p)] == p && part[len(p)] == ':') {
				seen++
				switch o {
				case Applied:
					return Applied
				case Superseded:
					superseded++
				}
				break
			}
		}
	}
	if seen > 0 && seen == superseded {
		return Superseded
	}
	return Unchanged
}

// Apply applies one change to s and returns the new state and what changed.
// It never mutates s. The parts are decided in a fixed order: link (a purge
// is an unlink too), purge, lock, re-auth, consents, fields, channel.
func Apply(s State, c Change) (State, Decision) {
	n := s.Clone()
	var d Decision
	t := c.Time.UTC()
	contact := n.Contact()

	if c.PurgeNow {
		unlinked := false
		c.Link = &unlinked
	}
	n.applyLink(c, t, &d)
	if c.PurgeNow {
		n.applyPurgeNow(c, t, &d)
	}
	if c.Lock != nil {
		v := Unlocked
		if *c.Lock {
			v = Locked
		}
		d.set("lock", n.Lock.offer(v, t))
	}
	if c.Reauth {
		d.set("reauth", n.applyReauth(t))
	}
	n.applyConsents(c.Consents, t, &d)
	for _, f := range AllFields {
		if v, ok := c.Fields[f]; ok {
			d.set("field:"+string(f), n.offerField(f, v, t))
		}
	}
	if c.Channel != "" {
		d.set("channel", n.Channel.offer(c.Channel, t))
	}
	if c.Notice != nil {
		rec := *c.Notice
		rec.At = t
		n.recordNotice(rec)
	}
	if v, ok := c.Fields[Email]; ok && v != Blank && slices.Contains(n.Emails, Register{Value: v, At: t}) &&
		!slices.Contains(s.emailHistory(), Register{Value: v, At: t}) {
		d.Renotify = n.noticesSince(t)
	}
	if d.Changed() {
		n.Version++
	}
	d.ContactChanged = n.Contact() != contact
	return n, d
}

// applyLink offers the link state and schedules or cancels a purge with it.
func (s *State) applyLink(c Change, t time.Time, d *Decision) {
	if c.Link == nil {
		return
	}
	v := Linked
	if !*c.Link {
		v = Unlinked
	}
	o := s.Link.offer(v, t)
	d.set("link", o)
	switch {
	case *c.Link && c.CancelPurge:
		s.cancelPurge(t, o, d)
	case !*c.Link && c.PurgeAfter != nil:
		s.schedulePurge(t, *c.PurgeAfter, c.EventKey, o, d)
	}
}

// applyPurgeNow purges unless a tombstone already covers t (the same cutoff
// keeps the smallest event key, so any delivery order leaves one tombstone).
func (s *State) applyPurgeNow(c Change, t time.Time, d *Decision) {
	if s.Tombstone != nil && !t.After(s.Tombstone.Cutoff) {
		if t.Equal(s.Tombstone.Cutoff) {
			s.Tombstone.EventKey = min(s.Tombstone.EventKey, c.EventKey)
		}
		d.set("purge", Superseded)
		return
	}
	s.purge(t, c.Now, c.EventKey)
	d.set("purge", Applied)
	d.Purge, d.Cutoff = PurgeRun, t
}

// applyReauth moves the re-auth time forward only.
func (s *State) applyReauth(t time.Time) Outcome {
	switch {
	case t.After(s.Reauth):
		s.Reauth = t
		return Applied
	case t.Equal(s.Reauth):
		return Unchanged
	default:
		return Superseded
	}
}

// applyConsents offers each consent; a withdrawal blanks the scope's fields.
func (s *State) applyConsents(consents map[string]bool, t time.Time, d *Decision) {
	for _, scope := range sortedKeys(consents) {
		v := Granted
		if !consents[scope] {
			v = Withdrawn
		}
		if s.Consents == nil {
			s.Consents = map[string]Register{}
		}
		r := s.Consents[scope]
		d.set("consent:"+scope, r.offer(v, t))
		s.Consents[scope] = r
		if v == Withdrawn {
			// A value older than the withdrawal is not stored, whatever the
			// consent register says now (a later re-consent brings no value).
			for _, f := range ScopeFields[scope] {
				d.set("field:"+string(f), s.offerField(f, Blank, t))
			}
		}
	}
}

func (s *State) offerField(f Field, v string, t time.Time) Outcome {
	if s.Fields == nil {
		s.Fields = map[Field]Register{}
	}
	if f == Email {
		s.recordEmail(v, t)
	}
	r := s.Fields[f]
	o := r.offer(v, t)
	s.Fields[f] = r
	return o
}

// schedulePurge records the purge of an unlink at t whose link outcome is o.
func (s *State) schedulePurge(t time.Time, after time.Duration, key string, o Outcome, d *Decision) {
	if o == Superseded || (s.Tombstone != nil && !t.After(s.Tombstone.Cutoff)) {
		d.set("purge", Superseded)
		return
	}
	switch {
	case s.Purge == nil:
		s.Purge = &PendingPurge{Cutoff: t, Due: t.Add(after), EventKey: key}
		d.Purge = PurgeScheduled
	case t.After(s.Purge.Cutoff):
		s.Purge = &PendingPurge{Cutoff: t, Due: t.Add(after), EventKey: key}
		d.Purge = PurgeMoved
	default:
		// An unlink at the same cutoff (the webhook and the SET of one
		// unlink): keep the earlier due time and the smaller key, so that the
		// order of delivery does not show.
		if t.Equal(s.Purge.Cutoff) {
			if due := t.Add(after); due.Before(s.Purge.Due) {
				s.Purge.Due = due
			}
			s.Purge.EventKey = min(s.Purge.EventKey, key)
		}
		d.set("purge", Unchanged)
		return
	}
	d.set("purge", Applied)
}

// cancelPurge lets a link at t (link outcome o) cancel a pending purge: only
// a link later than the cutoff does.
func (s *State) cancelPurge(t time.Time, o Outcome, d *Decision) {
	switch {
	case s.Purge == nil:
		if o == Superseded {
			d.set("purge", Superseded)
		} else {
			d.set("purge", Unchanged)
		}
	case t.After(s.Purge.Cutoff):
		s.Purge = nil
		d.Purge = PurgeCancelled
		d.set("purge", Applied)
	default:
		d.set("purge", Superseded)
	}
}

// purge blanks every field as of cutoff and leaves a tombstone; a pending
// purge it covers is done with it.
func (s *State) purge(cutoff, now time.Time, key string) {
	for _, f := range AllFields {
		s.offerField(f, Blank, cutoff)
	}
	if s.Purge != nil && !s.Purge.Cutoff.After(cutoff) {
		s.Purge = nil
	}
	s.Tombstone = &Tombstone{Cutoff: cutoff, At: now.UTC(), EventKey: key}
}

// RunPurge runs the pending purge whose cutoff is cutoff, when its timer
// fires. It runs only if that purge is still pending with that cutoff (a
// newer unlink moves it, a later link cancels it) and no link later than the
// cutoff is known.
func RunPurge(s State, cutoff, now time.Time) (State, Decision) {
	n := s.Clone()
	var d Decision
	if n.Purge == nil || !n.Purge.Cutoff.Equal(cutoff) {
		d.set("purge", Superseded)
		return n, d
	}
	contact := n.Contact()
	if n.Link.Value == Linked && n.Link.At.After(cutoff) {
		n.Purge = nil
		d.Purge = PurgeCancelled
	} else {
		n.purge(cutoff, now, n.Purge.EventKey)
		d.Purge, d.Cutoff = PurgeRun, cutoff
	}
	d.set("purge", Applied)
	n.Version++
	d.ContactChanged = n.Contact() != contact
	return n, d
}

// Contact is the CRM contact the state asks for.
type Contact struct {
	// Present is false after a purge, until a later link.
	Present  bool
	Email    string
	Nickname string
	Phone    string
	Linked   string // Linked, Unlinked or "" (unknown)
	Locked   bool
	// Marketing is Added/Blocked from the Talk Channel, "" while unknown.
	Marketing string
}

// Contact derives the desired CRM contact: absent after a purge unless the
// user linked again later; otherwise the current fields (blank where
// withdrawn or detached), link and lock, and marketing consent.
func (s State) Contact() Contact {
	if s.Tombstone != nil && !(s.Link.Value == Linked && s.Link.At.After(s.Tombstone.Cutoff)) {
		return Contact{}
	}
	return Contact{
		Present: true, Email: s.Field(Email), Nickname: s.Field(Nickname), Phone: s.Field(Phone),
		Linked: s.Link.Value, Locked: s.Lock.Value == Locked, Marketing: s.Channel.Value,
	}
}

// Granted lists the granted scopes, sorted.
func (s State) Granted() []string {
	var out []string
	for _, scope := range sortedKeys(s.Consents) {
		if s.Consents[scope].Value == Granted {
			out = append(out, scope)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Bounds limit how far an event time may lie from the token's issue time and
// the receipt time; a time outside is clamped (and audited as such), so a
// forged or broken clock cannot freeze a user's state in the future.
type Bounds struct {
	// Past is how long before iat (or the receipt, without iat) an event may
	// have happened.
	Past time.Duration
	// Future is how far after the receipt an event time may lie (clock skew).
	Future time.Duration
}

// DefaultBounds are user-state.md's: [iat − 7 days, receipt + 5 minutes].
var DefaultBounds = Bounds{Past: 7 * 24 * time.Hour, Future: 5 * time.Minute}

// Clamp returns t limited to [iat − Past, received + Future], truncated to
// microseconds (what PostgreSQL keeps), and whether it was clamped. A zero t
// is the receipt time.
func (b Bounds) Clamp(t, iat, received time.Time) (time.Time, bool) {
	if b.Past <= 0 {
		b.Past = DefaultBounds.Past
	}
	if b.Future <= 0 {
		b.Future = DefaultBounds.Future
	}
	received = received.UTC()
	if t.IsZero() {
		return received.Truncate(time.Microsecond), false
	}
	if received.IsZero() {
		// No receipt time (an envelope from before receipt times were kept):
		// nothing to bound by.
		return t.UTC().Truncate(time.Microsecond), false
	}
	base := iat
	if base.IsZero() {
		base = received
	}
	lo, hi := base.Add(-b.Past), received.Add(b.Future)
	if lo.After(hi) {
		lo = hi
	}
	t = t.UTC()
	switch {
	case t.Before(lo):
		return lo.UTC().Truncate(time.Microsecond), true
	case t.After(hi):
		return hi.UTC().Truncate(time.Microsecond), true
	}
	return t.Truncate(time.Microsecond), false
}
