package audit

// Progress counts the audit rows of the events whose keys start with a
// prefix: a bench's own batch, watched while it runs.
type Progress struct {
	Rows int `db:"rows"`
	// Completed counts events whose reaction finished (step
	// "<event name>/completed", workflows.StepCompleted).
	Completed int `db:"completed"`
	// Failed counts steps that failed (outcome "failed").
	Failed int `db:"failed"`
}
