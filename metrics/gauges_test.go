package metrics

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSecondsSinceLastDelivery: a route counts from its registration, an
// accepted (2xx) delivery resets it, a refused (4xx) one does not: a
// webhook answered only with 401s is as silent as one never called.
func TestSecondsSinceLastDelivery(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	old := sinceLastDelivery.now
	sinceLastDelivery.now = func() time.Time { return now }
	t.Cleanup(func() { sinceLastDelivery.now = old })

	status := http.StatusOK
	h := Instrument("/test/silent-route", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	deliver := func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/", nil)) }
	value := func() float64 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(sinceLastDelivery)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "route" && l.GetValue() == "/test/silent-route" {
						return m.GetGauge().GetValue()
					}
				}
			}
		}
		t.Fatal("route not reported")
		return 0
	}
	if v := value(); v != 0 {
		t.Fatalf("at registration: %v, want 0", v)
	}
	now = now.Add(90 * time.Second)
	if v := value(); v != 90 {
		t.Fatalf("90 s after registration without delivery: %v, want 90", v)
	}
	deliver()
	now = now.Add(10 * time.Second)
	if v := value(); v != 10 {
		t.Fatalf("10 s after an accepted delivery: %v, want 10", v)
	}
	status = http.StatusUnauthorized
	deliver()
	now = now.Add(5 * time.Second)
	if v := value(); v != 15 {
		t.Fatalf("after a refused delivery: %v, want 15 (a 4xx is not a delivery)", v)
	}
}

// TestBacklogGauges: the backlog source's numbers become the gauges; no
// held gauge while no guard reports one; a failing source removes the
// gauges (absent, not zero) and counts the error; reads are spaced.
func TestBacklogGauges(t *testing.T) {
	now := time.Unix(2_000_000, 0)
	b := &backlogCollector{now: func() time.Time { return now },
		pending: backlog.pending, oldest: backlog.oldest, parked: backlog.parked, held: backlog.held}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(b)
	calls := 0
	var held *int64
	var fail error
	b.source = func(context.Context) (Backlog, error) {
		calls++
		return Backlog{Pending: 3, OldestPendingAge: 42 * time.Second, Parked: 1, Held: held}, fail
	}
	want := `
# HELP setflow_inbox_oldest_pending_age_seconds Age of the oldest inbox entry not yet handed to Temporal (0 when none).
# TYPE setflow_inbox_oldest_pending_age_seconds gauge
setflow_inbox_oldest_pending_age_seconds 42
# HELP setflow_inbox_parked Events parked after a step gave up, waiting for an operator.
# TYPE setflow_inbox_parked gauge
setflow_inbox_parked 1
# HELP setflow_inbox_pending Inbox entries accepted and not yet handed to Temporal.
# TYPE setflow_inbox_pending gauge
setflow_inbox_pending 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil || calls != 1 {
		t.Fatalf("second scrape within the interval: %d reads (%v), want 1", calls, err)
	}
	n := int64(4)
	held = &n
	now = now.Add(backlogMinInterval)
	if c, err := testutil.GatherAndCount(reg, "setflow_held"); err != nil || c != 1 {
		t.Fatalf("held reported: %d series (%v), want 1", c, err)
	}
	fail = errors.New("db down")
	now = now.Add(backlogMinInterval)
	before := testutil.ToFloat64(BacklogErrors)
	if c, err := testutil.GatherAndCount(reg); err != nil || c != 0 {
		t.Fatalf("failing source: %d series (%v), want none", c, err)
	}
	if testutil.ToFloat64(BacklogErrors) != before+1 {
		t.Fatal("failed read not counted")
	}
}
