package proccpu

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// Of follows this process's CPU time on Linux (spinning until 50 ms have
// passed, within a loose bound), and reports false where /proc is not.
func TestOfReadsThisProcess(t *testing.T) {
	t0, ok := Of(os.Getpid())
	if runtime.GOOS != "linux" {
		if ok {
			t.Fatal("read /proc where there is none")
		}
		return
	}
	if !ok {
		t.Fatal("could not read this process's CPU time")
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		t1, ok := Of(os.Getpid())
		if ok && t1-t0 >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time went from %s to %s over 30 s of spinning", t0, t1)
		}
		for end := time.Now().Add(10 * time.Millisecond); time.Now().Before(end); {
		}
	}
	if _, ok := Of(-1); ok {
		t.Fatal("read a process that cannot exist")
	}
	if s := Self(); s <= 0 {
		t.Fatalf("Self = %s after spinning", s)
	}
}
