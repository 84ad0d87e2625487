// Package temporalmetrics exports the Temporal Go SDK's metrics (requests,
// polls, schedule-to-start latency, task slots, sticky cache, …) through
// setflow's Prometheus registry, next to setflow's own, so one scrape of
// /metrics has both.
//
// The SDK tags the same metric name with different tag sets (a client-level
// counter has no task_queue, a worker-level one does), which a fixed-label
// prometheus.CounterVec cannot hold; the handler is therefore one unchecked
// collector that keeps every series it was given and exports it as a
// constant metric: counters as <name>_total, gauges as <name>, timers as
// histograms of seconds under <name>. Tag values are the SDK's (namespace,
// task queue, workflow and activity type, operation, …), never a payload.
package temporalmetrics

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
)

// Buckets are the timers' histogram bounds in seconds: from a fast poll
// response to a long schedule-to-start wait.
var Buckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// Handler is a client.MetricsHandler and a prometheus.Collector.
type Handler struct {
	reg  *registry
	tags map[string]string
}

// New returns a handler whose series are collected by registering it
// (prometheus.MustRegister(h)).
func New() *Handler { return &Handler{reg: &registry{series: map[string]*series{}}} }

var (
	defaultOnce    sync.Once
	defaultHandler *Handler
)

// Default is one handler registered with prometheus.DefaultRegisterer, for
// every Temporal client of the process.
func Default() *Handler {
	defaultOnce.Do(func() {
		defaultHandler = New()
		prometheus.MustRegister(defaultHandler)
	})
	return defaultHandler
}

var _ client.MetricsHandler = (*Handler)(nil)

// WithTags implements client.MetricsHandler.
func (h *Handler) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(h.tags)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, tags)
	return &Handler{reg: h.reg, tags: merged}
}

// Counter implements client.MetricsHandler.
func (h *Handler) Counter(name string) client.MetricsCounter {
	s := h.reg.get(kindCounter, name, h.tags)
	return counterFunc(func(d int64) { s.add(float64(d)) })
}

// Gauge implements client.MetricsHandler.
func (h *Handler) Gauge(name string) client.MetricsGauge {
	s := h.reg.get(kindGauge, name, h.tags)
	return gaugeFunc(func(v float64) { s.set(v) })
}

// Timer implements client.MetricsHandler.
func (h *Handler) Timer(name string) client.MetricsTimer {
	s := h.reg.get(kindTimer, name, h.tags)
	return timerFunc(func(d time.Duration) { s.observe(d.Seconds()) })
}

type kind int

const (
	kindCounter kind = iota
	kindGauge
	kindTimer
)

// series is one metric name with one tag set.
type series struct {
	kind   kind
	name   string
	keys   []string
	values []string

	mu      sync.Mutex
	value   float64  // counter, gauge
	count   uint64   // timer
	sum     float64  // timer
	buckets []uint64 // timer, per Buckets bound (not cumulative)
	touched atomic.Bool
}

func (s *series) add(d float64) {
	s.mu.Lock()
	s.value += d
	s.mu.Unlock()
	s.touched.Store(true)
}

func (s *series) set(v float64) {
	s.mu.Lock()
	s.value = v
	s.mu.Unlock()
	s.touched.Store(true)
}

func (s *series) observe(v float64) {
	s.mu.Lock()
	s.count++
	s.sum += v
	for i, b := range Buckets {
		if v <= b {
			s.buckets[i]++
			break
		}
	}
	s.mu.Unlock()
	s.touched.Store(true)
}

type registry struct {
	mu     sync.Mutex
	series map[string]*series
}

func (r *registry) get(k kind, name string, tags map[string]string) *series {
	keys := slices.Sorted(maps.Keys(tags))
	var id strings.Builder
	id.WriteString(name)
	id.WriteByte(byte('0' + k))
	for _, key := range keys {
		id.WriteByte(0)
		id.WriteString(key)
		id.WriteByte(0)
		id.WriteString(tags[key])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.series[id.String()]; ok {
		return s
	}
	s := &series{kind: k, name: name, keys: make([]string, len(keys)), values: make([]string, len(keys))}
	for i, key := range keys {
		s.keys[i] = sanitize(key)
		s.values[i] = tags[key]
	}
	if k == kindTimer {
		s.buckets = make([]uint64, len(Buckets))
	}
	r.series[id.String()] = s
	return s
}

// sanitize makes a Prometheus metric or label name of an SDK name.
func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// Describe sends nothing: the collector is unchecked, its series appear as
// the SDK creates them.
func (h *Handler) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (h *Handler) Collect(ch chan<- prometheus.Metric) {
	h.reg.mu.Lock()
	all := slices.Collect(maps.Values(h.reg.series))
	h.reg.mu.Unlock()
	for _, s := range all {
		if !s.touched.Load() {
			continue
		}
		name := sanitize(s.name)
		s.mu.Lock()
		switch s.kind {
		case kindCounter:
			if !strings.HasSuffix(name, "_total") {
				name += "_total"
			}
			d := prometheus.NewDesc(name, "Temporal SDK counter "+s.name+".", s.keys, nil)
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, s.value, s.values...)
		case kindGauge:
			d := prometheus.NewDesc(name, "Temporal SDK gauge "+s.name+".", s.keys, nil)
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, s.value, s.values...)
		case kindTimer:
			cum := make(map[float64]uint64, len(Buckets))
			var running uint64
			for i, b := range Buckets {
				running += s.buckets[i]
				cum[b] = running
			}
			d := prometheus.NewDesc(name, "Temporal SDK timer "+s.name+" in seconds.", s.keys, nil)
			ch <- prometheus.MustNewConstHistogram(d, s.count, s.sum, cum, s.values...)
		}
		s.mu.Unlock()
	}
}

type (
	counterFunc func(int64)
	gaugeFunc   func(float64)
	timerFunc   func(time.Duration)
)

func (f counterFunc) Inc(d int64)          { f(d) }
func (f gaugeFunc) Update(v float64)       { f(v) }
func (f timerFunc) Record(d time.Duration) { f(d) }
