package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/crm"
)

func TestHTTPCallbackSignsAndReportsCount(t *testing.T) {
	secret := []byte("s3cret")
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		// The service verifies with the same scheme as the CRM webhook.
		if err := crm.Verify(secret, r.Header.Get("X-Setflow-Signature"), r.Header.Get("X-Setflow-Timestamp"), body, time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var req callbackRequest
		if err := json.Unmarshal(body, &req); err != nil || req.UserID != "u1" || req.Action != "revoke_sessions" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		_, _ = w.Write([]byte(`{"revoked": 3}`))
	}))
	defer srv.Close()
	h := &HTTPCallback{URL: srv.URL, Secret: secret}
	at := time.Now()
	for range 2 {
		n, err := h.Revoke(context.Background(), "u1", at)
		if err != nil || n != 3 {
			t.Fatalf("revoke: %d %v", n, err)
		}
	}
	if len(keys) != 2 || keys[0] != keys[1] || keys[0] == "" {
		t.Fatalf("idempotency keys %v must be equal and non-empty across retries", keys)
	}
	wrong := &HTTPCallback{URL: srv.URL, Secret: []byte("other")}
	if _, err := wrong.Revoke(context.Background(), "u1", at); !errors.Is(err, ErrCallbackRejected) {
		t.Fatalf("bad signature: %v, want ErrCallbackRejected", err)
	}
}

func TestHTTPCallbackServerErrorIsRetryable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	_, err := (&HTTPCallback{URL: srv.URL}).Revoke(context.Background(), "u", time.Now())
	if err == nil || errors.Is(err, ErrCallbackRejected) {
		t.Fatalf("503: %v, want a retryable error", err)
	}
}

// A callback that gets no answer names neither the user nor what the URL
// carries beyond its host (a token in the path, query or user info).
func TestHTTPCallbackTransportErrorNamesNoUser(t *testing.T) {
	const user = "90817263544"
	hijack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer hijack.Close()
	echo := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		body, _ := io.ReadAll(r.Body)
		return nil, fmt.Errorf("proxy refused %s: %s", r.Header.Get("X-Setflow-Signature"), body)
	})}
	for name, h := range map[string]*HTTPCallback{
		"no answer": {URL: strings.Replace(hijack.URL, "http://", "http://svc:pw-secret@", 1) + "/hooks/tok-secret?key=q-secret", Secret: []byte("s3cret")},
		"echoing":   {URL: "http://svc.invalid/hooks/tok-secret", Secret: []byte("s3cret"), Client: echo},
		"bad url":   {URL: "http://svc.invalid:port/hooks/tok-secret?u=" + user, Secret: []byte("s3cret")},
	} {
		_, err := h.Revoke(context.Background(), user, time.Now())
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		for _, v := range []string{user, "tok-secret", "q-secret", "pw-secret"} {
			if strings.Contains(err.Error(), v) {
				t.Errorf("%s: error %q contains %q", name, err, v)
			}
		}
		t.Logf("%s: %v", name, err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
