package activities

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
)

// countingRevoker fails the test's expectations by counting every call.
type countingRevoker struct{ calls int }

func (r *countingRevoker) Revoke(context.Context, string, time.Time) (int64, error) {
	r.calls++
	return 1, nil
}

// A test account's events are planned in shadow, whichever webhook named
// them and whatever the policy says; a normal user's are not. The set keeps
// keyed hashes only, never the ids.
func TestPlanReactionShadowsTestUsers(t *testing.T) {
	key := []byte("audit-key")
	a := &Activities{Backends: Backends{Policy: policy.Default(), Subjects: audit.SubjectHasher{Key: key},
		TestUsers: NewTestUsers(key, []string{"701541", " ", ""})}}
	if a.TestUsers.Len() != 1 {
		t.Fatalf("test users: %d, want 1 (blank entries ignored)", a.TestUsers.Len())
	}
	for h := range a.TestUsers.hashes {
		if strings.Contains(h, "701541") {
			t.Fatalf("the set holds the raw id: %q", h)
		}
	}
	now := time.Now().UTC()
	for _, name := range []string{"account-disabled", "user-unlinked", "account-purged"} {
		for _, tc := range []struct {
			user, issuer string
			shadow       bool
		}{
			{"701541", "https://kauth.kakao.com", true},
			{"701541", "kakao:unlink", true}, // the unlink webhook's issuer differs: still a test account
			{"701542", "https://kauth.kakao.com", false},
		} {
			env := event.Envelope{Key: "k", Source: event.SourceSET, IssuedAt: now, ReceivedAt: now,
				Subject: event.Subject{Issuer: tc.issuer, UserID: tc.user},
				Events:  []event.Event{{Type: "t/" + name, Name: name, Time: now}}}
			plans, err := a.PlanReaction(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			if len(plans[0].Reaction.Steps) == 0 {
				t.Fatalf("%s: the default policy has no steps", name)
			}
			if plans[0].Reaction.Shadow != tc.shadow || plans[0].TestAccount != tc.shadow {
				t.Errorf("%s for user %s (%s): shadow=%v, want %v", name, tc.user, tc.issuer, plans[0].Reaction.Shadow, tc.shadow)
			}
		}
	}
	var nobody *TestUsers
	if nobody.Has("701541") || nobody.Len() != 0 {
		t.Fatal("a nil set holds someone")
	}
}

// The side-effect steps guard themselves too: a test account's step that
// reaches them (planned before the account was listed) acts on nothing.
func TestSideEffectStepsRefuseTestUsers(t *testing.T) {
	key := []byte("audit-key")
	rev := &countingRevoker{}
	m := &scriptedMailer{}
	hook := &countingNotifier{}
	a := &Activities{Sessions: rev, Backends: Backends{Mailer: m, TestUsers: NewTestUsers(key, []string{"701541"}), ServiceHook: hook}}
	ctx := context.Background()
	in := func(user string) reaction.StepInput {
		return reaction.StepInput{IdempotencyKey: "k/s", EventKey: "k", Params: map[string]string{"notice": policy.NoticeAccountHijacked, "cutoff": time.Now().Format(time.RFC3339Nano)},
			Event: event.Event{Name: "account-disabled", Subject: event.Subject{Issuer: "i", UserID: user}, Time: time.Now()}}
	}
	steps := map[string]func(context.Context, reaction.StepInput) (reaction.StepResult, error){
		"revoke_sessions": a.RevokeSessions, "purge_sessions": a.PurgeSessions, "send_notice": a.SendNotice, "kakao_logout": a.KakaoLogout,
		"notify_service": a.NotifyService,
	}
	for name, step := range steps {
		res, err := step(ctx, in("701541"))
		if err != nil || res.Outcome != OutcomeShadow {
			t.Errorf("%s for a test account: %+v, %v; want shadow", name, res, err)
		}
	}
	if rev.calls != 0 || m.sends() != 0 || hook.posts != 0 {
		t.Fatalf("a test account's step acted: %d revocations, %d sends, %d service posts", rev.calls, m.sends(), hook.posts)
	}
	// A normal user's revocation runs.
	if res, err := a.RevokeSessions(ctx, in("701542")); err != nil || res.Outcome != reaction.OutcomeDone || rev.calls != 1 {
		t.Fatalf("normal user: %+v, %v, %d calls", res, err, rev.calls)
	}
}

// countingNotifier is a service webhook that counts its posts.
type countingNotifier struct{ posts int }

func (n *countingNotifier) PostSigned(context.Context, string, string, string, []byte, time.Time, []string) error {
	n.posts++
	return nil
}

func (n *countingNotifier) Clock() time.Time { return time.Now() }
