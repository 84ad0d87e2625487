package config

import (
	"flag"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every setting has a variable and, unless it is a secret, a flag; every
// default parses; a variable is declared by one row (a group that shares a
// row, such as the codec keys, shares the same one).
func TestEverySettingHasAVariableAndAFlag(t *testing.T) {
	envName := regexp.MustCompile(`^(SETFLOW|TEMPORAL)_[A-Z0-9_]+$`)
	flagName := regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	for _, s := range Settings() {
		if !envName.MatchString(s.Env) {
			t.Errorf("%q is not a setflow variable name", s.Env)
		}
		if s.Secret != (s.Flag == "") {
			t.Errorf("%s: a secret has no flag and every other setting has one (flag %q, secret %v)", s.Env, s.Flag, s.Secret)
		}
		if s.Flag != "" && !flagName.MatchString(s.Flag) {
			t.Errorf("%s: flag %q", s.Env, s.Flag)
		}
		if strings.TrimSpace(s.Usage) == "" {
			t.Errorf("%s has no description", s.Env)
		}
		if err := s.set(s.Default); err != nil {
			t.Errorf("%s: default %q: %v", s.Env, s.Default, err)
		}
	}
	// Registering every group on one flag set per command shape finds a flag
	// declared twice (flag panics).
	var w Worker
	var in Ingress
	var d Database
	var l Log
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	w.Register(fs)
	in.Register(fs)
	d.Register(fs)
	l.Register(fs)
}

func TestSecretsAndURLsAreScrubbed(t *testing.T) {
	for _, s := range Settings() {
		if s.Secret && !slices.Contains(SecretEnv, s.Env) {
			t.Errorf("secret %s is not scrubbed", s.Env)
		}
		if s.URL && !slices.Contains(URLEnv, s.Env) {
			t.Errorf("URL %s is not redacted", s.Env)
		}
	}
	for _, name := range []string{EnvAuditKey, EnvCodecKeys, EnvCodecAuthToken, EnvKakaoAdminKeys, "TEMPORAL_API_KEY", "SETFLOW_SMTP_PASSWORD"} {
		if !slices.Contains(SecretEnv, name) {
			t.Errorf("%s is not a secret", name)
		}
	}
}

func parseIngress(t *testing.T, args ...string) (Ingress, error) {
	t.Helper()
	var in Ingress
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	in.Register(fs)
	return in, Parse(fs, args)
}

// A value that does not parse is an error naming its variable, never a silent
// default; a whole number of days is a duration; a flag wins.
func TestABadValueIsAnErrorNamingTheSetting(t *testing.T) {
	for _, bad := range []string{"7x", "1d12h", "-3d", "week"} {
		t.Setenv("SETFLOW_SET_MAX_AGE", bad)
		if _, err := parseIngress(t); err == nil || !strings.Contains(err.Error(), "SETFLOW_SET_MAX_AGE (-max-age)") {
			t.Errorf("SETFLOW_SET_MAX_AGE=%s: %v", bad, err)
		}
	}
	t.Setenv("SETFLOW_SET_MAX_AGE", "7d")
	in, err := parseIngress(t)
	if err != nil || in.MaxAge != 7*24*time.Hour {
		t.Fatalf("7d: %v %v", in.MaxAge, err)
	}
	t.Setenv("SETFLOW_SET_MAX_AGE", "soon")
	if in, err := parseIngress(t, "-max-age", "36h"); err != nil || in.MaxAge != 36*time.Hour {
		t.Fatalf("the flag must win over a bad variable: %v %v", in.MaxAge, err)
	}
	t.Setenv("SETFLOW_SET_MAX_AGE", "")
	t.Setenv("SETFLOW_MAX_BODY", "64k")
	if _, err := parseIngress(t); err == nil || !strings.Contains(err.Error(), "SETFLOW_MAX_BODY (-max-body)") {
		t.Fatalf("SETFLOW_MAX_BODY=64k: %v", err)
	}
	t.Setenv("SETFLOW_MAX_BODY", "")
	if _, err := parseIngress(t, "-max-age", "tomorrow"); err == nil || !strings.Contains(err.Error(), "-max-age") {
		t.Fatalf("bad flag: %v", err)
	}
	var r Reactions
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	t.Setenv("SETFLOW_CRM_RATE", "fast")
	t.Setenv("SETFLOW_GUARD_LIMIT", "3.5")
	r.Register(fs)
	err = Parse(fs, nil)
	for _, want := range []string{"SETFLOW_CRM_RATE (-crm-rate)", "SETFLOW_GUARD_LIMIT (-guard-limit)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not name %s", err, want)
		}
	}
}

// One rule for every setting: an empty variable is an unset one.
func TestAnEmptyVariableLeavesTheDefault(t *testing.T) {
	t.Setenv("SETFLOW_LISTEN", "")
	t.Setenv("SETFLOW_SET_MAX_AGE", " ")
	in, err := parseIngress(t)
	if err != nil || in.Listen != ":8080" || in.MaxAge != 7*24*time.Hour || in.MaxBody != 64<<10 {
		t.Fatalf("listen %q max age %v max body %d: %v", in.Listen, in.MaxAge, in.MaxBody, err)
	}
	var dev Ingress
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	dev.RegisterServer(fs)
	if err := Parse(fs, nil); err != nil || dev.Listen != in.Listen {
		t.Fatalf("dev listens on %q, the ingress on %q (%v)", dev.Listen, in.Listen, err)
	}
}

func TestIsSetTellsAGivenSettingFromItsDefault(t *testing.T) {
	t.Setenv("SETFLOW_ISSUER", "")
	var in Ingress
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	in.RegisterIssuer(fs)
	if err := Parse(fs, nil); err != nil || IsSet(fs, "issuer") {
		t.Fatalf("unset issuer counts as set (%v)", err)
	}
	t.Setenv("SETFLOW_ISSUER", "https://iss.example")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	in.RegisterIssuer(fs)
	if err := Parse(fs, nil); err != nil || !IsSet(fs, "issuer") || in.Issuer != "https://iss.example" {
		t.Fatalf("issuer from the environment: %q %v", in.Issuer, err)
	}
}

func TestDefaultWorkerIgnoresTheEnvironment(t *testing.T) {
	t.Setenv("SETFLOW_CRM", "hubspot")
	t.Setenv(EnvAuditKey, "from-env")
	w := DefaultWorker()
	if w.Reactions.CRM != "none" || w.AuditKey.Key != "" || w.Reactions.CRMRate != 10 || w.Reactions.GuardLimit != DefaultGuardLimit {
		t.Fatalf("defaults: %+v", w.Reactions)
	}
	if err := w.Validate(); err != nil {
		t.Fatalf("the defaults are invalid: %v", err)
	}
}
