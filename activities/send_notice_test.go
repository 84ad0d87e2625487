package activities

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
)

// scriptedMailer answers each Send with the next error (nil: sent).
type scriptedMailer struct {
	errs  []error
	sends int
}

func (m *scriptedMailer) Send(_ context.Context, n mailer.Notice) (string, error) {
	m.sends++
	if len(m.errs) > 0 {
		err := m.errs[0]
		m.errs = m.errs[1:]
		if err != nil {
			return "", err
		}
	}
	return mailer.MessageID(n.IdempotencyKey, "example.test"), nil
}

// Security notices are delivered at least once: an attempt that certainly
// did not hand the message over lets the retry send it as if first; one whose
// outcome is unknown (cut after DATA, its context ended) is followed by a
// repeat with the same key; one whose worker vanished is taken over after the
// attempt's deadline; a finished one is never sent again.
func TestSendNoticeAtLeastOnce(t *testing.T) {
	db, _ := testenv.Database(t)
	ctx := context.Background()
	sub := userstate.Subject{Hash: "h1", Issuer: "https://kauth.kakao.com", UserID: "1"}
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := userstate.NewStore(db).Apply(ctx, sub, "seed", func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, userstate.Change{Time: at, Now: at, Fields: map[userstate.Field]string{userstate.Email: "u@example.test"}})
	}); err != nil {
		t.Fatal(err)
	}
	m := &scriptedMailer{}
	a := &Activities{Backends: Backends{DB: db, Profiles: profile.NewStore(db), Mailer: m}}
	in := func(key string) reaction.StepInput {
		return reaction.StepInput{IdempotencyKey: key, EventKey: "e", Params: map[string]string{"notice": "account-hijacked"},
			Event: event.Event{Name: "account-disabled", Subject: event.Subject{Issuer: sub.Issuer, UserID: sub.UserID}, Time: at}}
	}
	send := func(key string) (reaction.StepResult, error) { return a.SendNotice(ctx, in(key)) }

	// Refused before DATA: released, the retry is a first send.
	m.errs = []error{&mailer.Error{Op: "rcpt", Code: 451}}
	if _, err := send("k-refused"); err == nil {
		t.Fatal("a refused send succeeded")
	}
	if r, err := send("k-refused"); err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != nil {
		t.Fatalf("retry after a refusal: %+v %v, want done, not a repeat", r, err)
	}

	// Cut after DATA, and cut by the context: the retry sends a repeat.
	for _, cut := range []error{&mailer.Error{Op: "data"}, context.Canceled} {
		key := "k-uncertain-" + cut.Error()
		m.errs = []error{cut}
		if _, err := send(key); err == nil {
			t.Fatal("an uncertain send succeeded")
		}
		r, err := send(key)
		if err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != true {
			t.Fatalf("retry after %v: %+v %v, want a repeat", cut, r, err)
		}
		var attempts int
		if err := db.Get(&attempts, `SELECT attempts FROM setflow_side_effects WHERE idempotency_key = $1`, key); err != nil || attempts != 2 {
			t.Fatalf("attempts %d %v, want 2", attempts, err)
		}
	}

	// A takeover of an uncertain claim that is itself refused before DATA
	// keeps the claim uncertain: the next send is still a repeat.
	m.errs = []error{&mailer.Error{Op: "data"}, &mailer.Error{Op: "session"}}
	if _, err := send("k-takeover"); err == nil {
		t.Fatal("an uncertain send succeeded")
	}
	if _, err := send("k-takeover"); err == nil {
		t.Fatal("a refused takeover succeeded")
	}
	if r, err := send("k-takeover"); err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != true {
		t.Fatalf("after a refused takeover: %+v %v, want a repeat", r, err)
	}

	// An attempt whose worker vanished: its claim stays 'started'. Within
	// its deadline the retry waits; after it, the retry repeats the send.
	if _, err := db.Exec(`INSERT INTO setflow_side_effects (idempotency_key, kind, status) VALUES ('k-vanished', 'email', 'started')`); err != nil {
		t.Fatal(err)
	}
	before := m.sends
	if _, err := send("k-vanished"); err == nil || !strings.Contains(err.Error(), errPreviousAttempt.Error()) {
		t.Fatalf("retry within the vanished attempt's deadline: %v, want a retryable wait", err)
	}
	if m.sends != before {
		t.Fatal("sent while an earlier attempt may still be sending")
	}
	if _, err := db.Exec(`UPDATE setflow_side_effects SET created_at = now() - interval '1 minute' WHERE idempotency_key = 'k-vanished'`); err != nil {
		t.Fatal(err)
	}
	if r, err := send("k-vanished"); err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != true {
		t.Fatalf("retry after the deadline: %+v %v, want a repeat", r, err)
	}

	// Done: never again.
	before = m.sends
	if r, err := send("k-vanished"); err != nil || r.Outcome != reaction.OutcomeDuplicate || m.sends != before {
		t.Fatalf("a finished notice: %+v %v (sends %d→%d), want duplicate and no send", r, err, before, m.sends)
	}
}
