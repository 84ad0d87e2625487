package activities

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/identity"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/serviceusers"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

type recordingRevoker struct{ revoked, purged []string }

func (r *recordingRevoker) Revoke(_ context.Context, userID string, _ time.Time) (int64, error) {
	r.revoked = append(r.revoked, userID)
	return 2, nil
}

func (r *recordingRevoker) Purge(_ context.Context, userID string, _ time.Time) (int64, error) {
	r.purged = append(r.purged, userID)
	return 1, nil
}

type fixedMapper struct {
	ids map[string][]string
	err error
}

func (m fixedMapper) Accounts(_ context.Context, _, userID string) ([]string, error) {
	return m.ids[userID], m.err
}
func (m fixedMapper) Users(context.Context, string) ([]identity.User, error) { return nil, nil }

func stepFor(user string) reaction.StepInput {
	return reaction.StepInput{IdempotencyKey: "k", EventKey: "e", Params: map[string]string{"cutoff": time.Now().Format(time.RFC3339Nano)},
		Event: event.Event{Name: "account-disabled", Time: time.Now(), Subject: event.Subject{Issuer: "iss", UserID: user}}}
}

// Sessions are revoked and purged under every account the mapping knows;
// a user without an account is audited no_account, not failed.
func TestSessionStepsUseTheIdentityMapping(t *testing.T) {
	rv := &recordingRevoker{}
	a := &Activities{Sessions: rv, Backends: Backends{Accounts: fixedMapper{ids: map[string][]string{"k1": {"acct-1", "acct-2"}}}}}
	ctx := context.Background()
	res, err := a.RevokeSessions(ctx, stepFor("k1"))
	if err != nil || res.Outcome != reaction.OutcomeDone || res.Detail["revoked"] != int64(4) || res.Detail["accounts"] != 2 {
		t.Fatalf("revoke: %+v %v", res, err)
	}
	sort.Strings(rv.revoked)
	if !reflect.DeepEqual(rv.revoked, []string{"acct-1", "acct-2"}) {
		t.Fatalf("revoked under %v, want both accounts (never the Kakao id)", rv.revoked)
	}
	if res, err := a.PurgeSessions(ctx, stepFor("k1")); err != nil || res.Detail["sessions_deleted"] != int64(2) {
		t.Fatalf("purge: %+v %v", res, err)
	}
	if !reflect.DeepEqual(rv.purged, []string{"acct-1", "acct-2"}) {
		t.Fatalf("purged %v", rv.purged)
	}
	rv.revoked = nil
	for _, step := range []func(context.Context, reaction.StepInput) (reaction.StepResult, error){a.RevokeSessions, a.PurgeSessions} {
		res, err := step(ctx, stepFor("stranger"))
		if err != nil || res.Outcome != reaction.OutcomeNoAccount {
			t.Fatalf("unknown user: %+v %v, want no_account", res, err)
		}
	}
	if len(rv.revoked) != 0 {
		t.Fatalf("revoked %v for a user without an account", rv.revoked)
	}
}

// Without a mapping the Kakao user id is the account id (today's behaviour).
func TestSessionStepsDefaultToIdentity(t *testing.T) {
	rv := &recordingRevoker{}
	a := &Activities{Sessions: rv}
	if _, err := a.RevokeSessions(context.Background(), stepFor("k1")); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rv.revoked, []string{"k1"}) {
		t.Fatalf("revoked %v", rv.revoked)
	}
}

// A lookup the service refuses is permanent (parks); one that fails is retried.
func TestMappingErrorsAreClassified(t *testing.T) {
	for _, c := range []struct {
		err       error
		retryable bool
	}{{identity.ErrRejected, false}, {errors.New("connection refused"), true}} {
		a := &Activities{Sessions: &recordingRevoker{}, Backends: Backends{Accounts: fixedMapper{err: c.err}}}
		_, err := a.RevokeSessions(context.Background(), stepFor("k1"))
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.NonRetryable() == c.retryable {
			t.Fatalf("%v: got %v", c.err, err)
		}
	}
}

type recordingUsers map[string]serviceusers.Flags

func (r recordingUsers) Write(_ context.Context, _ sqlx.ExecerContext, id string, f serviceusers.Flags) (int64, error) {
	r[id] = f
	return 1, nil
}

// setState applies a change to a user of an in-memory state store.
func setState(t *testing.T, st statedb.States, sub userstate.Subject, key string, c userstate.Change) {
	t.Helper()
	c.EventKey = key
	if _, err := st.Apply(context.Background(), sub, key, func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, c)
	}); err != nil {
		t.Fatal(err)
	}
}

// The user table gets the user's current flags under every account.
func TestServiceUserTableGetsTheCurrentState(t *testing.T) {
	w := recordingUsers{}
	states := statedb.NewMemory()
	a := &Activities{Backends: Backends{ServiceUsers: w, States: states, Accounts: fixedMapper{ids: map[string][]string{"k1": {"a", "b"}}}}}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sub := userstate.Subject{Hash: "h1", Issuer: "iss", UserID: "k1"}
	locked, unlinked := true, false
	setState(t, states, sub, "lock", userstate.Change{Time: at, Lock: &locked, Reauth: true})
	setState(t, states, sub, "unlink", userstate.Change{Time: at.Add(time.Minute), Link: &unlinked})
	if err := a.writeServiceUsers(context.Background(), sub); err != nil {
		t.Fatal(err)
	}
	// The times are in whole seconds (a SET's): each covers its second, so
	// a login path that ends sessions created at or before them also ends
	// one created later in that second, which may predate the event.
	endOfSecond := func(t time.Time) time.Time { return t.Add(time.Second - time.Microsecond) }
	want := serviceusers.Flags{Locked: true, ReauthSince: endOfSecond(at), UnlinkedSince: endOfSecond(at.Add(time.Minute))}
	if len(w) != 2 || w["a"] != want || w["b"] != want {
		t.Fatalf("written %+v, want %+v", w, want)
	}
	if err := a.writeServiceUsers(context.Background(), userstate.Subject{Hash: "h2", Issuer: "iss", UserID: "stranger"}); err != nil {
		t.Fatalf("no account: %v", err)
	}
}

// interleaving runs between once after the apply of key, before the
// caller goes on: the user's next event overtakes this one's table write.
type interleaving struct {
	statedb.States
	key     string
	between func()
}

func (i *interleaving) Apply(ctx context.Context, sub userstate.Subject, key string, fn func(userstate.State) (userstate.State, userstate.Decision)) (statedb.Result, error) {
	res, err := i.States.Apply(ctx, sub, key, fn)
	if key == i.key && i.between != nil {
		between := i.between
		i.between = nil
		between()
	}
	return res, err
}

// An apply whose write of the user table runs late — a retried parked
// event beside the user's next one, or an attempt that timed out but was
// still running — writes the state as it is then, not the older state that
// apply left: the table never goes back from locked to unlocked.
func TestServiceUserTableLateWriteKeepsTheNewestState(t *testing.T) {
	w := recordingUsers{}
	states := &interleaving{States: statedb.NewMemory(), key: "enabled"}
	a := &Activities{Backends: Backends{ServiceUsers: w, States: states, Accounts: fixedMapper{ids: map[string][]string{"k1": {"a"}}}}}
	sub := userstate.Subject{Hash: "h1", Issuer: "iss", UserID: "k1"}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := func(key, name, step string, at time.Time) reaction.ApplyInput {
		return reaction.ApplyInput{Subject: sub, EventKey: key, Steps: []policy.Step{{Name: step}},
			Event: event.Event{Name: name, Time: at, Subject: event.Subject{Issuer: "iss", UserID: "k1"}, Payload: json.RawMessage(`{}`)}}
	}
	// account-enabled is applied; before it writes the table, the user's
	// later account-disabled is applied and written.
	states.between = func() {
		if _, err := a.ApplyEvent(context.Background(), in("disabled", "account-disabled", policy.LockAccount, at.Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
		if !w["a"].Locked {
			t.Fatalf("account-disabled did not lock the table: %+v", w["a"])
		}
	}
	if _, err := a.ApplyEvent(context.Background(), in("enabled", "account-enabled", policy.UnlockAccount, at)); err != nil {
		t.Fatal(err)
	}
	if !w["a"].Locked {
		t.Fatalf("the late write of account-enabled unlocked the table; the state is locked: %+v", w["a"])
	}
}
