// Package searchattr names the custom search attributes setflow sets on its
// workflows, with the types they are registered with. It depends on nothing
// of setflow's, so that tools registering them need none of the workflows.
package searchattr

import (
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
)

// Custom search attributes on every setflow workflow, so that an operator can
// find one user's or one event type's work in the Temporal UI. They are not
// encrypted by the payload codec: values are event names, categories, route
// names, outcomes and the keyed subject hash, never a user id or PII.
var (
	// EventType: the event names a workflow has handled (account-disabled, …).
	EventType = temporal.NewSearchAttributeKeyKeywordList("SetflowEventType")
	// Category: the event categories (risc, caep, oauth, profile, talk, …).
	Category = temporal.NewSearchAttributeKeyKeywordList("SetflowCategory")
	// Webhook: the webhook route(s) the events came in on.
	Webhook = temporal.NewSearchAttributeKeyKeywordList("SetflowWebhook")
	// Subject: the keyed subject hash (the same value the audit trail uses).
	Subject = temporal.NewSearchAttributeKeyKeyword("SetflowSubject")
	// Outcome: where the workflow's work stands: held or parked while
	// something waits on an operator, running while steps run, else the
	// outcome of its latest event (done, superseded, rejected, shadow,
	// failed). A Keyword: SQL visibility stores at most three keyword lists.
	Outcome = temporal.NewSearchAttributeKeyKeyword("SetflowOutcome")
)

// All lists every custom search attribute setflow sets, with the
// type it must be registered with (`setflow temporal setup`).
func All() map[string]enums.IndexedValueType {
	return map[string]enums.IndexedValueType{
		EventType.GetName(): enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
		Category.GetName():  enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
		Webhook.GetName():   enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
		Subject.GetName():   enums.INDEXED_VALUE_TYPE_KEYWORD,
		Outcome.GetName():   enums.INDEXED_VALUE_TYPE_KEYWORD,
	}
}
