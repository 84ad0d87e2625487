package worker

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// A cut ends the activity's context as a deadline, which contexts derived
// from it (an HTTP call's timeout) inherit; values still come from the
// activity's context.
func TestCutContextEndsAsADeadline(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "info")
	cut := make(chan struct{})
	c := newCutContext(parent, cut)
	defer c.release()
	child, cancel := context.WithTimeout(c, time.Minute)
	defer cancel()
	if c.Value(ctxKey{}) != "info" || child.Value(ctxKey{}) != "info" {
		t.Fatal("values of the activity's context are lost")
	}
	if c.Err() != nil || child.Err() != nil {
		t.Fatal("ended before the cut")
	}
	close(cut)
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the cut did not reach a derived context")
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(child.Err(), context.DeadlineExceeded) {
		t.Fatalf("errors after the cut: %v, derived %v; want deadline exceeded", c.Err(), child.Err())
	}
}

func TestCutContextFollowsItsParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := newCutContext(parent, make(chan struct{}))
	defer c.release()
	cancel()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("parent's cancellation not followed")
	}
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("err %v, want canceled", c.Err())
	}
}

// The cut comes early enough for the failure to be reported within the
// stop timeout, and never before the longest activity timeout (30 s) with
// the default stop timeout.
func TestReportMargin(t *testing.T) {
	if got := 45*time.Second - reportMargin(45*time.Second); got != 40*time.Second {
		t.Fatalf("default stop timeout cuts after %v, want 40s", got)
	}
	if got := reportMargin(2 * time.Second); got != 500*time.Millisecond {
		t.Fatalf("2s stop timeout: margin %v", got)
	}
}
