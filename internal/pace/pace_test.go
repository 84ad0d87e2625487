package pace

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Every call gets its own index and a schedule spaced by 1/rate; a cancelled
// context stops scheduling.
func TestOpenLoop(t *testing.T) {
	var mu sync.Mutex
	ats := map[int]time.Time{}
	start := OpenLoop(context.Background(), 5, 1000, func(i int, at time.Time) {
		mu.Lock()
		ats[i] = at
		mu.Unlock()
	})
	if len(ats) != 5 {
		t.Fatalf("%d calls, want 5", len(ats))
	}
	for i, at := range ats {
		if want := start.Add(time.Duration(i) * time.Millisecond); !at.Equal(want) {
			t.Fatalf("call %d scheduled at %v, want %v", i, at.Sub(start), want.Sub(start))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	OpenLoop(ctx, 5, 1000, func(int, time.Time) { calls++ })
	if calls != 0 {
		t.Fatalf("%d calls after cancel, want 0", calls)
	}
}
