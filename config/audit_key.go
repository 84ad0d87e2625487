package config

import (
	"flag"
	"log/slog"
)

// EnvAuditKey names the variable holding the audit key (a secret: env only).
const EnvAuditKey = "SETFLOW_AUDIT_KEY"

// AuditKey keys the subject hashes of the audit trail, the user stream and
// purge workflow ids (worker, relay, status API) and the unlink webhook's
// dedupe key (ingress).
type AuditKey struct{ Key string }

func (a *AuditKey) settings() []Setting {
	return []Setting{{Env: EnvAuditKey, Secret: true,
		Usage: "worker, relay, ingress (required; dev: a public key, with a warning): keys subject hashes (audit rows, user stream ids) and the unlink dedupe key; e.g. openssl rand -base64 32, never changed afterwards",
		ptr:   &a.Key}}
}

// Register reads SETFLOW_AUDIT_KEY (environment only).
func (a *AuditKey) Register(fs *flag.FlagSet) { register(fs, a.settings()) }

// AuditKeyFromEnv reads SETFLOW_AUDIT_KEY for the commands without flags of
// their own.
func AuditKeyFromEnv() AuditKey {
	a, _ := FromEnv[AuditKey]() // a secret's text always parses
	return a
}

// Bytes is the key, or the public development key with a warning when it is
// unset (the commands refuse to start without it unless in dev or with
// -insecure-dev-keys; see KeyPolicy).
func (a AuditKey) Bytes(log *slog.Logger) []byte {
	if a.Key == "" {
		log.Warn(EnvAuditKey + " is not set: subject hashes and unlink dedupe keys use the public development key (development only)")
	}
	return a.OrDev()
}

// OrDev is the key, or the public development key when it is unset: for the
// operator commands that look rows up (a wrong key finds nothing).
func (a AuditKey) OrDev() []byte {
	if a.Key == "" {
		return []byte(DevAuditKey)
	}
	return []byte(a.Key)
}
