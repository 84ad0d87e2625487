package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/setflow/setflow/serviceusers"
)

// EnvStatusTokens names the variable holding the status API's bearer tokens
// (comma-separated, several during a rotation; a secret: env only).
const EnvStatusTokens = "SETFLOW_STATUS_TOKENS"

// Admin configures the admin port, which serves the status API
// (statusapi): behind a bearer token, mTLS, or both.
type Admin struct {
	Listen string
	// Tokens are the accepted bearer tokens.
	Tokens []string
	// TLSCert and TLSKey serve HTTPS; TLSClientCA requires client
	// certificates signed by it (mTLS).
	TLSCert, TLSKey, TLSClientCA string
	// Issuer is the issuer of a status lookup that names none.
	Issuer string
}

func (a *Admin) settings(def, defIssuer string) []Setting {
	return []Setting{
		{Env: "SETFLOW_ADMIN_LISTEN", Flag: "admin-listen", Default: def,
			Usage: "worker, dev (:8082): admin port serving the status API, empty for none; needs " + EnvStatusTokens + " or -admin-tls-client-ca", ptr: &a.Listen},
		{Env: EnvStatusTokens, Secret: true, Usage: "worker, dev: status API bearer tokens, comma-separated; required unless mTLS (dev: " + DevStatusToken + ")", ptr: &a.Tokens},
		{Env: "SETFLOW_ADMIN_TLS_CERT", Flag: "admin-tls-cert", Usage: "worker, dev: certificate file, the admin port serves HTTPS", ptr: &a.TLSCert},
		{Env: "SETFLOW_ADMIN_TLS_KEY", Flag: "admin-tls-key", Usage: "worker, dev: key file of -admin-tls-cert", ptr: &a.TLSKey},
		{Env: "SETFLOW_ADMIN_TLS_CLIENT_CA", Flag: "admin-tls-client-ca",
			Usage: "worker, dev: CA bundle, the admin port requires client certificates it signed (mTLS)", ptr: &a.TLSClientCA},
		{Env: "SETFLOW_STATUS_ISSUER", Flag: "status-issuer", Default: defIssuer,
			Usage: "worker, dev (its dev issuer): issuer of a status lookup that names none (?issuer=)", ptr: &a.Issuer},
	}
}

// DevStatusToken is the status API's token under `setflow dev` when
// SETFLOW_STATUS_TOKENS is unset.
const DevStatusToken = "setflow-dev-status-token"

// Register adds the admin-port flags; def is the default listen address and
// defIssuer the default issuer of a status lookup.
func (a *Admin) Register(fs *flag.FlagSet, def, defIssuer string) {
	register(fs, a.settings(def, defIssuer))
}

// Validate reports missing or contradictory settings by name.
func (a *Admin) Validate() error {
	if a.Listen == "" {
		return nil
	}
	var errs []error
	if (a.TLSCert == "") != (a.TLSKey == "") {
		errs = append(errs, errors.New("SETFLOW_ADMIN_TLS_CERT and SETFLOW_ADMIN_TLS_KEY must be set together"))
	}
	if a.TLSClientCA != "" && a.TLSCert == "" {
		errs = append(errs, errors.New("SETFLOW_ADMIN_TLS_CLIENT_CA needs SETFLOW_ADMIN_TLS_CERT and SETFLOW_ADMIN_TLS_KEY"))
	}
	if len(a.Tokens) == 0 && a.TLSClientCA == "" {
		errs = append(errs, errors.New("SETFLOW_ADMIN_LISTEN is set: the status API needs "+EnvStatusTokens+" or SETFLOW_ADMIN_TLS_CLIENT_CA (mTLS)"))
	}
	if a.Issuer == "" {
		errs = append(errs, errors.New("SETFLOW_STATUS_ISSUER must not be empty"))
	}
	return errors.Join(errs...)
}

// TLSConfig is the admin port's TLS, nil for plain HTTP.
func (a *Admin) TLSConfig() (*tls.Config, error) {
	if a.TLSCert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(a.TLSCert, a.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("admin TLS key pair: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if a.TLSClientCA != "" {
		pem, err := os.ReadFile(a.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("admin client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("admin client CA %s holds no certificate", a.TLSClientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ServiceUsers names the service's user table that setflow writes lock,
// re-auth and unlink into; off unless a column is named.
type ServiceUsers struct{ serviceusers.Schema }

func (s *ServiceUsers) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_SERVICE_USERS_TABLE", Flag: "service-users-table", Default: "users",
			Usage: "worker: your user table (optionally schema-qualified) that setflow writes flags into (off unless a column is named)", ptr: &s.Table},
		{Env: "SETFLOW_SERVICE_USERS_ID_COLUMN", Flag: "service-users-id-column", Default: "id", Usage: "worker: its account id column (the identity mapping's account ids)", ptr: &s.IDColumn},
		{Env: "SETFLOW_SERVICE_USERS_LOCKED_COLUMN", Flag: "service-users-locked-column", Usage: "worker: boolean column set while the user is locked (empty: not written)", ptr: &s.LockedColumn},
		{Env: "SETFLOW_SERVICE_USERS_REAUTH_COLUMN", Flag: "service-users-reauth-column",
			Usage: "worker: timestamptz column, re-authentication required since (empty: not written)", ptr: &s.ReauthColumn},
		{Env: "SETFLOW_SERVICE_USERS_UNLINKED_COLUMN", Flag: "service-users-unlinked-column",
			Usage: "worker: timestamptz column, unlinked the app at, NULL when linked (empty: not written)", ptr: &s.UnlinkedColumn},
	}
}

// Register adds the user-table flags.
func (s *ServiceUsers) Register(fs *flag.FlagSet) { register(fs, s.settings()) }

// Validate checks the names when the writes are on.
func (s *ServiceUsers) Validate() error {
	if !s.Enabled() {
		return nil
	}
	return s.Schema.Validate()
}

// EnvServiceHookSecret names the variable holding notify_service's signing
// secret (env only).
const EnvServiceHookSecret = "SETFLOW_SERVICE_HOOK_SECRET"

// ServiceHook configures the notify_service step's endpoint.
type ServiceHook struct {
	URL    string
	Secret string
}

func (h *ServiceHook) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_SERVICE_HOOK_URL", Flag: "service-hook-url", URL: true,
			Usage: "worker: your endpoint (`URL`) that notify_service POSTs signed documents to; the secret comes from env " + EnvServiceHookSecret, ptr: &h.URL},
		{Env: EnvServiceHookSecret, Secret: true, Usage: "worker: notify_service's signing secret", ptr: &h.Secret},
	}
}

// Register adds the service webhook flags.
func (h *ServiceHook) Register(fs *flag.FlagSet) { register(fs, h.settings()) }

// Validate needs the secret with the URL.
func (h *ServiceHook) Validate() error {
	if h.URL != "" && h.Secret == "" {
		return errors.New("SETFLOW_SERVICE_HOOK_URL needs " + EnvServiceHookSecret)
	}
	return nil
}
