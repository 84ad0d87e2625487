-- +goose Up
-- The inbox is the durable hand-off between the ingress and Temporal: an event is
-- acknowledged to Kakao only once its row is committed here. dedupe_key is the one
-- stable key of an event (jti for SETs, X-Kakao-Resource-ID, or a derived key).
CREATE TABLE setflow_inbox (
    id              bigserial PRIMARY KEY,
    dedupe_key      text        NOT NULL,
    source          text        NOT NULL,
    raw             bytea       NOT NULL,
    envelope        jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'dispatched', 'parked')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    workflow_id     text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    dispatched_at   timestamptz,
    CONSTRAINT setflow_inbox_dedupe_key_key UNIQUE (dedupe_key)
);
-- The relay only ever scans pending rows that are due.
CREATE INDEX setflow_inbox_due_idx ON setflow_inbox (next_attempt_at, id) WHERE status = 'pending';

-- Audit trail: one row per event and step outcome. (event_key, step) is unique so that
-- a retried activity never writes a second row.
CREATE TABLE setflow_audit (
    id           bigserial PRIMARY KEY,
    event_key    text        NOT NULL,
    event_type   text        NOT NULL,
    subject_hash text        NOT NULL,
    step         text        NOT NULL,
    outcome      text        NOT NULL,
    detail       jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT setflow_audit_event_step_key UNIQUE (event_key, step)
);
CREATE INDEX setflow_audit_subject_idx ON setflow_audit (subject_hash, created_at);

-- The service's session table that reactions revoke. A service that already has
-- one points setflow at it through SETFLOW_SESSIONS_* instead; this default table
-- only exists so that setflow runs out of the box.
CREATE TABLE IF NOT EXISTS sessions (
    id         text        PRIMARY KEY,
    user_id    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS sessions_user_id_idx ON sessions (user_id) WHERE revoked_at IS NULL;

-- +goose Down
DROP TABLE IF EXISTS setflow_audit;
DROP TABLE IF EXISTS setflow_inbox;
