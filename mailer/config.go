// Package mailer renders setflow's security notices (Korean and English, HTML
// and plain text) and sends them over SMTP with go-mail.
//
// Each notice carries a Message-ID derived from its idempotency key, so a
// retried send is recognisable as the same message; at-most-once delivery is
// the caller's send log. Errors say whether a retry can help (IsPermanent) and
// never contain the recipient's address, name or the SMTP password.
package mailer

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"strings"
	"time"
)

// TLS modes for Config.TLS.
const (
	TLSNone                  = "none"                   // plaintext; local relays and Mailpit only
	TLSStartTLS              = "starttls"               // STARTTLS required; fail if the server lacks it
	TLSStartTLSOpportunistic = "starttls-opportunistic" // STARTTLS when offered, else plaintext
	TLSImplicit              = "tls"                    // TLS from the first byte (SMTPS, usually port 465)
)

// DefaultTimeout bounds each SMTP command when Config.Timeout is zero. It
// sits well below the send_notice activity's 30 s, so that a stalled server
// fails the command (and the attempt reports it) before the attempt's
// deadline.
const DefaultTimeout = 10 * time.Second

// Config describes the SMTP relay and the sender.
type Config struct {
	Host     string
	Port     int // 0: 25 for "none", 465 for "tls", 587 otherwise
	Username string
	Password string
	// TLS is one of "none", "starttls" (mandatory), "starttls-opportunistic",
	// "tls" (implicit). Empty means "starttls".
	TLS string
	// CAFile is an optional PEM bundle trusted in addition to the system roots
	// (a private relay's CA).
	CAFile string
	// From is the sender, e.g. "setflow <security@example.com>".
	From string
	// MessageIDDomain is the right-hand side of Message-IDs; empty means the
	// domain of From's address.
	MessageIDDomain string
	// ServiceName is the service's name shown to users; empty means From's
	// display name.
	ServiceName string
	// Timeout bounds each SMTP command; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Validate reports every problem in the configuration at once.
func (c Config) Validate() error {
	var p problems
	c.checkServer(&p)
	c.checkSender(&p)
	if c.Timeout < 0 {
		p.add("Timeout %s is negative (0 means %s)", c.Timeout, DefaultTimeout)
	}
	if len(p) > 0 {
		return errors.New("mailer config: " + strings.Join(p, "; "))
	}
	return nil
}

// problems collects what Validate reports.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// checkServer checks how to reach the SMTP server: host, port, TLS mode,
// credentials, CA file.
func (c Config) checkServer(p *problems) {
	switch {
	case strings.TrimSpace(c.Host) == "":
		p.add("Host is required")
	case strings.Contains(c.Host, "://"):
		p.add("Host %q must be a host name, not a URL", c.Host)
	case hasPort(c.Host):
		p.add("Host %q must not include a port; set Port", c.Host)
	case strings.ContainsAny(c.Host, " \t\r\n/@"):
		p.add("Host %q is not a valid host name", c.Host)
	}
	if c.Port < 0 || c.Port > 65535 {
		p.add("Port %d is out of range 1–65535 (0 picks the default for the TLS mode)", c.Port)
	}
	switch c.TLS {
	case "", TLSNone, TLSStartTLS, TLSStartTLSOpportunistic, TLSImplicit:
	default:
		p.add("TLS %q is not one of %q, %q, %q, %q", c.TLS, TLSNone, TLSStartTLS, TLSStartTLSOpportunistic, TLSImplicit)
	}
	if c.Password != "" && c.Username == "" {
		p.add("Password is set but Username is empty")
	}
	if c.Username != "" && c.Password == "" {
		p.add("Username is set but Password is empty")
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			p.add("CAFile: %v", err)
		}
	}
}

// checkSender checks what the notices say about their sender: From, the
// Message-ID domain and the service name shown to users.
func (c Config) checkSender(p *problems) {
	from, err := mail.ParseAddress(c.From)
	switch {
	case strings.TrimSpace(c.From) == "":
		p.add(`From is required, e.g. "setflow <security@example.com>"`)
	case err != nil:
		p.add("From %q is not an address: %v", c.From, err)
	}
	if c.MessageIDDomain != "" {
		if !validDomain(c.MessageIDDomain) {
			p.add("MessageIDDomain %q is not a valid domain name", c.MessageIDDomain)
		}
	} else if from != nil && !validDomain(domainOf(from.Address)) {
		p.add("MessageIDDomain is empty and the From domain %q cannot be used; set MessageIDDomain", domainOf(from.Address))
	}
	name := c.ServiceName
	if name == "" && from != nil {
		name = from.Name
	}
	switch {
	case strings.TrimSpace(name) == "":
		p.add("ServiceName is required (it is shown to users); set it or give From a display name")
	case strings.ContainsAny(name, "\r\n"):
		p.add("ServiceName must be a single line")
	case len([]rune(name)) > 64:
		p.add("ServiceName is longer than 64 characters")
	}
}

// withDefaults fills the zero values Validate accepts; call after Validate.
func (c Config) withDefaults() Config {
	c.Host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(c.Host), "["), "]") // [::1] → ::1
	if c.TLS == "" {
		c.TLS = TLSStartTLS
	}
	if c.Port == 0 {
		switch c.TLS {
		case TLSNone:
			c.Port = 25
		case TLSImplicit:
			c.Port = 465
		default:
			c.Port = 587
		}
	}
	from, _ := mail.ParseAddress(c.From)
	if c.MessageIDDomain == "" {
		c.MessageIDDomain = domainOf(from.Address)
	}
	c.MessageIDDomain = strings.ToLower(c.MessageIDDomain)
	if c.ServiceName == "" {
		c.ServiceName = from.Name
	}
	c.ServiceName = strings.TrimSpace(c.ServiceName)
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

func hasPort(host string) bool {
	if strings.HasPrefix(host, "[") { // [::1]:25 or [::1]
		return strings.Contains(host, "]:")
	}
	if strings.Count(host, ":") != 1 { // bare IPv6 has several colons
		return false
	}
	_, _, err := net.SplitHostPort(host)
	return err == nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// validDomain accepts dot-separated LDH labels; that is all a Message-ID's
// right-hand side needs and it keeps brackets and spaces out of the header.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
