-- +goose Up
-- Inbox retention skips an entry whose user's pending purge still names it.
CREATE INDEX setflow_user_state_purge_event_idx ON setflow_user_state ((state->'purge'->>'event_key'))
    WHERE state ? 'purge';

-- +goose Down
DROP INDEX IF EXISTS setflow_user_state_purge_event_idx;
