package config

import (
	"errors"
	"flag"
	"log/slog"
	"os"
	"strings"
)

// The keys outside `setflow dev` refuse to start without (see KeyPolicy).
const (
	// EnvCodecKeys holds the payload key ring (codec.EnvKeys).
	EnvCodecKeys = "SETFLOW_CODEC_KEYS"
	// EnvCodecAuthToken holds the codec server's bearer token
	// (codec.EnvAuthToken).
	EnvCodecAuthToken = "SETFLOW_CODEC_AUTH_TOKEN"
	// EnvInsecureDevKeys, when true, lets the ingress, relay, worker and codec
	// server start without their keys: for local development only.
	EnvInsecureDevKeys = "SETFLOW_INSECURE_DEV_KEYS"
	// FlagInsecureDevKeys is the flag of the same meaning.
	FlagInsecureDevKeys = "insecure-dev-keys"
	// DevAuditKey keys subject hashes when SETFLOW_AUDIT_KEY is unset in
	// `setflow dev` (or with -insecure-dev-keys). It is public, so hashes made
	// with it can be reversed by enumeration.
	DevAuditKey = "setflow-development-audit-key"
)

// KeyNeeds names the keys a command needs.
type KeyNeeds struct {
	// AuditKey: SETFLOW_AUDIT_KEY keys subject hashes (audit rows, user stream
	// and purge workflow ids) and the ingress's unlink dedupe key.
	AuditKey bool
	// CodecKeys: SETFLOW_CODEC_KEYS encrypts what Temporal stores.
	CodecKeys bool
	// CodecAuthToken: SETFLOW_CODEC_AUTH_TOKEN guards the codec server.
	CodecAuthToken bool
}

// KeyPolicy makes a command refuse to start without the keys it needs, unless
// the loudly named opt-out -insecure-dev-keys (SETFLOW_INSECURE_DEV_KEYS=1) is
// given; then it starts with a warning on every start.
type KeyPolicy struct {
	InsecureDevKeys bool
}

func (k *KeyPolicy) settings() []Setting {
	return []Setting{{Env: EnvInsecureDevKeys, Flag: FlagInsecureDevKeys, Default: "false",
		Usage: "ingress, relay, worker, codec-server: INSECURE, local development only: start without " + EnvAuditKey + ", " + EnvCodecKeys + " or " + EnvCodecAuthToken +
			" (subject hashes then use a public key and can be reversed, Temporal stores payloads in clear, the codec server answers anyone)", ptr: &k.InsecureDevKeys}}
}

// Register adds -insecure-dev-keys.
func (k *KeyPolicy) Register(fs *flag.FlagSet) { register(fs, k.settings()) }

// Missing reports, one error per variable and naming it, each needed key that
// the environment lacks.
func (n KeyNeeds) Missing() []error {
	var errs []error
	if n.AuditKey {
		switch os.Getenv(EnvAuditKey) {
		case "":
			errs = append(errs, errors.New(EnvAuditKey+" is not set: it keys the subject hashes of the audit trail and workflow ids "+
				"and the unlink dedupe key; without it they use a public key and can be reversed. "+
				"Set it to 32 random bytes, e.g. openssl rand -base64 32"))
		case DevAuditKey:
			errs = append(errs, errors.New(EnvAuditKey+" is the public development key: subject hashes made with it can be reversed. "+
				"Set it to 32 random bytes, e.g. openssl rand -base64 32"))
		}
	}
	if n.CodecKeys && strings.TrimSpace(os.Getenv(EnvCodecKeys)) == "" {
		errs = append(errs, errors.New(EnvCodecKeys+" is not set: without it Temporal stores workflow inputs, results and errors "+
			"(emails, nicknames) in clear. Set it to id:base64key, e.g. k1:$(openssl rand -base64 32), the same in every relay, worker and codec server"))
	}
	if n.CodecAuthToken && os.Getenv(EnvCodecAuthToken) == "" {
		errs = append(errs, errors.New(EnvCodecAuthToken+" is not set: without it anyone who reaches the codec server can decrypt payloads. "+
			`Set it, e.g. openssl rand -hex 32, and give the Temporal UI or CLI "Bearer <token>"`))
	}
	return errs
}

// Enforce returns an error naming every missing key's variable, unless the
// opt-out is on; then it logs a warning naming them (and one that the opt-out
// is on even when nothing is missing) and returns nil.
func (k KeyPolicy) Enforce(log *slog.Logger, n KeyNeeds) error {
	missing := n.Missing()
	if !k.InsecureDevKeys {
		if len(missing) == 0 {
			return nil
		}
		return errors.Join(append(missing, errors.New("for local development only, pass -"+FlagInsecureDevKeys+
			" (env "+EnvInsecureDevKeys+"=1) to start without them, or use setflow dev"))...)
	}
	if len(missing) == 0 {
		log.Warn("INSECURE: -" + FlagInsecureDevKeys + " is on (" + EnvInsecureDevKeys + "); every key is set, so it changes nothing here: remove it")
		return nil
	}
	for _, err := range missing {
		log.Warn("INSECURE: -"+FlagInsecureDevKeys+" is on, starting anyway; never run this in production", "missing", err.Error())
	}
	return nil
}
