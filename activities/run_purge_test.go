package activities

import (
	"context"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/httpx"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// kakaoLink answers Kakao's user API: linked, not linked, or an outage.
type kakaoLink struct{ err error }

func (k kakaoLink) Logout(context.Context, string) error { return k.err }
func (k kakaoLink) Profile(context.Context, string) (*kakaoapi.Profile, error) {
	if k.err != nil {
		return nil, k.err
	}
	return &kakaoapi.Profile{}, nil
}

// unlinkedUser is a user who unlinked at cutoff, with an email on file and a
// purge pending.
func unlinkedUser(t *testing.T, cutoff time.Time) (*statedb.Memory, userstate.Subject) {
	t.Helper()
	st := statedb.NewMemory()
	sub := userstate.Subject{Hash: "h1", Issuer: "iss", UserID: "k1"}
	no, after := false, 30*24*time.Hour
	if _, err := st.Apply(context.Background(), sub, "unlink:1", func(s userstate.State) (userstate.State, userstate.Decision) {
		s, _ = userstate.Apply(s, userstate.Change{Time: cutoff.Add(-time.Hour), Fields: map[userstate.Field]string{userstate.Email: "u@example.test"}})
		return userstate.Apply(s, userstate.Change{Time: cutoff, EventKey: "unlink:1", Link: &no, PurgeAfter: &after})
	}); err != nil {
		t.Fatal(err)
	}
	return st, sub
}

func snapshot(t *testing.T, st statedb.States, hash string) userstate.State {
	t.Helper()
	snap, err := st.Get(context.Background(), hash)
	if err != nil {
		t.Fatal(err)
	}
	return snap.State
}

// The pending purge runs once: the state becomes a tombstone (fields blank,
// the cutoff kept); a retry of the same run changes nothing more.
func TestRunPurgeLeavesATombstone(t *testing.T) {
	cutoff := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	st, sub := unlinkedUser(t, cutoff)
	a := &Activities{Backends: Backends{States: st}}
	res, err := a.RunPurge(context.Background(), reaction.RunPurgeInput{Subject: sub, Cutoff: cutoff})
	if err != nil || res.Decision.Purge != userstate.PurgeRun || res.KakaoCheck != "" {
		t.Fatalf("run: %+v %v, want the purge run without a Kakao check", res, err)
	}
	s := snapshot(t, st, sub.Hash)
	if s.Field(userstate.Email) != "" || s.Purge != nil || s.Tombstone == nil || !s.Tombstone.Cutoff.Equal(cutoff) {
		t.Fatalf("after the purge: %+v, want a tombstone at the cutoff", s)
	}
	again, err := a.RunPurge(context.Background(), reaction.RunPurgeInput{Subject: sub, Cutoff: cutoff})
	if err != nil || again.Decision.Purge != userstate.PurgeRun || snapshot(t, st, sub.Hash).Version != s.Version {
		t.Fatalf("retried run: %+v %v, want the recorded decision and no new version", again, err)
	}
}

// A timer for a purge that a newer unlink moved runs nothing.
func TestRunPurgeOfAMovedCutoffIsSuperseded(t *testing.T) {
	cutoff := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	st, sub := unlinkedUser(t, cutoff)
	a := &Activities{Backends: Backends{States: st}}
	res, err := a.RunPurge(context.Background(), reaction.RunPurgeInput{Subject: sub, Cutoff: cutoff.Add(-24 * time.Hour)})
	if err != nil || res.Decision.Of("purge") != userstate.Superseded {
		t.Fatalf("stale timer: %+v %v, want superseded", res, err)
	}
	if s := snapshot(t, st, sub.Hash); s.Field(userstate.Email) != "u@example.test" || s.Purge == nil {
		t.Fatalf("a stale timer purged: %+v", s)
	}
}

// Kakao settles a delayed unlink webhook: a user linked again keeps the
// data (the purge is cancelled, the link is linked as of now); a user still
// unlinked is purged; no answer is retried and changes nothing.
func TestRunPurgeAsksKakaoFirst(t *testing.T) {
	cutoff := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		kakao kakaoLink
		check string
		purge userstate.PurgeAction
	}{
		{"linked again", kakaoLink{}, reaction.KakaoLinked, userstate.PurgeCancelled},
		{"still unlinked", kakaoLink{err: kakaoapi.ErrNotLinked}, reaction.KakaoUnlinked, userstate.PurgeRun},
	} {
		st, sub := unlinkedUser(t, cutoff)
		a := &Activities{Backends: Backends{States: st, Kakao: c.kakao}}
		res, err := a.RunPurge(context.Background(), reaction.RunPurgeInput{Subject: sub, Cutoff: cutoff})
		if err != nil || res.KakaoCheck != c.check || res.Decision.Purge != c.purge {
			t.Fatalf("%s: %+v %v, want check %s and purge %s", c.name, res, err, c.check, c.purge)
		}
		s := snapshot(t, st, sub.Hash)
		if kept := s.Field(userstate.Email) != ""; kept != (c.purge == userstate.PurgeCancelled) {
			t.Fatalf("%s: email kept=%v", c.name, kept)
		}
		if c.purge == userstate.PurgeCancelled && (s.Purge != nil || s.Link.Value != userstate.Linked) {
			t.Fatalf("%s: %+v, want linked and no pending purge", c.name, s)
		}
	}
	st, sub := unlinkedUser(t, cutoff)
	a := &Activities{Backends: Backends{States: st, Kakao: kakaoLink{err: &kakaoapi.APIError{Op: "profile", Retry: httpx.Retry{Status: 503, CanRetry: true}}}}}
	if _, err := a.RunPurge(context.Background(), reaction.RunPurgeInput{Subject: sub, Cutoff: cutoff}); !retryable(err) {
		t.Fatalf("Kakao unreachable: %v, want a retryable error", err)
	}
	if s := snapshot(t, st, sub.Hash); s.Purge == nil || s.Field(userstate.Email) == "" {
		t.Fatalf("changed without Kakao's answer: %+v", s)
	}
}
