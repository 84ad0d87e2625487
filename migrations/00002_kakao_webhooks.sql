-- +goose Up
-- Kakao Talk Share deliveries: one row per delivery (X-Kakao-Resource-ID), with the
-- chat it reached, the message template and the app's own serverCallbackArgs.
CREATE TABLE setflow_talk_share_deliveries (
    id           bigserial PRIMARY KEY,
    event_key    text        NOT NULL,
    resource_id  text        NOT NULL,
    chat_type    text        NOT NULL,
    hash_chat_id text        NOT NULL,
    template_id  bigint,
    args         jsonb       NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT setflow_talk_share_deliveries_event_key_key UNIQUE (event_key)
);
CREATE INDEX setflow_talk_share_deliveries_chat_idx ON setflow_talk_share_deliveries (hash_chat_id, received_at);

-- The relationship of one user with one Kakao Talk Channel, as of updated_at (Kakao's
-- time of the change). An older event never overwrites a newer one. marketing_consent
-- is what the CRM is told: true after "added", false after "blocked", NULL while
-- only statuses of unknown meaning have been seen.
CREATE TABLE setflow_talk_channel_relationships (
    issuer            text        NOT NULL,
    id_type           text        NOT NULL,
    user_id           text        NOT NULL,
    channel_key       text        NOT NULL,
    channel_public_id text,
    channel_uuid      text,
    status            text        NOT NULL,
    marketing_consent boolean,
    updated_at        timestamptz NOT NULL,
    event_key         text        NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, id_type, user_id, channel_key)
);

-- +goose Down
DROP TABLE IF EXISTS setflow_talk_channel_relationships;
DROP TABLE IF EXISTS setflow_talk_share_deliveries;
