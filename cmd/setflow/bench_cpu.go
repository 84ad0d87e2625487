package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
)

// cpuSample is the CPU time used so far by this process (the ingress, its
// inbox driver and the load generator) and by the Postgres backends serving
// the bench's database, when the server runs on this machine.
type cpuSample struct {
	self time.Duration
	db   map[int]time.Duration // by backend pid; nil when not readable
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

func sampleCPU(ctx context.Context, db *sqlx.DB) cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var pids []int
	if db.SelectContext(ctx, &pids, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`) != nil {
		return s
	}
	for _, pid := range pids {
		if t, ok := procCPU(pid); ok {
			if s.db == nil {
				s.db = map[int]time.Duration{}
			}
			s.db[pid] = t
		}
	}
	return s
}

// procCPU reads a process's user and system time from /proc.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * time.Second / userHZ, true
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
