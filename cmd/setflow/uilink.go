package main

import (
	"fmt"
	"net/url"
	"strings"
)

// Links into the Temporal UI that `setflow events show` and `setflow audit
// user` print, so an operator goes from a key or a user to the workflows.
// SETFLOW_TEMPORAL_UI_URL is the UI's base URL (the dev server's by default).

func temporalUIBase() string {
	return strings.TrimSuffix(envOr("SETFLOW_TEMPORAL_UI_URL", "http://localhost:8233"), "/")
}

func temporalNamespace() string { return envOr("TEMPORAL_NAMESPACE", "default") }

// uiQueryLink lists the workflows a visibility query selects.
func uiQueryLink(query string) string {
	return fmt.Sprintf("%s/namespaces/%s/workflows?query=%s", temporalUIBase(),
		url.PathEscape(temporalNamespace()), url.QueryEscape(query))
}

// uiWorkflowLink finds one workflow by id (the UI's own workflow page
// needs a run id; the search shows every run, latest first).
func uiWorkflowLink(workflowID string) string {
	return uiQueryLink(fmt.Sprintf("WorkflowId = %q", workflowID))
}

// subjectQuery finds everything setflow ran for one user.
func subjectQuery(subjectHash string) string {
	return fmt.Sprintf("SetflowSubject = %q", subjectHash)
}
