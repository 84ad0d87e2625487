package auditdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/setflow/setflow/audit"
)

// checkpointLock serialises checkpoint writers (the relays' loops and `setflow
// audit checkpoint`) with each other; appends never take it.
const checkpointLock = 0x5e7f1b

const selectCheckpoints = `SELECT id, prev_hash, root, chains, created_at, hash FROM setflow_audit_checkpoints`

// LatestCheckpoint returns the newest checkpoint, or nil if there is none.
func (p *Store) LatestCheckpoint(ctx context.Context) (*audit.Checkpoint, error) {
	return latestCheckpoint(ctx, p.db)
}

func latestCheckpoint(ctx context.Context, q sqlx.QueryerContext) (*audit.Checkpoint, error) {
	var c audit.Checkpoint
	err := sqlx.GetContext(ctx, q, &c, selectCheckpoints+` ORDER BY id DESC LIMIT 1`)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: latest checkpoint: %w", err)
	}
	return &c, nil
}

func checkpointByID(ctx context.Context, q sqlx.QueryerContext, id int64) (*audit.Checkpoint, error) {
	var c audit.Checkpoint
	err := sqlx.GetContext(ctx, q, &c, selectCheckpoints+` WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint %d: %w", id, err)
	}
	return &c, nil
}

// leavesAt returns the leaves of checkpoint id, sorted by chain (byte order,
// whatever the database's collation).
func leavesAt(ctx context.Context, q sqlx.QueryerContext, id int64) ([]audit.Leaf, error) {
	var leaves []audit.Leaf
	err := sqlx.SelectContext(ctx, q, &leaves, `
		SELECT DISTINCT ON (chain) chain, seq, hash FROM setflow_audit_checkpoint_leaves
		WHERE checkpoint_id <= $1 ORDER BY chain, checkpoint_id DESC`, id)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint leaves: %w", err)
	}
	audit.SortLeaves(leaves)
	return leaves, nil
}

// currentHeads reads the newest row of every chain, one index probe per chain
// (a loose index scan over the (chain, seq) key), not a scan of all rows.
func currentHeads(ctx context.Context, q sqlx.QueryerContext) ([]audit.Leaf, error) {
	var heads []audit.Leaf
	err := sqlx.SelectContext(ctx, q, &heads, `
		WITH RECURSIVE chains AS (
			(SELECT chain FROM setflow_audit ORDER BY chain LIMIT 1)
			UNION ALL
			SELECT (SELECT a.chain FROM setflow_audit a WHERE a.chain > c.chain ORDER BY a.chain LIMIT 1)
			FROM chains c WHERE c.chain IS NOT NULL
		)
		SELECT h.chain, h.seq, h.hash FROM chains c
		CROSS JOIN LATERAL (SELECT a.chain, a.seq, a.hash FROM setflow_audit a WHERE a.chain = c.chain ORDER BY a.seq DESC LIMIT 1) h
		WHERE c.chain IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("audit: chain heads: %w", err)
	}
	audit.SortLeaves(heads)
	return heads, nil
}

// Checkpoint seals the current heads of all chains in a new checkpoint and
// returns it (written=true), or returns the latest one when no chain moved
// since. The first checkpoint first verifies the chain written before
// per-chain audit (LegacyChain) and seals its head with the rest.
//
// It refuses (ErrTampered) when a chain it sealed before is gone, shorter,
// or has another row where it sealed one: sealing that would hide it.
// Checking every row is Verify's job; this costs one index probe per chain.
func (p *Store) Checkpoint(ctx context.Context) (cp audit.Checkpoint, written bool, err error) {
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return cp, false, fmt.Errorf("audit: checkpoint: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, checkpointLock); err != nil {
		return cp, false, fmt.Errorf("audit: checkpoint lock: %w", err)
	}
	latest, err := latestCheckpoint(ctx, tx)
	if err != nil {
		return cp, false, err
	}
	var sealed []audit.Leaf
	if latest == nil {
		if _, _, err := p.walkChains(ctx, tx, audit.LegacyChain, nil, nil); err != nil {
			return cp, false, fmt.Errorf("audit: the audit chain written before per-user chains does not verify, so it cannot be sealed: %w", err)
		}
	} else if sealed, err = leavesAt(ctx, tx, latest.ID); err != nil {
		return cp, false, err
	}
	heads, err := currentHeads(ctx, tx)
	if err != nil {
		return cp, false, err
	}
	now := make(map[string]audit.Leaf, len(heads))
	for _, h := range heads {
		now[h.Chain] = h
	}
	merged := make(map[string]audit.Leaf, len(heads))
	for _, l := range sealed {
		h, ok := now[l.Chain]
		switch {
		case !ok:
			return cp, false, fmt.Errorf("%w: chain %s, sealed by checkpoint %d, has no rows (the chain was deleted); run setflow audit verify", audit.ErrTampered, l.Chain, latest.ID)
		case h.Seq < l.Seq:
			return cp, false, fmt.Errorf("%w: chain %s ends at row %d but checkpoint %d sealed row %d (rows were cut off); run setflow audit verify", audit.ErrTampered, l.Chain, h.Seq, latest.ID, l.Seq)
		case h.Seq == l.Seq && h.Hash != l.Hash:
			return cp, false, fmt.Errorf("%w: chain %s row %d differs from checkpoint %d; run setflow audit verify", audit.ErrTampered, l.Chain, l.Seq, latest.ID)
		}
		merged[l.Chain] = l
	}
	var changed []audit.Leaf
	for _, h := range heads {
		if l, ok := merged[h.Chain]; !ok || h.Seq > l.Seq {
			changed = append(changed, h)
			merged[h.Chain] = h
		}
	}
	if latest != nil && len(changed) == 0 {
		return *latest, false, nil
	}
	leaves := make([]audit.Leaf, 0, len(merged))
	for _, l := range merged {
		leaves = append(leaves, l)
	}
	audit.SortLeaves(leaves)
	cp = audit.Checkpoint{ID: 1, Root: audit.MerkleRoot(leaves), Chains: int64(len(leaves)), CreatedAt: p.now().UTC().Truncate(time.Microsecond)}
	if latest != nil {
		cp.ID, cp.PrevHash = latest.ID+1, latest.Hash
	}
	cp.Hash = cp.ComputeHash()
	if _, err := tx.ExecContext(ctx, `INSERT INTO setflow_audit_checkpoints (id, prev_hash, root, chains, created_at, hash) VALUES ($1, $2, $3, $4, $5, $6)`,
		cp.ID, cp.PrevHash, cp.Root, cp.Chains, cp.CreatedAt, cp.Hash); err != nil {
		return cp, false, fmt.Errorf("audit: checkpoint: %w", err)
	}
	chains, seqs, hashes := make([]string, len(changed)), make([]int64, len(changed)), make([]string, len(changed))
	for i, l := range changed {
		chains[i], seqs[i], hashes[i] = l.Chain, l.Seq, l.Hash
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO setflow_audit_checkpoint_leaves (checkpoint_id, chain, seq, hash)
		SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[])`, cp.ID, pq.Array(chains), pq.Array(seqs), pq.Array(hashes)); err != nil {
		return cp, false, fmt.Errorf("audit: checkpoint leaves: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return cp, false, fmt.Errorf("audit: checkpoint: %w", err)
	}
	return cp, true, nil
}

// Seal writes the first checkpoint if there is none: run right after the
// migrations (`setflow migrate`), it verifies the rows written before
// per-chain audit and seals them, so that they are protected from then on.
func (p *Store) Seal(ctx context.Context) (cp audit.Checkpoint, written bool, err error) {
	latest, err := p.LatestCheckpoint(ctx)
	if err != nil || latest != nil {
		if latest != nil {
			cp = *latest
		}
		return cp, false, err
	}
	return p.Checkpoint(ctx)
}

// RunCheckpoints writes a checkpoint at once and then every interval until
// ctx ends, and logs
// each new one as "ID:HASH": ship these log lines somewhere setflow cannot
// rewrite (a log archive, a ticket) — that is the publication
// `setflow audit verify -expect` checks against. Several processes may run it:
// checkpoint writers take turns, and one that finds nothing new writes nothing.
func (p *Store) RunCheckpoints(ctx context.Context, log *slog.Logger, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		cp, written, err := p.Checkpoint(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("audit checkpoint failed", "error", err)
		case written:
			log.Info("audit checkpoint", "checkpoint", cp.Anchor().String(), "chains", cp.Chains, "root", cp.Root)
		}
	}
}
