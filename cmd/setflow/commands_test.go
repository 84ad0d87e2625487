package main

import (
	"context"
	"strings"
	"testing"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/ingress"
)

func TestSendPostsToDevsSETEndpoint(t *testing.T) {
	if config.DevSendURL != "http://localhost:8080"+ingress.PathAccountStatus {
		t.Fatalf("config.DevSendURL %q is not setflow dev's SET endpoint %s", config.DevSendURL, ingress.PathAccountStatus)
	}
}

// Every command fails at start-up on a variable that does not parse, naming
// it, before it connects anywhere.
func TestCommandsRefuseABadSettingByName(t *testing.T) {
	cases := []struct {
		run      func(context.Context, []string) error
		env, val string
	}{
		{runIngress, "SETFLOW_SET_MAX_AGE", "7x"},
		{runIngress, "SETFLOW_MAX_BODY", "64k"},
		{runWorker, "SETFLOW_CRM_RATE", "fast"},
		{runWorker, "SETFLOW_GUARD_WINDOW", "1d12h"},
		{runRelay, "SETFLOW_INBOX_RETENTION", "a month"},
		{runDev, "SETFLOW_EVENT_TIME_PAST", "-"},
	}
	for _, c := range cases {
		t.Run(c.env, func(t *testing.T) {
			t.Setenv(c.env, c.val)
			err := c.run(context.Background(), nil)
			if err == nil || !strings.Contains(err.Error(), c.env) {
				t.Fatalf("%s=%q: %v", c.env, c.val, err)
			}
		})
	}
}
