package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/policy"
)

func putEvent(t *testing.T, in *inbox.Postgres, key string, src event.Source, name, payload string) {
	t.Helper()
	env := event.Envelope{Key: key, Source: src, ReceivedAt: time.Now(),
		Events: []event.Event{{Type: "https://schemas.openid.net/secevent/risc/event-type/" + name, Name: name, Payload: []byte(payload)}}}
	if _, err := in.Put(context.Background(), inbox.Entry{Envelope: env, Raw: []byte("raw")}); err != nil {
		t.Fatal(err)
	}
}

// `setflow policy test` shows, per event type, what a candidate would run
// differently on the stored events, evaluating `when` per event.
func TestPolicyWhatIf(t *testing.T) {
	db, url := testenv.Database(t)
	in := inbox.NewPostgres(db)
	putEvent(t, in, "k1", event.SourceSET, "account-disabled", `{"reason":"hijacking"}`)
	putEvent(t, in, "k2", event.SourceSET, "account-disabled", `{}`)
	putEvent(t, in, "k3", event.SourceSET, "account-enabled", `{}`)
	db.MustExec(`UPDATE setflow_inbox SET received_at = now() - interval '3 days' WHERE dedupe_key = 'k3'`)

	file := filepath.Join(t.TempDir(), "candidate.yaml")
	if err := os.WriteFile(file, []byte(`version: 1
events:
  account-disabled:
    steps:
      - revoke_sessions
      - kakao_logout
      - send_notice: {notice: account-hijacked, when: {reason: hijacking}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cand, err := policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	events, err := storedEvents(context.Background(), inbox.NewPostgres(db), time.Now().Add(-24*time.Hour), 1000)
	if err != nil || len(events) != 2 {
		t.Fatalf("stored events of the last day: %d %v", len(events), err)
	}
	diffs := whatIf(policy.Default(), cand, events, "")
	if len(diffs) != 1 || diffs[0].Name != "account-disabled" || diffs[0].Events != 2 || diffs[0].Changed != 2 {
		t.Fatalf("diffs: %+v", diffs)
	}
	var out bytes.Buffer
	if err := printWhatIf(&out, diffs, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"account-disabled", "2 would run differently", "- lock_account", "+ kakao_logout", "nothing was run"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// The same policy changes nothing; a filter by type leaves others out.
	if d := whatIf(policy.Default(), policy.Default(), events, ""); d[0].Changed != 0 {
		t.Fatalf("the current policy against itself: %+v", d)
	}
	if d := whatIf(policy.Default(), cand, events, "account-enabled"); len(d) != 0 {
		t.Fatalf("type filter: %+v", d)
	}
	// The command runs end to end and reads nothing but the inbox.
	if err := runPolicy(context.Background(), []string{"test", file, "-database-url", url, "-since", "96h"}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM setflow_audit`); err != nil || n != 0 {
		t.Fatalf("policy test wrote %d audit rows (%v)", n, err)
	}
	if err := runPolicy(context.Background(), []string{"test", filepath.Join(t.TempDir(), "missing.yaml"), "-database-url", url}); err == nil {
		t.Fatal("a missing candidate file was accepted")
	}
}

func TestEventsListFilters(t *testing.T) {
	db, _ := testenv.Database(t)
	in := inbox.NewPostgres(db)
	putEvent(t, in, "set:a", event.SourceSET, "account-disabled", `{}`)
	putEvent(t, in, "set:b", event.SourceSET, "account-enabled", `{}`)
	putEvent(t, in, "unlink:c", event.SourceUnlink, "user-unlinked", `{}`)
	db.MustExec(`UPDATE setflow_inbox SET received_at = now() - interval '2 hours' WHERE dedupe_key = 'set:b'`)
	keys := func(f listFilter) string {
		t.Helper()
		f.limit = 50
		entries, err := listEvents(context.Background(), in, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Envelope.Key)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		f    listFilter
		want string
	}{
		{listFilter{}, "unlink:c,set:b,set:a"},
		{listFilter{eventType: "account-disabled"}, "set:a"},
		{listFilter{eventType: "https://schemas.openid.net/secevent/risc/event-type/account-enabled"}, "set:b"},
		{listFilter{source: "unlink"}, "unlink:c"},
		{listFilter{since: time.Hour}, "unlink:c,set:a"},
		{listFilter{until: time.Hour}, "set:b"},
		{listFilter{status: "parked"}, ""},
	} {
		if got := keys(tc.f); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.f, got, tc.want)
		}
	}
}

// `setflow audit user 777` after the README's "Try it" finds the user that
// `setflow dev` signed for, whose issuer is not Kakao's.
func TestAuditUserFindsTheDevIssuer(t *testing.T) {
	db, _ := testenv.Database(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SETFLOW_AUDIT_KEY", "")
	log := auditdb.NewStore(db)
	hash := audit.SubjectHasher{Key: []byte(config.DevAuditKey)}.Hash(devIssuer, "777")
	if _, err := log.Append(context.Background(), audit.Record{EventKey: "set:1", SubjectHash: hash, Step: "account-disabled/received", Outcome: "received"}); err != nil {
		t.Fatal(err)
	}
	m, err := findSubject(context.Background(), log, "777", "", 100)
	if err != nil || m.issuer != "" || len(m.tried) != 1 || m.tried[0] != config.KakaoIssuer {
		t.Fatalf("without a running setflow dev: %+v %v", m, err)
	}
	if err := saveDevState(devState{KeyPath: "/nowhere", Issuer: devIssuer}); err != nil {
		t.Fatal(err)
	}
	m, err = findSubject(context.Background(), log, "777", "", 100)
	if err != nil || m.issuer != devIssuer || m.hash != hash || len(m.recs) != 1 {
		t.Fatalf("with setflow dev's issuer recorded: %+v %v", m, err)
	}
	if m, _ := findSubject(context.Background(), log, "777", config.KakaoIssuer, 100); m.issuer != "" {
		t.Fatalf("an explicit issuer is the only one tried: %+v", m)
	}
}

// `setflow send` finds the development key from any directory, and says
// where it looked instead of signing with a new key.
func TestFindDevKey(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	root := t.TempDir()
	key := filepath.Join(root, devKeyPath)
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	if got, err := findDevKey(""); err != nil || got != key {
		t.Fatalf("from a subdirectory: %q %v", got, err)
	}
	elsewhere := t.TempDir()
	t.Chdir(elsewhere)
	_, err := findDevKey("")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(elsewhere, devKeyPath)) || !strings.Contains(err.Error(), "setflow dev") {
		t.Fatalf("outside the repository, no dev state: %v", err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, devKeyPath)); !os.IsNotExist(err) {
		t.Fatal("a new key was created")
	}
	if err := saveDevState(devState{KeyPath: key, Issuer: devIssuer}); err != nil {
		t.Fatal(err)
	}
	if got, err := findDevKey(""); err != nil || got != key {
		t.Fatalf("from the last setflow dev's state: %q %v", got, err)
	}
	if _, err := findDevKey(filepath.Join(elsewhere, "missing.pem")); err == nil {
		t.Fatal("a missing explicit key was accepted")
	}
}
