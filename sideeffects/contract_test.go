package sideeffects_test

import (
	"context"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/sideeffects"
)

// Every Log implementation must pass the same contract.
func TestMemoryContract(t *testing.T) {
	runContract(t, func(t *testing.T) sideeffects.Log { return sideeffects.NewMemory() })
}

func TestPostgresContract(t *testing.T) {
	runContract(t, func(t *testing.T) sideeffects.Log {
		db, _ := testenv.Database(t)
		return sideeffects.NewPostgres(db)
	})
}

const long = time.Hour

func runContract(t *testing.T, newLog func(t *testing.T) sideeffects.Log) {
	ctx := context.Background()
	claim := func(t *testing.T, l sideeffects.Log, key string, deadline time.Duration, want sideeffects.Claim) {
		t.Helper()
		got, err := l.Claim(ctx, key, sideeffects.KindEmail, deadline)
		if err != nil || got != want {
			t.Fatalf("claim %s: %+v %v, want %+v", key, got, err, want)
		}
	}
	attempts := func(t *testing.T, l sideeffects.Log, key string, want int) {
		t.Helper()
		if n, err := l.Attempts(ctx, key); err != nil || n != want {
			t.Fatalf("attempts of %s: %d %v, want %d", key, n, err, want)
		}
	}
	started := sideeffects.Claim{Status: sideeffects.StatusStarted}
	t.Run("a new key is claimed once; a finished one never again", func(t *testing.T) {
		l := newLog(t)
		attempts(t, l, "k", 0)
		claim(t, l, "k", long, sideeffects.Claim{Act: true})
		claim(t, l, "k", long, started)
		if err := l.Finish(ctx, "k", "<id@example.test>"); err != nil {
			t.Fatal(err)
		}
		claim(t, l, "k", 0, sideeffects.Claim{Status: sideeffects.StatusDone})
		// Settling a finished key changes nothing.
		if err := l.Settle(ctx, "k", false); err != nil {
			t.Fatal(err)
		}
		claim(t, l, "k", 0, sideeffects.Claim{Status: sideeffects.StatusDone})
		attempts(t, l, "k", 1)
	})
	t.Run("a release lets the retry act as if first", func(t *testing.T) {
		l := newLog(t)
		claim(t, l, "k", long, sideeffects.Claim{Act: true})
		if err := l.Settle(ctx, "k", false); err != nil {
			t.Fatal(err)
		}
		attempts(t, l, "k", 0)
		claim(t, l, "k", long, sideeffects.Claim{Act: true})
		attempts(t, l, "k", 1)
	})
	t.Run("an uncertain end is taken over at once, as a repeat", func(t *testing.T) {
		l := newLog(t)
		claim(t, l, "k", long, sideeffects.Claim{Act: true})
		if err := l.Settle(ctx, "k", true); err != nil {
			t.Fatal(err)
		}
		claim(t, l, "k", long, sideeffects.Claim{Act: true, Repeat: true})
		attempts(t, l, "k", 2)
		// The takeover is itself started: a third attempt waits.
		claim(t, l, "k", long, started)
		// A failed takeover settled uncertain stays a repeat.
		if err := l.Settle(ctx, "k", true); err != nil {
			t.Fatal(err)
		}
		claim(t, l, "k", long, sideeffects.Claim{Act: true, Repeat: true})
		attempts(t, l, "k", 3)
	})
	t.Run("a vanished attempt is taken over after its deadline", func(t *testing.T) {
		l := newLog(t)
		claim(t, l, "k", long, sideeffects.Claim{Act: true})
		claim(t, l, "k", long, started)
		time.Sleep(20 * time.Millisecond)
		claim(t, l, "k", 10*time.Millisecond, sideeffects.Claim{Act: true, Repeat: true})
		// The takeover restarted the clock.
		claim(t, l, "k", long, started)
		attempts(t, l, "k", 2)
	})
	t.Run("keys are independent", func(t *testing.T) {
		l := newLog(t)
		claim(t, l, "a", long, sideeffects.Claim{Act: true})
		claim(t, l, "b", long, sideeffects.Claim{Act: true})
		if err := l.Finish(ctx, "a", "x"); err != nil {
			t.Fatal(err)
		}
		claim(t, l, "b", long, started)
	})
}
