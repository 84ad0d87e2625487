// Package talk records what Kakao Talk's webhooks tell a service: the Kakao
// Talk Share deliveries (which message template reached which chat, with the
// service's own callback arguments) and the user–channel relationship of the
// Kakao Talk Channel webhook, with the marketing consent that follows from it.
//
// The ingress builds the event payloads defined here; the reaction activities
// read them back and write them through Store. The package depends only on the
// database, so both sides can share it.
package talk

import (
	"context"
	"encoding/json"
	"time"
)

// Event types and names of the two Talk webhooks, as carried in event.Event.
const (
	// TypeShare is the event type of a Kakao Talk Share webhook delivery.
	TypeShare = "kakao:talk-share"
	// TypeChannel is the event type of a Kakao Talk Channel webhook delivery.
	TypeChannel = "kakao:talk-channel"
	// NameShare is the reaction name of a Talk Share delivery.
	NameShare = "talk-share"
	// NameChannelPrefix starts the reaction name of a channel event:
	// "channel-added", "channel-blocked", or "channel-<other>" for values
	// Kakao may add later.
	NameChannelPrefix = "channel-"
)

// Channel relationship statuses Kakao documents. Other values are recorded as
// they arrive (lower-cased) and leave the marketing consent unchanged.
const (
	StatusAdded   = "added"
	StatusBlocked = "blocked"
)

// SharePayload is the event payload of a Talk Share delivery.
type SharePayload struct {
	ResourceID string `json:"resource_id"`
	ChatType   string `json:"chat_type"`
	HashChatID string `json:"hash_chat_id"`
	// TemplateID is absent for messages not sent from a template.
	TemplateID *int64 `json:"template_id,omitempty"`
	// Args are the custom serverCallbackArgs the app passed when sharing, with
	// their values as received (strings from a query or form, any JSON value
	// from a JSON body).
	Args map[string]json.RawMessage `json:"args"`
}

// ChannelPayload is the event payload of a Talk Channel delivery. The older
// plus_friend_* field names are folded into the channel_* fields; Legacy says
// which spelling arrived.
type ChannelPayload struct {
	ResourceID string `json:"resource_id"`
	// Event is the value as received (e.g. "added", "blocked").
	Event           string `json:"event"`
	UserID          string `json:"id"`
	IDType          string `json:"id_type"`
	ChannelPublicID string `json:"channel_public_id,omitempty"`
	ChannelUUID     string `json:"channel_uuid,omitempty"`
	// UpdatedAt is when Kakao says the relationship changed.
	UpdatedAt time.Time `json:"updated_at"`
	// TimeSource names the field UpdatedAt came from: "updated_at",
	// "timestamp", or "received" when the delivery carried neither.
	TimeSource string `json:"time_source"`
	Legacy     bool   `json:"legacy_fields,omitempty"`
	// Extra keeps any other top-level member, so nothing Kakao sends is lost.
	Extra map[string]json.RawMessage `json:"extra,omitempty"`
}

// Delivery is one recorded Talk Share delivery.
type Delivery struct {
	EventKey   string
	ResourceID string
	ChatType   string
	HashChatID string
	TemplateID *int64
	Args       map[string]json.RawMessage
	ReceivedAt time.Time
}

// Relationship is one user's relationship with one channel, as of UpdatedAt.
type Relationship struct {
	Issuer          string
	UserID          string
	IDType          string
	ChannelPublicID string
	ChannelUUID     string
	Status          string
	// MarketingConsent is true after "added", false after "blocked" and nil
	// when no known status has been seen yet.
	MarketingConsent *bool
	UpdatedAt        time.Time
	EventKey         string
}

// ChannelKey identifies the channel of a relationship: the public id when
// Kakao sent one, else the uuid (the "@name" search id).
func (r Relationship) ChannelKey() string {
	if r.ChannelPublicID != "" {
		return r.ChannelPublicID
	}
	return "uuid:" + r.ChannelUUID
}

// ConsentFor is the marketing consent a status implies: on for added, off for
// blocked, unknown (nil) for anything else.
func ConsentFor(status string) *bool {
	var v bool
	switch status {
	case StatusAdded:
		v = true
	case StatusBlocked:
		v = false
	default:
		return nil
	}
	return &v
}

// Store records Talk webhook outcomes. Both methods are idempotent on the event
// key, so that activity retries never record twice.
type Store interface {
	// RecordDelivery stores a Talk Share delivery once; inserted is false when
	// the event key was already recorded.
	RecordDelivery(ctx context.Context, d Delivery) (inserted bool, err error)
	// RecordRelationship applies r unless the stored relationship of the same
	// user and channel is newer (an older event never overwrites a newer one;
	// at equal times the first recorded wins). It returns the relationship as
	// stored afterwards and whether r is what is stored.
	RecordRelationship(ctx context.Context, r Relationship) (current Relationship, applied bool, err error)
}

// ShareHook is the extension point for a service's own reaction to a Talk
// Share delivery (e.g. crediting a referral). Set Activities.TalkShareHook to
// an implementation; the reaction calls it in its own step, after the delivery
// has been recorded, with Temporal's retries. It must be idempotent on
// idempotencyKey, which stays the same across retries of the same delivery.
type ShareHook interface {
	OnTalkShare(ctx context.Context, idempotencyKey string, d Delivery) error
}
