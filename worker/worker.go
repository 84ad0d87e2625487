// Package worker wires setflow's workflows and activities to Temporal workers:
// one on the reactions task queue, and one on the CRM task queue whose
// activity rate is limited across all workers to stay under the CRM's limits.
package worker

import (
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/workflows"
)

// DefaultCRMRate is the CRM calls per second across all workers.
const DefaultCRMRate = 10

// Set is the workers of one setflow worker process.
type Set struct {
	client  client.Client
	acts    *activities.Activities
	opts    sdkworker.Options
	workers []sdkworker.Worker
	// CRMRate bounds CRM activities per second on the CRM task queue, for all
	// workers together (a server-side task queue limit).
	CRMRate float64
	// Extra registers a service's own activities (policy extension steps).
	Extra func(r sdkworker.Registry)
}

// New returns the workers; Start starts them.
func New(c client.Client, acts *activities.Activities, opts sdkworker.Options) *Set {
	return &Set{client: c, acts: acts, opts: opts, CRMRate: DefaultCRMRate}
}

// Start registers everything and starts polling.
func (s *Set) Start() error {
	main := sdkworker.New(s.client, workflows.TaskQueue, s.opts)
	main.RegisterWorkflow(workflows.Reaction)
	main.RegisterWorkflow(workflows.UserStream)
	main.RegisterActivity(s.acts)
	crmOpts := s.opts
	crmOpts.TaskQueueActivitiesPerSecond = s.CRMRate
	crm := sdkworker.New(s.client, workflows.CRMTaskQueue, crmOpts)
	crm.RegisterActivity(s.acts)
	if s.Extra != nil {
		s.Extra(main)
	}
	s.workers = []sdkworker.Worker{main, crm}
	for i, w := range s.workers {
		if err := w.Start(); err != nil {
			for _, started := range s.workers[:i] {
				started.Stop()
			}
			return err
		}
	}
	return nil
}

// Stop stops the workers, letting running activities finish.
func (s *Set) Stop() {
	for _, w := range s.workers {
		w.Stop()
	}
}
