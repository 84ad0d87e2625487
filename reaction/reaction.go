// Package reaction is the contract between the workflows and the activities
// of a reaction: the activity names, their inputs and results, and the
// outcomes and error types both read. It holds types only, so that the
// workflows (and the relay, which starts them) never depend on what the
// activities use: SMTP, the CRM, Kakao's API, Redis. Step names and the
// activities the steps run are registered in policy's steps table.
package reaction

// Activity types the workflows run beside the policy's steps
// (policy.ActivityFor). Each is the name of an activities.Activities method;
// the worker checks that at start. Never rename one: recorded histories and
// running workflows name them.
const (
	PlanReaction     = "PlanReaction"
	RecordAudit      = "RecordAudit"
	ParkEvent        = "ParkEvent"
	UnparkEvent      = "UnparkEvent"
	ApplyEvent       = "ApplyEvent"
	SyncCRM          = "SyncCRM"
	RunPurge         = "RunPurge"
	AdmitDestructive = "AdmitDestructive"
)

// Activities lists the activity types above.
func Activities() []string {
	return []string{PlanReaction, RecordAudit, ParkEvent, UnparkEvent, ApplyEvent, SyncCRM, RunPurge, AdmitDestructive}
}

// Step outcomes, as written to the audit trail.
const (
	OutcomeDone       = "done"
	OutcomeSkipped    = "skipped"    // nothing to do (not configured, no recipient, ...)
	OutcomeSuperseded = "superseded" // a newer event already decided this
	OutcomeDuplicate  = "duplicate"  // already done by an earlier run of the same key
	// OutcomeNoAccount: the identity mapping knows no service account of the
	// user; nothing of the service's to change, and not an error.
	OutcomeNoAccount = "no_account"
)

// Error types setflow's activities return; the workflow and operators read them.
const (
	ErrTypePermanent   = "Permanent"
	ErrTypeRateLimited = "RateLimited"
	ErrTypeUnavailable = "Unavailable"
	// ErrTypeMissingSubject: a user step for an event that names no user.
	ErrTypeMissingSubject = "MissingSubject"
)
