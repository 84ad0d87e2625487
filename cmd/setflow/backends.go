package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/identity"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/serviceusers"
	"github.com/setflow/setflow/sessions"
	"github.com/setflow/setflow/sideeffects"
	"github.com/setflow/setflow/talk"
	"github.com/setflow/setflow/userstate"
)

// devAuditKey keys subject hashes when SETFLOW_AUDIT_KEY is unset, which only
// `setflow dev` and -insecure-dev-keys allow. It is public, so hashes made with
// it can be reversed by enumeration.
const devAuditKey = config.DevAuditKey

// auditKey is the key of subject hashes (worker, relay) and of the unlink
// webhook's dedupe key (ingress): SETFLOW_AUDIT_KEY, or the public development
// key with a warning when it is unset (the commands refuse to start without it
// unless in dev or with -insecure-dev-keys; see config.KeyPolicy).
func auditKey(log *slog.Logger, configured string) []byte {
	if configured == "" {
		log.Warn(config.EnvAuditKey + " is not set: subject hashes and unlink dedupe keys use the public development key (development only)")
		return []byte(devAuditKey)
	}
	return []byte(configured)
}

// backendsConfig is everything newActivities needs from the command line.
type backendsConfig struct {
	sessions  config.Sessions
	reactions config.Reactions
	kakao     config.Kakao
	identity  config.Identity
	users     config.ServiceUsers
	hook      config.ServiceHook
}

// newActivities builds every reaction back end from configuration, failing at
// start-up with a clear message rather than at the first event.
func newActivities(ctx context.Context, log *slog.Logger, db *sqlx.DB, cfg backendsConfig) (*activities.Activities, error) {
	r := &cfg.reactions
	if err := r.Validate(); err != nil {
		return nil, err
	}
	pol := policy.Default()
	if r.PolicyFile != "" {
		var err error
		if pol, err = policy.Load(r.PolicyFile); err != nil {
			return nil, err
		}
		log.Info("reaction policy loaded", "file", r.PolicyFile, "types", len(pol.Types()))
	}
	revoker, err := newSessions(ctx, db, cfg)
	if err != nil {
		return nil, err
	}
	accounts, err := newIdentity(db, cfg.identity)
	if err != nil {
		return nil, err
	}
	if err := cfg.users.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.hook.Validate(); err != nil {
		return nil, err
	}
	key := auditKey(log, r.AuditKey)
	testUsers, err := config.TestUsersFromEnv()
	if err != nil {
		return nil, err
	}
	acts := &activities.Activities{
		Sessions: revoker,
		Audit:    audit.NewPostgres(db),
		Talk:     talk.NewPostgres(db),
		Guard:    guard.NewPostgres(db, guard.Limit{Max: r.GuardLimit, Window: r.GuardWindow}),
		Backends: activities.Backends{
			Parking:      inbox.NewPostgres(db),
			SideEffects:  sideeffects.NewPostgres(db),
			Profiles:     profile.NewStore(db),
			States:       userstate.NewStore(db),
			TimeBounds:   userstate.Bounds{Past: r.EventTimePast, Future: r.EventTimeFuture},
			StepRetryFor: r.StepRetryFor,
			Policy:       pol,
			Subjects:     audit.SubjectHasher{Key: key},
			PurgeAfter:   r.PurgeAfter,
			ServiceName:  r.ServiceName,
			TestUsers:    activities.NewTestUsers(key, testUsers),
			Accounts:     accounts,
		},
	}
	if cfg.users.Enabled() {
		w, err := serviceusers.NewWriter(db, cfg.users.Schema)
		if err != nil {
			return nil, err
		}
		acts.ServiceUsers = w
	}
	if cfg.hook.URL != "" {
		acts.ServiceHook = &crm.Webhook{URL: cfg.hook.URL, Secret: []byte(cfg.hook.Secret)}
	}
	switch r.CRM {
	case "hubspot":
		acts.CRM = &crm.HubSpot{BaseURL: r.HubSpotURL, Token: r.HubSpotToken, IDProperty: r.HubSpotIDProperty}
	case "webhook":
		acts.CRM = &crm.Webhook{URL: r.CRMWebhookURL, Secret: []byte(r.CRMWebhookSecret)}
	}
	if r.SMTPHost != "" {
		m, err := mailer.New(mailer.Config{Host: r.SMTPHost, Port: r.SMTPPort, Username: r.SMTPUsername,
			Password: r.SMTPPassword, TLS: r.SMTPTLS, From: r.MailFrom, ServiceName: r.ServiceName})
		if err != nil {
			return nil, err
		}
		acts.Mailer = m
	}
	if len(cfg.kakao.AdminKeys) > 0 {
		acts.Kakao = &kakaoapi.Client{BaseURL: cfg.kakao.APIURL, AdminKey: cfg.kakao.AdminKeys[0]}
	}
	log.Info("reaction back ends", "sessions", r.SessionsBackend, "crm", r.CRM, "email", acts.Mailer != nil, "kakao_api", acts.Kakao != nil,
		"guard_limit", r.GuardLimit, "guard_window", r.GuardWindow, "test_accounts", acts.TestUsers.Len())
	log.Info("reaction back ends", "sessions", r.SessionsBackend, "identity", cfg.identity.Mode, "user_table", cfg.users.Enabled(), "service_hook", acts.ServiceHook != nil, "crm", r.CRM, "email", acts.Mailer != nil, "kakao_api", acts.Kakao != nil)
	return acts, nil
}

func newSessions(ctx context.Context, db *sqlx.DB, cfg backendsConfig) (sessions.Revoker, error) {
	r := &cfg.reactions
	switch r.SessionsBackend {
	case "redis":
		opts, err := redis.ParseURL(r.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("SETFLOW_REDIS_URL: %w", err)
		}
		rdb := redis.NewClient(opts)
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis unreachable (check SETFLOW_REDIS_URL): %w", err)
		}
		return sessions.NewRedis(rdb, sessions.RedisLayout{UserIndex: r.RedisUserIndex, SessionKey: r.RedisSessionKey})
	case "http":
		return &sessions.HTTPCallback{URL: r.SessionsCallbackURL, Secret: []byte(r.SessionsCallbackSecret)}, nil
	case "postgres", "":
		return sessions.NewPostgres(db, cfg.sessions.Schema)
	}
	return nil, errors.New("unknown sessions back end")
}

// newIdentity builds the identity mapping (config.Identity).
func newIdentity(db *sqlx.DB, cfg config.Identity) (identity.Mapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Mode {
	case "table":
		return identity.NewTable(db, cfg.Table)
	case "http":
		return &identity.HTTPLookup{URL: cfg.URL, Token: cfg.Token}, nil
	}
	return identity.Identity{}, nil
}
