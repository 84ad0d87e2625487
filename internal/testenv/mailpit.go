package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// MailpitServer is a running Mailpit: an SMTP server that keeps what it
// receives and shows it over an HTTP API.
type MailpitServer struct {
	SMTPHost string
	SMTPPort int
	APIURL   string // e.g. http://127.0.0.1:8025, no trailing slash
}

// MailpitAddress is a name and address as Mailpit reports them.
type MailpitAddress struct {
	Name    string
	Address string
}

// MailpitMessage is one entry of GET /api/v1/messages.
type MailpitMessage struct {
	ID        string // Mailpit's own database ID, used in the other endpoints
	MessageID string // the Message-ID header, without angle brackets
	From      MailpitAddress
	To        []MailpitAddress
	Subject   string
	Created   time.Time
}

// MailpitMessageDetail is GET /api/v1/message/{ID} plus the message's headers.
type MailpitMessageDetail struct {
	ID        string
	MessageID string
	From      MailpitAddress
	To        []MailpitAddress
	Subject   string
	Text      string
	HTML      string
	Headers   map[string][]string // canonical keys, e.g. "Message-Id"
}

// MailpitChaos sets the SMTP errors Mailpit injects (PUT /api/v1/chaos).
// A zero trigger turns that injection off.
type MailpitChaos struct {
	Sender         MailpitChaosTrigger
	Recipient      MailpitChaosTrigger
	Authentication MailpitChaosTrigger
}

// MailpitChaosTrigger is an SMTP reply code (400–599) returned with the given
// probability in percent.
type MailpitChaosTrigger struct {
	ErrorCode   int
	Probability int
}

// MailpitBinary returns the Mailpit binary built by the test command
// (SETFLOW_MAILPIT_BIN, else .bin/mailpit in the repository).
func MailpitBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("SETFLOW_MAILPIT_BIN")
	if p == "" {
		p = filepath.Join(RepoRoot(t), ".bin", "mailpit")
	}
	if _, err := os.Stat(p); err != nil {
		Unavailable(t, "mailpit at %s (deployments/local/test.sh builds it): %v", p, err)
	}
	return p
}

// Mailpit starts Mailpit on free loopback ports with a throw-away database
// and stops it when the test ends. extraArgs are appended to the command line
// (e.g. "--smtp-tls-cert", path, "--smtp-tls-key", path). Chaos is enabled so
// tests can inject SMTP errors with SetChaos; it injects nothing until then.
func Mailpit(t testing.TB, extraArgs ...string) *MailpitServer {
	t.Helper()
	bin := MailpitBinary(t)
	dir := t.TempDir() // registered before the stop below, so removed after it
	// FreePort can race with another process; a lost race makes Mailpit exit
	// at once, so a couple of fresh attempts are enough.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		srv, err := startMailpit(t, bin, filepath.Join(dir, fmt.Sprintf("mailpit-%d.db", attempt)), extraArgs)
		if err == nil {
			return srv
		}
		lastErr = err
	}
	t.Fatalf("start mailpit: %v", lastErr)
	return nil
}

func startMailpit(t testing.TB, bin, db string, extraArgs []string) (*MailpitServer, error) {
	t.Helper()
	smtpPort, httpPort := FreePort(t), FreePort(t)
	for httpPort == smtpPort {
		httpPort = FreePort(t)
	}
	srv := &MailpitServer{
		SMTPHost: "127.0.0.1",
		SMTPPort: smtpPort,
		APIURL:   fmt.Sprintf("http://127.0.0.1:%d", httpPort),
	}
	args := []string{
		"--smtp", net.JoinHostPort(srv.SMTPHost, strconv.Itoa(smtpPort)),
		"--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
		"--database", db,
		// Nothing here may reach the internet: no release check, no reverse
		// DNS of SMTP clients, no remote assets proxied for the UI.
		"--disable-version-check",
		"--smtp-disable-rdns",
		"--block-remote-css-and-fonts",
		"--enable-chaos",
		// Keep every message: by default Mailpit deletes all but the newest
		// 500, and a test that counts notices would see the older ones as
		// never sent.
		"--max", "0",
	}
	args = append(args, extraArgs...)
	cmd := exec.Command(bin, args...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	if err := srv.waitReady(exited, 30*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("%w\nmailpit output:\n%s", err, out.String())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() && out.Len() > 0 {
			t.Logf("mailpit output:\n%s", out.String())
		}
	})
	return srv, nil
}

// waitReady waits for both the HTTP API (/readyz) and the SMTP listener.
func (s *MailpitServer) waitReady(exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			return fmt.Errorf("mailpit exited during start-up")
		default:
		}
		if s.ready(client) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mailpit not ready after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *MailpitServer) ready(client *http.Client) bool {
	resp, err := client.Get(s.APIURL + "/readyz")
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	c, err := net.DialTimeout("tcp", s.SMTPAddr(), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// SMTPAddr is host:port of the SMTP listener.
func (s *MailpitServer) SMTPAddr() string {
	return net.JoinHostPort(s.SMTPHost, strconv.Itoa(s.SMTPPort))
}

// Messages lists every stored message, newest first (page by page: the
// model test stores more than one page).
func (s *MailpitServer) Messages(t testing.TB) []MailpitMessage {
	t.Helper()
	const page = 1000
	var all []MailpitMessage
	for {
		var resp struct {
			Total    int              `json:"total"`
			Messages []MailpitMessage `json:"messages"`
		}
		s.api(t, http.MethodGet, fmt.Sprintf("/api/v1/messages?start=%d&limit=%d", len(all), page), nil, &resp)
		all = append(all, resp.Messages...)
		if len(resp.Messages) < page || len(all) >= resp.Total {
			return all
		}
	}
}

// WaitMessages polls until at least n messages are stored and returns them;
// it fails the test after timeout.
func (s *MailpitServer) WaitMessages(t testing.TB, n int, timeout time.Duration) []MailpitMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := s.Messages(t)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit: %d message(s) after %s, want %d", len(msgs), timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Message returns one message's bodies and headers by Mailpit ID.
func (s *MailpitServer) Message(t testing.TB, id string) MailpitMessageDetail {
	t.Helper()
	var m MailpitMessageDetail
	s.api(t, http.MethodGet, "/api/v1/message/"+url.PathEscape(id), nil, &m)
	s.api(t, http.MethodGet, "/api/v1/message/"+url.PathEscape(id)+"/headers", nil, &m.Headers)
	return m
}

// Raw returns the message source as received.
func (s *MailpitServer) Raw(t testing.TB, id string) string {
	t.Helper()
	return string(s.do(t, http.MethodGet, "/api/v1/message/"+url.PathEscape(id)+"/raw", nil))
}

// SetChaos replaces the injected SMTP errors; MailpitChaos{} turns them off.
func (s *MailpitServer) SetChaos(t testing.TB, c MailpitChaos) {
	t.Helper()
	// Mailpit rejects code 0, so an unused trigger keeps a valid code at 0 %.
	fill := func(tr *MailpitChaosTrigger, def int) {
		if tr.ErrorCode == 0 {
			tr.ErrorCode = def
		}
	}
	fill(&c.Sender, 451)
	fill(&c.Recipient, 451)
	fill(&c.Authentication, 535)
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	s.do(t, http.MethodPut, "/api/v1/chaos", body)
}

func (s *MailpitServer) api(t testing.TB, method, path string, body []byte, into any) {
	t.Helper()
	raw := s.do(t, method, path, body)
	if err := json.Unmarshal(raw, into); err != nil {
		t.Fatalf("mailpit %s %s: decode: %v\n%s", method, path, err, raw)
	}
}

func (s *MailpitServer) do(t testing.TB, method, path string, body []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.APIURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("mailpit %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("mailpit %s %s: read: %v", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		t.Fatalf("mailpit %s %s: %s\n%s", method, path, resp.Status, raw)
	}
	return raw
}
