package activities

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/servicehook"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// notify_service sends the event, the step's key and the user's resulting
// state, signed so that servicehook verifies it; the receiver's answers are
// classified like the CRM webhook's.
func TestNotifyServiceSendsASignedDocumentWithTheState(t *testing.T) {
	store := statedb.NewMemory()
	hasher := audit.SubjectHasher{Key: []byte("k")}
	at := time.Now().UTC().Truncate(time.Second).Add(-time.Minute)
	yes := true
	sub := userstate.Subject{Hash: hasher.Hash("iss", "k1"), Issuer: "iss", UserID: "k1"}
	if _, err := store.Apply(context.Background(), sub, "e1", func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, userstate.Change{Time: at, Now: at, Lock: &yes})
	}); err != nil {
		t.Fatal(err)
	}
	secret := []byte("hook-secret")
	var mu sync.Mutex
	var got []servicehook.Document
	status := http.StatusNoContent
	srv := httptest.NewServer(servicehook.Handler(secret, func(r *http.Request, d servicehook.Document) error {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get(servicehook.HeaderIdempotencyKey) != d.IdempotencyKey {
			t.Errorf("header key %q, body key %q", r.Header.Get(servicehook.HeaderIdempotencyKey), d.IdempotencyKey)
		}
		got = append(got, d)
		return nil
	}))
	defer srv.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status != http.StatusNoContent {
			w.WriteHeader(status)
			return
		}
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer front.Close()
	a := &Activities{Backends: Backends{States: store, Subjects: hasher, ServiceHook: &crm.Webhook{URL: front.URL, Secret: secret},
		Accounts: fixedMapper{ids: map[string][]string{"k1": {"acct-1", "acct-2"}}}}}
	in := reaction.StepInput{IdempotencyKey: "evt-1/account-disabled/notify_service", EventKey: "evt-1",
		Event: event.Event{Type: "https://schemas.openid.net/secevent/risc/event-type/account-disabled", Name: "account-disabled",
			Time: at, Subject: event.Subject{Issuer: "iss", UserID: "k1"}, Payload: []byte(`{"reason":"hijacking"}`)}}
	res, err := a.NotifyService(context.Background(), in)
	if err != nil || res.Outcome != reaction.OutcomeDone {
		t.Fatalf("notify: %+v %v", res, err)
	}
	if len(got) != 1 {
		t.Fatalf("received %d documents", len(got))
	}
	d := got[0]
	if d.Type != servicehook.TypeUserEvent || d.IdempotencyKey != in.IdempotencyKey || d.Event.Name != "account-disabled" ||
		d.Event.KakaoUserID != "k1" || !reflect.DeepEqual(d.AccountIDs, []string{"acct-1", "acct-2"}) ||
		d.State == nil || !d.State.Locked || !d.State.Known || d.State.Version != 1 || string(d.Event.Payload) != `{"reason":"hijacking"}` {
		t.Fatalf("document: %+v state %+v", d, d.State)
	}
	for _, c := range []struct {
		status    int
		retryable bool
	}{{http.StatusServiceUnavailable, true}, {http.StatusTooManyRequests, true}, {http.StatusBadRequest, false}, {http.StatusNotFound, false}} {
		status = c.status
		_, err := a.NotifyService(context.Background(), in)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.NonRetryable() == c.retryable {
			t.Errorf("answer %d: %v, want retryable=%v", c.status, err, c.retryable)
		}
	}
	a.ServiceHook = nil
	if res, _ := a.NotifyService(context.Background(), in); res.Outcome != reaction.OutcomeSkipped {
		t.Fatalf("unconfigured: %+v", res)
	}
}
