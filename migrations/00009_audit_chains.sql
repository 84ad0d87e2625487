-- +goose Up
-- Per-chain audit trail (issue 16). Each user's rows form their own hash chain
-- ("user:<subject hash>"); rows without a user go to one of 64 shard chains
-- ("shard:NN", by event key). A row is (chain, seq): seq counts from 1 within
-- its chain, and (chain, seq) is unique, so two appends racing for the same
-- chain cannot both take the next number — the loser reads the new head and
-- tries again. No lock, and no row, is shared by different chains.
--
-- The rows written before this migration keep their single global chain and
-- their hashes: they become the chain "legacy", numbered in id order. The
-- first checkpoint (written by `setflow migrate` right after this migration,
-- or by the relay's checkpoint loop) verifies that chain and seals its head.
ALTER TABLE setflow_audit ADD COLUMN chain text;
ALTER TABLE setflow_audit ADD COLUMN seq bigint;
ALTER TABLE setflow_audit DISABLE TRIGGER setflow_audit_append_only;
UPDATE setflow_audit a SET chain = 'legacy', seq = n.seq
FROM (SELECT id, row_number() OVER (ORDER BY id) AS seq FROM setflow_audit) n
WHERE n.id = a.id;
ALTER TABLE setflow_audit ENABLE TRIGGER setflow_audit_append_only;
ALTER TABLE setflow_audit ALTER COLUMN chain SET NOT NULL;
ALTER TABLE setflow_audit ALTER COLUMN seq SET NOT NULL;
ALTER TABLE setflow_audit ADD CONSTRAINT setflow_audit_chain_seq_key UNIQUE (chain, seq);
-- A user's rows are found by their chain now; only the legacy rows still need
-- a subject index, and one index fewer on every append counts.
DROP INDEX IF EXISTS setflow_audit_subject_idx;
CREATE INDEX setflow_audit_legacy_subject_idx ON setflow_audit (subject_hash) WHERE chain = 'legacy';

-- A checkpoint commits to the heads of all chains: root is the RFC 6962
-- Merkle root over the leaves (chain, seq, head hash) sorted by chain, and
-- hash chains the checkpoint to the one before it (prev_hash).
CREATE TABLE setflow_audit_checkpoints (
    id         bigint      PRIMARY KEY CHECK (id > 0),
    prev_hash  text        NOT NULL,
    root       text        NOT NULL,
    chains     bigint      NOT NULL,
    created_at timestamptz NOT NULL,
    hash       text        NOT NULL
);
-- The leaves a checkpoint changed: the chains whose head moved since the
-- checkpoint before it. The leaves of checkpoint N are, per chain, the row
-- with the greatest checkpoint_id <= N.
CREATE TABLE setflow_audit_checkpoint_leaves (
    checkpoint_id bigint NOT NULL REFERENCES setflow_audit_checkpoints (id),
    chain         text   NOT NULL,
    seq           bigint NOT NULL,
    hash          text   NOT NULL,
    PRIMARY KEY (chain, checkpoint_id)
);
CREATE TRIGGER setflow_audit_checkpoints_append_only BEFORE UPDATE ON setflow_audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION setflow_audit_no_update();
CREATE TRIGGER setflow_audit_checkpoint_leaves_append_only BEFORE UPDATE ON setflow_audit_checkpoint_leaves
    FOR EACH ROW EXECUTE FUNCTION setflow_audit_no_update();

-- +goose Down
DROP INDEX IF EXISTS setflow_audit_legacy_subject_idx;
CREATE INDEX IF NOT EXISTS setflow_audit_subject_idx ON setflow_audit (subject_hash, created_at);
DROP TABLE IF EXISTS setflow_audit_checkpoint_leaves;
DROP TABLE IF EXISTS setflow_audit_checkpoints;
ALTER TABLE setflow_audit DROP CONSTRAINT IF EXISTS setflow_audit_chain_seq_key;
ALTER TABLE setflow_audit DROP COLUMN IF EXISTS seq;
ALTER TABLE setflow_audit DROP COLUMN IF EXISTS chain;
