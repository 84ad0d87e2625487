package servicehook

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/crm"
)

func signed(secret, body string, at time.Time) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
	r.Header.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	r.Header.Set(HeaderSignature, crm.Sign([]byte(secret), at.Unix(), []byte(body)))
	return r
}

func TestHandlerVerifies(t *testing.T) {
	body := `{"type":"setflow.user_event","idempotency_key":"k","event":{"key":"e","type":"t","name":"n","time":"2026-01-01T00:00:00Z"}}`
	calls := 0
	h := Handler([]byte("s"), func(_ *http.Request, d Document) error {
		calls++
		if d.IdempotencyKey != "k" || d.Event.Name != "n" {
			t.Errorf("document %+v", d)
		}
		return nil
	})
	now := time.Now()
	for _, c := range []struct {
		name string
		req  *http.Request
		want int
	}{
		{"valid", signed("s", body, now), http.StatusNoContent},
		{"wrong secret", signed("x", body, now), http.StatusUnauthorized},
		{"stale", signed("s", body, now.Add(-10*time.Minute)), http.StatusUnauthorized},
		{"not a document", signed("s", `{"hello":1}`, now), http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, c.req)
		if rec.Code != c.want {
			t.Errorf("%s: %d, want %d", c.name, rec.Code, c.want)
		}
	}
	tampered := signed("s", body, now)
	tampered.Body = http.NoBody
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, tampered)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("tampered body: %d", rec.Code)
	}
	if calls != 1 {
		t.Fatalf("fn called %d times, want 1", calls)
	}
}
