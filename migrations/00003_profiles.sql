-- +goose Up
-- The service's view of a Kakao user that reactions maintain. Every state change
-- carries the event time that caused it, so that an older event delivered late
-- can never undo a newer one (e.g. account-enabled sent before account-disabled).
CREATE TABLE user_profiles (
    issuer              text        NOT NULL,
    user_id             text        NOT NULL,
    email               text,
    nickname            text,
    phone_number        text,
    locale              text,
    consents            text[]      NOT NULL DEFAULT '{}',
    linked              boolean,
    link_changed_at     timestamptz,
    locked              boolean     NOT NULL DEFAULT false,
    lock_changed_at     timestamptz,
    reauth_required_at  timestamptz,
    profile_changed_at  timestamptz,
    consents_changed_at timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, user_id)
);

-- Write-once log of side effects that cannot be made idempotent at the far end
-- (email): a step claims its key before acting, so a retry never acts twice.
CREATE TABLE setflow_side_effects (
    idempotency_key text        PRIMARY KEY,
    kind            text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('started', 'done')),
    detail          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);

-- +goose Down
DROP TABLE IF EXISTS setflow_side_effects;
DROP TABLE IF EXISTS user_profiles;
