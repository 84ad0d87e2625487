package config

import (
	"errors"
	"flag"
	"strconv"
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
	// NoticePreviousWithin: a security notice also goes to every address the
	// user had within this time before the event (0: only the current one).
	NoticePreviousWithin time.Duration

	// GuardLimit is the blast-radius guard: more than this many destructive
	// steps (revocation, lock, purge, CRM delete) across all users within
	// GuardWindow hold new destructive work for an operator. 0 turns it off.
	GuardLimit  int
	GuardWindow time.Duration
}

// DefaultCRMRate is the default of SETFLOW_CRM_RATE: CRM calls per second
// across all workers.
const DefaultCRMRate = 10

// DefaultGuardLimit is generous for Kakao's account events, which come a few
// per user per year, and far below what a replay or a misbehaving sender does.
const DefaultGuardLimit = 300

func (r *Reactions) settings() []Setting {
	layout := sessions.DefaultRedisLayout()
	return []Setting{
		{Env: "SETFLOW_POLICY_FILE", Flag: "policy", Usage: "worker: reaction policy file (YAML or JSON); empty uses the built-in default", ptr: &r.PolicyFile},
		{Env: "SETFLOW_PURGE_AFTER", Flag: "purge-after", Default: "0", Usage: "worker: retention before an unlinked user's data is purged (0: immediately)", ptr: &r.PurgeAfter},
		{Env: "SETFLOW_EVENT_TIME_PAST", Flag: "event-time-past", Default: "7d", Usage: "worker: an event time earlier than its token's iat minus this is clamped (and audited)", ptr: &r.EventTimePast},
		{Env: "SETFLOW_EVENT_TIME_FUTURE", Flag: "event-time-future", Default: "5m", Usage: "worker: an event time later than its receipt plus this (clock skew) is clamped (and audited)", ptr: &r.EventTimeFuture},
		{Env: "SETFLOW_STEP_RETRY_FOR", Flag: "step-retry-for", Default: "6h",
			Usage: "worker: how long a reaction step retries transient failures (dependency down, 5xx, 429, timeouts) before it parks; permanent errors park at once", ptr: &r.StepRetryFor},

		{Env: "SETFLOW_SESSIONS_BACKEND", Flag: "sessions-backend", Default: "postgres", Usage: "worker: where sessions live: postgres, redis or http", ptr: &r.SessionsBackend},
		{Env: "SETFLOW_REDIS_URL", Flag: "redis-url", Default: "redis://127.0.0.1:6379/0", URL: true, Usage: "worker: Redis `URL` for the redis sessions back end", ptr: &r.RedisURL},
		{Env: "SETFLOW_REDIS_USER_INDEX", Flag: "redis-user-index", Default: layout.UserIndex,
			Usage: "worker: sorted set of a user's session ids (score: creation time, Unix ms)", ptr: &r.RedisUserIndex},
		{Env: "SETFLOW_REDIS_SESSION_KEY", Flag: "redis-session-key", Default: layout.SessionKey, Usage: "worker: key of one session", ptr: &r.RedisSessionKey},
		{Env: "SETFLOW_SESSIONS_CALLBACK_URL", Flag: "sessions-callback-url", URL: true,
			Usage: "worker: service endpoint (`URL`) that ends sessions (http back end; signed like the CRM webhook)", ptr: &r.SessionsCallbackURL},
		{Env: "SETFLOW_SESSIONS_CALLBACK_SECRET", Secret: true, Usage: "worker: signing secret of the http sessions back end", ptr: &r.SessionsCallbackSecret},

		{Env: "SETFLOW_CRM", Flag: "crm", Default: "none", Usage: "worker: CRM adapter: none, hubspot or webhook", ptr: &r.CRM},
		{Env: "SETFLOW_HUBSPOT_URL", Flag: "hubspot-url", Default: "https://api.hubapi.com", URL: true, Usage: "worker: HubSpot-style API base `URL`", ptr: &r.HubSpotURL},
		{Env: "SETFLOW_HUBSPOT_TOKEN", Secret: true, Usage: "worker: HubSpot private app token", ptr: &r.HubSpotToken},
		{Env: "SETFLOW_HUBSPOT_ID_PROPERTY", Flag: "hubspot-id-property", Default: "kakao_user_id", Usage: "worker: unique contact property holding the Kakao user id", ptr: &r.HubSpotIDProperty},
		{Env: "SETFLOW_CRM_WEBHOOK_URL", Flag: "crm-webhook-url", URL: true,
			Usage: "worker: `URL` the generic CRM adapter POSTs signed documents to (X-Setflow-Signature: v1=HMAC-SHA256(\"<ts>.<body>\"))", ptr: &r.CRMWebhookURL},
		{Env: "SETFLOW_CRM_WEBHOOK_SECRET", Secret: true, Usage: "worker: signing secret of the CRM webhook", ptr: &r.CRMWebhookSecret},
		{Env: "SETFLOW_CRM_RATE", Flag: "crm-rate", Default: strconv.Itoa(DefaultCRMRate), Usage: "worker: CRM calls per second across all workers", ptr: &r.CRMRate},

		{Env: "SETFLOW_GUARD_LIMIT", Flag: "guard-limit", Default: strconv.Itoa(DefaultGuardLimit),
			Usage: "worker: blast-radius guard, destructive steps per -guard-window across all users before new ones are held for an operator; 0 turns the guard off", ptr: &r.GuardLimit},
		{Env: "SETFLOW_GUARD_WINDOW", Flag: "guard-window", Default: "1m", Usage: "worker: the blast-radius guard's sliding window", ptr: &r.GuardWindow},

		{Env: "SETFLOW_SMTP_HOST", Flag: "smtp-host", Usage: "worker: SMTP server host; empty disables email", ptr: &r.SMTPHost},
		{Env: "SETFLOW_SMTP_PORT", Flag: "smtp-port", Default: "0", Usage: "worker: SMTP port (0: the TLS mode's default)", ptr: &r.SMTPPort},
		{Env: "SETFLOW_SMTP_USERNAME", Flag: "smtp-username", Usage: "worker: SMTP user", ptr: &r.SMTPUsername},
		{Env: "SETFLOW_SMTP_PASSWORD", Secret: true, Usage: "worker: SMTP password", ptr: &r.SMTPPassword},
		{Env: "SETFLOW_SMTP_TLS", Flag: "smtp-tls", Default: "starttls", Usage: "worker: none, starttls, starttls-opportunistic or tls", ptr: &r.SMTPTLS},
		{Env: "SETFLOW_MAIL_FROM", Flag: "mail-from", Usage: `worker: sender, e.g. "Example Security <security@example.com>"`, ptr: &r.MailFrom},
		{Env: "SETFLOW_SERVICE_NAME", Flag: "service-name", Usage: "worker: service name shown in emails", ptr: &r.ServiceName},
		{Env: "SETFLOW_NOTICE_PREVIOUS_WITHIN", Flag: "notice-previous-within", Default: "30d",
			Usage: "worker: a security notice also goes to every address the user had within this time before the event, so that an attacker who changed it is not the only one told (0: the current address only)", ptr: &r.NoticePreviousWithin},
	}
}

// Register adds the reaction flags.
func (r *Reactions) Register(fs *flag.FlagSet) { register(fs, r.settings()) }

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
		errs = append(errs, errors.New("SETFLOW_CRM_RATE (-crm-rate) must be positive"))
	}
	if r.SMTPHost != "" && r.MailFrom == "" {
		errs = append(errs, errors.New("SETFLOW_MAIL_FROM is required when SETFLOW_SMTP_HOST is set"))
	}
	if r.GuardLimit < 0 || r.GuardWindow < 0 {
		errs = append(errs, errors.New("SETFLOW_GUARD_LIMIT must not be negative and SETFLOW_GUARD_WINDOW must not be negative"))
	}
	if r.EventTimePast < 0 || r.EventTimeFuture < 0 || r.StepRetryFor < 0 {
		errs = append(errs, errors.New("SETFLOW_EVENT_TIME_PAST, SETFLOW_EVENT_TIME_FUTURE and SETFLOW_STEP_RETRY_FOR must not be negative"))
	}
	if r.SMTPPort < 0 || r.SMTPPort > 65535 {
		errs = append(errs, errors.New("SETFLOW_SMTP_PORT (-smtp-port) must be a port number"))
	}
	if r.NoticePreviousWithin < 0 {
		errs = append(errs, errors.New("SETFLOW_NOTICE_PREVIOUS_WITHIN must not be negative"))
	}
	if r.PurgeAfter < 0 {
		errs = append(errs, errors.New("SETFLOW_PURGE_AFTER must not be negative"))
	}
	return errors.Join(errs...)
}
