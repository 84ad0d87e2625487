package activities

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/sideeffects"
)

// scriptedMailer answers each Send with the next error (nil: sent) and
// records the Message-ID of every send, failed or not.
type scriptedMailer struct {
	errs []error
	ids  []string
	to   []string
}

func (m *scriptedMailer) Send(_ context.Context, n mailer.Notice) (string, error) {
	id := mailer.MessageID(n.IdempotencyKey, "example.test")
	m.ids = append(m.ids, id)
	m.to = append(m.to, n.To)
	if len(m.errs) > 0 {
		err := m.errs[0]
		m.errs = m.errs[1:]
		if err != nil {
			return "", err
		}
	}
	return id, nil
}

func (m *scriptedMailer) sends() int { return len(m.ids) }

// profiles is an in-memory ProfileReader.
type profiles map[profile.Key]profile.Profile

func (p profiles) Get(_ context.Context, k profile.Key) (profile.Profile, error) {
	if v, ok := p[k]; ok {
		return v, nil
	}
	return profile.Profile{}, profile.ErrNotFound
}

// clock is a settable time for the side-effect log's deadlines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// noticeFixture is SendNotice over in-memory back ends, for a user with an
// email address on file.
type noticeFixture struct {
	a       *Activities
	mailer  *scriptedMailer
	effects *sideeffects.Memory
	clock   *clock
	at      time.Time
}

const noticeUser, noticeIssuer = "1", "https://kauth.kakao.com"

func newNoticeFixture() *noticeFixture {
	f := &noticeFixture{mailer: &scriptedMailer{}, effects: sideeffects.NewMemory(), clock: &clock{t: time.Now()},
		at: time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)}
	f.effects.Now = f.clock.Now
	p := profiles{{Issuer: noticeIssuer, UserID: noticeUser}: {Email: sql.NullString{String: "u@example.test", Valid: true}}}
	f.a = &Activities{Backends: Backends{Profiles: p, Mailer: f.mailer, SideEffects: f.effects}}
	return f
}

func (f *noticeFixture) input(key string) reaction.StepInput {
	return reaction.StepInput{IdempotencyKey: key, EventKey: "e", Params: map[string]string{"notice": "account-hijacked"},
		Event: event.Event{Name: "account-disabled", Subject: event.Subject{Issuer: noticeIssuer, UserID: noticeUser}, Time: f.at}}
}

func (f *noticeFixture) send(key string) (reaction.StepResult, error) {
	return f.a.SendNotice(context.Background(), f.input(key))
}

func (f *noticeFixture) attempts(t *testing.T, key string) int {
	t.Helper()
	n, err := f.effects.Attempts(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func retryable(err error) bool {
	var app *temporal.ApplicationError
	return err != nil && (!errors.As(err, &app) || !app.NonRetryable())
}

// An attempt that certainly did not hand the message over releases its
// claim: the retry sends as if first.
func TestSendNoticeRefusedIsSentAgainAsFirst(t *testing.T) {
	f := newNoticeFixture()
	f.mailer.errs = []error{&mailer.Error{Op: "rcpt", Code: 451}}
	if _, err := f.send("k"); !retryable(err) {
		t.Fatalf("a refused send: %v, want a retryable error", err)
	}
	if n := f.attempts(t, "k"); n != 0 {
		t.Fatalf("%d attempts on record after a refusal, want the claim released", n)
	}
	if r, err := f.send("k"); err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != nil {
		t.Fatalf("retry after a refusal: %+v %v, want done, not a repeat", r, err)
	}
}

// One whose outcome is unknown (cut after DATA, or its context ended) is
// followed by a repeat with the same Message-ID.
func TestSendNoticeUncertainIsRepeatedWithTheSameMessageID(t *testing.T) {
	for _, cut := range []error{&mailer.Error{Op: "data"}, context.Canceled, context.DeadlineExceeded} {
		f := newNoticeFixture()
		f.mailer.errs = []error{cut}
		if _, err := f.send("k"); !retryable(err) {
			t.Fatalf("%v: %v, want a retryable error", cut, err)
		}
		r, err := f.send("k")
		if err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != true || f.attempts(t, "k") != 2 {
			t.Fatalf("retry after %v: %+v %v, want a repeat", cut, r, err)
		}
		if f.mailer.sends() != 2 || f.mailer.ids[0] != f.mailer.ids[1] || r.Detail["message_id"] != f.mailer.ids[0] {
			t.Fatalf("after %v: Message-IDs %v, detail %v; want the same one twice", cut, f.mailer.ids, r.Detail["message_id"])
		}
	}
}

// A takeover of an uncertain claim that is itself refused before DATA keeps
// the claim uncertain: the earlier attempt may have delivered, so the next
// send is still a repeat.
func TestSendNoticeRefusedTakeoverStaysARepeat(t *testing.T) {
	f := newNoticeFixture()
	f.mailer.errs = []error{&mailer.Error{Op: "data"}, &mailer.Error{Op: "session"}}
	for range 2 {
		if _, err := f.send("k"); err == nil {
			t.Fatal("a failed send succeeded")
		}
	}
	if r, err := f.send("k"); err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != true {
		t.Fatalf("after a refused takeover: %+v %v, want a repeat", r, err)
	}
}

// finishFails is a log whose Finish fails: the worker died between the send
// and recording it.
type finishFails struct{ sideeffects.Log }

func (finishFails) Finish(context.Context, string, string) error { return errors.New("worker died") }

// A crash between the send and its record leaves the claim started: within
// the attempt's deadline the retry waits (the attempt may still be running);
// after it, the retry sends again with the same Message-ID, as a repeat;
// once finished, never again.
func TestSendNoticeCrashAfterSendResendsAfterTheDeadline(t *testing.T) {
	f := newNoticeFixture()
	f.a.SideEffects = finishFails{f.effects}
	if _, err := f.send("k"); err == nil {
		t.Fatal("the crashed attempt succeeded")
	}
	f.a.SideEffects = f.effects
	if _, err := f.send("k"); !retryable(err) || !strings.Contains(err.Error(), errPreviousAttempt.Error()) {
		t.Fatalf("retry within the attempt's deadline: %v, want a retryable wait", err)
	}
	if f.mailer.sends() != 1 {
		t.Fatal("sent while an earlier attempt may still be sending")
	}
	f.clock.Add(noticeDeadline + time.Second)
	r, err := f.send("k")
	if err != nil || r.Outcome != reaction.OutcomeDone || r.Detail["repeat"] != true {
		t.Fatalf("retry after the deadline: %+v %v, want a repeat", r, err)
	}
	if f.mailer.sends() != 2 || f.mailer.ids[0] != f.mailer.ids[1] {
		t.Fatalf("Message-IDs %v, want the same one twice", f.mailer.ids)
	}
	if r, err := f.send("k"); err != nil || r.Outcome != reaction.OutcomeDuplicate || f.mailer.sends() != 2 {
		t.Fatalf("a finished notice: %+v %v (%d sends), want duplicate and no send", r, err, f.mailer.sends())
	}
}

// Without an address, a mailer or a known notice there is nothing to send;
// an unknown notice is a policy error that retrying cannot fix.
func TestSendNoticeSkipsOrRefuses(t *testing.T) {
	f := newNoticeFixture()
	in := f.input("k")
	in.Event.Subject.UserID = "2"
	if r, err := f.a.SendNotice(context.Background(), in); err != nil || r.Outcome != reaction.OutcomeSkipped {
		t.Fatalf("no profile: %+v %v, want skipped", r, err)
	}
	in = f.input("k")
	in.Params["notice"] = "no-such-notice"
	if _, err := f.a.SendNotice(context.Background(), in); err == nil || retryable(err) {
		t.Fatalf("unknown notice: %v, want a non-retryable error", err)
	}
	f.a.Mailer = nil
	if r, err := f.send("k"); err != nil || r.Outcome != reaction.OutcomeSkipped {
		t.Fatalf("no mailer: %+v %v, want skipped", r, err)
	}
	if f.mailer.sends() != 0 || f.attempts(t, "k") != 0 {
		t.Fatal("a skipped notice was sent or claimed")
	}
}
