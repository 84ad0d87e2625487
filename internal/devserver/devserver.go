// Package devserver runs the Temporal CLI's development server as a child
// process that benchmarks and chaos tests can kill (SIGKILL) and start again on
// the same port and the same SQLite file. testsuite.DevServer in the SDK only
// stops it politely; a crash test needs the impolite way too.
package devserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"

	"github.com/setflow/setflow/internal/proccpu"
	"github.com/setflow/setflow/internal/temporalsetup"
)

// Options configure one server process.
type Options struct {
	// Bin is the Temporal CLI (e.g. .bin/temporal).
	Bin string
	// HostPort is the frontend's 127.0.0.1:port; empty picks a free port.
	HostPort string
	// DBFile is the SQLite file that keeps the server's state across restarts;
	// empty keeps it in memory (lost when the process dies).
	DBFile string
	// Pragmas are SQLite pragmas as "name=value", e.g. "journal_mode=wal".
	Pragmas []string
	// Namespace is registered at start-up ("default" always is).
	Namespace string
	// LogLevel of the server (default "error").
	LogLevel string
	// DynamicConfig values as KEY=JSON, passed with --dynamic-config-value.
	DynamicConfig []string
}

// Server is one running dev server process.
type Server struct {
	opts   Options
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lockedBuffer
}

// Start launches the server and waits until its namespace answers.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Bin == "" {
		return nil, errors.New("devserver: no Temporal CLI binary given")
	}
	if _, err := os.Stat(opts.Bin); err != nil {
		return nil, fmt.Errorf("devserver: temporal CLI: %w", err)
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "error"
	}
	if opts.HostPort == "" {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		opts.HostPort = fmt.Sprintf("127.0.0.1:%d", p)
	}
	host, port, err := net.SplitHostPort(opts.HostPort)
	if err != nil {
		return nil, fmt.Errorf("devserver: host:port %q: %w", opts.HostPort, err)
	}
	args := []string{"server", "start-dev", "--headless", "--ip", host, "--port", port,
		"--namespace", opts.Namespace, "--log-level", opts.LogLevel,
		"--dynamic-config-value", "frontend.enableServerVersionCheck=false"}
	args = append(args, temporalsetup.DevServerArgs()...)
	if opts.DBFile != "" {
		if err := os.MkdirAll(filepath.Dir(opts.DBFile), 0o755); err != nil {
			return nil, err
		}
		args = append(args, "--db-filename", opts.DBFile)
	}
	for _, p := range opts.Pragmas {
		args = append(args, "--sqlite-pragma", p)
	}
	for _, d := range opts.DynamicConfig {
		args = append(args, "--dynamic-config-value", d)
	}
	s := &Server{opts: opts, exited: make(chan struct{}), out: &lockedBuffer{}}
	s.cmd = exec.Command(opts.Bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// Dies with this process, even when it is killed before it can clean up
	// (Linux); a test timeout must not leave servers behind.
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("devserver: exec %s: %w", opts.Bin, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	if err := s.waitReady(ctx, 90*time.Second); err != nil {
		_ = s.Kill()
		return nil, fmt.Errorf("%w\n%s", err, s.Output())
	}
	return s, nil
}

// HostPort is the frontend's address.
func (s *Server) HostPort() string { return s.opts.HostPort }

// Output is what the process wrote so far.
func (s *Server) Output() string { return s.out.String() }

// Dial connects a client to the server's namespace.
func (s *Server) Dial(ctx context.Context, logger log.Logger) (client.Client, error) {
	return client.DialContext(ctx, client.Options{HostPort: s.opts.HostPort, Namespace: s.opts.Namespace, Logger: logger})
}

// CPUTime is the user + system CPU time the process has used so far (Linux;
// zero elsewhere).
func (s *Server) CPUTime() time.Duration {
	d, _ := proccpu.Of(s.cmd.Process.Pid)
	return d
}

// Kill ends the process at once (SIGKILL), as a crash would, and waits for it.
func (s *Server) Kill() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-s.exited
	return nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-s.exited:
			return errors.New("devserver: the server exited during start-up")
		default:
		}
		lastErr = s.ping(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devserver: not ready after %s: %v", timeout, lastErr)
		case <-s.exited:
			return errors.New("devserver: the server exited during start-up")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) ping(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := s.Dial(dctx, Quiet{})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.WorkflowService().DescribeNamespace(dctx, &workflowservice.DescribeNamespaceRequest{Namespace: s.opts.Namespace})
	return err
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Quiet is an SDK logger that drops everything.
type Quiet struct{}

func (Quiet) Debug(string, ...any) {}
func (Quiet) Info(string, ...any)  {}
func (Quiet) Warn(string, ...any)  {}
func (Quiet) Error(string, ...any) {}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

var _ io.Writer = (*lockedBuffer)(nil)

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Keep the last 64 KiB: enough to explain a failure.
	if b.buf.Len() > 64<<10 {
		rest := b.buf.Bytes()[b.buf.Len()-32<<10:]
		b.buf = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
