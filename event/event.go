// Package event is setflow's model of one accepted delivery: the envelope that the
// ingress writes to the inbox, the relay hands to Temporal and the reaction
// workflow reads. It depends on nothing else in setflow so that every layer can
// share it without importing upward.
package event

import (
	"encoding/json"
	"time"
)

// Source names the webhook an envelope came from.
type Source string

const (
	// SourceSET is Kakao's Account Status Change webhook (SSF Security Event Tokens).
	SourceSET Source = "set"
	// SourceUnlink is Kakao's unlink webhook.
	SourceUnlink Source = "unlink"
	// SourceTalkShare is the Kakao Talk Share webhook.
	SourceTalkShare Source = "talk-share"
	// SourceTalkChannel is the Kakao Talk Channel webhook.
	SourceTalkChannel Source = "talk-channel"
)

// NameUserUnlinked is the Event.Name of an unlink: the OAuth user-unlinked
// SET's, which Kakao's unlink webhook shares, so that both get the same
// reaction. Event names are otherwise the last segment of a SET's type URI
// (secevent.EventName).
const NameUserUnlinked = "user-unlinked"

// Subject identifies the user an event is about, normalized to issuer + user id.
type Subject struct {
	Issuer string `json:"issuer"`
	UserID string `json:"user_id"`
	Format string `json:"format,omitempty"`
}

// Event is one event of an envelope. A SET may carry several; the other
// webhooks carry exactly one.
type Event struct {
	// Type is the full event type URI for SETs, or "kakao:<webhook>" otherwise.
	Type string `json:"type"`
	// Name is the short name reactions are keyed by, e.g. "account-disabled".
	Name     string  `json:"name"`
	Category string  `json:"category"`
	Subject  Subject `json:"subject"`
	// Time is when the event happened (toe, event_timestamp, else iat); session
	// revocation keeps sessions created after it (after its second when it is
	// in whole seconds: SessionsUpTo).
	Time    time.Time       `json:"time"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Envelope is one accepted delivery, exactly as stored in the inbox.
type Envelope struct {
	// Key is the stable dedupe key; it also names the Temporal work.
	Key        string    `json:"key"`
	Source     Source    `json:"source"`
	Subject    Subject   `json:"subject"`
	IssuedAt   time.Time `json:"issued_at"`
	ReceivedAt time.Time `json:"received_at"`
	// TxnID is the sender's transaction id (SET txn/txm), kept for correlation.
	TxnID  string  `json:"txn_id,omitempty"`
	Events []Event `json:"events"`
	// TraceParent is the W3C traceparent of the delivery's span when
	// tracing is on (random ids only): the relay continues the trace from it.
	TraceParent string `json:"traceparent,omitempty"`
}
