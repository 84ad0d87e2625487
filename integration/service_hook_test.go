package integration

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/servicehook"
	"github.com/setflow/setflow/simulator"
)

// serviceReceiver is a service's notify_service endpoint (servicehook.Handler)
// that logs each delivery and holds the first one for a while.
type serviceReceiver struct {
	mu   sync.Mutex
	hold time.Duration
	log  []serviceDelivery
}

type serviceDelivery struct {
	key        string
	version    int64
	locked     bool
	start, end time.Time
}

func (s *serviceReceiver) handle(r *http.Request, d servicehook.Document) error {
	got := serviceDelivery{key: d.IdempotencyKey, start: time.Now()}
	if d.State != nil {
		got.version, got.locked = d.State.Version, d.State.Locked
	}
	s.mu.Lock()
	hold := s.hold
	s.hold = 0
	s.mu.Unlock()
	select {
	case <-time.After(hold):
	case <-r.Context().Done():
	}
	got.end = time.Now()
	s.mu.Lock()
	s.log = append(s.log, got)
	s.mu.Unlock()
	return nil
}

func (s *serviceReceiver) deliveries() []serviceDelivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]serviceDelivery(nil), s.log...)
}

// The service gets a user's documents one at a time, each with the state
// when sent, so the versions it sees never go back: here the first
// document (the lock) is held three seconds by the service, and the unlock
// that follows a second later waits for it instead of overtaking it.
func TestServiceHookOneDocumentAtATimePerUser(t *testing.T) {
	secret := []byte("service-hook-secret")
	recv := &serviceReceiver{hold: 3 * time.Second}
	srv := httptest.NewServer(servicehook.Handler(secret, recv.handle))
	t.Cleanup(srv.Close)
	pol, err := policy.Parse([]byte(`
version: 1
events:
  account-disabled:
    steps: [lock_account, notify_service]
  account-enabled:
    steps: [unlock_account, notify_service]
`))
	if err != nil {
		t.Fatal(err)
	}
	s := newStreamStack(t, 0, func(a *activities.Activities) {
		a.Policy = pol
		a.ServiceHook = &crm.Webhook{URL: srv.URL, Secret: secret}
	})
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	lock := s.deliverSET(simulator.SET{UserID: "9101", EventType: "account-disabled", IssuedAt: at})
	unlock := s.deliverSET(simulator.SET{UserID: "9101", EventType: "account-enabled", IssuedAt: at.Add(time.Second)})
	s.waitReaction(lock)
	s.waitReaction(unlock)

	got := recv.deliveries()
	if len(got) != 2 {
		t.Fatalf("%d documents, want 2 (one per event): %+v", len(got), got)
	}
	first, second := got[0], got[1]
	if second.start.Before(first.end) {
		t.Errorf("the second document arrived %v before the first was answered: two of one user's documents in flight",
			first.end.Sub(second.start).Round(time.Millisecond))
	}
	if second.version < first.version {
		t.Errorf("versions went back: %d then %d", first.version, second.version)
	}
	if second.locked {
		t.Errorf("the last document says locked; the user's state is unlocked")
	}
}
