package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/tracing"
	"github.com/setflow/setflow/workflows"
)

type capturingInbox struct{ got []inbox.Entry }

func (c *capturingInbox) Put(_ context.Context, e inbox.Entry) (bool, error) {
	c.got = append(c.got, e)
	return true, nil
}
func (c *capturingInbox) ReceivedAfter(context.Context, string, time.Time) (bool, error) {
	return false, nil
}

type capturingStarter struct{ ctxs []context.Context }

func (s *capturingStarter) ExecuteWorkflow(ctx context.Context, _ client.StartWorkflowOptions, _ any, _ ...any) (client.WorkflowRun, error) {
	s.ctxs = append(s.ctxs, ctx)
	return nil, nil
}
func (s *capturingStarter) SignalWithStartWorkflow(ctx context.Context, _, _ string, _ any, _ client.StartWorkflowOptions, _ any, _ ...any) (client.WorkflowRun, error) {
	s.ctxs = append(s.ctxs, ctx)
	return nil, nil
}

// TestTracingFollowsAnEventAcrossTheInbox: with SETFLOW_OTLP_ENDPOINT set,
// a delivery's span (named by its fixed route, never a client-chosen path)
// is stored with the event as a traceparent, and the relay's hand-off to
// Temporal continues that trace (the tracing interceptor then carries it
// into the workflow and its activities). With tracing off nothing is
// wrapped and no traceparent is stored.
func TestTracingFollowsAnEventAcrossTheInbox(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))

	t.Cleanup(func() { tracingOn.Store(false) })
	t.Run("off", func(t *testing.T) {
		tracingOn.Store(false)
		in := &capturingInbox{}
		if _, ok := withTracedInbox(in).(*capturingInbox); !ok {
			t.Fatal("inbox wrapped with tracing off")
		}
		var opts client.Options
		if err := addTracingInterceptor(&opts); err != nil || len(opts.Interceptors) != 0 {
			t.Fatalf("interceptors with tracing off: %d (%v)", len(opts.Interceptors), err)
		}
	})

	tracingOn.Store(true)
	in := &capturingInbox{}
	w := withTracedInbox(in)
	h := tracedHandler(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, _ = w.Put(r.Context(), inbox.Entry{Envelope: event.Envelope{Key: "set:1"}})
		rw.WriteHeader(http.StatusAccepted)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, ingress.PathAccountStatus, nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/user/1234567?id=42", nil))

	spans := rec.Ended()
	if len(spans) != 2 || spans[0].Name() != "POST "+ingress.PathAccountStatus || spans[1].Name() != "GET other" {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name())
		}
		t.Fatalf("spans %q, want the webhook route and \"other\"", names)
	}
	if len(in.got) != 2 || in.got[0].Envelope.TraceParent == "" {
		t.Fatalf("stored entries %+v: want a traceparent", in.got)
	}
	traceID := spans[0].SpanContext().TraceID()

	var opts client.Options
	if err := addTracingInterceptor(&opts); err != nil || len(opts.Interceptors) != 1 {
		t.Fatalf("interceptors with tracing on: %d (%v)", len(opts.Interceptors), err)
	}
	st := &capturingStarter{}
	s := withTracedStarter(st)
	env := in.got[0].Envelope
	_, _ = s.SignalWithStartWorkflow(context.Background(), "id", workflows.SignalEvent, workflows.StreamEvent{Envelope: env},
		client.StartWorkflowOptions{}, workflows.UserStream)
	_, _ = s.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{}, workflows.Reaction, env)
	for i, ctx := range st.ctxs {
		if got := trace.SpanContextFromContext(ctx).TraceID(); got != traceID {
			t.Errorf("hand-off %d: trace %s, want the delivery's %s", i, got, traceID)
		}
	}
	if len(st.ctxs) != 2 {
		t.Fatalf("%d hand-offs, want 2", len(st.ctxs))
	}
}
