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

// Register adds the admin-port flags; def is the default listen address.
func (a *Admin) Register(fs *flag.FlagSet, def, defIssuer string) {
	str(fs, &a.Listen, "admin-listen", "SETFLOW_ADMIN_LISTEN", def, "admin port serving the status API, empty for none; needs "+EnvStatusTokens+" or -admin-tls-client-ca")
	a.Tokens = splitList(os.Getenv(EnvStatusTokens))
	str(fs, &a.TLSCert, "admin-tls-cert", "SETFLOW_ADMIN_TLS_CERT", "", "certificate file: the admin port serves HTTPS")
	str(fs, &a.TLSKey, "admin-tls-key", "SETFLOW_ADMIN_TLS_KEY", "", "key file of -admin-tls-cert")
	str(fs, &a.TLSClientCA, "admin-tls-client-ca", "SETFLOW_ADMIN_TLS_CLIENT_CA", "", "CA bundle: the admin port requires client certificates it signed (mTLS)")
	str(fs, &a.Issuer, "status-issuer", "SETFLOW_STATUS_ISSUER", defIssuer, "issuer of a status lookup that names none (?issuer=)")
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

// Register adds the user-table flags.
func (s *ServiceUsers) Register(fs *flag.FlagSet) {
	str(fs, &s.Table, "service-users-table", "SETFLOW_SERVICE_USERS_TABLE", "users", "your user table (optionally schema-qualified) that setflow writes flags into")
	str(fs, &s.IDColumn, "service-users-id-column", "SETFLOW_SERVICE_USERS_ID_COLUMN", "id", "its account id column (the identity mapping's account ids)")
	str(fs, &s.LockedColumn, "service-users-locked-column", "SETFLOW_SERVICE_USERS_LOCKED_COLUMN", "", "boolean column set while the user is locked (empty: not written)")
	str(fs, &s.ReauthColumn, "service-users-reauth-column", "SETFLOW_SERVICE_USERS_REAUTH_COLUMN", "", "timestamptz column: re-authentication required since (empty: not written)")
	str(fs, &s.UnlinkedColumn, "service-users-unlinked-column", "SETFLOW_SERVICE_USERS_UNLINKED_COLUMN", "", "timestamptz column: unlinked the app at, NULL when linked (empty: not written)")
}

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

// Register adds the service webhook flags.
func (h *ServiceHook) Register(fs *flag.FlagSet) {
	URLVar(fs, &h.URL, "service-hook-url", "SETFLOW_SERVICE_HOOK_URL", "", "your endpoint (`URL`) that notify_service POSTs signed documents to; the secret comes from env "+EnvServiceHookSecret)
	h.Secret = os.Getenv(EnvServiceHookSecret)
}

// Validate needs the secret with the URL.
func (h *ServiceHook) Validate() error {
	if h.URL != "" && h.Secret == "" {
		return errors.New("SETFLOW_SERVICE_HOOK_URL needs " + EnvServiceHookSecret)
	}
	return nil
}
