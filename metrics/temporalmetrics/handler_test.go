package temporalmetrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSameNameDifferentTagSets: the SDK emits one metric name with
// different tag sets; a fixed-label vector would panic or drop them. All
// must be gathered, each with its own value.
func TestSameNameDifferentTagSets(t *testing.T) {
	h := New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	h.Counter("temporal_request").Inc(2)
	w := h.WithTags(map[string]string{"namespace": "default", "task_queue": "setflow-reactions"})
	w.Counter("temporal_request").Inc(3)
	w.WithTags(map[string]string{"task_queue": "setflow-crm"}).Counter("temporal_request").Inc(1)
	w.Gauge("temporal_worker_task_slots_available").Update(7)
	w.Timer("temporal_activity_schedule_to_start_latency").Record(300 * time.Millisecond)
	w.Timer("temporal_activity_schedule_to_start_latency").Record(4 * time.Second)

	want := `
# HELP temporal_request_total Temporal SDK counter temporal_request.
# TYPE temporal_request_total counter
temporal_request_total 2
temporal_request_total{namespace="default",task_queue="setflow-crm"} 1
temporal_request_total{namespace="default",task_queue="setflow-reactions"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "temporal_request_total"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		if mf.GetName() == "temporal_activity_schedule_to_start_latency" {
			hist := mf.GetMetric()[0].GetHistogram()
			if hist.GetSampleCount() != 2 || hist.GetSampleSum() != 4.3 {
				t.Errorf("histogram count %d sum %v, want 2 and 4.3", hist.GetSampleCount(), hist.GetSampleSum())
			}
			for _, b := range hist.GetBucket() {
				want := uint64(0)
				if b.GetUpperBound() >= 0.5 {
					want = 1
				}
				if b.GetUpperBound() >= 5 {
					want = 2
				}
				if b.GetCumulativeCount() != want {
					t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
			}
		}
	}
	if !found["temporal_worker_task_slots_available"] || !found["temporal_activity_schedule_to_start_latency"] {
		t.Fatalf("gauge or timer missing: %v", found)
	}
}
