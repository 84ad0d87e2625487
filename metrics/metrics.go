// Package metrics exposes setflow's Prometheus metrics. Labels are bounded
// sets (routes, status codes, step names, outcomes, known event names): never
// user ids, keys or anything from a payload.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	// Deliveries counts webhook requests by route and answered status.
	Deliveries = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "setflow_ingress_deliveries_total",
		Help: "Webhook deliveries by route and HTTP status answered.",
	}, []string{"route", "status"})
	// DeliverySeconds is the time to answer a delivery (verify + store).
	DeliverySeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "setflow_ingress_delivery_seconds",
		Help:    "Time to answer a webhook delivery.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route"})
	// Relayed counts inbox entries handed to Temporal, by result.
	Relayed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "setflow_relay_deliveries_total",
		Help: "Inbox entries handed to Temporal, by result (ok, error).",
	}, []string{"result"})
	// Steps counts audited reaction steps by event name, step and outcome
	// (received, done, skipped, superseded, duplicate, shadow, failed, cancelled).
	Steps = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "setflow_reaction_steps_total",
		Help: "Audited reaction steps by event name, step and outcome.",
	}, []string{"event", "step", "outcome"})
)

// NoticeRepeats counts security notices sent again because an earlier
// attempt may have delivered them (at least once, same Message-ID).
var NoticeRepeats = promauto.NewCounter(prometheus.CounterOpts{
	Name: "setflow_notice_repeats_total",
	Help: "Security notices sent again after an attempt whose delivery is not known (same Message-ID).",
})

// ObserveStep records one audit row's step ("<event>/<step>[#n][@attempt]").
// Event names outside known are counted as "other" to keep labels bounded.
func ObserveStep(auditStep, outcome string, known func(string) bool) {
	event, step, _ := strings.Cut(auditStep, "/")
	if i := strings.IndexAny(step, "#@"); i >= 0 {
		step = step[:i]
	}
	if event == "crm-sync" {
		// A user's CRM syncs are audited per state version (v1, v2, …):
		// one label for all of them keeps the set bounded.
		step = "sync"
	}
	if known != nil && !known(event) {
		event = "other"
	}
	Steps.WithLabelValues(event, step, outcome).Inc()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// code is the status answered: 200 when the handler wrote nothing.
func (r *statusRecorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Instrument counts a route's answers and their latency.
// It also keeps the route's time since the last accepted delivery
// (setflow_ingress_seconds_since_last_delivery), which starts counting when
// the route is instrumented.
func Instrument(route string, h http.Handler) http.Handler {
	last := sinceLastDelivery.route(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		status := rec.code()
		Deliveries.WithLabelValues(route, strconv.Itoa(status)).Inc()
		if status >= 200 && status < 300 {
			last.Store(sinceLastDelivery.now().UnixNano())
		}
		DeliverySeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// CodecRequests counts the codec server's answers by operation and status:
// a run of 401s is someone without the token, 400s on decode are payloads
// of a key the server's ring lacks (a rotation that dropped a key too early).
var CodecRequests = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "setflow_codec_requests_total",
	Help: "Codec server requests by operation (encode, decode, preflight, other) and HTTP status answered.",
}, []string{"op", "status"})

// InstrumentCodec counts the codec server's answers (CodecRequests).
func InstrumentCodec(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		op := "other"
		switch {
		case r.Method == http.MethodOptions:
			op = "preflight"
		case strings.HasSuffix(r.URL.Path, "/decode"):
			op = "decode"
		case strings.HasSuffix(r.URL.Path, "/encode"):
			op = "encode"
		}
		CodecRequests.WithLabelValues(op, strconv.Itoa(rec.code())).Inc()
	})
}

// Serve exposes /metrics on addr until ctx ends; an empty addr serves nothing.
func Serve(ctx context.Context, log *slog.Logger, addr string) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	// Bind before saying so: "listening" means a scraper can connect.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("metrics server stopped", "error", err)
		return
	}
	log.Info("metrics listening", "addr", addr)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "error", err)
		}
	}()
}
