package integration

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
	"github.com/setflow/setflow/workflows"
)

// The per-user stream, through the real stack (ingress, inbox, relay, a
// Temporal dev server, worker, PostgreSQL) with a HubSpot-style CRM stand-in:
// each test is one of the delivery orders that gave wrong final states when
// every event ran in its own workflow (issue 8).

// streamStack is a stack with the CRM stand-in and the admin-key webhooks,
// whose unlink dedupe window the test chooses.
type streamStack struct {
	*stack
	hs    *hubSpot
	hooks *webhooks
	acts  *activities.Activities
}

func newStreamStack(t *testing.T, unlinkWindow time.Duration, tune func(*activities.Activities)) *streamStack {
	s := newStack(t)
	srv := &ingress.Server{Inbox: s.Inbox, Log: s.log, Ready: s.DB.PingContext,
		Kakao: ingress.Kakao{AdminKeys: []string{webhookAdminKey}, AppID: webhookAppID, Issuer: testIssuer,
			KeyHash: subjects.Key, UnlinkWindow: unlinkWindow}}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	c := s.temporalStack()
	hs := newHubSpot(t)
	acts := s.activities()
	acts.CRM = hs.client()
	if tune != nil {
		tune(acts)
	}
	s.startWorkerWith(c, acts)
	return &streamStack{stack: s, hs: hs, hooks: &webhooks{stack: s, URL: ts.URL}, acts: acts}
}

// event delivers a SET about user whose event time is at (its iat) and waits
// until all its steps are through.
func (s *streamStack) event(user, eventType string, at time.Time, fields map[string]any) string {
	s.t.Helper()
	key := s.deliverSET(simulator.SET{UserID: user, EventType: eventType, IssuedAt: at, Fields: fields})
	s.waitReaction(key)
	return key
}

// unlinkHook delivers the unlink webhook and waits for it.
func (s *streamStack) unlinkHook(user string) string {
	s.t.Helper()
	before := time.Now()
	if st := s.hooks.deliver(simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm,
		Fields: map[string]any{"app_id": webhookAppID, "user_id": user, "referrer_type": "UNLINK_FROM_APPS"}}); st != http.StatusOK {
		s.t.Fatalf("unlink webhook: %d", st)
	}
	var key string
	if err := s.DB.Get(&key, `SELECT dedupe_key FROM setflow_inbox WHERE source = 'unlink' AND received_at >= $1 ORDER BY id DESC LIMIT 1`,
		before.Add(-time.Second)); err != nil {
		s.t.Fatal(err)
	}
	s.waitReaction(key)
	return key
}

// channel delivers a Talk Channel event and waits for it.
func (s *streamStack) channel(user, resource, ev string, at time.Time) string {
	s.t.Helper()
	d := simulator.Delivery{Path: ingress.PathTalkChannel, ResourceID: resource,
		Fields: map[string]any{"event": ev, "id": user, "id_type": "app_user_id",
			"channel_public_id": "_ZeUTxl", "channel_uuid": "@setflow", "updated_at": at.UTC().Format(time.RFC3339)}}
	if st := s.hooks.deliver(d); st != http.StatusOK {
		s.t.Fatalf("talk channel %s: %d", ev, st)
	}
	key := ingress.TalkChannelKey(resource)
	s.waitReaction(key)
	return key
}

// state reads a user's stored state.
func (s *streamStack) state(user string) statedb.Snapshot {
	s.t.Helper()
	snap, err := statedb.NewStore(s.DB).Get(context.Background(), subjects.Hash(testIssuer, user))
	if err != nil {
		s.t.Fatalf("state of %s: %v", user, err)
	}
	return snap
}

// synced waits until the CRM was synced to the user's current state.
func (s *streamStack) synced(user string) {
	s.t.Helper()
	waitFor(s.t.(*testing.T), "crm sync of "+user, func() bool {
		snap := s.state(user)
		return snap.CRMVersion >= snap.State.Version
	})
}

// purged waits for the user's purge to have run (the audit's purge/run row).
func (s *streamStack) purged(unlinkKey string) {
	s.t.Helper()
	waitFor(s.t.(*testing.T), "purge of "+unlinkKey, func() bool {
		return strings.Contains(s.auditSteps(unlinkKey), "purge/sessions=done")
	})
}

func (s *streamStack) stepOutcome(key, step string) string {
	s.t.Helper()
	for _, kv := range strings.Split(s.auditSteps(key), ",") {
		if k, v, _ := strings.Cut(kv, "="); strings.HasSuffix(k, "/"+step) {
			return v
		}
	}
	return ""
}

func (s *streamStack) expectOutcome(key, step, want string) {
	s.t.Helper()
	if got := s.stepOutcome(key, step); got != want {
		s.t.Fatalf("%s %s = %q, want %q; audit %s", key, step, got, want, s.auditSteps(key))
	}
}

// 1. An older profile change delivered after account-purged stores nothing
// and does not bring the contact back.
func TestStreamOlderProfileChangeAfterPurge(t *testing.T) {
	s := newStreamStack(t, 0, nil)
	now := time.Now().Truncate(time.Second)
	s.seedProfile("8101", "old@example.com", "old")
	s.insertSession("8101-old", "8101", now.Add(-time.Hour))
	s.insertSession("8101-new", "8101", now.Add(time.Hour))
	purged := s.event("8101", "account-purged", now.Add(-10*time.Second), nil)
	s.expectOutcome(purged, "purge_data", "done")
	s.synced("8101")
	if _, ok := s.hs.contact("8101"); ok {
		t.Fatal("crm contact survived account-purged")
	}
	late := s.event("8101", "user-profile-changed", now.Add(-20*time.Second), map[string]any{"email": "back@example.com"})
	s.expectOutcome(late, "refresh_profile", "superseded")
	if o := s.stepOutcome(late, "crm_upsert"); o == "done" {
		t.Fatalf("crm_upsert ran for a change older than the purge")
	}
	s.synced("8101")
	p := s.mustProfile("8101")
	if p.Email.Valid || p.Nickname.Valid {
		t.Fatalf("profile after an older change: %+v", p)
	}
	if _, ok := s.hs.contact("8101"); ok {
		t.Fatal("an older profile change re-created the crm contact")
	}
	if s.sessionCount("8101") != 1 || s.revoked("8101-new") {
		t.Fatal("the purge touched a session created after it")
	}
}

// 2. A user-linked older than an unlink whose purge already ran stays
// superseded: the user ends unlinked.
func TestStreamOlderLinkAfterImmediatePurge(t *testing.T) {
	s := newStreamStack(t, 0, func(a *activities.Activities) { a.PurgeAfter = 0 })
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	s.seedProfile("8201", "p@example.com", "p")
	unlink := s.event("8201", "user-unlinked", t0.Add(20*time.Second), nil)
	s.purged(unlink)
	link := s.event("8201", "user-linked", t0, nil)
	s.expectOutcome(link, "mark_linked", "superseded")
	s.expectOutcome(link, "cancel_purge", "superseded")
	if p := s.mustProfile("8201"); !p.Linked.Valid || p.Linked.Bool || p.Email.Valid {
		t.Fatalf("after an older link: linked %v email %v", p.Linked, p.Email)
	}
	s.synced("8201")
	if _, ok := s.hs.contact("8201"); ok {
		t.Fatal("crm contact exists after the purge")
	}
}

// 3. An older user-linked neither cancels a newer unlink's pending purge nor
// counts as done; an older scope withdrawal delivered after a re-consent and
// a newer email leaves the email in the profile and the CRM.
func TestStreamSupersededLinkAndWithdraw(t *testing.T) {
	s := newStreamStack(t, 0, func(a *activities.Activities) { a.PurgeAfter = time.Hour })
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	unlink := s.event("8301", "user-unlinked", t0.Add(20*time.Second), nil)
	s.expectOutcome(unlink, "schedule_purge", "done")
	link := s.event("8301", "user-linked", t0, nil)
	s.expectOutcome(link, "mark_linked", "superseded")
	s.expectOutcome(link, "cancel_purge", "superseded")
	st := s.state("8301").State
	if st.Purge == nil || !st.Purge.Cutoff.Equal(t0.Add(20*time.Second).UTC()) {
		t.Fatalf("pending purge after an older link: %+v", st.Purge)
	}

	s.event("8302", "user-scope-consent", t0.Add(30*time.Second), map[string]any{"scopes": []string{"account_email"}})
	s.event("8302", "user-profile-changed", t0.Add(30*time.Second), map[string]any{"email": "kept@example.com"})
	withdraw := s.event("8302", "user-scope-withdraw", t0.Add(10*time.Second), map[string]any{"scopes": []string{"account_email"}})
	s.expectOutcome(withdraw, "update_consents", "superseded")
	if o := s.stepOutcome(withdraw, "crm_delete_fields"); o == "done" {
		t.Fatal("crm_delete_fields ran for a superseded withdrawal")
	}
	s.synced("8302")
	if p := s.mustProfile("8302"); p.Email.String != "kept@example.com" {
		t.Fatalf("email after an older withdrawal: %v", p.Email)
	}
	if ct, _ := s.hs.contact("8302"); ct["email"] != "kept@example.com" {
		t.Fatalf("crm after an older withdrawal: %v", ct)
	}
}

// 4. A delayed unlink webhook (its time is the receipt time) after a newer
// re-link: with an admin key, Kakao's user API says the user is linked, so
// nothing is revoked or purged; without one, the purge spares the sessions
// created after its cutoff.
func TestStreamDelayedUnlinkWebhookAfterRelink(t *testing.T) {
	kakao := newKakaoAPI(t, map[string]kakaoUser{"8401": {Email: "k@example.com", Nickname: "k"}})
	s := newStreamStack(t, 0, func(a *activities.Activities) { a.PurgeAfter, a.Kakao = 0, kakao.client() })
	now := time.Now().Truncate(time.Second)
	s.seedProfile("8401", "k@example.com", "k")
	s.event("8401", "user-linked", now.Add(-30*time.Second), nil)
	s.insertSession("8401-after-relink", "8401", now.Add(-10*time.Second))
	hook := s.unlinkHook("8401")
	s.expectOutcome(hook, "revoke_sessions", "superseded")
	s.expectOutcome(hook, "mark_unlinked", "superseded")
	s.expectOutcome(hook, "schedule_purge", "superseded")
	if s.revoked("8401-after-relink") || s.sessionCount("8401") != 1 {
		t.Fatal("a stale unlink webhook ended the re-linked user's session")
	}
	if p := s.mustProfile("8401"); !p.Linked.Bool || p.Email.String != "k@example.com" {
		t.Fatalf("profile after a stale unlink webhook: %+v", p)
	}
	if st := s.state("8401").State; st.Purge != nil || st.Tombstone != nil {
		t.Fatalf("stale unlink webhook left purge %+v tombstone %+v", st.Purge, st.Tombstone)
	}

	// Without Kakao's API the webhook counts at its receipt time, but the
	// purge deletes no session created after that.
	s2 := newStreamStack(t, 0, func(a *activities.Activities) { a.PurgeAfter = 0 })
	s2.event("8402", "user-linked", now.Add(-30*time.Second), nil)
	s2.insertSession("8402-before", "8402", now.Add(-10*time.Second))
	s2.insertSession("8402-later", "8402", now.Add(time.Hour))
	hook2 := s2.unlinkHook("8402")
	s2.purged(hook2)
	if s2.sessionCount("8402") != 1 || s2.revoked("8402-later") {
		t.Fatal("the purge deleted or revoked a session created after its cutoff")
	}
}

// 5. unlink → re-link → unlink: the second unlink is a new fact. It is stored
// (a repeat only within the window), applied, and its purge runs with its own
// cutoff.
func TestStreamUnlinkRelinkUnlink(t *testing.T) {
	const window = 500 * time.Millisecond
	s := newStreamStack(t, window, func(a *activities.Activities) { a.PurgeAfter = 4 * time.Second })
	s.seedProfile("8501", "u@example.com", "u")
	first := s.unlinkHook("8501")
	time.Sleep(1100 * time.Millisecond) // the re-link happens after the first unlink (second precision)
	link := s.event("8501", "user-linked", time.Now(), nil)
	s.expectOutcome(link, "cancel_purge", "done")
	time.Sleep(window + 100*time.Millisecond)
	second := s.unlinkHook("8501")
	if second == first {
		t.Fatal("the second unlink was taken for a repeat of the first")
	}
	s.expectOutcome(second, "mark_unlinked", "done")
	s.expectOutcome(second, "schedule_purge", "done")
	s.purged(second)
	if strings.Contains(s.auditSteps(first), "purge/sessions") {
		t.Fatal("the first unlink's cancelled purge ran")
	}
	if p := s.mustProfile("8501"); p.Linked.Bool || p.Email.Valid {
		t.Fatalf("after the second unlink's purge: %+v", p)
	}
	s.synced("8501")
	if _, ok := s.hs.contact("8501"); ok {
		t.Fatal("crm contact survived the purge")
	}
}

// 6. A withdrawal of account_email, then an older profile change with an
// email: the email is stored neither in the profile nor in the CRM.
func TestStreamOlderEmailAfterWithdrawal(t *testing.T) {
	s := newStreamStack(t, 0, nil)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	s.event("8601", "user-profile-changed", t0, map[string]any{"nickname": "n"})
	s.event("8601", "user-scope-withdraw", t0.Add(20*time.Second), map[string]any{"scopes": []string{"account_email"}})
	late := s.event("8601", "user-profile-changed", t0.Add(10*time.Second), map[string]any{"email": "late@example.com"})
	s.expectOutcome(late, "refresh_profile", "superseded")
	s.synced("8601")
	if p := s.mustProfile("8601"); p.Email.Valid || p.Nickname.String != "n" {
		t.Fatalf("profile: %+v", p)
	}
	if ct, _ := s.hs.contact("8601"); ct["email"] != "" || ct["firstname"] != "n" {
		t.Fatalf("crm: %v", ct)
	}
}

// 7. Each profile field has its own time: an older nickname-only change after
// a newer email change is applied.
func TestStreamPerFieldTimes(t *testing.T) {
	s := newStreamStack(t, 0, nil)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	s.event("8701", "user-profile-changed", t0.Add(20*time.Second), map[string]any{"email": "new@example.com"})
	older := s.event("8701", "user-profile-changed", t0, map[string]any{"nickname": "nick"})
	s.expectOutcome(older, "refresh_profile", "done")
	s.synced("8701")
	if p := s.mustProfile("8701"); p.Email.String != "new@example.com" || p.Nickname.String != "nick" {
		t.Fatalf("profile: %+v", p)
	}
	if ct, _ := s.hs.contact("8701"); ct["email"] != "new@example.com" || ct["firstname"] != "nick" {
		t.Fatalf("crm: %v", ct)
	}
}

// 8. Talk Channel added is still being sent to the CRM (its write fails and
// is retried) when the newer blocked is applied: the CRM ends unsubscribed.
func TestStreamChannelBlockedWinsOverInFlightAdded(t *testing.T) {
	s := newStreamStack(t, 0, nil)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	s.hs.script("8801", crmAnswer{Status: http.StatusServiceUnavailable})
	s.channel("8801", "ch-8801-a", "added", t0)
	s.channel("8801", "ch-8801-b", "blocked", t0.Add(10*time.Second))
	s.synced("8801")
	if ct, _ := s.hs.contact("8801"); ct[crm.DefaultMarketingProperty] != "false" {
		t.Fatalf("marketing after the newer block: %v", ct)
	}
	// Delivered the other way round, the same.
	s.channel("8802", "ch-8802-b", "blocked", t0.Add(10*time.Second))
	s.channel("8802", "ch-8802-a", "added", t0)
	s.synced("8802")
	if ct, _ := s.hs.contact("8802"); ct[crm.DefaultMarketingProperty] != "false" {
		t.Fatalf("marketing after an older added: %v", ct)
	}
}

// 9. account-disabled (hijacking) and account-enabled of the same second, in
// either order: the account stays locked.
func TestStreamDisableEnableSameTime(t *testing.T) {
	s := newStreamStack(t, 0, nil)
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	s.event("8901", "account-disabled", at, map[string]any{"reason": "hijacking"})
	enabled := s.event("8901", "account-enabled", at, nil)
	s.expectOutcome(enabled, "unlock_account", "superseded")
	s.event("8902", "account-enabled", at, nil)
	s.event("8902", "account-disabled", at, map[string]any{"reason": "hijacking"})
	for _, u := range []string{"8901", "8902"} {
		if p := s.mustProfile(u); !p.Locked {
			t.Fatalf("user %s unlocked by an enable of the same time", u)
		}
	}
}

// Session revocation never waits behind the same user's CRM sync: with the
// CRM refusing every write for user X, account-disabled for X revokes X's
// sessions while the sync is still retrying.
func TestStreamRevocationDoesNotWaitForCRM(t *testing.T) {
	s := newStreamStack(t, 0, nil)
	now := time.Now().Truncate(time.Second)
	s.hs.refuseAll("9001", http.StatusServiceUnavailable)
	s.insertSession("9001-s", "9001", now.Add(-time.Hour))
	s.event("9001", "user-profile-changed", now.Add(-time.Minute), map[string]any{"email": "x@example.com"})
	waitFor(t, "a failed crm write", func() bool { return len(s.hs.forContact("9001")) > 0 })
	s.deliverSET(simulator.SET{UserID: "9001", EventType: "account-disabled", IssuedAt: now, Fields: map[string]any{"reason": "hijacking"}})
	sent := time.Now()
	waitFor(t, "revocation", func() bool { return s.revoked("9001-s") })
	took := time.Since(sent)
	if snap := s.state("9001"); snap.CRMVersion >= snap.State.Version {
		t.Fatal("the crm sync finished although the crm refuses every write: the test proves nothing")
	}
	t.Logf("revoked %v after the 202 while the crm sync was retrying", took)
	if took > 10*time.Second {
		t.Fatalf("revocation took %v: it waited for the CRM", took)
	}
	// The stream's state is readable by a Temporal query.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := s.Temporal.QueryWorkflow(ctx, workflows.UserStreamID(subjects.Hash(testIssuer, "9001")), "", workflows.QueryState)
	if err != nil {
		t.Fatal(err)
	}
	var st workflows.StreamStatus
	if err := v.Get(&st); err != nil {
		t.Fatal(err)
	}
	if !st.SyncRunning && !st.SyncPending {
		t.Fatalf("stream state %+v: the refused sync should still be pending or running", st)
	}
	s.hs.refuseAll("9001", 0)
	s.synced("9001")
	if ct, _ := s.hs.contact("9001"); ct["email"] != "x@example.com" || ct["kakao_locked"] != "true" {
		t.Fatalf("crm after the outage: %v", ct)
	}
}

// An event time far in the future is clamped to the receipt plus the
// allowed skew (and the clamp is audited), so it cannot freeze the user's
// state: every later event would otherwise look older for a month.
func TestStreamFutureEventTimeIsClamped(t *testing.T) {
	s := newStreamStack(t, 0, nil)
	sent := time.Now()
	key := s.event("9101", "account-disabled", sent, map[string]any{"event_timestamp": sent.Add(30 * 24 * time.Hour).Unix()})
	if d := s.auditDetail(key, "account-disabled/received"); d["clamped"] != true {
		t.Fatalf("received detail %v, want clamped", d)
	}
	lock := s.state("9101").State.Lock
	if limit := time.Now().Add(userstate.DefaultBounds.Future + time.Second); lock.Value != userstate.Locked || lock.At.After(limit) {
		t.Fatalf("lock %+v: its time must be at most receipt + %v", lock, userstate.DefaultBounds.Future)
	}
}
