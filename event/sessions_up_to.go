package event

import "time"

// SessionsUpTo is the latest session creation time that an event at t
// covers: a revoking event ends the sessions created at or before it, and a
// purge deletes them.
//
// A time in whole seconds (a SET's toe or iat, Kakao's event_timestamp) says
// only in which second the event happened, not when in it: a session created
// later in that second may still predate the event, and it may be the
// attacker's. So such a time covers its whole second, up to its last
// microsecond (the finest time PostgreSQL stores; a store that keeps
// milliseconds reads it as the second's last millisecond). A time with a
// fraction (a receipt time, a fractional NumericDate) is taken as it is.
// Ending a session that began just after the event costs the user a new
// sign-in; keeping one that began just before it could keep an intruder in.
func SessionsUpTo(t time.Time) time.Time {
	if t.IsZero() || t.Nanosecond() != 0 {
		return t
	}
	return t.Add(time.Second - time.Microsecond)
}
