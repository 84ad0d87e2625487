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

func (s *Shutdown) delaySettings() []Setting {
	return []Setting{{Env: "SETFLOW_SHUTDOWN_DELAY", Flag: "shutdown-delay", Default: DefaultShutdownDelay.String(),
		Usage: "ingress: on SIGTERM, how long /readyz answers 503 while requests are still served, so that load balancers stop sending before the server drains", ptr: &s.Delay}}
}

func (s *Shutdown) timeoutSettings() []Setting {
	return []Setting{{Env: "SETFLOW_SHUTDOWN_TIMEOUT", Flag: "shutdown-timeout", Default: DefaultShutdownTimeout.String(),
		Usage: "ingress, relay: on SIGTERM, how long in-flight requests (ingress) or the claimed inbox batch (relay) may take to finish", ptr: &s.Timeout}}
}

func (s *Shutdown) workerSettings() []Setting {
	return []Setting{{Env: "SETFLOW_WORKER_STOP_TIMEOUT", Flag: "worker-stop-timeout", Default: DefaultWorkerStopTimeout.String(),
		Usage: "worker: on SIGTERM, how long running activities may take to finish after polling stops; keep it above the 30s activity timeout and below the deployment's grace period", ptr: &s.WorkerStopTimeout}}
}

// RegisterDelay adds -shutdown-delay (ingress).
func (s *Shutdown) RegisterDelay(fs *flag.FlagSet) { register(fs, s.delaySettings()) }

// RegisterTimeout adds -shutdown-timeout (ingress, relay).
func (s *Shutdown) RegisterTimeout(fs *flag.FlagSet) { register(fs, s.timeoutSettings()) }

// RegisterWorker adds -worker-stop-timeout (worker).
func (s *Shutdown) RegisterWorker(fs *flag.FlagSet) { register(fs, s.workerSettings()) }

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
