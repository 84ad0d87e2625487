package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// VerificationFailures counts webhook deliveries refused with an RFC 8935
// error code (invalid_request, invalid_key, invalid_issuer,
// invalid_audience, authentication_failed, access_denied): a bounded set
// of constants, never text from the request.
var VerificationFailures = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "setflow_set_verification_failures_total",
	Help: "Deliveries refused, by RFC 8935 error code.",
}, []string{"code"})

// JWKSFetches and JWKSFetchFailures count fetches of the issuer's signing
// keys (rate-limited refreshes that did not fetch are not counted).
var (
	JWKSFetches = promauto.NewCounter(prometheus.CounterOpts{
		Name: "setflow_jwks_fetches_total",
		Help: "Successful fetches of the SET issuer's JWKS.",
	})
	JWKSFetchFailures = promauto.NewCounter(prometheus.CounterOpts{
		Name: "setflow_jwks_fetch_failures_total",
		Help: "Failed fetches of the SET issuer's JWKS.",
	})
)

// buildInfo is 1, labelled with the binary's version (SetBuildInfo).
var buildInfo = promauto.NewGaugeVec(prometheus.GaugeOpts{
	Name: "setflow_build_info",
	Help: "Always 1, labelled with the running binary's version.",
}, []string{"version"})

// SetBuildInfo records the running binary's version.
func SetBuildInfo(version string) { buildInfo.WithLabelValues(version).Set(1) }

// lastDelivery keeps, per webhook route, when the last delivery was
// accepted (2xx); a route starts at the process's start, so that a silent
// route shows up as time since start. Routes are the ingress's fixed paths.
type lastDelivery struct {
	mu     sync.Mutex
	routes map[string]*atomic.Int64 // unix nanoseconds
	now    func() time.Time
	desc   *prometheus.Desc
}

var sinceLastDelivery = &lastDelivery{
	routes: map[string]*atomic.Int64{},
	now:    time.Now,
	desc: prometheus.NewDesc("setflow_ingress_seconds_since_last_delivery",
		"Seconds since this process last accepted (2xx) a delivery on the route, or since it started.",
		[]string{"route"}, nil),
}

func init() { prometheus.MustRegister(sinceLastDelivery) }

// route returns the route's clock, starting it at now on first use.
func (l *lastDelivery) route(route string) *atomic.Int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.routes[route]
	if !ok {
		r = new(atomic.Int64)
		r.Store(l.now().UnixNano())
		l.routes[route] = r
	}
	return r
}

func (l *lastDelivery) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

func (l *lastDelivery) Collect(ch chan<- prometheus.Metric) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for route, at := range l.routes {
		s := now.Sub(time.Unix(0, at.Load())).Seconds()
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, max(s, 0), route)
	}
}

// Backlog is the inbox's state, computed from the shared database (every
// replica that reports it reports the same values: aggregate with max).
type Backlog struct {
	// Pending entries are accepted but not yet handed to Temporal.
	Pending int64
	// OldestPendingAge is how long the oldest pending entry has waited
	// (zero when none is pending).
	OldestPendingAge time.Duration
	// Parked entries had a step give up; they wait for `setflow events retry`.
	Parked int64
	// Held counts events or steps held by the blast-radius guard, waiting
	// for an operator's release; nil while no guard reports (then the
	// setflow_held gauge is absent rather than a misleading zero).
	Held *int64
}

// BacklogSource reads the backlog; it is called at most once per
// backlogMinInterval, with a bounded context, on a scrape.
type BacklogSource func(ctx context.Context) (Backlog, error)

// backlogMinInterval spares the database when several Prometheus servers
// (or a quick scrape interval) ask at once.
const backlogMinInterval = 10 * time.Second

type backlogCollector struct {
	mu      sync.Mutex
	source  BacklogSource
	last    Backlog
	lastAt  time.Time
	lastErr error
	now     func() time.Time

	pending, oldest, parked, held *prometheus.Desc
}

var backlog = &backlogCollector{
	now:     time.Now,
	pending: prometheus.NewDesc("setflow_inbox_pending", "Inbox entries accepted and not yet handed to Temporal.", nil, nil),
	oldest: prometheus.NewDesc("setflow_inbox_oldest_pending_age_seconds",
		"Age of the oldest inbox entry not yet handed to Temporal (0 when none).", nil, nil),
	parked: prometheus.NewDesc("setflow_inbox_parked", "Events parked after a step gave up, waiting for an operator.", nil, nil),
	held:   prometheus.NewDesc("setflow_held", "Events or steps held by the blast-radius guard, waiting for an operator.", nil, nil),
}

// BacklogErrors counts failed backlog reads (the gauges are then absent).
var BacklogErrors = promauto.NewCounter(prometheus.CounterOpts{
	Name: "setflow_backlog_read_errors_total",
	Help: "Failed reads of the inbox backlog for the backlog gauges.",
})

func init() { prometheus.MustRegister(backlog) }

// SetBacklogSource makes this process report the backlog gauges
// (setflow_inbox_pending, setflow_inbox_oldest_pending_age_seconds,
// setflow_inbox_parked, and setflow_held when the source fills Held).
func SetBacklogSource(s BacklogSource) {
	backlog.mu.Lock()
	defer backlog.mu.Unlock()
	backlog.source = s
	backlog.lastAt = time.Time{}
}

func (b *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- b.pending
	ch <- b.oldest
	ch <- b.parked
	ch <- b.held
}

func (b *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.source == nil {
		return
	}
	if b.lastAt.IsZero() || b.now().Sub(b.lastAt) >= backlogMinInterval {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b.last, b.lastErr = b.source(ctx)
		cancel()
		b.lastAt = b.now()
		if b.lastErr != nil {
			BacklogErrors.Inc()
		}
	}
	if b.lastErr != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(b.pending, prometheus.GaugeValue, float64(b.last.Pending))
	ch <- prometheus.MustNewConstMetric(b.oldest, prometheus.GaugeValue, b.last.OldestPendingAge.Seconds())
	ch <- prometheus.MustNewConstMetric(b.parked, prometheus.GaugeValue, float64(b.last.Parked))
	if b.last.Held != nil {
		ch <- prometheus.MustNewConstMetric(b.held, prometheus.GaugeValue, float64(*b.last.Held))
	}
}

// Collectors lists every collector this package registers, for tests that
// check names (e.g. that the alert rules name only real metrics).
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{Deliveries, DeliverySeconds, Relayed, Steps, NoticeRepeats, CodecRequests,
		VerificationFailures, JWKSFetches, JWKSFetchFailures, buildInfo, sinceLastDelivery, backlog, BacklogErrors}
}
