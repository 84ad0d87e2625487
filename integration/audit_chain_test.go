package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
)

// A purged user's audit — the purge's own rows included, whose cutoff is the
// tombstone's — sits in the user's chain, is sealed by a checkpoint, and
// verifies with the user's keyed hash alone: no user id, no audit key, no
// personal data is needed, and none is stored.
func TestPurgedUserAuditVerifiesWithoutPersonalData(t *testing.T) {
	s := newStreamStack(t, 0, func(a *activities.Activities) { a.PurgeAfter = 0 })
	ctx := context.Background()
	const user, email = "830177553311", "purged-user@example.com"
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	s.seedProfile(user, email, "nick")
	s.event(user, "user-linked", t0, nil)
	unlink := s.event(user, "user-unlinked", t0.Add(20*time.Second), nil)
	s.purged(unlink)
	tomb := s.state(user).State.Tombstone
	if tomb == nil {
		t.Fatal("no tombstone after the purge")
	}
	hash := subjects.Hash(testIssuer, user)
	cp, _, err := s.Audit.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	anchor := cp.Anchor()
	// A verifier that holds only the subject hash and the published checkpoint.
	res, err := auditdb.NewStore(s.DB).VerifyChain(ctx, audit.UserChain(hash), audit.VerifyOptions{Expect: &anchor})
	if err != nil || res.Sealed == nil || res.Rows < 4 || !audit.VerifyProof(*res.Sealed, *res.Proof, cp.Root) {
		t.Fatalf("purged user's chain: %+v %v", res, err)
	}
	recs, err := s.Audit.ForSubject(ctx, hash, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var sawPurge bool
	for _, r := range recs {
		if r.Chain != audit.UserChain(hash) {
			t.Errorf("row %s %s is in chain %s", r.EventKey, r.Step, r.Chain)
		}
		if r.Step == "purge/run" && r.Outcome == "done" {
			sawPurge = true
			c, _ := r.Detail["cutoff"].(string)
			if at, err := time.Parse(time.RFC3339Nano, c); err != nil || !at.Equal(tomb.Cutoff) {
				t.Errorf("purge/run cutoff %v, tombstone cutoff %v", r.Detail["cutoff"], tomb.Cutoff)
			}
		}
	}
	if !sawPurge {
		t.Fatalf("no purge/run row in the user's chain: %s", s.auditSteps(unlink))
	}
	var dump string
	if err := s.DB.Get(&dump, `SELECT string_agg(a::text, ' ') FROM setflow_audit a WHERE chain = $1`, audit.UserChain(hash)); err != nil {
		t.Fatal(err)
	}
	for _, pii := range []string{user, email, "nick"} {
		if strings.Contains(dump, pii) {
			t.Errorf("the user's audit holds %q", pii)
		}
	}
	if _, err := s.Audit.VerifyWith(ctx, audit.VerifyOptions{Expect: &anchor}); err != nil {
		t.Fatalf("whole audit: %v", err)
	}
}
