package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/guard/guarddb"
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
	"github.com/setflow/setflow/userstate/statedb"
)

// NewActivities builds the worker's activities and every back end they call
// from the configuration: the one place that does, used by `setflow worker`,
// `setflow dev`, the benches and the integration tests (which replace single
// back ends on the result, e.g. a stand-in CRM). A wrong setting fails here,
// at start-up, with its name, rather than at the first event. close releases
// what NewActivities opened (a Redis client); the caller closes db.
func NewActivities(ctx context.Context, cfg config.Worker, db *sqlx.DB, log *slog.Logger) (acts *activities.Activities, close func(), err error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	r := &cfg.Reactions
	pol, err := loadPolicy(log, r.PolicyFile)
	if err != nil {
		return nil, nil, err
	}
	revoker, closeSessions, err := NewSessions(ctx, db, cfg)
	if err != nil {
		return nil, nil, err
	}
	accounts, err := NewIdentity(db, cfg.Identity)
	if err != nil {
		closeSessions()
		return nil, nil, err
	}
	key := cfg.AuditKey.Bytes(log)
	acts = &activities.Activities{
		Sessions: revoker,
		Audit:    auditdb.NewStore(db),
		Talk:     talk.NewPostgres(db),
		Guard:    guarddb.NewStore(db, guard.Limit{Max: r.GuardLimit, Window: r.GuardWindow}),
		Backends: activities.Backends{
			Parking:              inbox.NewPostgres(db),
			SideEffects:          sideeffects.NewPostgres(db),
			Profiles:             profile.NewStore(db),
			States:               statedb.NewStore(db),
			TimeBounds:           userstate.Bounds{Past: r.EventTimePast, Future: r.EventTimeFuture},
			StepRetryFor:         r.StepRetryFor,
			Policy:               pol,
			Subjects:             audit.SubjectHasher{Key: key},
			PurgeAfter:           r.PurgeAfter,
			ServiceName:          r.ServiceName,
			NoticePreviousWithin: r.NoticePreviousWithin,
			TestUsers:            activities.NewTestUsers(key, cfg.TestUsers.IDs),
			Accounts:             accounts,
		},
	}
	if err := addAdapters(acts, cfg, db); err != nil {
		closeSessions()
		return nil, nil, err
	}
	log.Info("reaction back ends", "sessions", r.SessionsBackend, "identity", cfg.Identity.Mode, "user_table", cfg.ServiceUsers.Enabled(),
		"service_hook", acts.ServiceHook != nil, "crm", r.CRM, "email", acts.Mailer != nil, "kakao_api", acts.Kakao != nil,
		"guard_limit", r.GuardLimit, "guard_window", r.GuardWindow, "test_accounts", acts.TestUsers.Len())
	return acts, closeSessions, nil
}

func loadPolicy(log *slog.Logger, file string) (*policy.Policy, error) {
	if file == "" {
		return policy.Default(), nil
	}
	pol, err := policy.Load(file)
	if err != nil {
		return nil, err
	}
	log.Info("reaction policy loaded", "file", file, "types", len(pol.Types()))
	return pol, nil
}

// addAdapters adds the optional back ends the configuration names: the
// service's user table and webhook, the CRM, email and Kakao's API.
func addAdapters(acts *activities.Activities, cfg config.Worker, db *sqlx.DB) error {
	r := &cfg.Reactions
	if cfg.ServiceUsers.Enabled() {
		w, err := serviceusers.NewWriter(db, cfg.ServiceUsers.Schema)
		if err != nil {
			return err
		}
		acts.ServiceUsers = w
	}
	if cfg.ServiceHook.URL != "" {
		acts.ServiceHook = &crm.Webhook{URL: cfg.ServiceHook.URL, Secret: []byte(cfg.ServiceHook.Secret)}
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
			return err
		}
		acts.Mailer = m
	}
	if len(cfg.Kakao.AdminKeys) > 0 {
		acts.Kakao = &kakaoapi.Client{BaseURL: cfg.Kakao.APIURL, AdminKey: cfg.Kakao.AdminKeys[0]}
	}
	return nil
}

// NewSessions builds the configured sessions back end; close releases its
// connection (a no-op but for Redis).
func NewSessions(ctx context.Context, db *sqlx.DB, cfg config.Worker) (sessions.Revoker, func(), error) {
	r := &cfg.Reactions
	switch r.SessionsBackend {
	case "redis":
		opts, err := redis.ParseURL(r.RedisURL)
		if err != nil {
			return nil, nil, fmt.Errorf("SETFLOW_REDIS_URL: %w", err)
		}
		rdb := redis.NewClient(opts)
		if err := rdb.Ping(ctx).Err(); err != nil {
			rdb.Close()
			return nil, nil, fmt.Errorf("redis unreachable (check SETFLOW_REDIS_URL): %w", err)
		}
		rev, err := sessions.NewRedis(rdb, sessions.RedisLayout{UserIndex: r.RedisUserIndex, SessionKey: r.RedisSessionKey})
		if err != nil {
			rdb.Close()
			return nil, nil, err
		}
		return rev, func() { _ = rdb.Close() }, nil
	case "http":
		return &sessions.HTTPCallback{URL: r.SessionsCallbackURL, Secret: []byte(r.SessionsCallbackSecret)}, func() {}, nil
	case "postgres", "":
		rev, err := sessions.NewPostgres(db, cfg.Sessions.Schema)
		return rev, func() {}, err
	}
	return nil, nil, errors.New("SETFLOW_SESSIONS_BACKEND must be postgres, redis or http")
}

// NewIdentity builds the identity mapping (config.Identity); the status API
// maps with it too.
func NewIdentity(db *sqlx.DB, cfg config.Identity) (identity.Mapper, error) {
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
