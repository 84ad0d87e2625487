package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestInstrumentCountsAnsweredStatus(t *testing.T) {
	h := Instrument("/t", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("bad") != "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte("ok")) // implicit 200
	}))
	before200 := testutil.ToFloat64(Deliveries.WithLabelValues("/t", "200"))
	before400 := testutil.ToFloat64(Deliveries.WithLabelValues("/t", "400"))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/t", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/t?bad=1", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/t?bad=1", nil))
	if got := testutil.ToFloat64(Deliveries.WithLabelValues("/t", "200")) - before200; got != 1 {
		t.Fatalf("200s counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(Deliveries.WithLabelValues("/t", "400")) - before400; got != 2 {
		t.Fatalf("400s counted %v, want 2", got)
	}
}

func TestObserveStepBoundsLabels(t *testing.T) {
	known := func(n string) bool { return n == "account-disabled" }
	ObserveStep("account-disabled/send_notice#2@3", "failed", known)
	ObserveStep("urn:attacker:chosen-name/received", "received", known)
	if got := testutil.ToFloat64(Steps.WithLabelValues("account-disabled", "send_notice", "failed")); got != 1 {
		t.Fatalf("step label not normalised: %v", got)
	}
	if got := testutil.ToFloat64(Steps.WithLabelValues("other", "received", "received")); got != 1 {
		t.Fatalf("unknown event not folded into other: %v", got)
	}
	for v := 1; v <= 3; v++ {
		ObserveStep(fmt.Sprintf("crm-sync/v%d", v), "done", nil)
	}
	if got := testutil.ToFloat64(Steps.WithLabelValues("crm-sync", "sync", "done")); got != 3 {
		t.Fatalf("crm sync versions not folded into one label: %v", got)
	}
}
