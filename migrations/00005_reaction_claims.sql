-- +goose Up
-- One reaction per user for events that several webhooks report (the unlink
-- webhook and the OAUTH user-unlinked SET): the first event claims it.
CREATE TABLE setflow_reaction_claims (
    kind         text        NOT NULL,
    subject_hash text        NOT NULL,
    event_key    text        NOT NULL,
    event_time   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, subject_hash, event_key)
);

-- +goose Down
DROP TABLE IF EXISTS setflow_reaction_claims;
