// Package config reads setflow's settings from environment variables, with
// command-line flags of the same meaning as overrides. Every flag's help names
// its variable, so `setflow <command> -h` is the reference.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/setflow/setflow/sessions"
)

// Database is where the inbox, audit trail and the service's tables live.
type Database struct {
	URL string
}

func (d *Database) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_DATABASE_URL", Flag: "database-url", Default: "postgres://postgres@127.0.0.1:5432/setflow?sslmode=disable", URL: true,
			Usage: "PostgreSQL `URL` (every command)", ptr: &d.URL},
	}
}

// Register adds the database flags.
func (d *Database) Register(fs *flag.FlagSet) { register(fs, d.settings()) }

// Ingress configures the HTTP receiver and SET verification.
type Ingress struct {
	Listen    string
	Issuer    string
	Audiences string
	JWKSURL   string
	Discovery bool
	MaxAge    time.Duration
	MaxBody   int64
	// InboxInFlight and InboxMaxBatch tune the inbox's group commit
	// (inbox.Postgres.MaxInFlight, MaxBatch; 0: the defaults).
	InboxInFlight int
	InboxMaxBatch int
}

func (i *Ingress) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_LISTEN", Flag: "listen", Default: ":8080", Usage: "ingress, dev: HTTP listen address of the webhook endpoints", ptr: &i.Listen},
		{Env: "SETFLOW_ISSUER", Flag: "issuer", Default: KakaoIssuer, Usage: "ingress: accepted SET issuer (compared exactly)", ptr: &i.Issuer},
		{Env: "SETFLOW_AUDIENCES", Flag: "audiences", Usage: "ingress (required): accepted SET audiences, comma-separated (your app's REST API key)", ptr: &i.Audiences},
		{Env: "SETFLOW_JWKS_URL", Flag: "jwks-url", Default: "https://kauth.kakao.com/.well-known/jwks.json", URL: true,
			Usage: "ingress: pinned JWKS `URL`, or the fallback of -discovery", ptr: &i.JWKSURL},
		{Env: "SETFLOW_KEY_DISCOVERY", Flag: "discovery", Default: "false",
			Usage: "ingress: find the JWKS through the issuer's /.well-known/ssf-configuration, then sse-configuration", ptr: &i.Discovery},
		{Env: "SETFLOW_SET_MAX_AGE", Flag: "max-age", Default: "7d", Usage: "ingress: oldest accepted SET iat (replay window)", ptr: &i.MaxAge},
		{Env: "SETFLOW_MAX_BODY", Flag: "max-body", Default: "65536", Usage: "ingress: largest accepted request body in bytes", ptr: &i.MaxBody},
		{Env: "SETFLOW_INBOX_IN_FLIGHT", Flag: "inbox-in-flight", Default: "0",
			Usage: "ingress: group commit, insert statements in flight at once (0: 2; see Benchmarks)", ptr: &i.InboxInFlight},
		{Env: "SETFLOW_INBOX_MAX_BATCH", Flag: "inbox-max-batch", Default: "0",
			Usage: "ingress: group commit, most deliveries in one insert (0: 500)", ptr: &i.InboxMaxBatch},
	}
}

// KakaoIssuer is the issuer of Kakao's Security Event Tokens.
const KakaoIssuer = "https://kauth.kakao.com"

// Register adds the ingress flags.
func (i *Ingress) Register(fs *flag.FlagSet) { register(fs, i.settings()) }

// RegisterIssuer adds -issuer alone (the operator commands that look up a
// user's rows).
func (i *Ingress) RegisterIssuer(fs *flag.FlagSet) {
	register(fs, pick(i.settings(), "SETFLOW_ISSUER"))
}

// RegisterServer adds the ingress's server flags without the verification
// ones (`setflow dev` verifies with its own key).
func (i *Ingress) RegisterServer(fs *flag.FlagSet) {
	register(fs, pick(i.settings(), "SETFLOW_LISTEN", "SETFLOW_MAX_BODY", "SETFLOW_INBOX_IN_FLIGHT", "SETFLOW_INBOX_MAX_BATCH"))
}

// AudienceList splits the comma-separated audiences.
func (i *Ingress) AudienceList() []string {
	var out []string
	for _, a := range strings.Split(i.Audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Validate reports missing settings by name.
func (i *Ingress) Validate() error {
	var errs []error
	if i.Issuer == "" {
		errs = append(errs, errors.New("SETFLOW_ISSUER (-issuer) must not be empty"))
	}
	if len(i.AudienceList()) == 0 {
		errs = append(errs, errors.New("SETFLOW_AUDIENCES (-audiences) must name at least one audience, e.g. your app's REST API key"))
	}
	if !i.Discovery && i.JWKSURL == "" {
		errs = append(errs, errors.New("SETFLOW_JWKS_URL (-jwks-url) must be set unless -discovery is on"))
	}
	if i.MaxAge <= 0 {
		errs = append(errs, errors.New("SETFLOW_SET_MAX_AGE (-max-age) must be positive"))
	}
	if i.MaxBody <= 0 {
		errs = append(errs, errors.New("SETFLOW_MAX_BODY (-max-body) must be positive"))
	}
	if i.InboxInFlight < 0 || i.InboxMaxBatch < 0 {
		errs = append(errs, errors.New("SETFLOW_INBOX_IN_FLIGHT and SETFLOW_INBOX_MAX_BATCH must not be negative"))
	}
	return errors.Join(errs...)
}

// Temporal configures the connection to a Temporal cluster or Temporal Cloud.
type Temporal struct {
	Address       string
	Namespace     string
	APIKey        string
	TLSCert       string
	TLSKey        string
	TLSCA         string
	TLSServerName string
	// CodecKeys encrypt what Temporal stores (codec.ConfiguredKeyRing).
	CodecKeys string
}

func (t *Temporal) settings() []Setting {
	return []Setting{
		{Env: "TEMPORAL_ADDRESS", Flag: "temporal-address", Default: "localhost:7233", Usage: "relay, worker, events: Temporal frontend host:port", ptr: &t.Address},
		{Env: "TEMPORAL_NAMESPACE", Flag: "temporal-namespace", Default: "default", Usage: "relay, worker, events: Temporal namespace", ptr: &t.Namespace},
		{Env: "TEMPORAL_API_KEY", Secret: true, Usage: "Temporal Cloud API key (TLS is then on)", ptr: &t.APIKey},
		{Env: "TEMPORAL_TLS_CERT", Flag: "temporal-tls-cert", Usage: "client certificate file for mTLS", ptr: &t.TLSCert},
		{Env: "TEMPORAL_TLS_KEY", Flag: "temporal-tls-key", Usage: "client key file for mTLS", ptr: &t.TLSKey},
		{Env: "TEMPORAL_TLS_CA", Flag: "temporal-tls-ca", Usage: "CA bundle file to verify the server", ptr: &t.TLSCA},
		{Env: "TEMPORAL_TLS_SERVER_NAME", Flag: "temporal-tls-server-name", Usage: "server name to verify", ptr: &t.TLSServerName},
		codecKeysSetting(&t.CodecKeys),
	}
}

// Register adds the Temporal flags, named like Temporal's own tools.
func (t *Temporal) Register(fs *flag.FlagSet) { register(fs, t.settings()) }

// ClientOptions builds the SDK options: TLS when any TLS setting or an API key
// is present (Temporal Cloud needs TLS with API keys), mTLS with cert and key.
func (t *Temporal) ClientOptions(log *slog.Logger) (client.Options, error) {
	opts := client.Options{HostPort: t.Address, Namespace: t.Namespace, Logger: tlog.NewStructuredLogger(log)}
	if t.APIKey != "" {
		opts.Credentials = client.NewAPIKeyStaticCredentials(t.APIKey)
	}
	if t.APIKey == "" && t.TLSCert == "" && t.TLSCA == "" && t.TLSServerName == "" {
		return opts, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.TLSServerName}
	if (t.TLSCert == "") != (t.TLSKey == "") {
		return opts, errors.New("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together")
	}
	if t.TLSCert != "" {
		pair, err := tls.LoadX509KeyPair(t.TLSCert, t.TLSKey)
		if err != nil {
			return opts, fmt.Errorf("temporal mTLS key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if t.TLSCA != "" {
		pem, err := os.ReadFile(t.TLSCA)
		if err != nil {
			return opts, fmt.Errorf("temporal CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return opts, fmt.Errorf("temporal CA %s holds no certificate", t.TLSCA)
		}
		cfg.RootCAs = pool
	}
	opts.ConnectionOptions.TLS = cfg
	return opts, nil
}

// Sessions names the service's session table.
type Sessions struct{ sessions.Schema }

func (s *Sessions) settings() []Setting {
	d := sessions.DefaultSchema()
	return []Setting{
		{Env: "SETFLOW_SESSIONS_TABLE", Flag: "sessions-table", Default: d.Table, Usage: "worker: your session table (optionally schema-qualified)", ptr: &s.Table},
		{Env: "SETFLOW_SESSIONS_USER_COLUMN", Flag: "sessions-user-column", Default: d.UserID,
			Usage: "worker: column holding the account id (the Kakao user id unless SETFLOW_IDENTITY maps it)", ptr: &s.UserID},
		{Env: "SETFLOW_SESSIONS_CREATED_COLUMN", Flag: "sessions-created-column", Default: d.CreatedAt, Usage: "worker: column holding the session's creation time", ptr: &s.CreatedAt},
		{Env: "SETFLOW_SESSIONS_REVOKED_COLUMN", Flag: "sessions-revoked-column", Default: d.RevokedAt, Usage: "worker: column set to the revocation time", ptr: &s.RevokedAt},
	}
}

// Register adds the session-table flags.
func (s *Sessions) Register(fs *flag.FlagSet) { register(fs, s.settings()) }

// Log configures setflow's own logs.
type Log struct {
	Level  string
	Format string
}

func (l *Log) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_LOG_LEVEL", Flag: "log-level", Default: "info", Usage: "every command: debug, info, warn or error", ptr: &l.Level},
		{Env: "SETFLOW_LOG_FORMAT", Flag: "log-format", Default: "text", Usage: "every command: text or json (json in production)", ptr: &l.Format},
	}
}

// Register adds the logging flags.
func (l *Log) Register(fs *flag.FlagSet) { register(fs, l.settings()) }

// Logger builds the slog logger. Every message and attribute goes through
// Secrets(): a secret that reaches a log line anyway is replaced by xxxxx.
func (l *Log) Logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("SETFLOW_LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "json":
		return slog.New(Secrets().Handler(slog.NewJSONHandler(os.Stderr, opts))), nil
	case "text", "":
		return slog.New(Secrets().Handler(slog.NewTextHandler(os.Stderr, opts))), nil
	}
	return nil, fmt.Errorf("SETFLOW_LOG_FORMAT must be text or json, not %q", l.Format)
}
