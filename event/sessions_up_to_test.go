package event

import (
	"testing"
	"time"
)

func TestSessionsUpToCoversTheWholeSecondOfAWholeSecondTime(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	up := SessionsUpTo(at)
	if want := at.Add(999_999 * time.Microsecond); !up.Equal(want) {
		t.Fatalf("SessionsUpTo(%s) = %s, want %s", at, up, want)
	}
	// A session made half a second into the event's second may predate the
	// event: it is covered. One made in the next second is not.
	if in := at.Add(500 * time.Millisecond); in.After(up) {
		t.Errorf("a session created at %s is not covered by %s", in, up)
	}
	if next := at.Add(time.Second); !next.After(up) {
		t.Errorf("a session created at %s, the next second, is covered by %s", next, up)
	}
	// Stores that keep milliseconds see the second's last millisecond.
	if ms := up.UnixMilli(); ms != at.UnixMilli()+999 {
		t.Errorf("UnixMilli = %d, want the second's last millisecond %d", ms, at.UnixMilli()+999)
	}
	// PostgreSQL keeps microseconds: the bound must not round up into the next second.
	if up.Truncate(time.Microsecond) != up {
		t.Errorf("%s is finer than a microsecond: PostgreSQL would round it", up)
	}
}

func TestSessionsUpToKeepsAFractionalTime(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(2026, 12, 2, 10, 0, 0, 250_000_000, time.UTC), // a receipt time
		time.Date(2026, 12, 2, 10, 0, 0, 1, time.UTC),
		{}, // no time: nothing to cover
	} {
		if up := SessionsUpTo(at); !up.Equal(at) {
			t.Errorf("SessionsUpTo(%s) = %s, want it unchanged", at, up)
		}
	}
}
