package config

import (
	"errors"
	"flag"
	"os"
	"time"

	"github.com/setflow/setflow/sessions"
)

// Reactions configures the worker's back ends: where sessions live, the CRM,
// email, the policy file and retention. Secrets (tokens, passwords, HMAC keys)
// are read from the environment only, never from flags.
type Reactions struct {
	PolicyFile string
	PurgeAfter time.Duration
	// EventTimePast and EventTimeFuture bound event times to
	// [iat − past, receipt + future] (userstate.Bounds).
	EventTimePast   time.Duration
	EventTimeFuture time.Duration
	// StepRetryFor is how long reaction steps retry transient failures
	// before they park for an operator.
	StepRetryFor time.Duration
	// AuditKey keys the subject hashes in the audit trail and workflow ids
	// (and, in the ingress, the unlink webhook's dedupe key).
	AuditKey string

	SessionsBackend        string // postgres | redis | http
	RedisURL               string
	RedisUserIndex         string
	RedisSessionKey        string
	SessionsCallbackURL    string
	SessionsCallbackSecret string

	CRM               string // none | hubspot | webhook
	HubSpotURL        string
	HubSpotToken      string
	HubSpotIDProperty string
	CRMWebhookURL     string
	CRMWebhookSecret  string
	// CRMRate bounds CRM calls per second across all workers (Temporal task
	// queue rate limit), to stay under the CRM's own limits.
	CRMRate float64

	SMTPHost     string
	SMTPPort     int
	SMTPUsername string
	SMTPPassword string
	SMTPTLS      string
	MailFrom     string
	ServiceName  string

	// GuardLimit is the blast-radius guard: more than this many destructive
	// steps (revocation, lock, purge, CRM delete) across all users within
	// GuardWindow hold new destructive work for an operator. 0 turns it off.
	GuardLimit  int
	GuardWindow time.Duration
}

// DefaultGuardLimit is generous for Kakao's account events, which come a few
// per user per year, and far below what a replay or a misbehaving sender does.
const DefaultGuardLimit = 300

// EnvAuditKey names the variable holding the audit key (a secret: env only).
const EnvAuditKey = "SETFLOW_AUDIT_KEY"

// AuditKeyFromEnv reads the audit key; "" when unset. The worker keys subject
// hashes with it, the ingress the unlink webhook's dedupe key.
func AuditKeyFromEnv() string { return os.Getenv(EnvAuditKey) }

// Register adds the reaction flags.
func (r *Reactions) Register(fs *flag.FlagSet) {
	str(fs, &r.PolicyFile, "policy", "SETFLOW_POLICY_FILE", "", "reaction policy file (YAML or JSON); empty uses the built-in default")
	duration(fs, &r.PurgeAfter, "purge-after", "SETFLOW_PURGE_AFTER", 0, "retention before an unlinked user's data is purged (0: immediately)")
	r.AuditKey = AuditKeyFromEnv()
	duration(fs, &r.EventTimePast, "event-time-past", "SETFLOW_EVENT_TIME_PAST", 7*24*time.Hour, "how long before its token's iat an event may have happened; older times are clamped")
	duration(fs, &r.StepRetryFor, "step-retry-for", "SETFLOW_STEP_RETRY_FOR", 6*time.Hour, "how long a reaction step retries transient failures (dependency down, 5xx, 429, timeouts) before it parks")
	duration(fs, &r.EventTimeFuture, "event-time-future", "SETFLOW_EVENT_TIME_FUTURE", 5*time.Minute, "how far after its receipt an event time may lie (clock skew); later times are clamped")

	str(fs, &r.SessionsBackend, "sessions-backend", "SETFLOW_SESSIONS_BACKEND", "postgres", "where sessions live: postgres, redis or http")
	URLVar(fs, &r.RedisURL, "redis-url", "SETFLOW_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis `URL` for the redis sessions back end")
	layout := sessions.DefaultRedisLayout()
	str(fs, &r.RedisUserIndex, "redis-user-index", "SETFLOW_REDIS_USER_INDEX", layout.UserIndex, "sorted set of a user's session ids (score: creation time, Unix ms)")
	str(fs, &r.RedisSessionKey, "redis-session-key", "SETFLOW_REDIS_SESSION_KEY", layout.SessionKey, "key of one session")
	URLVar(fs, &r.SessionsCallbackURL, "sessions-callback-url", "SETFLOW_SESSIONS_CALLBACK_URL", "", "service endpoint (`URL`) that ends sessions (http back end)")
	r.SessionsCallbackSecret = os.Getenv("SETFLOW_SESSIONS_CALLBACK_SECRET")

	str(fs, &r.CRM, "crm", "SETFLOW_CRM", "none", "CRM adapter: none, hubspot or webhook")
	URLVar(fs, &r.HubSpotURL, "hubspot-url", "SETFLOW_HUBSPOT_URL", "https://api.hubapi.com", "HubSpot-style API base `URL`")
	r.HubSpotToken = os.Getenv("SETFLOW_HUBSPOT_TOKEN")
	str(fs, &r.HubSpotIDProperty, "hubspot-id-property", "SETFLOW_HUBSPOT_ID_PROPERTY", "kakao_user_id", "unique contact property holding the Kakao user id")
	URLVar(fs, &r.CRMWebhookURL, "crm-webhook-url", "SETFLOW_CRM_WEBHOOK_URL", "", "`URL` the generic CRM adapter POSTs signed documents to")
	r.CRMWebhookSecret = os.Getenv("SETFLOW_CRM_WEBHOOK_SECRET")
	fs.Float64Var(&r.CRMRate, "crm-rate", 10, "CRM calls per second across all workers")

	fs.IntVar(&r.GuardLimit, "guard-limit", DefaultGuardLimit, "blast-radius guard: destructive steps per -guard-window across all users before new ones are held for an operator; 0 turns the guard off (env SETFLOW_GUARD_LIMIT)")
	if v, ok := os.LookupEnv("SETFLOW_GUARD_LIMIT"); ok {
		fs.Lookup("guard-limit").DefValue = v
		_ = fs.Set("guard-limit", v)
	}
	duration(fs, &r.GuardWindow, "guard-window", "SETFLOW_GUARD_WINDOW", time.Minute, "the blast-radius guard's sliding window")

	str(fs, &r.SMTPHost, "smtp-host", "SETFLOW_SMTP_HOST", "", "SMTP server host; empty disables email")
	fs.IntVar(&r.SMTPPort, "smtp-port", 0, "SMTP port (0: the TLS mode's default)")
	if p, ok := os.LookupEnv("SETFLOW_SMTP_PORT"); ok {
		fs.Lookup("smtp-port").DefValue = p
		_ = fs.Set("smtp-port", p)
	}
	str(fs, &r.SMTPUsername, "smtp-username", "SETFLOW_SMTP_USERNAME", "", "SMTP user")
	r.SMTPPassword = os.Getenv("SETFLOW_SMTP_PASSWORD")
	str(fs, &r.SMTPTLS, "smtp-tls", "SETFLOW_SMTP_TLS", "starttls", "none, starttls, starttls-opportunistic or tls")
	str(fs, &r.MailFrom, "mail-from", "SETFLOW_MAIL_FROM", "", `sender, e.g. "Example Security <security@example.com>"`)
	str(fs, &r.ServiceName, "service-name", "SETFLOW_SERVICE_NAME", "", "service name shown in emails")
}

// Validate reports missing or contradictory settings by name.
func (r *Reactions) Validate() error {
	var errs []error
	switch r.SessionsBackend {
	case "postgres", "redis":
	case "http":
		if r.SessionsCallbackURL == "" || r.SessionsCallbackSecret == "" {
			errs = append(errs, errors.New("the http sessions back end needs SETFLOW_SESSIONS_CALLBACK_URL and SETFLOW_SESSIONS_CALLBACK_SECRET"))
		}
	default:
		errs = append(errs, errors.New("SETFLOW_SESSIONS_BACKEND must be postgres, redis or http"))
	}
	switch r.CRM {
	case "none", "":
	case "hubspot":
		if r.HubSpotToken == "" {
			errs = append(errs, errors.New("SETFLOW_CRM=hubspot needs SETFLOW_HUBSPOT_TOKEN"))
		}
	case "webhook":
		if r.CRMWebhookURL == "" || r.CRMWebhookSecret == "" {
			errs = append(errs, errors.New("SETFLOW_CRM=webhook needs SETFLOW_CRM_WEBHOOK_URL and SETFLOW_CRM_WEBHOOK_SECRET"))
		}
	default:
		errs = append(errs, errors.New("SETFLOW_CRM must be none, hubspot or webhook"))
	}
	if r.CRMRate <= 0 {
		errs = append(errs, errors.New("-crm-rate must be positive"))
	}
	if r.SMTPHost != "" && r.MailFrom == "" {
		errs = append(errs, errors.New("SETFLOW_MAIL_FROM is required when SETFLOW_SMTP_HOST is set"))
	}
	if r.GuardLimit < 0 || r.GuardWindow < 0 {
		errs = append(errs, errors.New("SETFLOW_GUARD_LIMIT must not be negative and SETFLOW_GUARD_WINDOW must not be negative"))
	}
	if r.PurgeAfter < 0 {
		errs = append(errs, errors.New("SETFLOW_PURGE_AFTER must not be negative"))
	}
	return errors.Join(errs...)
}
