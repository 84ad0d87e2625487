-- +goose Up
-- Each audit row carries the hash of the previous row and its own hash over its
-- content, so that editing or deleting a row breaks the chain and
-- `setflow audit verify` finds it.
ALTER TABLE setflow_audit ADD COLUMN prev_hash text NOT NULL DEFAULT '';
ALTER TABLE setflow_audit ADD COLUMN hash text NOT NULL DEFAULT '';
-- Rows are append-only for setflow's own role: a database trigger refuses
-- updates; deletes are left to retention jobs run by an administrator.
-- +goose StatementBegin
CREATE FUNCTION setflow_audit_no_update() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'setflow_audit is append-only';
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER setflow_audit_append_only BEFORE UPDATE ON setflow_audit
    FOR EACH ROW EXECUTE FUNCTION setflow_audit_no_update();

-- +goose Down
DROP TRIGGER IF EXISTS setflow_audit_append_only ON setflow_audit;
DROP FUNCTION IF EXISTS setflow_audit_no_update();
ALTER TABLE setflow_audit DROP COLUMN IF EXISTS hash;
ALTER TABLE setflow_audit DROP COLUMN IF EXISTS prev_hash;
