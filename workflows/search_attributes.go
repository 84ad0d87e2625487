package workflows

import (
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
)

// Custom search attributes on every setflow workflow, so that an operator can
// find one user's or one event type's work in the Temporal UI. They are not
// encrypted by the payload codec: values are event names, categories, route
// names, outcomes and the keyed subject hash, never a user id or PII.
var (
	// AttrEventType: the event names a workflow has handled (account-disabled, …).
	AttrEventType = temporal.NewSearchAttributeKeyKeywordList("SetflowEventType")
	// AttrCategory: the event categories (risc, caep, oauth, profile, talk, …).
	AttrCategory = temporal.NewSearchAttributeKeyKeywordList("SetflowCategory")
	// AttrWebhook: the webhook route(s) the events came in on.
	AttrWebhook = temporal.NewSearchAttributeKeyKeywordList("SetflowWebhook")
	// AttrSubject: the keyed subject hash (the same value the audit trail uses).
	AttrSubject = temporal.NewSearchAttributeKeyKeyword("SetflowSubject")
	// AttrOutcome: the outcomes so far (done, superseded, shadow, failed) and,
	// while work waits on an operator, parked or held.
	AttrOutcome = temporal.NewSearchAttributeKeyKeywordList("SetflowOutcome")
)

// SearchAttributes lists every custom search attribute setflow sets, with the
// type it must be registered with (`setflow temporal setup`).
func SearchAttributes() map[string]enums.IndexedValueType {
	return map[string]enums.IndexedValueType{
		AttrEventType.GetName(): enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
		AttrCategory.GetName():  enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
		AttrWebhook.GetName():   enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
		AttrSubject.GetName():   enums.INDEXED_VALUE_TYPE_KEYWORD,
		AttrOutcome.GetName():   enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
	}
}
