// Package workflows holds setflow's deterministic workflow code. It calls the
// activities by name (policy's steps table, package reaction) with the types
// of package reaction, and never imports the activities or their back ends.
package workflows

import "strings"

// TaskQueue is where the reaction workflows and activities run.
const TaskQueue = "setflow-reactions"

// EventWorkflowID names the reaction workflow of one inbox entry. It is derived
// from the dedupe key only, so a duplicate delivery can never start a second
// reaction, and it carries no PII (the key is a jti or a derived hash).
func EventWorkflowID(eventKey string) string { return "setflow-event/" + eventKey }

// StepKey is the idempotency key of one step of one event: stable across
// retries, worker crashes and workflow replays.
func StepKey(eventKey, eventName, step string) string {
	return strings.Join([]string{eventKey, eventName, step}, "/")
}

// CRMTaskQueue runs the CRM steps on workers whose task-queue rate limit keeps
// setflow under the CRM's own API limits.
const CRMTaskQueue = "setflow-crm"

// SignalRetry re-drives a parked step (`setflow events retry <key>`). A user's
// stream reads the event key from the payload (empty: every parked step).
const SignalRetry = "retry"
