package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/simulator"
)

// A test account (SETFLOW_TEST_USERS) is what Kakao's Webhook Test tool
// sends about: a team member's real account. Its account-disabled,
// user-unlinked (the unlink webhook) and account-purged deliveries go through
// the real ingress, are stored and audited — every step as shadow — and act
// on nothing: its sessions, profile and lock stay, no email is sent, the CRM
// and Kakao's API are never called. A normal user's same deliveries act.
func TestTestAccountsRunInShadow(t *testing.T) {
	const tester, normal = "701541", "801542"
	s := newStack(t)
	w := s.withWebhooks()
	c := s.temporalStack()
	mp := testenv.Mailpit(t)
	hs := newHubSpot(t)
	kakao := newKakaoAPI(t, map[string]kakaoUser{}) // neither user is linked any more
	acts := s.activities()
	acts.Mailer = newMailer(t, mp.SMTPHost, mp.SMTPPort)
	acts.CRM = hs.client()
	acts.Kakao = kakao.client()
	acts.TestUsers = activities.NewTestUsers(subjects.Key, []string{tester})
	s.startWorkerWith(c, acts)

	at := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	emails := map[string]string{tester: "team.member@example.com", normal: "customer@example.com"}
	for id, email := range emails {
		s.seedProfile(id, email, "user "+id)
		s.insertSession(id+"-s", id, at.Add(-time.Hour))
	}

	keys := map[string][]string{}
	for _, id := range []string{tester, normal} {
		keys[id] = append(keys[id], s.deliverSET(simulator.SET{UserID: id, EventType: "account-disabled",
			Fields: map[string]any{"reason": "hijacking"}, IssuedAt: at}))
	}
	// The disables are through before the unlinks, so each user's trail reads
	// in delivery order.
	for _, id := range []string{tester, normal} {
		s.waitReaction(keys[id][0])
		unlink := simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm,
			Fields: map[string]any{"app_id": webhookAppID, "user_id": id, "referrer_type": "UNLINK_FROM_APPS"}}
		if st := w.deliver(unlink); st != http.StatusOK {
			t.Fatalf("unlink of %s: %d", id, st)
		}
		var key string
		if err := s.DB.Get(&key, `SELECT dedupe_key FROM setflow_inbox WHERE source = 'unlink' AND envelope->'subject'->>'user_id' = $1`, id); err != nil {
			t.Fatal(err)
		}
		s.waitReaction(key)
		keys[id] = append(keys[id], key)
		purged := s.deliverSET(simulator.SET{UserID: id, EventType: "account-purged", IssuedAt: time.Now().Truncate(time.Second)})
		s.waitReaction(purged)
		keys[id] = append(keys[id], purged)
	}

	// The normal user's events acted: sessions ended, notice sent, CRM and
	// Kakao called, data purged.
	if s.sessionCount(normal) != 0 {
		t.Fatalf("the normal user's sessions were not purged: %d left", s.sessionCount(normal))
	}
	mp.WaitMessages(t, 1, 20*time.Second)
	waitFor(t, "the normal user's CRM writes", func() bool { return len(hs.forContact(normal)) > 0 })
	if !strings.Contains(strings.Join(kakao.Calls(), "\n"), normal) {
		t.Fatalf("the normal user's unlink was not confirmed with Kakao: %q", kakao.Calls())
	}
	for _, key := range keys[normal] {
		if trail := s.auditSteps(key); !strings.Contains(trail, "revoke_sessions=done") || strings.Contains(trail, "=shadow") {
			t.Fatalf("normal user's %s: %s", key, trail)
		}
	}

	// The test account's: audited, every step shadow, nothing touched.
	for _, key := range keys[tester] {
		recs, err := s.Audit.ForEvent(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		shadow := 0
		for _, r := range recs {
			_, step, _ := strings.Cut(r.Step, "/")
			switch {
			case step == "received":
				if r.Detail["shadow"] != true {
					t.Errorf("%s received row without shadow: %v", key, r.Detail)
				}
			case step == "completed":
			case r.Outcome == activities.OutcomeShadow:
				shadow++
			default:
				t.Errorf("test account's %s: step %s ran (%s)", key, r.Step, r.Outcome)
			}
			if r.SubjectHash != subjects.Hash(testIssuer, tester) || strings.Contains(r.Step+r.EventKey, tester) {
				t.Errorf("audit row %+v", r)
			}
		}
		if shadow == 0 {
			t.Errorf("test account's %s has no shadow step: %s", key, s.auditSteps(key))
		}
	}
	if s.revoked(tester+"-s") || s.sessionCount(tester) != 1 {
		t.Fatalf("the test account's session was revoked or purged")
	}
	if p := s.mustProfile(tester); p.Locked || !p.Email.Valid || p.Email.String != emails[tester] {
		t.Fatalf("the test account's profile changed: locked %v email %v", p.Locked, p.Email)
	}
	if reqs := hs.forContact(tester); len(reqs) != 0 {
		t.Fatalf("the CRM was written for the test account: %+v", reqs)
	}
	for _, call := range kakao.Calls() {
		if strings.HasSuffix(call, " "+tester) {
			t.Fatalf("Kakao's API was called about the test account: %q", call)
		}
	}
	for _, m := range mp.Messages(t) {
		for _, to := range m.To {
			if strings.EqualFold(to.Address, emails[tester]) {
				t.Fatalf("the test account was emailed: %q", m.Subject)
			}
		}
	}
}
