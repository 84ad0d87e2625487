package talk

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Postgres is the Store on the tables of migration 00002.
type Postgres struct{ db *sqlx.DB }

// NewPostgres returns a Store on db (migrations must have been applied).
func NewPostgres(db *sqlx.DB) *Postgres { return &Postgres{db: db} }

// RecordDelivery inserts the delivery once per event key.
func (p *Postgres) RecordDelivery(ctx context.Context, d Delivery) (bool, error) {
	if d.EventKey == "" {
		return false, errors.New("talk: delivery without event key")
	}
	args := []byte("{}")
	if len(d.Args) > 0 {
		var err error
		if args, err = json.Marshal(d.Args); err != nil {
			return false, fmt.Errorf("talk: encode args: %w", err)
		}
	}
	var tmpl sql.NullInt64
	if d.TemplateID != nil {
		tmpl = sql.NullInt64{Int64: *d.TemplateID, Valid: true}
	}
	res, err := p.db.ExecContext(ctx, `
		INSERT INTO setflow_talk_share_deliveries
			(event_key, resource_id, chat_type, hash_chat_id, template_id, args, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (event_key) DO NOTHING`,
		d.EventKey, d.ResourceID, d.ChatType, d.HashChatID, tmpl, args, d.ReceivedAt)
	if err != nil {
		return false, fmt.Errorf("talk: record delivery: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// RecordRelationship upserts the relationship; the conflict clause's WHERE
// makes the row lock decide, so concurrent events for one user and channel
// still end with the newest.
func (p *Postgres) RecordRelationship(ctx context.Context, r Relationship) (Relationship, bool, error) {
	if r.EventKey == "" || r.UserID == "" || (r.ChannelPublicID == "" && r.ChannelUUID == "") {
		return Relationship{}, false, errors.New("talk: relationship needs an event key, a user id and a channel id")
	}
	key := r.ChannelKey()
	_, err := p.db.ExecContext(ctx, `
		INSERT INTO setflow_talk_channel_relationships AS r
			(issuer, id_type, user_id, channel_key, channel_public_id, channel_uuid,
			 status, marketing_consent, updated_at, event_key)
		VALUES ($1, $2, $3, $4, NULLIF($5, ''), NULLIF($6, ''), $7, $8, $9, $10)
		ON CONFLICT (issuer, id_type, user_id, channel_key) DO UPDATE SET
			channel_public_id = COALESCE(EXCLUDED.channel_public_id, r.channel_public_id),
			channel_uuid      = COALESCE(EXCLUDED.channel_uuid, r.channel_uuid),
			status            = EXCLUDED.status,
			marketing_consent = COALESCE(EXCLUDED.marketing_consent, r.marketing_consent),
			updated_at        = EXCLUDED.updated_at,
			event_key         = EXCLUDED.event_key,
			recorded_at       = now()
		WHERE r.updated_at < EXCLUDED.updated_at`,
		r.Issuer, r.IDType, r.UserID, key, r.ChannelPublicID, r.ChannelUUID,
		r.Status, r.MarketingConsent, r.UpdatedAt, r.EventKey)
	if err != nil {
		return Relationship{}, false, fmt.Errorf("talk: record relationship: %w", err)
	}
	cur, err := p.Relationship(ctx, r.Issuer, r.IDType, r.UserID, key)
	if err != nil {
		return Relationship{}, false, err
	}
	return cur, cur.EventKey == r.EventKey, nil
}

// ErrNotFound is returned by Relationship when nothing is recorded.
var ErrNotFound = errors.New("talk: no such relationship")

// Relationship reads the stored relationship of one user with one channel
// (channelKey as returned by Relationship.ChannelKey).
func (p *Postgres) Relationship(ctx context.Context, issuer, idType, userID, channelKey string) (Relationship, error) {
	var row struct {
		Issuer    string         `db:"issuer"`
		IDType    string         `db:"id_type"`
		UserID    string         `db:"user_id"`
		PublicID  sql.NullString `db:"channel_public_id"`
		UUID      sql.NullString `db:"channel_uuid"`
		Status    string         `db:"status"`
		Consent   sql.NullBool   `db:"marketing_consent"`
		UpdatedAt sql.NullTime   `db:"updated_at"`
		EventKey  string         `db:"event_key"`
	}
	err := p.db.GetContext(ctx, &row, `
		SELECT issuer, id_type, user_id, channel_public_id, channel_uuid, status,
		       marketing_consent, updated_at, event_key
		FROM setflow_talk_channel_relationships
		WHERE issuer = $1 AND id_type = $2 AND user_id = $3 AND channel_key = $4`,
		issuer, idType, userID, channelKey)
	if errors.Is(err, sql.ErrNoRows) {
		return Relationship{}, ErrNotFound
	}
	if err != nil {
		return Relationship{}, fmt.Errorf("talk: read relationship: %w", err)
	}
	out := Relationship{
		Issuer: row.Issuer, IDType: row.IDType, UserID: row.UserID,
		ChannelPublicID: row.PublicID.String, ChannelUUID: row.UUID.String,
		Status: row.Status, UpdatedAt: row.UpdatedAt.Time.UTC(), EventKey: row.EventKey,
	}
	if row.Consent.Valid {
		v := row.Consent.Bool
		out.MarketingConsent = &v
	}
	return out, nil
}
