// Package activities holds the side effects of setflow's reactions. Each
// activity is idempotent: it is keyed by the event key and the step, so that
// Temporal's retries (and a crashed worker's replays) never act twice.
package activities

import (
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/sessions"
	"github.com/setflow/setflow/talk"
)

// Activities is registered with the worker; its fields are its dependencies.
type Activities struct {
	Sessions sessions.Revoker
	Audit    audit.Log
	// Talk records Kakao Talk Share deliveries and Talk Channel relationships.
	Talk talk.Store
	// TalkShareHook, when set, is the service's own reaction to a Talk Share
	// delivery, run in its own step after the delivery is recorded (see
	// talk.ShareHook and docs/webhooks.md). Nil skips the step.
	TalkShareHook talk.ShareHook
	// Guard is the blast-radius guard; nil admits every destructive step.
	Guard guard.Guard
	// Backends holds the other reaction steps' dependencies (activities/backends.go).
	Backends
}
