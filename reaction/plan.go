package reaction

import (
	"time"

	"github.com/setflow/setflow/policy"
)

// PlannedEvent is the reaction the policy chose for one event (PlanReaction).
type PlannedEvent struct {
	// SubjectHash is the keyed handle of the user, safe for workflow ids and
	// audit rows (a plain hash of a numeric id could be reversed).
	SubjectHash string          `json:"subject_hash"`
	Reaction    policy.Reaction `json:"reaction"`
	// Time is the event time clamped to the configured bounds (Backends.TimeBounds);
	// Clamped says it had to be.
	Time    time.Time `json:"time"`
	Clamped bool      `json:"clamped,omitempty"`
	// ConfirmUnlink says the unlink webhook's revocation waits for Kakao's
	// user API (an admin key is configured): a stale webhook must not end
	// the sessions of a user who linked again.
	ConfirmUnlink bool `json:"confirm_unlink,omitempty"`
	// RetryFor is how long the event's steps retry transient failures
	// before they park (Backends.StepRetryFor; 0: the workflow's default).
	RetryFor time.Duration `json:"retry_for,omitempty"`
	// TestAccount says the event is about a test account (Backends.TestUsers):
	// its Reaction is in shadow for that reason, not the policy's.
	TestAccount bool `json:"test_account,omitempty"`
}

// ParkInput marks an event whose step exhausted its retries (ParkEvent).
type ParkInput struct {
	EventKey string `json:"event_key"`
	Step     string `json:"step"`
	Reason   string `json:"reason"`
	// WorkflowID is the parked workflow, which `setflow events retry` signals
	// (the reaction itself, or the user's purge).
	WorkflowID string `json:"workflow_id"`
}
