// Package tracing is setflow's optional OpenTelemetry tracing: off unless
// SETFLOW_OTLP_ENDPOINT names an OTLP/HTTP collector. A trace starts when a
// webhook delivery is received, is carried through the inbox as a W3C
// traceparent stored with the event (random ids, never user data), and
// continues from the relay into the workflow and its activities through
// Temporal's tracing interceptor (go.temporal.io/sdk/contrib/opentelemetry).
//
// Span names and attributes are routes, status codes and Temporal's own
// names: never a user id, a query string or a payload.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
)

// name is the instrumentation scope of setflow's own spans.
const name = "github.com/setflow/setflow"

var propagator = propagation.TraceContext{}

// Setup installs the global tracer provider exporting to endpoint (the
// OTLP/HTTP URL, e.g. http://otel-collector.observability:4318; config.Tracing)
// for service (e.g. "setflow-ingress"), keeping ratio (0 to 1) of the traces.
// It returns a shutdown that flushes pending spans. With no endpoint it does
// nothing.
func Setup(ctx context.Context, service, endpoint string, ratio float64) (shutdown func(context.Context) error, err error) {
	if endpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	if ratio < 0 || ratio > 1 {
		return nil, fmt.Errorf("SETFLOW_OTLP_SAMPLE_RATIO=%v: want a number from 0 to 1", ratio)
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("SETFLOW_OTLP_ENDPOINT: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(5*time.Second)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	)
	Install(tp)
	return tp.Shutdown, nil
}

// Install makes tp the provider setflow's spans and the Temporal interceptor
// use (Setup calls it; tests pass an in-memory provider).
func Install(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
}

// TemporalInterceptor is Temporal's tracing interceptor on the global
// provider, for client.Options.Interceptors (workers inherit it).
func TemporalInterceptor() (interceptor.Interceptor, error) {
	return temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{})
}

// Handler starts a server span per request, named by routeOf (which must
// return one of a fixed set of names, e.g. the webhook paths). It does not
// continue a trace the sender proposes: a delivery's trace starts here.
func Handler(routeOf func(*http.Request) string, h http.Handler) http.Handler {
	tracer := otel.Tracer(name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := routeOf(r)
		ctx, span := tracer.Start(r.Context(), r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.route", route), attribute.String("http.request.method", r.Method)))
		defer span.End()
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
		if rec.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.status))
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status  int
	written bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.written {
		w.status, w.written = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(b)
}

// TraceParent is the W3C traceparent of ctx's span, or "" when ctx carries
// no sampled span (tracing off).
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	return carrier["traceparent"]
}

// WithTraceParent returns ctx continuing the trace traceparent names (ctx
// unchanged when it is empty or malformed).
func WithTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}
