package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/relay"
	"github.com/setflow/setflow/tracing"
	"github.com/setflow/setflow/workflows"
)

// flushTracing flushes pending spans when the command ends (set by
// startTracing; a no-op while tracing is off).
var flushTracing = func() {}

// tracingOn is set by startTracing once traces are exported: the handler,
// inbox, relay and Temporal client are wrapped only then.
var tracingOn atomic.Bool

func tracingEnabled() bool { return tracingOn.Load() }

// startTracing turns on OpenTelemetry tracing when SETFLOW_OTLP_ENDPOINT is
// set (config.Tracing, see package tracing); a failure to set it up is
// logged, never fatal.
func startTracing(ctx context.Context, log *slog.Logger, service string, cfg config.Tracing) {
	if cfg.Endpoint == "" {
		return
	}
	shutdown, err := tracing.Setup(ctx, service, cfg.Endpoint, cfg.SampleRatio)
	if err != nil {
		log.Error("tracing off: cannot set up the OTLP exporter", "error", err)
		return
	}
	tracingOn.Store(true)
	log.Info("tracing on", "service", service)
	flushTracing = func() {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdown(fctx)
	}
}

// serviceName is "setflow-<command>" for a flag set named "setflow <command>".
func serviceName(flagSetName string) string { return strings.ReplaceAll(flagSetName, " ", "-") }

// addTracingInterceptor adds Temporal's tracing interceptor to opts when
// tracing is on: the relay's starts and signals carry the trace into the
// workflow, and the worker's workflow and activity spans continue it.
func addTracingInterceptor(opts *client.Options) error {
	if !tracingEnabled() {
		return nil
	}
	i, err := tracing.TemporalInterceptor()
	if err != nil {
		return err
	}
	opts.Interceptors = append(opts.Interceptors, i)
	return nil
}

// webhookRoutes are the span names the ingress uses: the fixed webhook
// paths, and "other" for anything else (never a path a client chose).
var webhookRoutes = map[string]bool{ingress.PathAccountStatus: true, ingress.PathUnlink: true,
	ingress.PathTalkShare: true, ingress.PathTalkChannel: true}

// tracedHandler starts a span per webhook delivery when tracing is on.
func tracedHandler(h http.Handler) http.Handler {
	if !tracingEnabled() {
		return h
	}
	return tracing.Handler(func(r *http.Request) string {
		if webhookRoutes[r.URL.Path] {
			return r.URL.Path
		}
		return "other"
	}, h)
}

// tracedInbox stores the delivery's traceparent with the event, so that the
// relay, another process, can continue the trace.
type tracedInbox struct{ inbox.Writer }

func (t tracedInbox) Put(ctx context.Context, e inbox.Entry) (bool, error) {
	if e.Envelope.TraceParent == "" {
		e.Envelope.TraceParent = tracing.TraceParent(ctx)
	}
	return t.Writer.Put(ctx, e)
}

func withTracedInbox(w inbox.Writer) inbox.Writer {
	if !tracingEnabled() {
		return w
	}
	return tracedInbox{w}
}

// tracedStarter continues an event's stored trace when the relay hands it
// to Temporal (the tracing interceptor then propagates it in the headers).
type tracedStarter struct{ relay.Starter }

func (s tracedStarter) SignalWithStartWorkflow(ctx context.Context, workflowID, signalName string, signalArg any,
	options client.StartWorkflowOptions, workflow any, workflowArgs ...any) (client.WorkflowRun, error) {
	if se, ok := signalArg.(workflows.StreamEvent); ok {
		ctx = tracing.WithTraceParent(ctx, se.Envelope.TraceParent)
	}
	return s.Starter.SignalWithStartWorkflow(ctx, workflowID, signalName, signalArg, options, workflow, workflowArgs...)
}

func (s tracedStarter) ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow any,
	args ...any) (client.WorkflowRun, error) {
	if len(args) > 0 {
		if env, ok := args[0].(event.Envelope); ok {
			ctx = tracing.WithTraceParent(ctx, env.TraceParent)
		}
	}
	return s.Starter.ExecuteWorkflow(ctx, options, workflow, args...)
}

func withTracedStarter(s relay.Starter) relay.Starter {
	if !tracingEnabled() {
		return s
	}
	return tracedStarter{s}
}
