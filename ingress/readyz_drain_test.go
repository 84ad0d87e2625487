package ingress

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// After Drain, /readyz answers 503 (load balancers stop sending) while
// /healthz and the webhooks are still served.
func TestDrainFailsReadinessOnly(t *testing.T) {
	s := &Server{Ready: func(context.Context) error { return nil }}
	h := s.Handler()
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if c := get("/readyz"); c != http.StatusOK {
		t.Fatalf("/readyz before Drain: %d", c)
	}
	s.Drain()
	if c := get("/readyz"); c != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after Drain: %d, want 503", c)
	}
	if c := get("/healthz"); c != http.StatusOK {
		t.Fatalf("/healthz after Drain: %d, want 200 (the process is alive)", c)
	}
}
