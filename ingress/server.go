// Package ingress is setflow's HTTP receiver for Kakao's webhooks. It verifies a
// delivery, commits it to the inbox and only then answers; it never waits on
// Temporal. It knows the inbox, not what happens after it.
package ingress

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/metrics"
	"github.com/setflow/setflow/secevent"
)

// Paths of the webhook routes, as registered in the Kakao console.
const (
	PathAccountStatus = "/webhooks/kakao/account-status"
)

// SETVerifier verifies a Security Event Token (secevent.Verifier).
type SETVerifier interface {
	Verify(ctx context.Context, token []byte) (*secevent.SET, error)
}

// Server holds the ingress's dependencies.
type Server struct {
	Inbox inbox.Writer
	SETs  SETVerifier
	Log   *slog.Logger
	// MaxBody caps a request body; Kakao's tokens are a few KiB.
	MaxBody int64
	// StoreTimeout bounds the inbox write so that the answer always leaves within
	// Kakao's 3 s, as 503 if the database is too slow.
	StoreTimeout time.Duration
	// Ready reports whether the inbox is reachable, for /readyz.
	Ready func(ctx context.Context) error
	// Deadline bounds one delivery's verification and storage; RequestDeadline
	// when zero.
	Deadline time.Duration
	Now      func() time.Time
	// Kakao configures the admin-key webhooks (unlink, Talk Share, Talk Channel).
	Kakao Kakao
	// Allowlist, when set, admits webhook requests only from its networks
	// (health endpoints stay open).
	Allowlist *IPAllowlist
	// Unknowns, when set, takes note of deliveries of an unexpected shape
	// (unknowns.Recorder); it never blocks a delivery.
	Unknowns UnknownsNoter

	// draining makes /readyz fail from Drain on (a graceful stop).
	draining atomic.Bool
}

// Drain makes /readyz answer 503 from now on, while the webhooks are still
// served: the first step of a graceful stop, so that load balancers stop
// sending before the server drains its in-flight requests and closes.
func (s *Server) Drain() { s.draining.Store(true) }

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) maxBody() int64 {
	if s.MaxBody > 0 {
		return s.MaxBody
	}
	return 64 << 10
}

// Handler returns the ingress's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	webhook := func(path string, h http.HandlerFunc) {
		handler := metrics.Instrument(path, withDeadline(s.deadline(), h))
		if s.Allowlist != nil {
			handler = s.Allowlist.Wrap(handler)
		}
		mux.Handle(path, handler)
	}
	webhook(PathAccountStatus, s.accountStatus)
	webhook(PathUnlink, s.unlink)
	webhook(PathTalkShare, s.talkShare)
	webhook(PathTalkChannel, s.talkChannel)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/readyz", s.readyz)
	return mux
}

// RequestDeadline bounds verification and storage of one delivery together:
// a slow key fetch followed by a slow insert must still answer inside Kakao's
// 3 s (as a 503, so that a sender that retries, retries).
const RequestDeadline = 2500 * time.Millisecond

func (s *Server) deadline() time.Duration {
	if s.Deadline > 0 {
		return s.Deadline
	}
	return RequestDeadline
}

func withDeadline(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if s.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.Ready(ctx); err != nil {
			http.Error(w, "inbox unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

// HTTPServer wraps h with timeouts that keep slow or hostile clients from
// holding connections; every answer is due within Kakao's 3 s anyway.
func HTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// errorBody is RFC 8935 §2.3's error response.
type errorBody struct {
	Err         string `json:"err"`
	Description string `json:"description"`
}

func writeError(w http.ResponseWriter, status int, code secevent.Code, description string) {
	if status < 500 {
		metrics.VerificationFailures.WithLabelValues(string(code)).Inc()
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Language", "en")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Err: string(code), Description: description})
}
