package main

import (
	"context"
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/internal/testenv"
)

func TestParseInterspersedTakesFlagsAfterPositionals(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	user := fs.String("user", "", "")
	types, err := parseInterspersed(fs, []string{"account-disabled", "--user", "42", "credential-change"})
	if err != nil || *user != "42" || !slices.Equal(types, []string{"account-disabled", "credential-change"}) {
		t.Fatalf("types %v user %q err %v", types, *user, err)
	}
}

func TestAuditVerifyCommandFailsOnTamperedChain(t *testing.T) {
	db, url := testenv.Database(t)
	ctx := context.Background()
	log := auditdb.NewStore(db)
	for _, step := range []string{"a/received", "a/revoke_sessions"} {
		if _, err := log.Append(ctx, audit.Record{EventKey: "k", Step: step, Outcome: "done"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := runAudit(ctx, []string{"verify", "-database-url", url}); err != nil {
		t.Fatalf("intact chain: %v", err)
	}
	db.MustExec(`DELETE FROM setflow_audit WHERE step = 'a/received'`)
	err := runAudit(ctx, []string{"verify", "-database-url", url})
	if err == nil || !strings.Contains(err.Error(), "audit chain broken") {
		t.Fatalf("tampered chain: %v", err)
	}
	if err := runAudit(ctx, []string{"verify", "-database-url", url, "-expect", "12:nothex"}); err == nil ||
		!strings.Contains(err.Error(), "must be ID:HASH") {
		t.Fatalf("bad anchor: %v", err)
	}
	if err := runAudit(ctx, []string{"nonsense"}); err == nil {
		t.Fatal("unknown sub-command accepted")
	}
}
