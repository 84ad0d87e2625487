package guarddb_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/guard/guarddb"
	"github.com/setflow/setflow/internal/testenv"
)

func req(i int, steps ...string) guard.Request {
	if len(steps) == 0 {
		steps = []string{"revoke_sessions"}
	}
	return guard.Request{EventKey: fmt.Sprintf("set:%03d", i), SubjectHash: fmt.Sprintf("h%03d", i),
		EventName: "account-disabled", Steps: steps, WorkflowID: fmt.Sprintf("setflow-user/h%03d", i)}
}

func TestGuardHoldsPastTheLimitAndUntilOperatorsDecide(t *testing.T) {
	db, _ := testenv.Database(t)
	ctx := context.Background()
	g := guarddb.NewStore(db, guard.Limit{Max: 4, Window: time.Minute})

	// Two events of two destructive steps each fill the window.
	for i := range 2 {
		v, err := g.Admit(ctx, req(i, "revoke_sessions", "lock_account"))
		if err != nil || v.Decision != guard.Admitted {
			t.Fatalf("event %d: %+v %v, want admitted", i, v, err)
		}
	}
	// Asking again for an admitted event keeps it admitted (a retried activity).
	if v, _ := g.Admit(ctx, req(0, "revoke_sessions", "lock_account")); v.Decision != guard.Admitted {
		t.Fatalf("repeated admission: %+v", v)
	}
	v, err := g.Admit(ctx, req(2))
	if err != nil || v.Decision != guard.Held || v.Reason == "" {
		t.Fatalf("over the limit: %+v %v, want held with a reason", v, err)
	}
	// Once tripped, the guard holds even what would fit.
	g2 := guarddb.NewStore(db, guard.Limit{Max: 1000, Window: time.Minute})
	if v, _ := g2.Admit(ctx, req(3)); v.Decision != guard.Held {
		t.Fatalf("while a hold is undecided: %+v, want held", v)
	}
	if n, _ := g.Pending(ctx); n != 2 {
		t.Fatalf("pending = %d, want 2", n)
	}
	holds, err := g.List(ctx, guard.Filter{Pending: true})
	if err != nil || len(holds) != 2 || holds[0].EventKey != "set:002" || holds[0].Steps[0] != "revoke_sessions" {
		t.Fatalf("list: %+v %v", holds, err)
	}

	if _, err := g.Decide(ctx, guard.Filter{EventKey: "set:002"}, "maybe", "ops", ""); err == nil {
		t.Fatal("a decision other than approved/rejected was accepted")
	}
	if _, err := g.Decide(ctx, guard.Filter{EventKey: "set:002"}, guard.Approved, " ", ""); err == nil {
		t.Fatal("a decision without who made it was accepted")
	}
	got, err := g.Decide(ctx, guard.Filter{EventKey: "set:002"}, guard.Approved, "alice", "checked with Kakao")
	if err != nil || len(got) != 1 {
		t.Fatalf("approve one: %+v %v", got, err)
	}
	v, _ = g.Admit(ctx, req(2))
	if v.Decision != guard.Approved || v.By != "alice" || v.Note != "checked with Kakao" {
		t.Fatalf("after approval: %+v", v)
	}
	// A decided hold is not decided again.
	if got, _ := g.Decide(ctx, guard.Filter{EventKey: "set:002"}, guard.Rejected, "bob", ""); len(got) != 0 {
		t.Fatalf("re-decided: %+v", got)
	}
	got, _ = g.Decide(ctx, guard.Filter{}, guard.Rejected, "bob", "")
	if len(got) != 1 || got[0].EventKey != "set:003" {
		t.Fatalf("reject all pending: %+v", got)
	}
	if v, _ := g.Admit(ctx, req(3)); v.Decision != guard.Rejected || v.By != "bob" {
		t.Fatalf("after rejection: %+v", v)
	}
	if n, _ := g.Pending(ctx); n != 0 {
		t.Fatalf("pending = %d after deciding all", n)
	}
}

func TestGuardWindowSlidesAndOffAdmitsAll(t *testing.T) {
	db, _ := testenv.Database(t)
	ctx := context.Background()
	off := guarddb.NewStore(db, guard.Limit{})
	for i := range 50 {
		if v, err := off.Admit(ctx, req(i)); err != nil || v.Decision != guard.Admitted {
			t.Fatalf("guard off: %+v %v", v, err)
		}
	}
	g := guarddb.NewStore(db, guard.Limit{Max: 3, Window: 200 * time.Millisecond})
	for i := 100; i < 103; i++ {
		if v, _ := g.Admit(ctx, req(i)); v.Decision != guard.Admitted {
			t.Fatalf("within limit: %+v", v)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if v, _ := g.Admit(ctx, req(103)); v.Decision != guard.Admitted {
		t.Fatalf("after the window: %+v, want admitted", v)
	}
}

// Admissions of different users run concurrently and none is lost.
func TestGuardConcurrentAdmissions(t *testing.T) {
	db, _ := testenv.Database(t)
	ctx := context.Background()
	g := guarddb.NewStore(db, guard.Limit{Max: 10000, Window: time.Minute})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := g.Admit(ctx, req(i)); err != nil || v.Decision != guard.Admitted {
				errs <- fmt.Errorf("%d: %+v %v", i, v, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM setflow_guard_admissions`); err != nil || n != 64 {
		t.Fatalf("admissions = %d %v", n, err)
	}
}
