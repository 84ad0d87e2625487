package userstate

import (
	"slices"
	"strings"
	"time"
)

// A security notice also goes to the addresses the account had shortly
// before the event (user-state.md, "Side effects"): an attacker who changed
// the address must not be the only one told. The state keeps what that needs
// in a form that any delivery order fills the same way:
//   - Emails, the address history: every value an event gave the email
//     field, with its time. A blank (a withdrawal of the scope, a detach, a
//     purge) deletes the addresses at or before it, and an address older than
//     a blank is never stored: setflow does not keep an address the user
//     took back, not even to warn it. Only the newest EmailHistoryLimit stay.
//   - Notices, the notice-bearing events already told, with their times:
//     an address change that arrives late (it happened before a notice that
//     was sent without it) names them in Decision.Renotify, so that the
//     address it reveals is told too.
//
// Both are grow-only sets cut to their newest entries, which is why the
// result does not depend on the order events arrive in.

const (
	// EmailHistoryLimit bounds the address history.
	EmailHistoryLimit = 16
	// NoticeLimit bounds the notices remembered for late address changes.
	NoticeLimit = 32
	// DefaultPreviousAddressWindow is how long before a notice's event an
	// address still gets the notice (user-state.md: 30 days).
	DefaultPreviousAddressWindow = 30 * 24 * time.Hour
)

// NoticeRecord is one security notice the stream sent: the idempotency key
// of its step (no personal data), its kind and its event's time.
type NoticeRecord struct {
	Key  string    `json:"key"`
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`
}

// emailHistory returns the address history; a state stored before the
// history existed has its current address as its only entry.
func (s State) emailHistory() []Register {
	if len(s.Emails) == 0 && s.Fields[Email].Set() {
		return []Register{s.Fields[Email]}
	}
	return s.Emails
}

// historyLess orders the history by time, then as a tie resolves (the
// safer, then the larger value last: the one in effect).
func historyLess(a, b Register) int {
	if c := a.At.Compare(b.At); c != 0 {
		return c
	}
	if c := rankOf(a.Value) - rankOf(b.Value); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

// recordEmail adds an offer of the email field to the history.
func (s *State) recordEmail(v string, t time.Time) {
	h := slices.Clone(s.emailHistory())
	e := Register{Value: v, At: t}
	if slices.Contains(h, e) {
		return
	}
	if slices.ContainsFunc(h, func(r Register) bool { return r.Value == Blank && !r.At.Before(t) }) {
		return // at or before a blank: deleted already
	}
	if v == Blank {
		h = slices.DeleteFunc(h, func(r Register) bool { return !r.At.After(t) })
	}
	h = append(h, e)
	slices.SortFunc(h, historyLess)
	if len(h) > EmailHistoryLimit {
		h = h[len(h)-EmailHistoryLimit:]
	}
	s.Emails = h
}

// AddressesDuring returns the addresses the account had at some time in
// [from, to], each with the time it was set (the latest, for one set twice),
// oldest first.
func (s State) AddressesDuring(from, to time.Time) []Register {
	h := s.emailHistory()
	var out []Register
	for i, r := range h {
		if i+1 < len(h) && h[i+1].At.Equal(r.At) {
			continue // not the tie's winner: never in effect
		}
		j := i + 1
		for j < len(h) && h[j].At.Equal(r.At) {
			j++
		}
		if r.Value == Blank || r.At.After(to) || (j < len(h) && !h[j].At.After(from)) {
			continue
		}
		out = slices.DeleteFunc(out, func(o Register) bool { return o.Value == r.Value })
		out = append(out, r)
	}
	return out
}

// recordNotice remembers a notice sent for an event at rec.At.
func (s *State) recordNotice(rec NoticeRecord) {
	if slices.ContainsFunc(s.Notices, func(n NoticeRecord) bool { return n.Key == rec.Key }) {
		return
	}
	n := append(slices.Clone(s.Notices), rec)
	slices.SortFunc(n, func(a, b NoticeRecord) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	if len(n) > NoticeLimit {
		n = n[len(n)-NoticeLimit:]
	}
	s.Notices = n
}

// noticesSince returns the remembered notices whose events are at or after
// t: those an address set at t may have been in effect for.
func (s State) noticesSince(t time.Time) []NoticeRecord {
	var out []NoticeRecord
	for _, n := range s.Notices {
		if !n.At.Before(t) {
			out = append(out, n)
		}
	}
	return out
}
