-- +goose Up
-- One row per user (subject hash): the per-user state machine's state
-- (userstate.State), applied one event at a time under this row's lock. Work
-- for different users never waits on the same row. The state is a tombstone
-- after a purge: the field values are blank, every time guard stays.
CREATE TABLE setflow_user_state (
    subject_hash text        PRIMARY KEY,
    issuer       text        NOT NULL,
    user_id      text        NOT NULL,
    version      bigint      NOT NULL DEFAULT 0,
    state        jsonb       NOT NULL DEFAULT '{}',
    -- The state version the CRM was last synced to.
    crm_version  bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- What each event (or purge run) did to its user's state, written in the same
-- transaction as the state: a repeated apply returns the stored decision
-- instead of applying twice.
CREATE TABLE setflow_user_events (
    subject_hash text        NOT NULL,
    event_key    text        NOT NULL,
    decision     jsonb       NOT NULL,
    version      bigint      NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_hash, event_key)
);

-- The per-user stream replaces the cross-source once-claim.
DROP TABLE IF EXISTS setflow_reaction_claims;

-- +goose Down
CREATE TABLE IF NOT EXISTS setflow_reaction_claims (
    kind         text        NOT NULL,
    subject_hash text        NOT NULL,
    event_key    text        NOT NULL,
    event_time   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, subject_hash, event_key)
);
DROP TABLE IF EXISTS setflow_user_events;
DROP TABLE IF EXISTS setflow_user_state;
