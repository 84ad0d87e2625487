package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/worker"
)

var quiet = slog.New(slog.DiscardHandler)

// The defaults build every Postgres back end and none of the optional ones.
func TestNewActivitiesFromTheDefaults(t *testing.T) {
	db, _ := testenv.Database(t)
	cfg := config.DefaultWorker()
	cfg.AuditKey.Key = "test-audit-key"
	acts, closeActs, err := worker.NewActivities(context.Background(), cfg, db, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer closeActs()
	if acts.Sessions == nil || acts.Audit == nil || acts.Talk == nil || acts.Guard == nil || acts.Profiles == nil ||
		acts.States == nil || acts.Policy == nil || acts.Accounts == nil || acts.TestUsers == nil {
		t.Fatalf("a default back end is missing: %+v", acts)
	}
	if acts.CRM != nil || acts.Mailer != nil || acts.Kakao != nil || acts.ServiceHook != nil || acts.ServiceUsers != nil {
		t.Fatal("an optional back end is on without its settings")
	}
	if string(acts.Subjects.Key) != "test-audit-key" {
		t.Fatal("subject hashes are not keyed with the audit key")
	}
}

// The configuration names the adapters; one constructor builds them all.
func TestNewActivitiesBuildsTheConfiguredAdapters(t *testing.T) {
	db, _ := testenv.Database(t)
	cfg := config.DefaultWorker()
	cfg.Reactions.CRM, cfg.Reactions.CRMWebhookURL, cfg.Reactions.CRMWebhookSecret = "webhook", "http://crm.invalid/hook", "s3cret"
	cfg.ServiceHook.URL, cfg.ServiceHook.Secret = "http://service.invalid/hook", "hook-s3cret"
	cfg.Kakao.AdminKeys = []string{"admin-key-1", "admin-key-0"}
	cfg.TestUsers.IDs = []string{"701541"}
	acts, closeActs, err := worker.NewActivities(context.Background(), cfg, db, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer closeActs()
	if w, ok := acts.CRM.(*crm.Webhook); !ok || w.URL != "http://crm.invalid/hook" {
		t.Fatalf("CRM %T", acts.CRM)
	}
	if acts.ServiceHook == nil {
		t.Fatal("no service hook")
	}
	if k, ok := acts.Kakao.(*kakaoapi.Client); !ok || k.AdminKey != "admin-key-1" || k.BaseURL != config.KakaoAPIURL {
		t.Fatalf("Kakao API %T", acts.Kakao)
	}
	if acts.TestUsers.Len() != 1 {
		t.Fatalf("test users %d", acts.TestUsers.Len())
	}
}

// A wrong configuration fails at start-up with the settings' names.
func TestNewActivitiesRefusesAWrongConfigurationByName(t *testing.T) {
	db, _ := testenv.Database(t)
	cfg := config.DefaultWorker()
	cfg.Reactions.CRM = "hubspot"
	cfg.Identity.Mode = "http"
	cfg.TestUsers.IDs = []string{"kim"}
	_, _, err := worker.NewActivities(context.Background(), cfg, db, quiet)
	for _, want := range []string{"SETFLOW_HUBSPOT_TOKEN", "SETFLOW_IDENTITY_URL", "SETFLOW_TEST_USERS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}
}
