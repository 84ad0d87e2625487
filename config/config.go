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
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/setflow/setflow/sessions"
)

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func str(fs *flag.FlagSet, p *string, name, envName, def, usage string) {
	fs.StringVar(p, name, env(envName, def), usage+" (env "+envName+")")
}

func boolean(fs *flag.FlagSet, p *bool, name, envName string, def bool, usage string) {
	v := def
	if s, ok := os.LookupEnv(envName); ok {
		if b, err := strconv.ParseBool(s); err == nil {
			v = b
		}
	}
	fs.BoolVar(p, name, v, usage+" (env "+envName+")")
}

// integer is an int flag whose default comes from envName when it is set to
// a number (an invalid value is left to the flag's own default, as elsewhere).
func integer(fs *flag.FlagSet, p *int, name, envName string, def int, usage string) {
	v := def
	if s, ok := os.LookupEnv(envName); ok {
		if n, err := strconv.Atoi(s); err == nil {
			v = n
		}
	}
	fs.IntVar(p, name, v, usage+" (env "+envName+")")
}

func duration(fs *flag.FlagSet, p *time.Duration, name, envName string, def time.Duration, usage string) {
	v := def
	if s, ok := os.LookupEnv(envName); ok {
		if d, err := time.ParseDuration(s); err == nil {
			v = d
		}
	}
	fs.DurationVar(p, name, v, usage+" (env "+envName+")")
}

// Database is where the inbox, audit trail and the service's tables live.
type Database struct {
	URL string
}

// Register adds the database flags.
func (d *Database) Register(fs *flag.FlagSet) {
	URLVar(fs, &d.URL, "database-url", "SETFLOW_DATABASE_URL",
		"postgres://postgres@127.0.0.1:5432/setflow?sslmode=disable", "PostgreSQL `URL`")
}

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

// Register adds the ingress flags.
func (i *Ingress) Register(fs *flag.FlagSet) {
	str(fs, &i.Listen, "listen", "SETFLOW_LISTEN", ":8080", "HTTP listen address")
	str(fs, &i.Issuer, "issuer", "SETFLOW_ISSUER", "https://kauth.kakao.com", "accepted SET issuer (compared exactly)")
	str(fs, &i.Audiences, "audiences", "SETFLOW_AUDIENCES", "", "accepted SET audiences, comma-separated (your app's REST API key)")
	URLVar(fs, &i.JWKSURL, "jwks-url", "SETFLOW_JWKS_URL", "https://kauth.kakao.com/.well-known/jwks.json", "pinned JWKS `URL` (ignored with -discovery)")
	boolean(fs, &i.Discovery, "discovery", "SETFLOW_KEY_DISCOVERY", false, "find the JWKS through the issuer's SSF discovery document")
	duration(fs, &i.MaxAge, "max-age", "SETFLOW_SET_MAX_AGE", 7*24*time.Hour, "oldest accepted SET iat (replay window)")
	fs.Int64Var(&i.MaxBody, "max-body", 64<<10, "maximum request body in bytes")
	integer(fs, &i.InboxInFlight, "inbox-in-flight", "SETFLOW_INBOX_IN_FLIGHT", 0, "group commit: insert statements in flight at once (0: 2)")
	integer(fs, &i.InboxMaxBatch, "inbox-max-batch", "SETFLOW_INBOX_MAX_BATCH", 0, "group commit: most deliveries in one insert (0: 500)")
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
}

// Register adds the Temporal flags, named like Temporal's own tools.
func (t *Temporal) Register(fs *flag.FlagSet) {
	str(fs, &t.Address, "temporal-address", "TEMPORAL_ADDRESS", "localhost:7233", "Temporal frontend host:port")
	str(fs, &t.Namespace, "temporal-namespace", "TEMPORAL_NAMESPACE", "default", "Temporal namespace")
	// The API key is a secret: it is read from the environment only, never a flag
	// (flags show up in process listings).
	t.APIKey = os.Getenv("TEMPORAL_API_KEY")
	str(fs, &t.TLSCert, "temporal-tls-cert", "TEMPORAL_TLS_CERT", "", "client certificate file for mTLS")
	str(fs, &t.TLSKey, "temporal-tls-key", "TEMPORAL_TLS_KEY", "", "client key file for mTLS")
	str(fs, &t.TLSCA, "temporal-tls-ca", "TEMPORAL_TLS_CA", "", "CA bundle file to verify the server")
	str(fs, &t.TLSServerName, "temporal-tls-server-name", "TEMPORAL_TLS_SERVER_NAME", "", "server name to verify")
}

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

// Register adds the session-table flags.
func (s *Sessions) Register(fs *flag.FlagSet) {
	d := sessions.DefaultSchema()
	str(fs, &s.Table, "sessions-table", "SETFLOW_SESSIONS_TABLE", d.Table, "session table (optionally schema-qualified)")
	str(fs, &s.UserID, "sessions-user-column", "SETFLOW_SESSIONS_USER_COLUMN", d.UserID, "column holding the account id (the Kakao user id unless SETFLOW_IDENTITY maps it)")
	str(fs, &s.CreatedAt, "sessions-created-column", "SETFLOW_SESSIONS_CREATED_COLUMN", d.CreatedAt, "column holding the session's creation time")
	str(fs, &s.RevokedAt, "sessions-revoked-column", "SETFLOW_SESSIONS_REVOKED_COLUMN", d.RevokedAt, "column set to the revocation time")
}

// Log configures setflow's own logs.
type Log struct {
	Level  string
	Format string
}

// Register adds the logging flags.
func (l *Log) Register(fs *flag.FlagSet) {
	str(fs, &l.Level, "log-level", "SETFLOW_LOG_LEVEL", "info", "debug, info, warn or error")
	str(fs, &l.Format, "log-format", "SETFLOW_LOG_FORMAT", "text", "text or json")
}

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
