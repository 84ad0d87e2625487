package config

import (
	"bytes"
	"flag"
	"log/slog"
	"strings"
	"testing"
)

func TestKeyPolicyRefusesWithoutKeysAndNamesTheVariables(t *testing.T) {
	t.Setenv(EnvAuditKey, "")
	t.Setenv(EnvCodecKeys, "")
	t.Setenv(EnvCodecAuthToken, "")
	t.Setenv(EnvInsecureDevKeys, "")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	all := KeyNeeds{AuditKey: true, CodecKeys: true, CodecAuthToken: true}

	var p KeyPolicy
	p.Register(flag.NewFlagSet("t", flag.ContinueOnError))
	err := p.Enforce(log, all)
	if err == nil {
		t.Fatal("started without any key")
	}
	for _, want := range []string{EnvAuditKey, EnvCodecKeys, EnvCodecAuthToken, "-" + FlagInsecureDevKeys, EnvInsecureDevKeys} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not name %s: %v", want, err)
		}
	}
	// Only what the command needs is asked for.
	err = p.Enforce(log, KeyNeeds{AuditKey: true})
	if err == nil || strings.Contains(err.Error(), EnvCodecKeys) {
		t.Fatalf("audit key only: %v", err)
	}
	// The public development key is no key.
	t.Setenv(EnvAuditKey, DevAuditKey)
	if err := p.Enforce(log, KeyNeeds{AuditKey: true}); err == nil || !strings.Contains(err.Error(), "public development key") {
		t.Fatalf("dev audit key accepted: %v", err)
	}

	t.Setenv(EnvAuditKey, "an-audit-key-of-enough-length")
	t.Setenv(EnvCodecKeys, "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	t.Setenv(EnvCodecAuthToken, "a-token")
	if err := p.Enforce(log, all); err != nil {
		t.Fatalf("all keys set: %v", err)
	}
	if logs.Len() != 0 {
		t.Fatalf("warned with every key set and no opt-out: %s", logs.String())
	}
}

func TestInsecureDevKeysOptOutStartsWithAWarning(t *testing.T) {
	t.Setenv(EnvAuditKey, "")
	t.Setenv(EnvCodecKeys, "")
	t.Setenv(EnvCodecAuthToken, "")
	all := KeyNeeds{AuditKey: true, CodecKeys: true, CodecAuthToken: true}
	for _, c := range []struct {
		name string
		env  string
		args []string
	}{
		{"flag", "", []string{"-" + FlagInsecureDevKeys}},
		{"env", "1", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(EnvInsecureDevKeys, c.env)
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var p KeyPolicy
			p.Register(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			if err := p.Enforce(slog.New(slog.NewTextHandler(&logs, nil)), all); err != nil {
				t.Fatalf("opt-out refused: %v", err)
			}
			for _, want := range []string{"level=WARN", "INSECURE", EnvAuditKey, EnvCodecKeys, EnvCodecAuthToken} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("warning lacks %q: %s", want, logs.String())
				}
			}
		})
	}
}
