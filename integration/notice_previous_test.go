package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/workflows"
)

// A security notice also reaches the address the account had before an
// attacker changed it (user-state.md), through a real SMTP server, each
// address with its own stable Message-ID. User 2001's changes arrive in
// order; user 2002's original address arrives after the notice (it
// happened before it), and the late change tells it then.
func TestSecurityNoticeReachesThePreviousAddress(t *testing.T) {
	s := newStack(t)
	c := s.temporalStack()
	mp := testenv.Mailpit(t)
	acts := s.activities()
	acts.Mailer = newMailer(t, mp.SMTPHost, mp.SMTPPort)
	s.startWorkerWith(c, acts)

	now := time.Now().Truncate(time.Second)
	ownerAt, attackerAt, changeAt := now.Add(-5*24*time.Hour), now.Add(-time.Hour), now.Add(-10*time.Minute)
	emailChange := func(user, email string, at time.Time) string {
		key := s.deliverSET(simulator.SET{UserID: user, EventType: "user-profile-changed",
			Fields: map[string]any{"email": email, "event_timestamp": at.Unix()}})
		s.finish(key)
		return key
	}
	passwordChange := func(user string) string {
		key := s.deliverSET(simulator.SET{UserID: user, EventType: "credential-change",
			Fields: map[string]any{"credential_type": "password", "change_type": "update", "event_timestamp": changeAt.Unix()}})
		s.finish(key)
		return key
	}
	// previousID is the Message-ID of the notice's copy to the address set
	// at setAt.
	previousID := func(key string, setAt time.Time) string {
		k := fmt.Sprintf("%s/previous@%d", workflows.StepKey(key, "credential-change", policy.SendNotice), setAt.UnixNano())
		return strings.Trim(mailer.MessageID(k, mailDomain), "<>")
	}

	emailChange("2001", "owner-2001@example.com", ownerAt)
	emailChange("2001", "attacker-2001@example.com", attackerAt)
	inOrder := passwordChange("2001")

	emailChange("2002", "attacker-2002@example.com", attackerAt)
	early := passwordChange("2002")
	late := emailChange("2002", "owner-2002@example.com", ownerAt)
	if steps := s.auditSteps(late); !strings.Contains(steps, "user-profile-changed/send_notice=done") {
		t.Fatalf("the late address change did not renotify: %s", steps)
	}

	mp.WaitMessages(t, 4, 30*time.Second)
	want := map[string]string{ // Message-ID → the one recipient
		noticeID(inOrder, "credential-change"): "attacker-2001@example.com",
		previousID(inOrder, ownerAt):           "owner-2001@example.com",
		noticeID(early, "credential-change"):   "attacker-2002@example.com",
		previousID(early, ownerAt):             "owner-2002@example.com",
	}
	msgs := mp.Messages(t)
	if len(msgs) != len(want) {
		t.Errorf("%d messages, want %d", len(msgs), len(want))
	}
	for _, m := range msgs {
		if to, ok := want[m.MessageID]; !ok || len(m.To) != 1 || m.To[0].Address != to {
			t.Errorf("message %s to %v: want %q", m.MessageID, m.To, to)
		}
		if h := mp.Message(t, m.ID).Headers["X-Setflow-Notice"]; len(h) != 1 || h[0] != policy.NoticePasswordChanged {
			t.Errorf("message %s: notice header %v", m.MessageID, h)
		}
	}
}
