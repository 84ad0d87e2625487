package config

import (
	"fmt"
	"os"
	"strings"
)

// EnvTestUsers names the variable listing the test accounts: Kakao user ids
// (comma-separated) whose events run every reaction step in shadow, so that
// Kakao's Webhook Test tool can be used on team members' real accounts.
// Environment only, never a flag: user ids have no place in process listings.
const EnvTestUsers = "SETFLOW_TEST_USERS"

// TestUsersFromEnv reads SETFLOW_TEST_USERS. An entry that is not a Kakao
// user number is an error, named by its position only (never quoted).
func TestUsersFromEnv() ([]string, error) {
	return ParseTestUsers(os.Getenv(EnvTestUsers))
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
