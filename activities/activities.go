// Package activities holds the side effects of setflow's reactions. Each
// activity is idempotent: it is keyed by the event key and the step, so that
// Temporal's retries (and a crashed worker's replays) never act twice.
package activities

import (
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/sessions"
)

// Activities is registered with the worker; its fields are its dependencies.
type Activities struct {
	Sessions sessions.Revoker
	Audit    audit.Log
}
