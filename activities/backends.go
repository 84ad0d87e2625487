package activities

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/identity"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/serviceusers"
	"github.com/setflow/setflow/sideeffects"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// CRM is the contact sync a service configured (crm.HubSpot or crm.Webhook);
// nil skips the CRM steps.
type CRM interface {
	Upsert(ctx context.Context, idempotencyKey string, c crm.Contact) error
	Delete(ctx context.Context, idempotencyKey, externalID string) error
	SetMarketing(ctx context.Context, idempotencyKey, externalID string, subscribed bool) error
	DeleteFields(ctx context.Context, idempotencyKey, externalID string, fields []string) error
}

// Mailer sends security notices; nil skips send_notice.
type Mailer interface {
	Send(ctx context.Context, n mailer.Notice) (messageID string, err error)
}

// KakaoAPI is Kakao's REST API; nil skips the steps that need it.
type KakaoAPI interface {
	Logout(ctx context.Context, userID string) error
	Profile(ctx context.Context, userID string) (*kakaoapi.Profile, error)
}

// ServiceUserWriter writes a user's flags into one of the service's account
// rows (serviceusers.Writer), through q (a transaction of setflow's
// database) or, when q is nil, on its own.
type ServiceUserWriter interface {
	Write(ctx context.Context, q sqlx.ExecerContext, accountID string, f serviceusers.Flags) (int64, error)
}

// ProfileReader reads a user's profile row (profile.Store).
type ProfileReader interface {
	Get(ctx context.Context, k profile.Key) (profile.Profile, error)
}

// Backends are the reaction steps' dependencies beyond sessions and audit.
type Backends struct {
	// Parking marks events parked in the inbox (inbox.Postgres).
	Parking inbox.Parking
	// SideEffects is the claim log of the side effects that cannot be
	// idempotent at the far end: notices (sideeffects.Postgres).
	SideEffects sideeffects.Log
	Profiles    ProfileReader
	// States is the per-user state (userstate); TimeBounds clamp event times.
	States     statedb.States
	TimeBounds userstate.Bounds
	Policy     *policy.Policy
	Subjects   audit.SubjectHasher
	CRM        CRM
	Mailer     Mailer
	Kakao      KakaoAPI
	// Accounts maps a Kakao user to the service's account ids, for every
	// step that touches the service's data; nil is identity.Identity.
	Accounts identity.Mapper
	// ServiceUsers writes lock, re-auth and unlink into the service's own
	// user table after each applied event; nil writes nothing.
	ServiceUsers ServiceUserWriter
	// ServiceHook is the service's endpoint for notify_service; nil skips
	// the step.
	ServiceHook ServiceNotifier
	// StepRetryFor is how long reaction steps retry transient failures
	// before they park (0: the workflows' default, six hours).
	StepRetryFor time.Duration
	// PurgeAfter is the retention before an unlinked user's data is purged,
	// when the policy's schedule_purge step does not say.
	PurgeAfter time.Duration
	// ServiceName appears in emails.
	ServiceName string
	// NoticePreviousWithin: a security notice also goes to the addresses the
	// user had within this time before the event (0: the current one only).
	NoticePreviousWithin time.Duration
	// TestUsers run every reaction step in shadow (activities/test_users.go).
	TestUsers *TestUsers
}
