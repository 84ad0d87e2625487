package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/guard/guarddb"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/workflows"
)

// A storm of account-disabled events through the ingress — a compromised
// sender or a replay — trips the blast-radius guard: the first events run,
// the rest are held (no session revoked, no lock), visible in the Temporal UI
// by search attribute, in the guard and in each stream's state; events
// without destructive steps keep flowing. Operators approve one event by
// key, reject two, and approve the rest with the real CLI, and each
// decision, with who made it, is in the audit trail.
func TestBlastRadiusGuardStorm(t *testing.T) {
	built := make(chan string, 1)
	go func() { // the CLI builds while the storm runs
		out := t.TempDir() + "/setflow"
		if err := goBuildSetflow(context.Background(), testenv.RepoRoot(t), out, false); err != nil {
			t.Error(err)
			out = ""
		}
		built <- out
	}()

	s := newStack(t)
	srv := testenv.Temporal(t, "")
	s.startRelay(srv.FrontendHostPort())
	const limit = 10 // destructive steps per hour; account-disabled has two
	cfg := s.workerConfig()
	cfg.Reactions.GuardLimit, cfg.Reactions.GuardWindow = limit, time.Hour
	acts := s.activitiesWith(cfg)
	g, ok := acts.Guard.(*guarddb.Store)
	if !ok {
		t.Fatalf("guard %T", acts.Guard)
	}
	s.startWorkerWith(srv.Client(), acts)

	const storm = 20
	users := make([]string, storm)
	keys := make([]string, storm)
	var wg sync.WaitGroup
	for i := range storm {
		users[i] = fmt.Sprintf("77%04d", i)
		s.insertSession("s-"+users[i], users[i], time.Now().Add(-time.Hour))
	}
	for i := range storm {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i] = s.deliverSET(simulator.SET{UserID: users[i], EventType: secevent.EventAccountDisabled,
				IssuedAt: time.Now()})
		}()
	}
	wg.Wait()

	// Each event either completes (admitted) or is held.
	outcome := map[string]string{}
	waitFor(t, "every event of the storm completed or held", func() bool {
		for _, k := range keys {
			recs, err := s.Audit.ForEvent(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				switch r.Step {
				case "account-disabled/completed":
					outcome[k] = "admitted"
				case "account-disabled/hold":
					outcome[k] = "held"
				}
			}
		}
		return len(outcome) == storm
	})
	var admitted, held []int
	for i, k := range keys {
		if outcome[k] == "admitted" {
			admitted = append(admitted, i)
		} else {
			held = append(held, i)
		}
	}
	t.Logf("storm of %d: %d admitted, %d held", storm, len(admitted), len(held))
	// Concurrent admissions may pass the limit by those in flight, never
	// by the storm.
	if len(admitted) == 0 || len(admitted) > limit/2+4 || len(held) < storm-limit/2-4 {
		t.Fatalf("admitted %d, held %d of %d with a limit of %d steps", len(admitted), len(held), storm, limit)
	}
	for _, i := range admitted {
		if !s.revoked("s-" + users[i]) {
			t.Errorf("admitted user %s: session not revoked", users[i])
		}
	}
	for _, i := range held {
		if s.revoked("s-" + users[i]) {
			t.Errorf("held user %s: session revoked", users[i])
		}
		if s.hasState(users[i]) {
			t.Errorf("held user %s: state changed (locked) before a decision", users[i])
		}
	}
	if n, err := g.Pending(context.Background()); err != nil || n != len(held) {
		t.Fatalf("pending holds = %d (%v), want %d", n, err, len(held))
	}

	// Events without destructive steps keep flowing meanwhile.
	linkKey := s.deliverSET(simulator.SET{UserID: "778000", EventType: secevent.EventUserLinked, IssuedAt: time.Now()})
	s.waitReaction(linkKey)

	// Operators find held work in the Temporal UI by search attribute.
	c := srv.Client()
	count := s.countWorkflows
	waitFor(t, "held streams visible by SetflowOutcome", func() bool {
		return count(`SetflowOutcome = "held"`) == len(held) && count(`SetflowEventType = "account-disabled"`) == storm
	})
	heldHash := subjects.Hash(testIssuer, users[held[0]])
	if n := count(fmt.Sprintf(`SetflowSubject = %q AND SetflowCategory = "risc" AND SetflowWebhook = "set"`, heldHash)); n != 1 {
		t.Fatalf("the held user's stream by subject hash: %d workflows", n)
	}
	desc, err := c.DescribeWorkflowExecution(context.Background(), workflows.UserStreamID(heldHash), "")
	if err != nil {
		t.Fatal(err)
	}
	var summary string
	if err := converter.GetDefaultDataConverter().FromPayload(desc.GetExecutionConfig().GetUserMetadata().GetSummary(), &summary); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(summary, "user "+heldHash[:12]) || !strings.Contains(summary, "account-disabled") {
		t.Fatalf("summary %q", summary)
	}
	var st workflows.StreamStatus
	v, err := c.QueryWorkflow(context.Background(), workflows.UserStreamID(heldHash), "", workflows.QueryState)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Get(&st); err != nil || len(st.Held) != 1 || st.Held[0] != keys[held[0]] || st.Outcome != "held" {
		t.Fatalf("state of a held stream: %+v %v", st, err)
	}

	bin := <-built
	if bin == "" {
		t.FailNow()
	}
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "SETFLOW_DATABASE_URL="+s.DBURL, "TEMPORAL_ADDRESS="+srv.FrontendHostPort(),
			"SETFLOW_LOG_LEVEL=error")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("setflow %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := cli("holds", "list"); strings.Count(out, "account-disabled") != len(held) {
		t.Fatalf("holds list:\n%s", out)
	}
	first, rejected := keys[held[0]], []string{keys[held[1]], keys[held[2]]}
	cli("holds", "approve", first, "-by", "alice", "-note", "confirmed with Kakao")
	cli(append(append([]string{"holds", "reject"}, rejected...), "-by", "bob")...)
	if out := cli("holds", "approve", "-all", "-event", "account-disabled", "-dry-run", "-by", "carol"); !strings.Contains(out, fmt.Sprintf("would approve %d hold(s)", len(held)-3)) {
		t.Fatalf("dry run:\n%s", out)
	}
	cli("holds", "approve", "-all", "-event", "account-disabled", "-since", "1h", "-by", "carol")

	for j, i := range held {
		k := keys[i]
		s.waitReaction(k)
		rec := s.auditRow(k, "account-disabled/decision")
		wantBy, wantOutcome := "carol", "approved"
		switch {
		case k == first:
			wantBy = "alice"
		case j == 1 || j == 2:
			wantBy, wantOutcome = "bob", "rejected"
		}
		if rec.Outcome != wantOutcome || rec.Detail["by"] != wantBy {
			t.Errorf("%s decision: %s by %v, want %s by %s", k, rec.Outcome, rec.Detail["by"], wantOutcome, wantBy)
		}
		if got := s.revoked("s-" + users[i]); got != (wantOutcome == "approved") {
			t.Errorf("%s (%s): session revoked = %v", k, wantOutcome, got)
		}
		if wantOutcome == "rejected" && s.auditRow(k, "account-disabled/revoke_sessions").Outcome != "rejected" {
			t.Errorf("%s: revoke_sessions not audited rejected", k)
		}
	}
	if rec := s.auditRow(first, "account-disabled/decision"); rec.Detail["note"] != "confirmed with Kakao" {
		t.Errorf("the approval's note: %v", rec.Detail)
	}
	waitFor(t, "no held stream left", func() bool { return count(`SetflowOutcome = "held"`) == 0 })
	if n, _ := g.Pending(context.Background()); n != 0 {
		t.Fatalf("%d holds still pending", n)
	}
	for _, i := range held[1:3] {
		if s.hasState(users[i]) {
			t.Errorf("rejected user %s: state changed", users[i])
		}
	}
}

// hasState reports whether any event was applied to the user's state.
func (s *stack) hasState(user string) bool {
	s.t.Helper()
	var n int
	if err := s.DB.Get(&n, `SELECT count(*) FROM setflow_user_state WHERE subject_hash = $1`, subjects.Hash(testIssuer, user)); err != nil {
		s.t.Fatal(err)
	}
	return n > 0
}

// auditRow is an event's audit row of one step ("<event>/<step>").
func (s *stack) auditRow(key, step string) audit.Record {
	s.t.Helper()
	recs, err := s.Audit.ForEvent(context.Background(), key)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, r := range recs {
		if r.Step == step {
			return r
		}
	}
	s.t.Fatalf("%s: no %s row; audit %s", key, step, s.auditSteps(key))
	return audit.Record{}
}
