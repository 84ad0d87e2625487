-- +goose Up
-- Security notices are delivered at least once: a claim records each attempt.
-- 'uncertain' is an attempt that ended without knowing whether the SMTP server
-- took the message (the connection broke after DATA): the next attempt sends
-- it again, with the same Message-ID. A 'started' claim whose attempt vanished
-- (the worker died) is taken over once that attempt's deadline has passed.
ALTER TABLE setflow_side_effects DROP CONSTRAINT IF EXISTS setflow_side_effects_status_check;
ALTER TABLE setflow_side_effects ADD CONSTRAINT setflow_side_effects_status_check
    CHECK (status IN ('started', 'uncertain', 'done'));
ALTER TABLE setflow_side_effects ADD COLUMN attempts integer NOT NULL DEFAULT 1;

-- +goose Down
ALTER TABLE setflow_side_effects DROP COLUMN IF EXISTS attempts;
UPDATE setflow_side_effects SET status = 'started' WHERE status = 'uncertain';
ALTER TABLE setflow_side_effects DROP CONSTRAINT IF EXISTS setflow_side_effects_status_check;
ALTER TABLE setflow_side_effects ADD CONSTRAINT setflow_side_effects_status_check
    CHECK (status IN ('started', 'done'));
