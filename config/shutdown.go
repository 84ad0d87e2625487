package config

import (
	"errors"
	"flag"
	"time"
)

// Defaults of the shutdown settings. The worker's stop timeout exceeds the
// longest activity timeout (30 s StartToClose, workflows/runner.go and
// workflows/user_stream.go), so that a stop never cuts off an activity that
// could still finish; the Kubernetes grace periods in deployments/k8s exceed
// each component's total (delay plus timeout).
const (
	DefaultShutdownDelay     = 5 * time.Second
	DefaultShutdownTimeout   = 15 * time.Second
	DefaultWorkerStopTimeout = 45 * time.Second
)

// Shutdown configures how the long-running commands stop on SIGTERM: the
// ingress fails readiness for Delay while still serving, then drains its
// in-flight requests for up to Timeout; the relay finishes the batch it
// claimed within Timeout; the worker stops polling and lets running
// activities finish within WorkerStopTimeout.
type Shutdown struct {
	Delay             time.Duration
	Timeout           time.Duration
	WorkerStopTimeout time.Duration
}

// RegisterDelay adds -shutdown-delay (ingress).
func (s *Shutdown) RegisterDelay(fs *flag.FlagSet) {
	duration(fs, &s.Delay, "shutdown-delay", "SETFLOW_SHUTDOWN_DELAY", DefaultShutdownDelay,
		"on SIGTERM, how long /readyz answers 503 while requests are still served, so that load balancers stop sending before the server drains")
}

// RegisterTimeout adds -shutdown-timeout (ingress, relay).
func (s *Shutdown) RegisterTimeout(fs *flag.FlagSet) {
	duration(fs, &s.Timeout, "shutdown-timeout", "SETFLOW_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout,
		"on SIGTERM, how long in-flight requests (ingress) or the claimed inbox batch (relay) may take to finish")
}

// RegisterWorker adds -worker-stop-timeout (worker).
func (s *Shutdown) RegisterWorker(fs *flag.FlagSet) {
	duration(fs, &s.WorkerStopTimeout, "worker-stop-timeout", "SETFLOW_WORKER_STOP_TIMEOUT", DefaultWorkerStopTimeout,
		"on SIGTERM, how long running activities may take to finish after polling stops; keep it above the 30s activity timeout and below the deployment's grace period")
}

// DefaultShutdown holds the defaults; a command registers the flags it uses.
func DefaultShutdown() Shutdown {
	return Shutdown{Delay: DefaultShutdownDelay, Timeout: DefaultShutdownTimeout, WorkerStopTimeout: DefaultWorkerStopTimeout}
}

// Validate reports impossible values by name.
func (s *Shutdown) Validate() error {
	var errs []error
	if s.Delay < 0 {
		errs = append(errs, errors.New("SETFLOW_SHUTDOWN_DELAY (-shutdown-delay) must not be negative"))
	}
	if s.Timeout <= 0 {
		errs = append(errs, errors.New("SETFLOW_SHUTDOWN_TIMEOUT (-shutdown-timeout) must be positive"))
	}
	if s.WorkerStopTimeout <= 0 {
		errs = append(errs, errors.New("SETFLOW_WORKER_STOP_TIMEOUT (-worker-stop-timeout) must be positive: with 0 a stop cancels running activities at once"))
	}
	return errors.Join(errs...)
}
