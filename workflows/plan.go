package workflows

import "github.com/setflow/setflow/event"

// Step names one reaction step. Audit steps are implicit: every event gets an
// audit row for itself and one per step outcome.
type Step string

const (
	StepRevokeSessions Step = "revoke_sessions"
)

// sessionEnding are the events after which the user's existing sessions must
// not stay valid.
var sessionEnding = map[string]bool{
	"user-unlinked":         true,
	"tokens-revoked":        true,
	"account-disabled":      true,
	"account-purged":        true,
	"credential-compromise": true,
	"sessions-revoked":      true,
	"session-revoked":       true,
	"credential-change":     true,
	"unlink":                true, // the unlink webhook
}

// Plan returns the ordered steps for one event. It must stay a pure function of
// its input: workflows replay it.
func Plan(ev event.Event) []Step {
	if sessionEnding[ev.Name] {
		return []Step{StepRevokeSessions}
	}
	return nil
}
