package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/internal/devserver"
	"github.com/setflow/setflow/internal/reactionbench"
	"github.com/setflow/setflow/internal/testenv"
)

// reactionsPerOp is one benchmark operation: a batch of workflows, because a
// throughput over a handful of workflows would measure start-up, not rate.
const reactionsPerOp = 200

// benchServer starts the product's baseline server for one benchmark: a
// Temporal dev server with SQLite in WAL mode.
func benchServer(b *testing.B) *devserver.Server {
	b.Helper()
	srv, err := reactionbench.StartServer(context.Background(), testenv.TemporalBinary(b), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Kill() })
	return srv
}

// BenchmarkReactions measures full setflow reactions — SETs POSTed to the
// ingress, stored in the Postgres inbox, relayed to their users' streams, run
// by the production worker set with the real activities on Postgres, each
// counted when its "completed" audit row is written — and, on the same dev
// server in the same run, the product's no-op baseline (workflows of four
// no-op activities). One op is a batch of reactionsPerOp reactions;
// workflows/s is setflow's rate (reactions per second), baseline-workflows/s
// the baseline's, ratio their quotient (target ≥ 0.8). ns/op counts setflow's
// time only. server-ms/workflow is the dev server's CPU time per reaction or
// baseline workflow.
//
//	go test ./integration -run '^$' -bench Reactions -benchtime 1x
func BenchmarkReactions(b *testing.B) {
	ctx := context.Background()
	db, url := testenv.Database(b)
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	srv := benchServer(b)
	base, err := reactionbench.NewBaseline(ctx, srv, sdkworker.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(base.Close)
	sf, err := reactionbench.NewSetflow(ctx, srv, reactionbench.Config{DB: db, DBURL: url})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sf.Close)
	run := fmt.Sprintf("bb%d-", time.Now().UnixNano())

	b.StopTimer()
	if _, err := base.Run(ctx, 10, run+"noop-warm-"); err != nil {
		b.Fatal(err)
	}
	if _, err := sf.Run(ctx, 10, run+"warm-"); err != nil {
		b.Fatal(err)
	}
	// ABBA: baseline, setflow, setflow, baseline, each half a batch, so that a
	// drift of the machine's load (other processes, the server's own
	// housekeeping) hurts both alike.
	half := max(1, b.N*reactionsPerOp/2)
	var baseline, res reactionbench.Result
	runBase := func(tag string) {
		r, err := reactionbench.Measure(srv, func() (reactionbench.Result, error) { return base.Run(ctx, half, run+"noop-"+tag+"-") })
		if err != nil {
			b.Fatal(err)
		}
		baseline.Add(r)
	}
	runSetflow := func(tag string) {
		b.StartTimer()
		r, err := reactionbench.Measure(srv, func() (reactionbench.Result, error) { return sf.Run(ctx, half, run+tag+"-") })
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		res.Add(r)
	}
	b.ResetTimer()
	b.StopTimer()
	runBase("a")
	runSetflow("b")
	runSetflow("c")
	runBase("d")
	b.ReportMetric(res.PerSec(), "workflows/s")
	b.ReportMetric(baseline.PerSec(), "baseline-workflows/s")
	b.ReportMetric(reactionbench.Ratio(baseline, res), "ratio")
	// The dev server's CPU per workflow hardly depends on what else runs on
	// the machine: the steadier comparison of the two.
	b.ReportMetric(float64(res.ServerCPUPerWorkflow())/1e6, "server-ms/workflow")
	b.ReportMetric(float64(baseline.ServerCPUPerWorkflow())/1e6, "baseline-server-ms/workflow")
	b.Logf("setflow %.1f reactions/s (%s), baseline %.1f workflows/s, ratio %.2f× (target ≥ %.1f×)",
		res.PerSec(), res.Detail, baseline.PerSec(), reactionbench.Ratio(baseline, res), reactionbench.Target)
}

// BenchmarkNoopBaseline measures the product's baseline alone: no-op workflows
// of four no-op activities on a Temporal dev server with SQLite in WAL mode.
// One op is a batch of reactionsPerOp workflows.
func BenchmarkNoopBaseline(b *testing.B) {
	ctx := context.Background()
	srv := benchServer(b)
	base, err := reactionbench.NewBaseline(ctx, srv, sdkworker.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(base.Close)
	run := fmt.Sprintf("nb%d-", time.Now().UnixNano())
	b.StopTimer()
	if _, err := base.Run(ctx, 10, run+"warm-"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.StartTimer()
	res, err := base.Run(ctx, b.N*reactionsPerOp, run)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.PerSec(), "workflows/s")
}
