package mailer

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"defaults", func(c *Config) { c.Port, c.TLS, c.Timeout, c.MessageIDDomain = 0, "", 0, "" }, ""},
		{"service name from From", func(c *Config) { c.ServiceName = "" }, ""},
		{"ipv6 host", func(c *Config) { c.Host = "::1" }, ""},
		{"no host", func(c *Config) { c.Host = "" }, "Host is required"},
		{"host with port", func(c *Config) { c.Host = "smtp.example.com:587" }, "must not include a port"},
		{"bracketed host with port", func(c *Config) { c.Host = "[::1]:25" }, "must not include a port"},
		{"host as URL", func(c *Config) { c.Host = "smtp://smtp.example.com" }, "not a URL"},
		{"port range", func(c *Config) { c.Port = 70000 }, "Port 70000 is out of range"},
		{"negative port", func(c *Config) { c.Port = -1 }, "out of range"},
		{"tls mode", func(c *Config) { c.TLS = "ssl" }, `TLS "ssl" is not one of`},
		{"password without user", func(c *Config) { c.Password = "hunter2-secret" }, "Password is set but Username is empty"},
		{"user without password", func(c *Config) { c.Username = "relay" }, "Username is set but Password is empty"},
		{"no from", func(c *Config) { c.From = "" }, "From is required"},
		{"bad from", func(c *Config) { c.From = "security at acme" }, "is not an address"},
		{"bad message id domain", func(c *Config) { c.MessageIDDomain = "mail acme>" }, "MessageIDDomain"},
		{"no service name", func(c *Config) { c.ServiceName, c.From = "", "security@acme.example" }, "ServiceName is required"},
		{"multi-line service name", func(c *Config) { c.ServiceName = "Acme\r\nBcc: x@y" }, "single line"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "Timeout -1s is negative"},
		{"missing CA file", func(c *Config) { c.CAFile = filepath.Join(t.TempDir(), "nope.pem") }, "CAFile"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if _, err := New(cfg); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2-secret") {
				t.Errorf("error shows the password: %v", err)
			}
			if _, err := New(cfg); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

func TestConfigReportsAllProblems(t *testing.T) {
	err := Config{TLS: "ssl", Timeout: -1}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{"Host is required", "TLS", "From is required", "Timeout"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	for mode, port := range map[string]int{"": 587, TLSNone: 25, TLSStartTLS: 587, TLSStartTLSOpportunistic: 587, TLSImplicit: 465} {
		cfg := testConfig()
		cfg.TLS, cfg.Port, cfg.Timeout, cfg.ServiceName = mode, 0, 0, ""
		m := newMailer(t, cfg)
		if m.cfg.Port != port {
			t.Errorf("TLS %q: port %d, want %d", mode, m.cfg.Port, port)
		}
		if mode == "" && m.cfg.TLS != TLSStartTLS {
			t.Errorf("empty TLS became %q, want starttls", m.cfg.TLS)
		}
		if m.cfg.Timeout != DefaultTimeout || m.cfg.ServiceName != "Acme Security" {
			t.Errorf("timeout %s, service name %q", m.cfg.Timeout, m.cfg.ServiceName)
		}
	}
}

// Server replies can quote the recipient in any form; classify and redact must
// strip it, the name and the password before the text reaches a log.
func TestErrorRedaction(t *testing.T) {
	n := notice(NoticeAccountHijacked, "ko")
	n.Name = "Kim Kakao"
	reply := &textproto.Error{Code: 550, Msg: "5.1.1 <Kim.Kakao@Example.com>: Recipient address rejected for Kim Kakao (pw hunter2-secret) \"kim.kakao\"@example.com"}
	err := classify(context.Background(), "session", TLSNone, fmt.Errorf("SMTP AUTH failed: %w", reply)).
		redact(n.To, n.Name, "hunter2-secret")
	assertNoPII(t, err, n, "hunter2-secret")
	if !IsPermanent(err) || err.Op != "auth" || err.Code != 550 || err.EnhancedCode != "5.1.1" {
		t.Errorf("classified as %+v", err)
	}
	if !strings.Contains(err.Error(), "Recipient address rejected") {
		t.Errorf("redaction removed too much: %v", err)
	}

	temp := classify(context.Background(), "session", TLSNone, &textproto.Error{Code: 421, Msg: "4.3.2 try later"})
	if IsPermanent(temp) || temp.Code != 421 {
		t.Errorf("421 classified as %+v", temp)
	}
	if IsPermanent(errors.New("boom")) || IsPermanent(nil) {
		t.Error("a foreign error is permanent")
	}
	if !IsPermanent(fmt.Errorf("activity: %w", permanent("render", "x"))) {
		t.Error("IsPermanent does not see through wrapping")
	}
}
