package ingress_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/unknowns"
)

// runRecorder records into the test's database and stops with the test.
func runRecorder(t *testing.T, store *unknowns.Postgres) *unknowns.Recorder {
	t.Helper()
	rec := unknowns.NewRecorder(store, nil)
	rec.FlushEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return rec
}

// waitKinds waits until every wanted kind is recorded and returns all rows.
func waitKinds(t *testing.T, store *unknowns.Postgres, want ...unknowns.Kind) []unknowns.Row {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows, err := store.List(context.Background())
		require.NoError(t, err)
		have := map[unknowns.Kind]bool{}
		for _, r := range rows {
			have[r.Kind] = true
		}
		missing := 0
		for _, k := range want {
			if !have[k] {
				missing++
			}
		}
		if missing == 0 {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("recorded %+v, want all of %+v", rows, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func noValues(t *testing.T, rows []unknowns.Row, values ...string) {
	t.Helper()
	for _, r := range rows {
		for _, v := range values {
			if strings.Contains(r.Route+r.Kind.Kind+r.Detail, v) {
				t.Errorf("recorded kind %+v carries the value %q", r.Kind, v)
			}
		}
	}
}

// A SET of an unknown type, an unknown claim, an unknown member of a known
// event, the RFC spelling txn and a redelivery are each recorded once per
// kind — names only, never a value — while every delivery is answered 202.
func TestAccountStatusRecordsUnknownShapes(t *testing.T) {
	var store *unknowns.Postgres
	e := newASEnv(t, func(e *asEnv) {
		store = unknowns.NewPostgres(e.db)
		e.srv.Unknowns = runRecorder(t, store)
	})
	sign := func(set simulator.SET, extra map[string]any) string {
		t.Helper()
		set.Issuer, set.Audience = asIssuer, asAudience
		c, err := set.Claims()
		require.NoError(t, err)
		for k, v := range extra {
			c[k] = v
		}
		tok, err := asKey.Sign(c)
		require.NoError(t, err)
		return tok
	}
	const newType = "https://schemas.openid.net/secevent/risc/event-type/account-frozen"
	known := sign(simulator.SET{UserID: "701541", EventType: "account-disabled",
		Fields: map[string]any{"reason": "hijacking", "severity": "sev-value-9"}}, map[string]any{"txn": "txn-value-7", "region": "region-value-3"})
	for _, tok := range []string{
		sign(simulator.SET{UserID: "701541", EventType: newType}, nil),
		known, known, // the second is a redelivery
	} {
		r := e.post(tok)
		require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	}
	rows := waitKinds(t, store,
		unknowns.Kind{Route: "set", Kind: unknowns.EventType, Detail: newType},
		unknowns.Kind{Route: "set", Kind: unknowns.EventField, Detail: "account-disabled.severity"},
		unknowns.Kind{Route: "set", Kind: unknowns.Claim, Detail: "region"},
		unknowns.Kind{Route: "set", Kind: unknowns.Spelling, Detail: "txn"},
		unknowns.Kind{Route: "set", Kind: unknowns.Redelivered, Detail: "after 202"},
	)
	noValues(t, rows, "701541", "sev-value-9", "txn-value-7", "region-value-3", "hijacking")
	for _, r := range rows {
		if r.Kind.Kind == unknowns.EventField && strings.HasSuffix(r.Detail, ".reason") {
			t.Errorf("a member setflow reads was recorded as unknown: %+v", r.Kind)
		}
	}
}

// A recorder that cannot keep up (not running, queue full) costs a delivery
// nothing: it is still stored and answered.
func TestUnknownsNeverHoldADelivery(t *testing.T) {
	e := newASEnv(t, func(e *asEnv) {
		stuck := unknowns.NewRecorder(unknowns.NewPostgres(e.db), nil) // never run
		for range 5000 {
			stuck.Note(func() []unknowns.Kind { return nil })
		}
		e.srv.Unknowns = stuck
	})
	tok, _ := asValidToken(t)
	r := e.post(tok)
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	require.Equal(t, 1, e.rows())
}

// The admin-key webhooks: members setflow does not read, the Talk Channel's
// older spellings and a repeated unlink are recorded by name.
func TestKakaoWebhooksRecordUnknownShapes(t *testing.T) {
	var store *unknowns.Postgres
	e := newWebhookEnv(t, func(s *ingress.Server) {})
	store = unknowns.NewPostgres(e.DB)
	e.Srv.Unknowns = runRecorder(t, store)

	q := url.Values{"app_id": {appID}, "user_id": {"9001"}, "referrer_type": {"ACCOUNT_DELETE"}, "unlink_reason_code": {"code-value-5"}}.Encode()
	for range 2 {
		expectOK(t, e.do(http.MethodGet, ingress.PathUnlink+"?"+q, "", "", kakaoAuth(adminKey)), "unlink")
	}
	body := `{"event":"added","id":"9002","id_type":"app_user_id","plus_friend_public_id":"_abc","timestamp":1713253997,"channel_grade":"grade-value-1"}`
	expectOK(t, e.do(http.MethodPost, ingress.PathTalkChannel, "application/json", body, kakaoAuth(adminKey), "X-Kakao-Resource-ID: rc-1"), "talk channel")

	rows := waitKinds(t, store,
		unknowns.Kind{Route: "unlink", Kind: unknowns.Field, Detail: "unlink_reason_code"},
		unknowns.Kind{Route: "unlink", Kind: unknowns.Redelivered, Detail: "after 200"},
		unknowns.Kind{Route: "talk-channel", Kind: unknowns.Field, Detail: "channel_grade"},
		unknowns.Kind{Route: "talk-channel", Kind: unknowns.Spelling, Detail: "plus_friend_public_id"},
		unknowns.Kind{Route: "talk-channel", Kind: unknowns.Spelling, Detail: "timestamp"},
	)
	noValues(t, rows, "9001", "9002", "code-value-5", "grade-value-1", "_abc")
}
