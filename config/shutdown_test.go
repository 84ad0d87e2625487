package config

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestShutdownDefaultsEnvironmentAndValidation(t *testing.T) {
	t.Setenv("SETFLOW_WORKER_STOP_TIMEOUT", "")
	t.Setenv("SETFLOW_SHUTDOWN_DELAY", "")
	t.Setenv("SETFLOW_SHUTDOWN_TIMEOUT", "")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s := DefaultShutdown()
	s.RegisterDelay(fs)
	s.RegisterTimeout(fs)
	s.RegisterWorker(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if s.WorkerStopTimeout != 45*time.Second || s.Delay != 5*time.Second || s.Timeout != 15*time.Second {
		t.Fatalf("defaults %+v", s)
	}
	// Longer than the longest activity timeout (30 s StartToClose).
	if s.WorkerStopTimeout <= 30*time.Second {
		t.Fatalf("worker stop timeout %v must exceed the 30s activity timeout", s.WorkerStopTimeout)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}

	t.Setenv("SETFLOW_WORKER_STOP_TIMEOUT", "50s")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	s = DefaultShutdown()
	s.RegisterWorker(fs)
	if err := fs.Parse(nil); err != nil || s.WorkerStopTimeout != 50*time.Second {
		t.Fatalf("from env: %v %v", s.WorkerStopTimeout, err)
	}
	if err := fs.Parse([]string{"-worker-stop-timeout", "1m"}); err != nil || s.WorkerStopTimeout != time.Minute {
		t.Fatalf("flag: %v %v", s.WorkerStopTimeout, err)
	}

	bad := Shutdown{Delay: -time.Second}
	err := bad.Validate()
	for _, want := range []string{"SETFLOW_SHUTDOWN_DELAY", "SETFLOW_SHUTDOWN_TIMEOUT", "SETFLOW_WORKER_STOP_TIMEOUT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation %v does not name %s", err, want)
		}
	}
}
