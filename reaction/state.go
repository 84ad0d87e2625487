package reaction

import (
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/userstate"
)

// ApplyInput is one event for the user's state machine (ApplyEvent).
type ApplyInput struct {
	Subject  userstate.Subject `json:"subject"`
	EventKey string            `json:"event_key"`
	Source   event.Source      `json:"source"`
	// Event carries the clamped event time.
	Event event.Event   `json:"event"`
	Steps []policy.Step `json:"steps"`
}

// ApplyResult is what the event changed; the workflow runs the dependent
// steps only for parts that changed.
type ApplyResult struct {
	Decision userstate.Decision `json:"decision"`
	Repeat   bool               `json:"repeat,omitempty"`
	Version  int64              `json:"version"`
	// Purge is the user's pending purge after the event, if any.
	Purge *userstate.PendingPurge `json:"purge,omitempty"`
	// KakaoCheck is what Kakao's user API said about an unlink webhook:
	// KakaoLinked (the webhook is stale: the user is linked now),
	// KakaoUnlinked, KakaoUnavailable (no answer; applied as received) or ""
	// (not asked: no admin key configured, or not an unlink webhook).
	KakaoCheck string `json:"kakao_check,omitempty"`
	// FieldsFrom says where profile fields came from: payload or kakao.
	FieldsFrom string `json:"fields_from,omitempty"`
}

// Kakao check results.
const (
	KakaoLinked      = "linked"
	KakaoUnlinked    = "unlinked"
	KakaoUnavailable = "unavailable"
)

// RunPurgeInput runs a user's pending purge when its timer fires (RunPurge).
type RunPurgeInput struct {
	Subject userstate.Subject `json:"subject"`
	Cutoff  time.Time         `json:"cutoff"`
}

// RunPurgeResult is what the purge did.
type RunPurgeResult struct {
	Decision userstate.Decision `json:"decision"`
	// KakaoCheck: KakaoLinked (the user linked again: purge cancelled),
	// KakaoUnlinked, or "" (no admin key configured).
	KakaoCheck string `json:"kakao_check,omitempty"`
}

// SyncInput names the user whose CRM contact to sync (SyncCRM).
type SyncInput struct {
	SubjectHash string `json:"subject_hash"`
}
