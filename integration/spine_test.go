package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
)

// A signed account-disabled SET is answered 202, and its reaction revokes the
// user's sessions that existed when the event happened — not the ones created
// after it, nor other users' — and leaves an audit trail without the user id.
func TestSETRevokesSessionsAndAudits(t *testing.T) {
	s := newStack(t)
	s.start()
	now := time.Now()
	s.insertSession("old", "701541", now.Add(-time.Hour))
	s.insertSession("later", "701541", now.Add(time.Hour)) // signed in again after the event
	s.insertSession("other", "999", now.Add(-time.Hour))

	jti, status, body := s.send(simulator.SET{UserID: "701541", EventType: "account-disabled",
		Fields: map[string]any{"reason": "hijacking"}, IssuedAt: now})
	if status != http.StatusAccepted || body != "" {
		t.Fatalf("got %d %q, want 202 with empty body", status, body)
	}
	key := ingress.SETKey(jti)
	res := s.waitReaction(key)
	if res.SessionsRevoked != 1 || res.Events != 1 {
		t.Fatalf("reaction result %+v, want 1 event and 1 session revoked", res)
	}
	if !s.revoked("old") || s.revoked("later") || s.revoked("other") {
		t.Fatalf("revoked old=%v later=%v other=%v, want true false false",
			s.revoked("old"), s.revoked("later"), s.revoked("other"))
	}
	recs, err := s.Audit.ForEvent(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	var revocation map[string]any
	for _, r := range recs {
		steps = append(steps, r.Step+"="+r.Outcome)
		if strings.Contains(r.SubjectHash, "701541") || r.SubjectHash == "" {
			t.Errorf("audit subject %q must be a non-empty hash, not the user id", r.SubjectHash)
		}
		if r.Step == "account-disabled/revoke_sessions" {
			revocation = r.Detail
		}
	}
	// No email address is on file and no mailer is configured: the notice is
	// skipped, not failed. The revocation runs beside the state change, so
	// its row may come before or after lock_account.
	want := []string{"account-disabled/received=received", "account-disabled/revoke_sessions=done",
		"account-disabled/lock_account=done", "account-disabled/send_notice=skipped", completed("account-disabled")}
	if !sameTrail(steps, want) {
		t.Fatalf("audit steps %s, want %s", strings.Join(steps, ","), strings.Join(want, ","))
	}
	if revocation["revoked"] != float64(1) {
		t.Fatalf("revocation audit detail %v, want revoked=1", revocation)
	}
	waitFor(t, "inbox entry dispatched", func() bool { return s.inboxStatus(key).Status == inbox.StatusDispatched })
}

// A user-linked event changes no session; it marks the user linked and is
// audited. The desired CRM contact changed, so its crm_upsert asks for a sync
// (which finds no CRM configured).
func TestUserLinkedKeepsSessionsAndMarksLinked(t *testing.T) {
	s := newStack(t)
	s.start()
	s.insertSession("keep", "42", time.Now().Add(-time.Hour))
	jti, status, _ := s.send(simulator.SET{UserID: "42", EventType: "user-linked"})
	if status != http.StatusAccepted {
		t.Fatalf("status %d", status)
	}
	res := s.waitReaction(ingress.SETKey(jti))
	if res.SessionsRevoked != 0 || s.revoked("keep") {
		t.Fatalf("user-linked revoked sessions: %+v", res)
	}
	s.expectAudit(ingress.SETKey(jti), "user-linked/received=received", "user-linked/mark_linked=done",
		"user-linked/cancel_purge=skipped", "user-linked/crm_upsert=done", completed("user-linked"))
	p, err := profile.NewStore(s.DB).Get(t.Context(), profile.Key{Issuer: testIssuer, UserID: "42"})
	if err != nil || !p.Linked.Bool {
		t.Fatalf("profile %+v %v, want linked", p, err)
	}
	e := s.inboxStatus(ingress.SETKey(jti))
	if e.Envelope.Events[0].Type != secevent.PrefixOAuth+"user-linked" || e.Envelope.Source != event.SourceSET {
		t.Fatalf("stored envelope %+v", e.Envelope)
	}
}

// The same SET delivered several times — before and after its reaction ran —
// is answered 202 each time, stored once and applied once, by the user's one
// stream.
func TestDuplicateSETRunsOnce(t *testing.T) {
	s := newStack(t)
	s.start()
	s.insertSession("s1", "7", time.Now().Add(-time.Hour))
	claims, err := simulator.SET{Issuer: testIssuer, Audience: testAudience, UserID: "7", EventType: "session-revoked"}.Claims()
	if err != nil {
		t.Fatal(err)
	}
	token, err := s.Key.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	key := ingress.SETKey(claims["jti"].(string))
	for i := range 3 {
		if status, body := s.post(token); status != http.StatusAccepted {
			t.Fatalf("delivery %d: %d %s", i, status, body)
		}
	}
	s.waitReaction(key)
	waitFor(t, "inbox entry dispatched", func() bool { return s.inboxStatus(key).Status == inbox.StatusDispatched })
	// Once more after the reaction completed: still accepted, still one run.
	if status, _ := s.post(token); status != http.StatusAccepted {
		t.Fatalf("late duplicate: %d", status)
	}
	var rows int
	if err := s.DB.Get(&rows, `SELECT count(*) FROM setflow_inbox`); err != nil || rows != 1 {
		t.Fatalf("inbox rows %d (%v), want 1", rows, err)
	}
	if n := s.streamRuns("7"); n != 1 {
		t.Fatalf("%d runs of the user's stream, want 1", n)
	}
	if n := s.runsOf(key); n != 0 {
		t.Fatalf("%d reaction workflows for an event about a user, want none", n)
	}
	if got := s.auditSteps(key); got != "session-revoked/received=received,session-revoked/revoke_sessions=done,"+completed("session-revoked") {
		t.Fatalf("audit %s, want each step once", got)
	}
}

// While Temporal is down the ingress still answers 202 and keeps the event;
// when Temporal comes back the relay delivers it and the reaction runs.
func TestTemporalDownThenUp(t *testing.T) {
	s := newStack(t)
	hostPort := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.startRelay(hostPort) // nothing listens there yet
	s.insertSession("s", "55", time.Now().Add(-time.Hour))

	start := time.Now()
	jti, status, _ := s.send(simulator.SET{UserID: "55", EventType: "user-unlinked",
		Fields: map[string]any{"reason": "UNLINK_FROM_SERVICE"}})
	if status != http.StatusAccepted {
		t.Fatalf("status %d while Temporal is down, want 202", status)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("answer took %v, beyond Kakao's 3 s", d)
	}
	key := ingress.SETKey(jti)
	waitFor(t, "a failed delivery attempt", func() bool {
		e := s.inboxStatus(key)
		return e.Attempts >= 1 && e.Status == inbox.StatusPending
	})
	srv := startTemporalAt(t, hostPort)
	s.startWorker(srv.Client())
	res := s.waitReaction(key)
	if res.SessionsRevoked != 1 || !s.revoked("s") {
		t.Fatalf("after restart: %+v revoked=%v", res, s.revoked("s"))
	}
	waitFor(t, "inbox entry dispatched", func() bool { return s.inboxStatus(key).Status == inbox.StatusDispatched })
}

// A forged SET is refused with RFC 8935's error body and stores nothing.
func TestForgedSETStoresNothing(t *testing.T) {
	s := newStack(t)
	other, err := simulator.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other.KID = s.Key.KID // same kid, different key
	claims, _ := simulator.SET{Issuer: testIssuer, Audience: testAudience, UserID: "1", EventType: "account-purged"}.Claims()
	token, _ := other.Sign(claims)
	status, body := s.post(token)
	if status != http.StatusBadRequest || !strings.Contains(body, `"err":"authentication_failed"`) {
		t.Fatalf("got %d %s, want 400 authentication_failed", status, body)
	}
	var rows int
	if err := s.DB.Get(&rows, `SELECT count(*) FROM setflow_inbox`); err != nil || rows != 0 {
		t.Fatalf("inbox rows %d (%v), want 0", rows, err)
	}
}
