package workflows

import (
	"fmt"
	"strings"

	"github.com/setflow/setflow/event"
)

// Static summaries and details shown by the Temporal UI for each workflow.
// They are user metadata, encoded by the payload codec like any payload;
// still, they hold only event names, categories, webhooks and keyed hashes.

// StreamSummary is a user stream's one-line summary, set when it starts.
func StreamSummary(subjectHash string, env event.Envelope, events []int) string {
	short := subjectHash
	if len(short) > 12 {
		short = short[:12]
	}
	return fmt.Sprintf("user %s · started by %s", short, describe(env, events))
}

// StreamDetails explains a user stream to an operator opening it.
const StreamDetails = `One ordered stream of work for one user (the id is the keyed subject hash,
the same value as the audit trail's subject). Events arrive as ` + "`event`" + ` signals and are
applied one at a time by event time; session revocation runs at once.

- **Current details** name what waits on an operator: held events
  (` + "`setflow holds list`" + `) and parked steps (` + "`setflow events list -status parked`" + `).
- Query ` + "`state`" + ` for the queue, running work, parked and held keys, CRM sync and purge.
- Search: ` + "`SetflowSubject`, `SetflowEventType`, `SetflowCategory`, `SetflowWebhook`, `SetflowOutcome`" + `.`

// ReactionSummary is a user-less reaction's one-line summary.
func ReactionSummary(env event.Envelope) string {
	all := make([]int, len(env.Events))
	for i := range all {
		all[i] = i
	}
	return describe(env, all)
}

// describe: "account-disabled · risc · set webhook" for the chosen events.
func describe(env event.Envelope, events []int) string {
	var names, categories []string
	for _, i := range events {
		if i < 0 || i >= len(env.Events) {
			continue
		}
		names = addBounded(names, env.Events[i].Name)
		categories = addBounded(categories, env.Events[i].Category)
	}
	if len(names) == 0 {
		names = []string{"no events"}
	}
	parts := []string{strings.Join(names, ", ")}
	if len(categories) > 0 {
		parts = append(parts, strings.Join(categories, ", "))
	}
	parts = append(parts, string(env.Source)+" webhook")
	return strings.Join(parts, " · ")
}
