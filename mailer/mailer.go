package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"os"
	"strconv"
	"sync"

	gomail "github.com/wneessen/go-mail"
)

// Mailer renders and sends notices. It is safe for concurrent use.
type Mailer struct {
	cfg       Config // validated, defaults applied
	from      *mail.Address
	tlsConfig *tls.Config
	templates map[templateKey]templateSet
}

// New validates cfg, loads the templates and checks that all of them render.
// It does not contact the SMTP server.
func New(cfg Config) (*Mailer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	from, _ := mail.ParseAddress(cfg.From) // Validate checked it
	m := &Mailer{cfg: cfg, from: from}
	tc, err := buildTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	m.tlsConfig = tc
	if m.templates, err = loadTemplates(); err != nil {
		return nil, err
	}
	if err := m.checkTemplates(); err != nil {
		return nil, err
	}
	return m, nil
}

func buildTLSConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12}
	if cfg.CAFile == "" {
		return tc, nil
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("mailer config: CAFile: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("mailer config: CAFile %s holds no PEM certificate", cfg.CAFile)
	}
	tc.RootCAs = pool
	return tc, nil
}

// Send renders the notice and delivers it to the relay. It returns the
// Message-ID (also on failure, once the notice is valid) so callers can record
// the attempt. The error is an *Error; see IsPermanent.
//
// Send stops when ctx ends, mid-transaction included. A failure after the
// server accepted the message (e.g. QUIT) is ignored: the message is sent,
// and reporting an error would invite a duplicate.
func (m *Mailer) Send(ctx context.Context, n Notice) (string, error) {
	msg, err := m.Render(n)
	if err != nil {
		return "", m.safe(err, n)
	}
	gm, err := m.compose(n, msg)
	if err != nil {
		return msg.MessageID, m.safe(err, n)
	}
	if err := m.deliver(ctx, gm); err != nil {
		return msg.MessageID, m.safe(err, n)
	}
	return msg.MessageID, nil
}

// safe redacts the error text for this notice.
func (m *Mailer) safe(err error, n Notice) error {
	e := classify(context.Background(), "send", m.cfg.TLS, err)
	return e.redact(n.To, n.Name, cleanName(n.Name), m.cfg.Password, m.cfg.Username)
}

func (m *Mailer) compose(n Notice, r *Message) (*gomail.Msg, error) {
	gm := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	gm.FromMailAddress(&mail.Address{Name: m.cfg.ServiceName, Address: m.from.Address})
	if err := gm.To(n.To); err != nil {
		return nil, permanent("notice", "recipient address is invalid")
	}
	gm.Subject(r.Subject)
	gm.SetMessageIDWithValue(r.MessageID[1 : len(r.MessageID)-1]) // go-mail adds the brackets
	gm.SetDate()
	gm.SetGenHeader(gomail.HeaderContentLang, r.Locale)
	// RFC 3834: an automatic notice; asks responders not to auto-reply.
	gm.SetGenHeader("Auto-Submitted", "auto-generated")
	gm.SetGenHeader(gomail.HeaderXAutoResponseSuppress, "All")
	gm.SetGenHeader("X-Setflow-Notice", string(r.Kind))
	gm.SetBodyString(gomail.TypeTextPlain, r.Text)
	gm.AddAlternativeString(gomail.TypeTextHTML, r.HTML)
	return gm, nil
}

func (m *Mailer) deliver(ctx context.Context, gm *gomail.Msg) error {
	// The raw connection is kept so that it can be closed on every failure
	// (go-mail leaves it open when EHLO, STARTTLS or AUTH fail) and when ctx
	// ends (go-mail only watches ctx while dialling).
	var (
		mu      sync.Mutex
		conn    net.Conn
		unwatch = func() bool { return false }
	)
	closeConn := func() {
		mu.Lock()
		defer mu.Unlock()
		if conn != nil {
			_ = conn.Close()
		}
	}
	// go-mail's own address is host:port without IPv6 brackets; build it here.
	addr := net.JoinHostPort(m.cfg.Host, strconv.Itoa(m.cfg.Port))
	dial := func(dialCtx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		if m.cfg.TLS == TLSImplicit {
			tc := tls.Client(c, m.tlsConfig.Clone())
			if err := tc.HandshakeContext(dialCtx); err != nil {
				_ = c.Close()
				return nil, err
			}
			c = tc
		}
		mu.Lock()
		conn = c
		mu.Unlock()
		unwatch = context.AfterFunc(ctx, closeConn)
		return c, nil
	}
	defer func() { unwatch() }()

	// A client per send: go-mail's Client mutates its auth state while
	// sending, so sharing one would race.
	client, err := gomail.NewClient(m.cfg.Host, m.clientOptions(dial)...)
	if err != nil {
		return permanent("connect", "SMTP client options: %v", err)
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		closeConn()
		op := "session"
		mu.Lock()
		if conn == nil {
			op = "connect"
		}
		mu.Unlock()
		return classify(ctx, op, m.cfg.TLS, err)
	}
	if err := client.SendWithSMTPClient(sc, gm); err != nil {
		closeConn()
		return classify(ctx, "send", m.cfg.TLS, err)
	}
	_ = client.CloseWithSMTPClient(sc) // QUIT; the message is already accepted
	closeConn()
	return nil
}

func (m *Mailer) clientOptions(dial gomail.DialContextFunc) []gomail.Option {
	opts := []gomail.Option{
		gomail.WithPort(m.cfg.Port),
		gomail.WithTimeout(m.cfg.Timeout),
		gomail.WithTLSConfig(m.tlsConfig),
		gomail.WithDialContextFunc(dial),
	}
	switch m.cfg.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSStartTLSOpportunistic:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case TLSImplicit:
		// The dialer above speaks TLS from the first byte; no STARTTLS on top.
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if m.cfg.Username != "" {
		// First of these the server offers. PLAIN and LOGIN refuse to run
		// without TLS (except to localhost), so the password never crosses
		// the network in clear; CRAM-MD5 is last because it is weak.
		opts = append(opts,
			gomail.WithUsername(m.cfg.Username),
			gomail.WithPassword(m.cfg.Password),
			gomail.WithOpportunisticSMTPAuth(
				gomail.SMTPAuthSCRAMSHA256, gomail.SMTPAuthSCRAMSHA1,
				gomail.SMTPAuthPlain, gomail.SMTPAuthLogin, gomail.SMTPAuthCramMD5,
			))
	}
	return opts
}
