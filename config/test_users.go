package config

import (
	"flag"
	"fmt"
	"strings"
)

// EnvTestUsers names the variable listing the test accounts: Kakao user ids
// (comma-separated) whose events run every reaction step in shadow, so that
// Kakao's Webhook Test tool can be used on team members' real accounts.
// Environment only, never a flag: user ids have no place in process listings.
const EnvTestUsers = "SETFLOW_TEST_USERS"

// TestUsers are the test accounts' Kakao user ids.
type TestUsers struct{ IDs []string }

func (t *TestUsers) settings() []Setting {
	return []Setting{{Env: EnvTestUsers, Secret: true,
		Usage: "worker: Kakao user ids (comma-separated) whose events run every step in shadow, audited shadow, nothing acted on, for Kakao's Webhook Test tool; kept only as keyed hashes",
		ptr:   &t.IDs}}
}

// Register reads SETFLOW_TEST_USERS (environment only).
func (t *TestUsers) Register(fs *flag.FlagSet) { register(fs, t.settings()) }

// Validate checks that every entry is a Kakao user number; a wrong one is
// named by its position only (never quoted).
func (t *TestUsers) Validate() error {
	_, err := ParseTestUsers(strings.Join(t.IDs, ","))
	return err
}

// ParseTestUsers splits and checks a SETFLOW_TEST_USERS value.
func ParseTestUsers(s string) ([]string, error) {
	var out []string
	for i, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if len(v) > 20 || strings.IndexFunc(v, func(c rune) bool { return c < '0' || c > '9' }) >= 0 {
			return nil, fmt.Errorf("%s: entry %d is not a Kakao user id (digits only)", EnvTestUsers, i+1)
		}
		out = append(out, v)
	}
	return out, nil
}
