package activities

import (
	"context"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/metrics"
	"github.com/setflow/setflow/secevent"
)

// knownEvents bounds the event label of the step metrics.
var knownEvents = func() map[string]bool {
	m := map[string]bool{event.NameUserUnlinked: true, "talk-share": true, "channel-added": true, "channel-blocked": true,
		"crm-sync": true, "purge": true}
	for _, t := range secevent.KnownEventTypes {
		m[secevent.EventName(t)] = true
	}
	return m
}()

// RecordAudit appends one audit row; (event key, step) makes it write-once,
// and only the first write counts in the metrics.
func (a *Activities) RecordAudit(ctx context.Context, r audit.Record) error {
	inserted, err := a.Audit.Append(ctx, r)
	if err == nil && inserted {
		metrics.ObserveStep(r.Step, r.Outcome, func(name string) bool { return knownEvents[name] })
	}
	return err
}
