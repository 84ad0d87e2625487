package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/setflow/setflow/ingress"
)

// TestSETPosterSpeaksHTTP checks the bench's load generator against the
// standard library's server: the request Kakao would send, every kind of
// answer read to its end, and connections reused unless the server closes.
func TestSETPosterSpeaksHTTP(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		remotes[r.RemoteAddr]++
		mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != ingress.PathAccountStatus ||
			r.Header.Get("Content-Type") != ingress.SETContentType || r.ContentLength != int64(len(body)) {
			http.Error(w, "not a SET delivery", http.StatusTeapot)
			return
		}
		switch string(body) {
		case "bad":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"err":"invalid_request","description":"no"}`)
		case "close":
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusAccepted)
		case "chunked":
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, "part one")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part two")
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()

	p, err := newSETPoster(srv.URL+ingress.PathAccountStatus, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	ctx := context.Background()
	for _, c := range []struct {
		body string
		want int
	}{
		{"eyJhbGciOiJSUzI1NiJ9.e30.c2ln", http.StatusAccepted},
		{"bad", http.StatusBadRequest},
		{"chunked", http.StatusAccepted},
		{"another.token.here", http.StatusAccepted},
		{"close", http.StatusAccepted},
		{"after.the.close", http.StatusAccepted},
	} {
		status, err := p.post(ctx, []byte(c.body))
		if err != nil || status != c.want {
			t.Fatalf("post %q = %d, %v; want %d", c.body, status, err, c.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// One connection for the five requests up to the close, a new one after.
	if len(remotes) != 2 {
		t.Fatalf("connections used: %v; want 2 (keep-alive until the server closes)", remotes)
	}
	for addr, n := range remotes {
		if n != 5 && n != 1 {
			t.Errorf("connection %s carried %d requests; want 5 and 1", addr, n)
		}
	}
}

func TestSETPosterRefusesOtherSchemes(t *testing.T) {
	for _, u := range []string{"https://example.com/x", "ftp://h/x", "::"} {
		if _, err := newSETPoster(u, 1); err == nil {
			t.Errorf("newSETPoster(%q) accepted it", u)
		}
	}
}

// A cancelled context stops the load before anything is sent.
func TestSETPosterStopsOnCancel(t *testing.T) {
	p, err := newSETPoster("http://127.0.0.1:1/x", 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.post(ctx, []byte("t")); err == nil {
		t.Fatal("post on a cancelled context did not fail")
	}
}
