package mailer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
)

func mailpitConfig(mp *testenv.MailpitServer) Config {
	cfg := testConfig()
	cfg.Host, cfg.Port = mp.SMTPHost, mp.SMTPPort
	return cfg
}

func sendErr(t *testing.T, m *Mailer, n Notice) *Error {
	t.Helper()
	_, err := m.Send(context.Background(), n)
	if err == nil {
		t.Fatal("Send succeeded, want an error")
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error is %T, not *mailer.Error: %v", err, err)
	}
	assertNoPII(t, err, n, m.cfg.Password)
	t.Logf("error: %v", err)
	return e
}

func TestSendToMailpit(t *testing.T) {
	mp := testenv.Mailpit(t)
	m := newMailer(t, mailpitConfig(mp))

	sent := map[string]Notice{} // Message-ID without brackets → notice
	for _, k := range Kinds() {
		for _, l := range Locales() {
			n := notice(k, l)
			n.IdempotencyKey += "/" + l
			id, err := m.Send(context.Background(), n)
			if err != nil {
				t.Fatalf("%s.%s: %v", k, l, err)
			}
			sent[strings.Trim(id, "<>")] = n
		}
	}

	msgs := mp.WaitMessages(t, len(sent), 10*time.Second)
	if len(msgs) != len(sent) {
		t.Fatalf("%d messages, want %d", len(msgs), len(sent))
	}
	for _, got := range msgs {
		n, ok := sent[got.MessageID]
		if !ok {
			t.Errorf("unexpected Message-ID %q", got.MessageID)
			continue
		}
		r, err := m.Render(n)
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != r.Subject {
			t.Errorf("subject %q, want %q", got.Subject, r.Subject)
		}
		if len(got.To) != 1 || got.To[0].Address != n.To {
			t.Errorf("to %+v, want %s", got.To, n.To)
		}
		if got.From.Address != "security@acme.example" || got.From.Name != "Acme" {
			t.Errorf("from %+v", got.From)
		}
		d := mp.Message(t, got.ID)
		if crlf := strings.NewReplacer("\r\n", "\n"); strings.TrimSpace(crlf.Replace(d.Text)) != strings.TrimSpace(r.Text) {
			t.Errorf("%s: text part differs:\n%s\nwant:\n%s", r.Kind, d.Text, r.Text)
		}
		if !strings.Contains(d.HTML, "<title>"+htmlEscape(r.Subject)+"</title>") || !strings.Contains(d.HTML, n.Name) {
			t.Errorf("%s: html part:\n%s", r.Kind, d.HTML)
		}
		for h, want := range map[string]string{
			"Message-Id":       r.MessageID,
			"Content-Language": r.Locale,
			"Auto-Submitted":   "auto-generated",
			"X-Setflow-Notice": string(r.Kind),
		} {
			if v := d.Headers[h]; len(v) != 1 || v[0] != want {
				t.Errorf("header %s = %q, want %q", h, v, want)
			}
		}
		if raw := mp.Raw(t, got.ID); !strings.Contains(raw, "multipart/alternative") {
			t.Errorf("not multipart/alternative:\n%s", raw)
		}
	}
}

// A retried send carries the same Message-ID, so a receiver that
// de-duplicates by it (here Mailpit) keeps one copy.
func TestSendRetryKeepsMessageID(t *testing.T) {
	mp := testenv.Mailpit(t, "--ignore-duplicate-ids")
	m := newMailer(t, mailpitConfig(mp))
	n := notice(NoticePasswordChanged, "ko")
	id1, err := m.Send(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := m.Send(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if id1 != id2 {
		t.Fatalf("retry changed the Message-ID: %s then %s", id1, id2)
	}
	n.IdempotencyKey = "evt-456/password-changed/email"
	if _, err := m.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	mp.WaitMessages(t, 2, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // a late duplicate would show up by now
	if msgs := mp.Messages(t); len(msgs) != 2 {
		t.Fatalf("%d messages stored, want 2 (one per idempotency key)", len(msgs))
	}
}

func TestSendOpportunisticSTARTTLSFallsBackToPlain(t *testing.T) {
	mp := testenv.Mailpit(t)
	cfg := mailpitConfig(mp)
	cfg.TLS = TLSStartTLSOpportunistic
	if _, err := newMailer(t, cfg).Send(context.Background(), notice(NoticeAccountHijacked, "en")); err != nil {
		t.Fatal(err)
	}
	mp.WaitMessages(t, 1, 10*time.Second)
}

func TestSendMandatorySTARTTLSWithoutSupport(t *testing.T) {
	mp := testenv.Mailpit(t) // no certificate: Mailpit does not offer STARTTLS
	cfg := mailpitConfig(mp)
	cfg.TLS = TLSStartTLS
	e := sendErr(t, newMailer(t, cfg), notice(NoticeAccountHijacked, "ko"))
	if !e.Permanent || e.Op != "starttls" || !strings.Contains(e.Error(), `does not offer STARTTLS, which TLS mode "starttls" requires`) {
		t.Errorf("got %v", e)
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Errorf("%d message(s) sent in clear", n)
	}
}

func TestSendSTARTTLS(t *testing.T) {
	ca, cert, key := writeTLSFiles(t)
	mp := testenv.Mailpit(t, "--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-require-starttls")
	cfg := mailpitConfig(mp)
	cfg.TLS, cfg.CAFile = TLSStartTLS, ca
	if _, err := newMailer(t, cfg).Send(context.Background(), notice(NoticeCredentialCompromise, "ko")); err != nil {
		t.Fatal(err)
	}
	mp.WaitMessages(t, 1, 10*time.Second)

	// Without the CA the certificate is not trusted: a configuration error.
	cfg.CAFile = ""
	e := sendErr(t, newMailer(t, cfg), notice(NoticeCredentialCompromise, "ko"))
	if !e.Permanent || e.Op != "tls" || !strings.Contains(e.Error(), "certificate") {
		t.Errorf("got %v", e)
	}
}

func TestSendImplicitTLS(t *testing.T) {
	ca, cert, key := writeTLSFiles(t)
	mp := testenv.Mailpit(t, "--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-require-tls")
	cfg := mailpitConfig(mp)
	cfg.TLS, cfg.CAFile = TLSImplicit, ca
	if _, err := newMailer(t, cfg).Send(context.Background(), notice(NoticePasswordChanged, "en")); err != nil {
		t.Fatal(err)
	}
	mp.WaitMessages(t, 1, 10*time.Second)

	// Implicit TLS to a plaintext port is a wrong mode or port.
	plain := testenv.Mailpit(t)
	cfg = mailpitConfig(plain)
	cfg.TLS, cfg.CAFile = TLSImplicit, ca
	e := sendErr(t, newMailer(t, cfg), notice(NoticePasswordChanged, "en"))
	if !e.Permanent || e.Op != "tls" {
		t.Errorf("got %v", e)
	}
}

func TestSendAuth(t *testing.T) {
	ca, cert, key := writeTLSFiles(t)
	const user, password = "relay-user", "correct horse battery"
	sum := sha1.Sum([]byte(password))
	authFile := filepath.Join(t.TempDir(), "smtp-auth")
	if err := os.WriteFile(authFile, []byte(user+":{SHA}"+base64.StdEncoding.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mp := testenv.Mailpit(t, "--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-require-starttls", "--smtp-auth-file", authFile)
	cfg := mailpitConfig(mp)
	cfg.TLS, cfg.CAFile, cfg.Username, cfg.Password = TLSStartTLS, ca, user, password
	if _, err := newMailer(t, cfg).Send(context.Background(), notice(NoticeAccountHijacked, "ko")); err != nil {
		t.Fatal(err)
	}
	mp.WaitMessages(t, 1, 10*time.Second)

	// Mailpit requires authentication here, so the send above did log in.
	anon := cfg
	anon.Username, anon.Password = "", ""
	if e := sendErr(t, newMailer(t, anon), notice(NoticeAccountHijacked, "ko")); !e.Permanent || e.Code/100 != 5 {
		t.Errorf("unauthenticated send: got %v", e)
	}

	cfg.Password = "wrong horse battery"
	e := sendErr(t, newMailer(t, cfg), notice(NoticeAccountHijacked, "ko"))
	if !e.Permanent || e.Op != "auth" || e.Code != 535 {
		t.Errorf("got %v", e)
	}
}

func TestSendConnectionRefusedIsRetryable(t *testing.T) {
	cfg := testConfig()
	cfg.Port = testenv.FreePort(t) // nothing listens there now
	e := sendErr(t, newMailer(t, cfg), notice(NoticeAccountHijacked, "ko"))
	if e.Permanent || e.Op != "connect" || !errors.Is(e, syscall.ECONNREFUSED) {
		t.Errorf("got %v", e)
	}

	// An IPv6 literal must reach the dialer as [::1]:port, whatever the
	// host's IPv6 support makes of it.
	for _, host := range []string{"::1", "[::1]"} {
		cfg.Host = host
		e := sendErr(t, newMailer(t, cfg), notice(NoticeAccountHijacked, "ko"))
		if e.Permanent || strings.Contains(e.Error(), "too many colons") || !strings.Contains(e.Error(), "[::1]:") {
			t.Errorf("host %s: got %v", host, e)
		}
	}
}

func TestSendSMTPReplies(t *testing.T) {
	mp := testenv.Mailpit(t)
	m := newMailer(t, mailpitConfig(mp))
	n := notice(NoticePasswordChanged, "ko")
	cases := []struct {
		chaos     testenv.MailpitChaos
		op        string
		code      int
		permanent bool
	}{
		{testenv.MailpitChaos{Recipient: testenv.MailpitChaosTrigger{ErrorCode: 451, Probability: 100}}, "rcpt", 451, false},
		{testenv.MailpitChaos{Recipient: testenv.MailpitChaosTrigger{ErrorCode: 550, Probability: 100}}, "rcpt", 550, true},
		{testenv.MailpitChaos{Sender: testenv.MailpitChaosTrigger{ErrorCode: 421, Probability: 100}}, "mail-from", 421, false},
		{testenv.MailpitChaos{Sender: testenv.MailpitChaosTrigger{ErrorCode: 553, Probability: 100}}, "mail-from", 553, true},
	}
	for _, tc := range cases {
		mp.SetChaos(t, tc.chaos)
		e := sendErr(t, m, n)
		if e.Op != tc.op || e.Code != tc.code || e.Permanent != tc.permanent || IsPermanent(e) != tc.permanent {
			t.Errorf("chaos %+v: got %v (op %s code %d)", tc.chaos, e, e.Op, e.Code)
		}
	}
	mp.SetChaos(t, testenv.MailpitChaos{})
	if _, err := m.Send(context.Background(), n); err != nil {
		t.Fatalf("after chaos: %v", err)
	}
}

// A server that accepts the connection and never answers: the caller's
// context and Config.Timeout both end the attempt, as retryable errors.
func TestSendStalledServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	cfg := testConfig()
	cfg.Port = l.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = newMailer(t, cfg).Send(ctx, notice(NoticeAccountHijacked, "ko"))
	if err == nil || IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("context deadline: got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send ignored the context for %s", d)
	}

	cfg.Timeout = 300 * time.Millisecond
	start = time.Now()
	_, err = newMailer(t, cfg).Send(context.Background(), notice(NoticeAccountHijacked, "ko"))
	var ne net.Error
	if err == nil || IsPermanent(err) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("command timeout: got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send ignored Timeout for %s", d)
	}
}

func TestSendInvalidNoticeDoesNotConnect(t *testing.T) {
	cfg := testConfig()
	cfg.Port = testenv.FreePort(t)
	n := notice(NoticeAccountHijacked, "ko")
	n.To = "kim.kakao@example.com>\r\nRCPT TO:<other@example.com"
	id, err := newMailer(t, cfg).Send(context.Background(), n)
	if !IsPermanent(err) || id != "" {
		t.Fatalf("got %q, %v", id, err)
	}
	if e := err.(*Error); e.Op != "notice" {
		t.Errorf("op %s, want notice", e.Op)
	}
	assertNoPII(t, err, n, "")
}

// writeTLSFiles writes a self-signed certificate for 127.0.0.1 and localhost;
// it is its own CA.
func writeTLSFiles(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "setflow test SMTP"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, certFile, keyFile
}
