// Package pace sends work at a fixed rate regardless of how fast earlier work
// finishes (an open loop), for the benchmarks' fixed-rate phases.
package pace

import (
	"context"
	"sync"
	"time"
)

// OpenLoop calls fn(i, at) for i in [0, n), each in its own goroutine at its
// scheduled time at = start + i/rate, and waits for all of them. It stops
// scheduling when ctx ends. It returns when the loop started.
func OpenLoop(ctx context.Context, n int, rate float64, fn func(i int, at time.Time)) time.Time {
	interval := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() { fn(i, at) })
	}
	wg.Wait()
	return start
}
