package main

import (
	"flag"
	"fmt"
	"net/url"
	"strings"

	"github.com/setflow/setflow/config"
)

// Links into the Temporal UI that `setflow events show` and `setflow audit
// user` print, so an operator goes from a key or a user to the workflows.
// SETFLOW_TEMPORAL_UI_URL is the UI's base URL (the dev server's by default).

// uiLinks is where the links point; the commands that print them register
// its settings (registerUILinks).
var uiLinks struct {
	ui  config.Operator
	tmp *config.Temporal
}

// registerUILinks adds -temporal-ui-url; the links name tmp's namespace.
func registerUILinks(fs *flag.FlagSet, tmp *config.Temporal) {
	uiLinks.ui.RegisterUI(fs)
	uiLinks.tmp = tmp
}

func temporalUIBase() string { return strings.TrimSuffix(uiLinks.ui.TemporalUIURL, "/") }

func temporalNamespace() string {
	if uiLinks.tmp == nil || uiLinks.tmp.Namespace == "" {
		return "default"
	}
	return uiLinks.tmp.Namespace
}

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
