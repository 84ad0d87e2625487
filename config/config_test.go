package config

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestEnvironmentIsTheDefaultAndFlagsOverride(t *testing.T) {
	t.Setenv("SETFLOW_AUDIENCES", "aud-from-env")
	t.Setenv("SETFLOW_SET_MAX_AGE", "2h")
	t.Setenv("TEMPORAL_API_KEY", "secret-key")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var in Ingress
	var tm Temporal
	in.Register(fs)
	tm.Register(fs)
	if err := fs.Parse([]string{"-audiences", " a1 , a2,,"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(in.AudienceList(), "|"); got != "a1|a2" {
		t.Fatalf("audiences %q", got)
	}
	if in.MaxAge.String() != "2h0m0s" {
		t.Fatalf("max age from env: %v", in.MaxAge)
	}
	if fs.Lookup("temporal-api-key") != nil {
		t.Fatal("the Temporal API key must not be a flag (it would show in process listings)")
	}
	if tm.APIKey != "secret-key" {
		t.Fatal("API key not read from the environment")
	}
	// An API key implies TLS (Temporal Cloud).
	opts, err := tm.ClientOptions(nil)
	if err != nil || opts.ConnectionOptions.TLS == nil || opts.Credentials == nil {
		t.Fatalf("API key must bring TLS and credentials: tls=%v err=%v", opts.ConnectionOptions.TLS, err)
	}
}

func TestValidationNamesTheSetting(t *testing.T) {
	in := Ingress{Issuer: "", JWKSURL: ""}
	err := in.Validate()
	for _, want := range []string{"SETFLOW_ISSUER", "SETFLOW_AUDIENCES", "SETFLOW_JWKS_URL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ingress validation %v does not name %s", err, want)
		}
	}
	r := Reactions{SessionsBackend: "http", CRM: "hubspot", CRMRate: 0, SMTPHost: "smtp", PurgeAfter: -1, GuardLimit: -1, NoticePreviousWithin: -1}
	err = r.Validate()
	for _, want := range []string{"SETFLOW_SESSIONS_CALLBACK_URL", "SETFLOW_HUBSPOT_TOKEN", "-crm-rate", "SETFLOW_MAIL_FROM", "SETFLOW_PURGE_AFTER", "SETFLOW_GUARD_LIMIT",
		"SETFLOW_NOTICE_PREVIOUS_WITHIN"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("reactions validation %v does not name %s", err, want)
		}
	}
	ok := Reactions{SessionsBackend: "postgres", CRM: "none", CRMRate: 10}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid settings refused: %v", err)
	}
	tm := Temporal{TLSCert: "c.pem"}
	if _, err := tm.ClientOptions(nil); err == nil || !strings.Contains(err.Error(), "TEMPORAL_TLS_KEY") {
		t.Fatalf("cert without key: %v", err)
	}
}

// defaults registers settings on a fresh flag set with env unset and parses
// no arguments: every setting then holds its default.
func defaults(t *testing.T, env string, register func(*flag.FlagSet)) *flag.FlagSet {
	t.Helper()
	t.Setenv(env, "")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestUnlinkDedupeWindowDefaultsToOneMinute(t *testing.T) {
	var k Kakao
	fs := defaults(t, "SETFLOW_UNLINK_DEDUPE_WINDOW", k.Register)
	if k.UnlinkDedupeWindow != time.Minute {
		t.Fatalf("default unlink dedupe window %v, want 1m", k.UnlinkDedupeWindow)
	}
	if err := fs.Parse([]string{"-unlink-dedupe-window", "90s"}); err != nil || k.UnlinkDedupeWindow != 90*time.Second {
		t.Fatalf("flag: %v %v", k.UnlinkDedupeWindow, err)
	}
}

// user-state.md: a notice also goes to the addresses of the 30 days before
// the event, unless configured otherwise.
func TestNoticePreviousAddressWindowDefaultsTo30Days(t *testing.T) {
	var r Reactions
	defaults(t, "SETFLOW_NOTICE_PREVIOUS_WITHIN", r.Register)
	if r.NoticePreviousWithin != 30*24*time.Hour {
		t.Fatalf("default window %v, want 30 days", r.NoticePreviousWithin)
	}
}
