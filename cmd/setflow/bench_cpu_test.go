package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

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
