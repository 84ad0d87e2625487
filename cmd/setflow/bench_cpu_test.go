package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestProcCPUReadsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	t0, ok := procCPU(os.Getpid())
	if !ok {
		t.Fatal("could not read this process's CPU time")
	}
	// Spin until the process's CPU time has moved on by 50 ms (on a loaded
	// machine that takes longer than 50 ms of wall time; the bound is loose).
	for deadline := time.Now().Add(30 * time.Second); ; {
		t1, ok := procCPU(os.Getpid())
		if ok && t1-t0 >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time went from %s to %s over 30 s of spinning", t0, t1)
		}
		for end := time.Now().Add(10 * time.Millisecond); time.Now().Before(end); {
		}
	}
	if _, ok := procCPU(-1); ok {
		t.Fatal("read a process that cannot exist")
	}
}

// Only backends present in both samples count: a backend that started in
// between would otherwise add its whole life.
func TestCPUPerSETCountsBackendsInBothSamples(t *testing.T) {
	a := cpuSample{self: time.Second, db: map[int]time.Duration{1: time.Second, 2: time.Second}}
	b := cpuSample{self: 3 * time.Second, db: map[int]time.Duration{1: 2 * time.Second, 3: 10 * time.Second}}
	if d, ok := b.dbSince(a); !ok || d != time.Second {
		t.Fatalf("dbSince = %s, %v; want 1s", d, ok)
	}
	var out bytes.Buffer
	printCPUPerSET(&out, a, b, 1000, time.Second, 20_000, 40_000)
	// 2 s of this process + 1 s of Postgres over 1,000 SETs = 3,000 µs each.
	if !strings.Contains(out.String(), "3000 µs = this process 2000 µs") || !strings.Contains(out.String(), "Postgres backends 1000 µs") {
		t.Fatalf("report:\n%s", out.String())
	}
	if _, ok := b.dbSince(cpuSample{}); ok {
		t.Fatal("dbSince without backends in the first sample reported a figure")
	}
}
