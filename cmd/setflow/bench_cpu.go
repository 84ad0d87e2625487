package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/internal/proccpu"
)

// cpuSample is the CPU time used so far by this process (the ingress, its
// inbox driver and the load generator) and by the Postgres backends serving
// the bench's database, when the server runs on this machine.
type cpuSample struct {
	self time.Duration
	db   map[int]time.Duration // by backend pid; nil when not readable
}

func sampleCPU(ctx context.Context, db *sqlx.DB) cpuSample {
	var s cpuSample
	s.self = proccpu.Self()
	var pids []int
	if db.SelectContext(ctx, &pids, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`) != nil {
		return s
	}
	for _, pid := range pids {
		if t, ok := proccpu.Of(pid); ok {
			if s.db == nil {
				s.db = map[int]time.Duration{}
			}
			s.db[pid] = t
		}
	}
	return s
}

// dbSince is the backends' CPU time between a and s (backends in both).
func (s cpuSample) dbSince(a cpuSample) (time.Duration, bool) {
	if s.db == nil || a.db == nil {
		return 0, false
	}
	var d time.Duration
	for pid, t := range s.db {
		if t0, ok := a.db[pid]; ok {
			d += t - t0
		}
	}
	return d, true
}

// printCPUPerSET says where an accepted SET's CPU went between a and b and
// what rate the machine's cores would allow at that cost: with the load
// generator and Postgres on the same cores as the ingress, that ceiling,
// not the commits, bounds the accept rate.
func printCPUPerSET(out io.Writer, a, b cpuSample, accepted int, elapsed time.Duration, verifyOne, verifyAll float64) {
	if accepted == 0 {
		return
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(accepted) }
	self := b.self - a.self
	total := self
	verify := ""
	if verifyOne > 0 {
		verify = fmt.Sprintf(" ≈ %.0f µs", 1e6/verifyOne)
	}
	line := fmt.Sprintf("this process %.0f µs (load generator, HTTP server, verification%s, inbox)", per(self), verify)
	if dbt, ok := b.dbSince(a); ok {
		total += dbt
		line += fmt.Sprintf(" + Postgres backends %.0f µs", per(dbt))
	}
	fmt.Fprintf(out, "  %-24s %9.0f µs = %s\n", "CPU per accepted SET", per(total), line)
	cores := float64(runtime.NumCPU())
	ceiling := cores * 1e6 / max(per(total), 1)
	busy := 100 * total.Seconds() / (elapsed.Seconds() * cores)
	share := ""
	if verifyAll > 0 {
		share = fmt.Sprintf(" = %.1f%% of verify-only", 100*ceiling/verifyAll)
	}
	fmt.Fprintf(out, "  %-24s %9s SETs/s%s if all %d cores did only this (they were %.0f%% busy with it)\n", "CPU ceiling",
		thousands(ceiling), share, int(cores), busy)
}
