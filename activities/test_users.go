package activities

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/setflow/setflow/reaction"
)

// OutcomeShadow is the audit outcome of a step that was not run because its
// event is in shadow (a policy's shadow entry, or a test account's event).
const OutcomeShadow = "shadow"

// testUserDomain separates test-user hashes from the other uses of the audit
// key (subject hashes, unlink dedupe keys).
const testUserDomain = "setflow/test-user/v1"

// TestUsers are the Kakao accounts (SETFLOW_TEST_USERS) whose events run in
// shadow: verified, stored and audited like any other, every reaction step
// audited as shadow and none run, so that Kakao's Webhook Test tool — which
// sends real deliveries about a team member's real account — can be used on
// a live service. Only keyed hashes of the ids are kept (and issuer-free, as
// the unlink webhook and the SETs may name different issuers), so the set
// holds no user id that a dump or a log could leak. The zero value and nil
// hold nobody.
type TestUsers struct {
	key    []byte
	hashes map[string]struct{}
}

// NewTestUsers keys the given Kakao user ids with key (the audit key).
func NewTestUsers(key []byte, userIDs []string) *TestUsers {
	t := &TestUsers{key: append([]byte(nil), key...), hashes: make(map[string]struct{}, len(userIDs))}
	for _, id := range userIDs {
		if id = strings.TrimSpace(id); id != "" {
			t.hashes[t.hash(id)] = struct{}{}
		}
	}
	return t
}

func (t *TestUsers) hash(userID string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(testUserDomain))
	m.Write([]byte{0})
	m.Write([]byte(userID))
	return hex.EncodeToString(m.Sum(nil))
}

// Has reports whether userID is a test account.
func (t *TestUsers) Has(userID string) bool {
	if t == nil || len(t.hashes) == 0 || userID == "" {
		return false
	}
	_, ok := t.hashes[t.hash(userID)]
	return ok
}

// Len is the number of test accounts.
func (t *TestUsers) Len() int {
	if t == nil {
		return 0
	}
	return len(t.hashes)
}

// shadowed is the side-effect steps' own guard: a test account's step that
// reaches an activity anyway (its plan was made before the account was
// listed, a retry of an old step) acts on nothing and reports shadow.
func (a *Activities) shadowed(in reaction.StepInput) (reaction.StepResult, bool) {
	if !a.TestUsers.Has(in.Event.Subject.UserID) {
		return reaction.StepResult{}, false
	}
	return reaction.StepResult{Outcome: OutcomeShadow, Detail: map[string]any{"reason": "test account"}}, true
}
