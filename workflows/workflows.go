// Package workflows holds setflow's deterministic workflow code. It knows the
// activities' names and types, never their dependencies.
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

// SignalRetry re-drives a parked reaction (`setflow events retry <key>`).
const SignalRetry = "retry"

// PurgeWorkflowID names the pending data purge of one user. The subject hash
// is keyed, so the id reveals nothing about the user; one id per user means a
// later link can find and cancel it.
func PurgeWorkflowID(subjectHash string) string { return "setflow-purge/" + subjectHash }
