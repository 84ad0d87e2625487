// Package worker wires setflow's workflows and activities to a Temporal worker.
package worker

import (
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/workflows"
)

// New returns a worker on the reactions task queue with everything registered.
func New(c client.Client, acts *activities.Activities, opts sdkworker.Options) sdkworker.Worker {
	w := sdkworker.New(c, workflows.TaskQueue, opts)
	w.RegisterWorkflow(workflows.Reaction)
	w.RegisterActivity(acts)
	return w
}
