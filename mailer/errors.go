package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"regexp"
	"strings"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// Error is every failure Render and Send return. Its text is safe to log and
// to store in Temporal: it never holds the recipient's address or name, nor
// the SMTP password, and server replies are included only after redaction.
type Error struct {
	// Op is the stage that failed: notice, render, connect, tls, starttls,
	// session (greeting/EHLO), auth, mail-from, rcpt, data, send.
	Op string
	// Permanent is true when sending the same notice again cannot succeed
	// (bad address, 5xx reply, template or configuration error).
	Permanent bool
	// Code and EnhancedCode are the SMTP reply (e.g. 550, "5.1.1"), if any.
	Code         int
	EnhancedCode string

	detail string
	cause  error // only PII-free causes: context, network and TLS errors
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("mailer: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.detail)
	if e.Code != 0 {
		fmt.Fprintf(&b, " (SMTP %d", e.Code)
		if e.EnhancedCode != "" {
			b.WriteString(" " + e.EnhancedCode)
		}
		b.WriteString(")")
	}
	if e.Permanent {
		b.WriteString(" [permanent]")
	} else {
		b.WriteString(" [retryable]")
	}
	return b.String()
}

// Unwrap exposes network, TLS and context causes (errors.Is(err,
// context.DeadlineExceeded) works); SMTP replies are not exposed because their
// text may quote the recipient.
func (e *Error) Unwrap() error { return e.cause }

// IsPermanent reports whether err is a mailer failure that a retry cannot
// fix. Unknown errors are not permanent: retrying is safe because every
// attempt carries the same Message-ID.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

func permanent(op, format string, args ...any) *Error {
	return &Error{Op: op, Permanent: true, detail: fmt.Sprintf(format, args...)}
}

// classify turns a go-mail, network or TLS error into an *Error. op is the
// stage known to the caller ("connect" before the TCP connection exists,
// "session" after). tlsMode is Config.TLS.
func classify(ctx context.Context, op, tlsMode string, err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	// The caller's deadline or cancellation closes the connection, so every
	// later error is a consequence of it: report the cause.
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &Error{Op: op, detail: "interrupted: " + ctxErr.Error(), cause: ctxErr}
	}

	// Reply to MAIL, RCPT, DATA: go-mail's SendError (its text lists the
	// recipients, so only its code and stage are used).
	if se, ok := errors.AsType[*mail.SendError](err); ok {
		e := &Error{Op: sendOp(se.Reason), Code: se.ErrorCode(), EnhancedCode: se.EnhancedStatusCode()}
		text := truncate(sendErrorText(se), 200)
		switch {
		case e.Code >= 500:
			e.Permanent, e.detail = true, "server rejected the message: "+text
		case e.Code >= 400:
			e.detail = "server temporarily refused the message: " + text
		case se.Reason == mail.ErrGetSender || se.Reason == mail.ErrGetRcpts || se.Reason == mail.ErrNoUnencoded:
			e.Permanent, e.detail = true, "message cannot be sent: "+se.Reason.String()
		default: // no reply code: the connection broke mid-transaction
			e.detail = se.Reason.String() + ": " + text
		}
		return e
	}

	// Replies during greeting, EHLO and AUTH.
	if tp, ok := errors.AsType[*textproto.Error](err); ok {
		e := &Error{Op: op, Code: tp.Code, EnhancedCode: enhancedCode(tp.Msg), Permanent: tp.Code >= 500}
		if strings.HasPrefix(err.Error(), "SMTP AUTH failed") {
			e.Op = "auth"
		}
		e.detail = "server replied: " + truncate(tp.Msg, 200)
		return e
	}

	msg := err.Error()
	switch {
	case strings.Contains(msg, "does not support STARTTLS"):
		// Misconfiguration (or a downgrade attack): retrying cannot help.
		return permanent("starttls", "server does not offer STARTTLS, which TLS mode %q requires", tlsMode)
	case errors.Is(err, smtp.ErrUnencrypted):
		return permanent("auth", "refusing to send the password over an unencrypted connection; use TLS mode %q or %q", TLSStartTLS, TLSImplicit)
	case errors.Is(err, mail.ErrNoSupportedAuthDiscovered), strings.Contains(msg, "does not support SMTP AUTH"),
		strings.Contains(msg, "AuthNotSupported"), strings.Contains(msg, "auth mechanism"):
		return permanent("auth", "server offers no usable authentication mechanism")
	}

	// Certificate problems are configuration: the server, name or CA is wrong.
	if isCertError(err) {
		return &Error{Op: "tls", Permanent: true, detail: "server certificate not trusted: " + truncate(msg, 300), cause: err}
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return &Error{Op: "tls", Permanent: true, cause: err,
			detail: fmt.Sprintf("server did not answer with TLS; check TLS mode %q and the port", tlsMode)}
	}
	if _, ok := errors.AsType[tls.AlertError](err); ok {
		return &Error{Op: "tls", Permanent: true, detail: "TLS handshake refused: " + truncate(msg, 200), cause: err}
	}

	if ne, ok := errors.AsType[net.Error](err); ok {
		return &Error{Op: op, detail: truncate(ne.Error(), 300), cause: err}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return &Error{Op: op, detail: "connection closed by server", cause: err}
	}
	// Anything else is unexpected; retrying is safe (same Message-ID) and the
	// retry policy bounds it. The text is redacted by the caller.
	return &Error{Op: op, detail: truncate(msg, 300)}
}

// sendErrorText is the server's reply inside a SendError, without the
// recipient and Message-ID lists go-mail appends (the caller still redacts).
func sendErrorText(se *mail.SendError) string {
	s := strings.TrimPrefix(se.Error(), se.Reason.String())
	for _, marker := range []string{", affected recipient(s): ", ", affected message ID: "} {
		if i := strings.Index(s, marker); i >= 0 {
			s = s[:i]
		}
	}
	return strings.TrimSpace(strings.TrimPrefix(s, ":"))
}

func isCertError(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return true
	}
	return false
}

func sendOp(r mail.SendErrReason) string {
	switch r {
	case mail.ErrSMTPMailFrom, mail.ErrGetSender:
		return "mail-from"
	case mail.ErrSMTPRcptTo, mail.ErrGetRcpts:
		return "rcpt"
	case mail.ErrSMTPData, mail.ErrSMTPDataClose, mail.ErrWriteContent, mail.ErrNoUnencoded:
		return "data"
	default:
		return "send"
	}
}

var enhancedRE = regexp.MustCompile(`\b[245]\.\d{1,3}\.\d{1,3}\b`)

func enhancedCode(msg string) string { return enhancedRE.FindString(msg) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 { // keep UTF-8 whole
		cut--
	}
	return s[:cut] + "…"
}

// addressRE matches anything shaped like an e-mail address, including
// bracketed and quoted forms a server might echo.
var addressRE = regexp.MustCompile(`("[^"]*"|[^\s<>"'(),;:\[\]]*)@[^\s<>"'(),;:\[\]]+`)

// redact removes PII and secrets from the error's text. Addresses are removed
// by shape (a server may echo them in another form), then the given secrets
// (address, its local part, name, password) literally.
func (e *Error) redact(secrets ...string) *Error {
	if e == nil {
		return nil
	}
	d := addressRE.ReplaceAllString(e.detail, "[address]")
	for _, s := range secrets {
		if i := strings.LastIndexByte(s, '@'); i > 0 {
			secrets = append(secrets, s[:i])
		}
	}
	for _, s := range secrets {
		if len(strings.TrimSpace(s)) < 3 { // a very short secret would shred the text
			continue
		}
		d = replaceFold(d, s, "[redacted]")
	}
	d = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, d)
	e.detail = d
	return e
}

// replaceFold replaces old in s, ignoring ASCII and Unicode simple case.
func replaceFold(s, old, repl string) string {
	if old == "" {
		return s
	}
	var b strings.Builder
	for {
		i := indexFold(s, old)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(repl)
		s = s[i+len(old):]
	}
}

func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}
