-- +goose Up
-- The blast-radius guard (package guard). Admissions are one row per event
-- whose destructive steps ran, counted over a sliding window: inserts of
-- distinct keys and a range count, so no row or lock is shared by users.
CREATE TABLE setflow_guard_admissions (
    event_key   text PRIMARY KEY,
    steps       integer NOT NULL,
    admitted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX setflow_guard_admissions_at_idx ON setflow_guard_admissions (admitted_at);

-- Events whose destructive steps wait for an operator's decision.
CREATE TABLE setflow_holds (
    event_key    text PRIMARY KEY,
    subject_hash text NOT NULL,
    event_name   text NOT NULL,
    steps        text[] NOT NULL,
    workflow_id  text NOT NULL,
    reason       text NOT NULL,
    held_at      timestamptz NOT NULL DEFAULT now(),
    decision     text CHECK (decision IN ('approved', 'rejected')),
    decided_by   text,
    decided_at   timestamptz,
    note         text
);
CREATE INDEX setflow_holds_pending_idx ON setflow_holds (held_at) WHERE decision IS NULL;

-- +goose Down
DROP TABLE IF EXISTS setflow_holds;
DROP TABLE IF EXISTS setflow_guard_admissions;
