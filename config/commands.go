package config

import (
	"errors"
	"flag"
	"time"
)

// The settings of single commands, beside the service's groups.

// Service are the long-running commands' probe and metrics ports.
type Service struct {
	MetricsListen string
	HealthListen  string
}

func (s *Service) metricsSettings(def string) []Setting {
	return []Setting{{Env: "SETFLOW_METRICS_LISTEN", Flag: "metrics-listen", Default: def,
		Usage: "ingress, relay, worker, codec-server, dev (:9090): address serving Prometheus /metrics (setflow's and the Temporal SDK's temporal_*), empty for none", ptr: &s.MetricsListen}}
}

func (s *Service) healthSettings() []Setting {
	return []Setting{{Env: "SETFLOW_HEALTH_LISTEN", Flag: "health-listen",
		Usage: "relay, worker: address serving /healthz and /readyz for probes (ready: Postgres with the schema at the binary's version, and Temporal), empty for none; the ingress serves both on its own port", ptr: &s.HealthListen}}
}

// RegisterMetrics adds -metrics-listen; def is the default address.
func (s *Service) RegisterMetrics(fs *flag.FlagSet, def string) { register(fs, s.metricsSettings(def)) }

// RegisterHealth adds -health-listen (relay, worker).
func (s *Service) RegisterHealth(fs *flag.FlagSet) { register(fs, s.healthSettings()) }

// Relay configures the relay's own housekeeping.
type Relay struct {
	InboxRetention time.Duration
}

func (r *Relay) settings() []Setting {
	return []Setting{{Env: "SETFLOW_INBOX_RETENTION", Flag: "inbox-retention", Default: "30d",
		Usage: "relay, dev: delete dispatched inbox entries (raw tokens) older than this; keep it above SETFLOW_SET_MAX_AGE; 0 keeps them", ptr: &r.InboxRetention}}
}

// Register adds -inbox-retention.
func (r *Relay) Register(fs *flag.FlagSet) { register(fs, r.settings()) }

// Validate reports impossible values by name.
func (r *Relay) Validate() error {
	if r.InboxRetention < 0 {
		return errors.New("SETFLOW_INBOX_RETENTION (-inbox-retention) must not be negative")
	}
	return nil
}

// DevKeyPath is where `setflow dev` keeps its signing key.
const DevKeyPath = ".setflow-dev/signing-key.pem"

// Dev configures `setflow dev` and `setflow send`.
type Dev struct {
	KeyPath string
	// SendURL is where `setflow send` posts; SendAdminKey is the admin key
	// it sends on the other webhooks (a secret: env only).
	SendURL      string
	SendAdminKey string
}

func (d *Dev) keySettings() []Setting {
	return []Setting{{Env: "SETFLOW_DEV_KEY", Flag: "dev-key", Default: DevKeyPath,
		Usage: "dev, send: development signing key, created by dev if missing (send without it: the one here or in a parent directory, else the last setflow dev's)", ptr: &d.KeyPath}}
}

// DevSendURL is `setflow dev`'s SET endpoint (ingress.PathAccountStatus).
const DevSendURL = "http://localhost:8080/webhooks/kakao/account-status"

// DevAdminKey is the admin key `setflow dev` accepts on the unlink and Talk
// webhooks. Development only: a real key comes from SETFLOW_KAKAO_ADMIN_KEYS.
const DevAdminKey = "setflow-dev-admin-key"

func (d *Dev) sendSettings() []Setting {
	return []Setting{
		{Env: "SETFLOW_SEND_URL", Flag: "url", Default: DevSendURL, URL: true,
			Usage: "send: the ingress's SET `URL` it posts to (the other webhooks: on the same host)", ptr: &d.SendURL},
		{Env: "SETFLOW_SEND_ADMIN_KEY", Secret: true, Default: DevAdminKey,
			Usage: "send: admin key on the unlink and Talk webhooks (default: setflow dev's)", ptr: &d.SendAdminKey},
	}
}

// RegisterKey adds -dev-key.
func (d *Dev) RegisterKey(fs *flag.FlagSet) { register(fs, d.keySettings()) }

// RegisterSend adds `setflow send`'s -url and reads its admin key.
func (d *Dev) RegisterSend(fs *flag.FlagSet) { register(fs, d.sendSettings()) }

// Operator configures the operator commands: who decides on a hold (holds
// approve, reject) and the Temporal UI the commands link to (events show,
// audit user).
type Operator struct {
	// Name defaults to the OS user.
	Name          string
	TemporalUIURL string
}

func (o *Operator) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_OPERATOR", Flag: "by", Usage: "holds approve/reject: who decides, written to the audit trail (default: the OS user)", ptr: &o.Name},
		{Env: "SETFLOW_TEMPORAL_UI_URL", Flag: "temporal-ui-url", Default: "http://localhost:8233",
			Usage: "events show, audit user: base of the Temporal UI links they print", ptr: &o.TemporalUIURL},
	}
}

// RegisterName adds -by (holds).
func (o *Operator) RegisterName(fs *flag.FlagSet) {
	register(fs, pick(o.settings(), "SETFLOW_OPERATOR"))
}

// RegisterUI adds -temporal-ui-url (events, audit).
func (o *Operator) RegisterUI(fs *flag.FlagSet) {
	register(fs, pick(o.settings(), "SETFLOW_TEMPORAL_UI_URL"))
}

// Bench configures `setflow bench`.
type Bench struct {
	TemporalBin string
}

func (b *Bench) settings() []Setting {
	return []Setting{{Env: "SETFLOW_TEMPORAL_BIN", Flag: "temporal-bin", Default: ".bin/temporal",
		Usage: "bench: Temporal CLI that runs the benches' dev server", ptr: &b.TemporalBin}}
}

// Register adds -temporal-bin.
func (b *Bench) Register(fs *flag.FlagSet) { register(fs, b.settings()) }
