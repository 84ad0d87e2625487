package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://user:s3cret@db.example:5432/setflow?sslmode=require": "postgres://user:xxxxx@db.example:5432/setflow?sslmode=require",
		"redis://:s3cret@cache:6379/0":                                   "redis://:xxxxx@cache:6379/0",
		"redis://default:p%40ss@cache:6379/0":                            "redis://default:xxxxx@cache:6379/0",
		"postgres://postgres@127.0.0.1:5432/setflow?sslmode=disable":     "postgres://postgres@127.0.0.1:5432/setflow?sslmode=disable",
		"postgres://u@h/db?sslmode=disable&password=s3cret":              "postgres://u@h/db?sslmode=disable&password=xxxxx",
		"https://hooks.example/crm?token=s3cret&b=1":                     "https://hooks.example/crm?token=xxxxx&b=1",
		"https://kapi.kakao.com":                                         "https://kapi.kakao.com",
		// url.Parse refuses a bad port; the password goes all the same.
		"postgres://u:s3cret@h:notaport/db?password=s3cret": "postgres://u:xxxxx@h:notaport/db?password=xxxxx",
		// libpq keyword/value form.
		"host=db user=u password=s3cret dbname=x":   "host=db user=u password=xxxxx dbname=x",
		"host=db password = 'se cret' sslmode=none": "host=db password=xxxxx sslmode=none",
		"": "",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A password in SETFLOW_DATABASE_URL or SETFLOW_REDIS_URL must not become a
// visible flag default (setflow <command> -h, or any flag error, prints them).
func TestURLFlagDefaultsAreRedacted(t *testing.T) {
	t.Setenv("SETFLOW_DATABASE_URL", "postgres://setflow:db-pw-1f3a@db.example:5432/setflow")
	t.Setenv("SETFLOW_REDIS_URL", "redis://:redis-pw-77c2@cache:6379/0")
	t.Setenv("SETFLOW_CRM_WEBHOOK_URL", "https://crm.example/hook?token=crm-token-9d0e")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	var db Database
	var r Reactions
	var k Kakao
	var i Ingress
	db.Register(fs)
	r.Register(fs)
	k.Register(fs)
	i.Register(fs)
	err := fs.Parse([]string{"-nonexistent-flag"})
	if err == nil {
		t.Fatal("unknown flag accepted")
	}
	fs.PrintDefaults()
	text := out.String()
	for _, secret := range []string{"db-pw-1f3a", "redis-pw-77c2", "crm-token-9d0e"} {
		if strings.Contains(text, secret) {
			t.Errorf("usage text shows %q:\n%s", secret, text)
		}
	}
	for _, want := range []string{"postgres://setflow:xxxxx@db.example:5432/setflow", "redis://:xxxxx@cache:6379/0", "-database-url URL"} {
		if !strings.Contains(text, want) {
			t.Errorf("usage text lacks %q:\n%s", want, text)
		}
	}
	// The value itself is the real URL; a flag overrides it.
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if db.URL != "postgres://setflow:db-pw-1f3a@db.example:5432/setflow" || r.RedisURL != "redis://:redis-pw-77c2@cache:6379/0" {
		t.Fatalf("values changed: %q %q", db.URL, r.RedisURL)
	}
	if err := fs.Parse([]string{"-database-url", "postgres://u:flag-pw-33aa@h/db"}); err != nil || db.URL != "postgres://u:flag-pw-33aa@h/db" {
		t.Fatalf("flag override: %q %v", db.URL, err)
	}
	// A URL given as a flag is scrubbed from logs and errors too.
	if got := Secrets().Scrub(`dial "postgres://u:flag-pw-33aa@h/db": refused; auth flag-pw-33aa`); strings.Contains(got, "flag-pw-33aa") {
		t.Fatalf("flag URL not scrubbed: %s", got)
	}
}

func TestScrubberReplacesSecretsInLogsAndErrors(t *testing.T) {
	t.Setenv(EnvAuditKey, "audit-key-0b9e5d")
	t.Setenv(EnvCodecKeys, "k2:Q29kZWNLZXlUd29Ud29Ud29Ud29Ud29Ud29Ud28=, k1:Q29kZWNLZXlPbmVPbmVPbmVPbmVPbmVPbmVPbmU=")
	t.Setenv(EnvKakaoAdminKeys, "kakao-admin-aa11, kakao-admin-bb22")
	t.Setenv("SETFLOW_SMTP_PASSWORD", "smtp-pw-c0ffee")
	t.Setenv("SETFLOW_DATABASE_URL", "postgres://setflow:db-pw-1f3a@db.example:5432/setflow")
	t.Setenv("SETFLOW_REDIS_URL", "redis://:redis-pw-77c2@cache:6379/0")
	s := NewScrubber()
	for _, c := range []struct{ in, want string }{
		{`parse "postgres://setflow:db-pw-1f3a@db.example:5432/setflow": invalid port`, `parse "postgres://setflow:xxxxx@db.example:5432/setflow": invalid port`},
		{"ERR AUTH redis-pw-77c2 called without any password configured", "ERR AUTH xxxxx called without any password configured"},
		{"key audit-key-0b9e5d, admin kakao-admin-bb22", "key xxxxx, admin xxxxx"},
		{"ring k2:Q29kZWNLZXlUd29Ud29Ud29Ud29Ud29Ud29Ud28=", "ring xxxxx"},
		{"key Q29kZWNLZXlPbmVPbmVPbmVPbmVPbmVPbmVPbmU=", "key xxxxx"},
		{"535 auth failed for smtp-pw-c0ffee", "535 auth failed for xxxxx"},
		{"nothing secret here", "nothing secret here"},
	} {
		if got := s.Scrub(c.in); got != c.want {
			t.Errorf("Scrub(%q) = %q, want %q", c.in, got, c.want)
		}
	}

	var out bytes.Buffer
	log := slog.New(s.Handler(slog.NewJSONHandler(&out, nil))).With("url", "redis://:redis-pw-77c2@cache:6379/0")
	log.WithGroup("g").Error("auth failed for smtp-pw-c0ffee",
		"error", fmt.Errorf("wrapped: %w", errors.New("key audit-key-0b9e5d")),
		"nested", slog.GroupValue(slog.String("k", "kakao-admin-aa11")),
		"list", []string{"ok", "db-pw-1f3a"},
		"count", 3)
	text := out.String()
	for _, secret := range []string{"redis-pw-77c2", "smtp-pw-c0ffee", "audit-key-0b9e5d", "kakao-admin-aa11", "db-pw-1f3a"} {
		if strings.Contains(text, secret) {
			t.Errorf("log line shows %q: %s", secret, text)
		}
	}
	if !strings.Contains(text, `"count":3`) || !strings.Contains(text, "redis://:xxxxx@cache:6379/0") {
		t.Errorf("log line lost its shape: %s", text)
	}
}

// A well-known default password (postgres:postgres, the local set-up's) is
// scrubbed in URL position only: replacing the word everywhere would mangle
// every log line.
func TestScrubberLeavesWeakPasswordsAsWords(t *testing.T) {
	t.Setenv("SETFLOW_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/setflow?sslmode=disable")
	s := NewScrubber()
	if got := s.Scrub("sessions=postgres url=postgres://postgres:postgres@127.0.0.1:5432/x"); got != "sessions=postgres url=postgres://postgres:xxxxx@127.0.0.1:5432/x" {
		t.Fatalf("got %q", got)
	}
}
