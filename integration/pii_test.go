package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/relay"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// No user id, email, phone number or nickname where operators look: a user's
// reactions whose Kakao API calls (the server takes the request and closes
// the connection) and CRM calls (nothing listens) fail at the transport park,
// and then the audit trail, the inbox's errors and workflow ids, Temporal's
// workflow ids, search attributes and failure messages, the worker's, relay's
// and ingress's logs and the metrics are searched for the user's data.
//
// net/http's errors quote the request URL, and Kakao's user API takes the
// user id in the query (target_id): that text reached the audit detail, the
// inbox's last_error and the worker log (issue 10).
func TestPIINotInAuditInboxWorkflowsLogsOrMetrics(t *testing.T) {
	const (
		user  = "90817263544"
		email = "canary.7741@pii-test.example"
		nick  = "canary-nick-5d02"
		phone = "+82 10-4417-2093"
	)
	secrets := []string{user, email, url.QueryEscape(email), nick, phone, "1044172093"}

	logs := &piiLogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newStack(t)
	s.log = logger

	// The ingress, for SETs and the admin-key webhooks, logging to the buffer.
	jwks := httptest.NewServer(s.Key.JWKSHandler())
	t.Cleanup(jwks.Close)
	v, err := secevent.NewVerifier(secevent.Config{Issuer: testIssuer, Audiences: []string{testAudience},
		Keys: secevent.NewJWKS(testIssuer, secevent.JWKSOptions{URL: jwks.URL})})
	if err != nil {
		t.Fatal(err)
	}
	srv := &ingress.Server{Inbox: s.Inbox, SETs: v, Log: logger, Ready: s.DB.PingContext,
		Kakao: ingress.Kakao{AdminKeys: []string{webhookAdminKey}, AppID: webhookAppID, Issuer: testIssuer, KeyHash: subjects.Key}}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	s.Ingress = ts
	hooks := &webhooks{stack: s, URL: ts.URL}

	// Temporal, with the relay's and the worker's SDK logging to the buffer too.
	dev := testenv.Temporal(t, "")
	sdkLog := tlog.NewStructuredLogger(logger)
	rc, err := client.NewLazyClient(client.Options{HostPort: dev.FrontendHostPort(), Logger: sdkLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	rel := &relay.Relay{Inbox: s.Inbox, Temporal: rc, Log: logger, Poll: 100 * time.Millisecond, Subjects: subjects,
		StartTimeout: 2 * time.Second, Backoff: func(int) time.Duration { return 200 * time.Millisecond }}
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = rel.Run(s.relayCtx) }()
	t.Cleanup(func() { s.stop(); <-relayDone })
	wc, err := client.Dial(client.Options{HostPort: dev.FrontendHostPort(), Namespace: "default", Logger: sdkLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wc.Close)

	// Kakao's API takes each request and closes the connection; nothing
	// listens where the CRM should be.
	var kakaoCalls atomic.Int32
	kakaoSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kakaoCalls.Add(1)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(kakaoSrv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	pol, err := policy.Parse([]byte(`
version: 1
events:
  account-disabled:
    steps:
      - revoke_sessions
      - lock_account
      - kakao_logout
      - crm_upsert
  user-profile-changed:
    steps:
      - refresh_profile: {source: kakao}
      - crm_upsert
`))
	if err != nil {
		t.Fatal(err)
	}
	acts := s.activities()
	acts.Policy = pol
	// Steps and the CRM sync retry transport failures for a few seconds,
	// then park. Applying an event retries for as long as Kakao is away:
	// there its profile read fails for good at once, so the event parks.
	acts.StepRetryFor = 4 * time.Second
	acts.Kakao = profileFailsForGood{&kakaoapi.Client{BaseURL: kakaoSrv.URL, AdminKey: kakaoAdminKey, Timeout: 2 * time.Second}}
	acts.CRM = &crm.HubSpot{BaseURL: closed.URL, Token: crmToken, Timeout: 2 * time.Second}
	s.startWorkerWith(wc, acts)

	// The user's profile, as a day-old change applied by the stream.
	c := userstate.Change{Time: time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Microsecond), Now: time.Now(),
		Fields: map[userstate.Field]string{userstate.Email: email, userstate.Nickname: nick, userstate.Phone: phone}}
	if _, err := statedb.NewStore(s.DB).Apply(context.Background(), subjectOf(user), "seed:pii", func(st userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(st, c)
	}); err != nil {
		t.Fatal(err)
	}
	s.insertSession("pii-session", user, time.Now().Add(-time.Hour))

	// account-disabled: kakao_logout fails until it parks the event; the
	// lock changed the contact, whose sync fails until it parks in the stream.
	disabled := s.deliverSET(simulator.SET{UserID: user, EventType: "account-disabled", Fields: map[string]any{"reason": "hijacking"}})
	// user-profile-changed reads the profile from Kakao: applying it fails.
	changed := s.deliverSET(simulator.SET{UserID: user, EventType: "user-profile-changed"})
	// The unlink webhook is checked with Kakao before it is applied.
	before := time.Now()
	if st := hooks.deliver(simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm,
		Fields: map[string]any{"app_id": webhookAppID, "user_id": user, "referrer_type": "UNLINK_FROM_APPS"}}); st != http.StatusOK {
		t.Fatalf("unlink webhook: %d", st)
	}
	var unlinked string
	if err := s.DB.Get(&unlinked, `SELECT dedupe_key FROM setflow_inbox WHERE source = 'unlink' AND received_at >= $1`,
		before.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}

	for _, key := range []string{disabled, changed, unlinked} {
		waitFor(t, "event "+key+" to park", func() bool { return s.inboxRow(key).Status == "parked" })
		// The park is for a transport failure, not for anything else.
		if r := s.inboxRow(key); !strings.Contains(r.LastError, "kakaoapi") || !strings.Contains(r.LastError, "request failed") {
			t.Fatalf("event %s parked with %q, want a Kakao API transport failure", key, r.LastError)
		}
	}
	waitFor(t, "the crm sync to park", func() bool {
		var n int
		if err := s.DB.Get(&n, `SELECT count(*) FROM setflow_audit WHERE event_key = $1 AND step LIKE 'crm-sync/failed@%'
			AND detail->>'error' LIKE '%crm hubspot%request failed%'`, syncEventKey(user)); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	// Revocation runs in its own coroutine: a park does not wait for it.
	waitFor(t, "the session's revocation", func() bool { return s.revoked("pii-session") })
	if kakaoCalls.Load() == 0 {
		t.Fatal("no call reached the Kakao API stand-in")
	}

	// The search below would find the user: the inbox keeps what Kakao sent.
	var envelopes string
	if err := s.DB.Get(&envelopes, `SELECT string_agg(envelope::text, ' ') FROM setflow_inbox`); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(envelopes, user) {
		t.Fatal("the stored envelopes do not name the user: the search would prove nothing")
	}

	var leaks []string
	check := func(where, text string) {
		for _, v := range secrets {
			if strings.Contains(text, v) {
				leaks = append(leaks, fmt.Sprintf("%s holds %q: %s", where, v, clip(text, v)))
			}
		}
	}

	// Audit rows: every column but the time.
	type auditRow struct {
		EventKey    string `db:"event_key"`
		EventType   string `db:"event_type"`
		SubjectHash string `db:"subject_hash"`
		Step        string `db:"step"`
		Outcome     string `db:"outcome"`
		Detail      string `db:"detail"`
	}
	var rows []auditRow
	if err := s.DB.Select(&rows, `SELECT event_key, event_type, subject_hash, step, outcome, detail::text AS detail FROM setflow_audit ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("no audit rows")
	}
	for _, r := range rows {
		check("audit "+r.EventKey+" "+r.Step, strings.Join([]string{r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome, r.Detail}, " "))
	}

	// Inbox: keys, errors and workflow ids.
	type inboxErr struct {
		Key        string `db:"dedupe_key"`
		LastError  string `db:"last_error"`
		WorkflowID string `db:"workflow_id"`
	}
	var inbox []inboxErr
	if err := s.DB.Select(&inbox, `SELECT dedupe_key, COALESCE(last_error, '') AS last_error, COALESCE(workflow_id, '') AS workflow_id FROM setflow_inbox`); err != nil {
		t.Fatal(err)
	}
	for _, e := range inbox {
		check("inbox "+e.Key, e.Key+" "+e.LastError+" "+e.WorkflowID)
	}

	// Temporal: every workflow's id, type, search attributes and memo, and
	// the failure messages in its history.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var token []byte
	workflows := 0
	for {
		resp, err := wc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{NextPageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, ex := range resp.Executions {
			workflows++
			id := ex.GetExecution().GetWorkflowId()
			check("workflow id", id)
			check("workflow "+id+" search attributes", ex.GetSearchAttributes().String())
			check("workflow "+id+" memo", ex.GetMemo().String())
			check("workflow "+id+" type", ex.GetType().GetName())
			it := wc.GetWorkflowHistory(ctx, id, ex.GetExecution().GetRunId(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					t.Fatal(err)
				}
				if a := ev.GetActivityTaskFailedEventAttributes(); a != nil {
					for f := a.GetFailure(); f != nil; f = f.GetCause() {
						check("workflow "+id+" history: activity failure", f.GetMessage())
					}
				}
				if a := ev.GetWorkflowTaskFailedEventAttributes(); a != nil {
					check("workflow "+id+" history: workflow task failure", a.GetFailure().GetMessage())
				}
				if a := ev.GetUpsertWorkflowSearchAttributesEventAttributes(); a != nil {
					check("workflow "+id+" history: search attributes", a.GetSearchAttributes().String())
				}
			}
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	if workflows == 0 {
		t.Fatal("no workflows listed")
	}

	// Logs of the ingress, relay and worker (setflow's own and the SDK's).
	out := logs.String()
	if !strings.Contains(out, "request failed") {
		t.Fatalf("the captured logs do not show the failures: the search would prove nothing\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		check("log", line)
	}

	// Metrics, as scraped.
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(prometheus.DefaultGatherer, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "setflow_reaction_steps_total") {
		t.Fatalf("metrics scrape: %d\n%s", rec.Code, rec.Body.String())
	}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		check("metrics", line)
	}

	if len(leaks) > 0 {
		t.Fatalf("%d places name the user:\n%s", len(leaks), strings.Join(leaks, "\n"))
	}
}

// clip shows a little of text around v.
func clip(text, v string) string {
	i := strings.Index(text, v)
	from, to := max(0, i-120), min(len(text), i+len(v)+120)
	return text[from:to]
}

// piiLogBuffer collects log output from many goroutines.
type piiLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *piiLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *piiLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// profileFailsForGood is the real client whose profile reads fail for good:
// an event whose application reads the profile parks at the first failure
// instead of retrying for as long as Kakao is away. The error text is the
// client's own.
type profileFailsForGood struct{ *kakaoapi.Client }

func (k profileFailsForGood) Profile(ctx context.Context, userID string) (*kakaoapi.Profile, error) {
	p, err := k.Client.Profile(ctx, userID)
	var e *kakaoapi.APIError
	if errors.As(err, &e) {
		c := *e
		c.CanRetry, c.Delay = false, 0
		return p, &c
	}
	return p, err
}
