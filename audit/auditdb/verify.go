package auditdb

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
)

// Verify checks every chain and every checkpoint.
func (p *Store) Verify(ctx context.Context) (audit.VerifyResult, error) {
	return p.VerifyWith(ctx, audit.VerifyOptions{})
}

// walkChains checks the rows of one chain, or of all chains (chain ""), in
// (chain, seq) order, and returns the rows checked and each chain's head. A
// chain with a leaf in from starts after that leaf (older rows archived).
func (p *Store) walkChains(ctx context.Context, q sqlx.QueryerContext, chain string, from map[string]audit.Leaf, heads map[string]audit.Leaf) (int64, map[string]audit.Leaf, error) {
	if heads == nil {
		heads = map[string]audit.Leaf{}
	}
	var rows int64
	cur, want, prev := "", int64(0), ""
	afterChain, afterSeq := "", int64(0)
	for {
		qs := selectRecords + ` WHERE (chain, seq) > ($1, $2)`
		args := []any{afterChain, afterSeq}
		if chain != "" {
			qs += ` AND chain = $3`
			args = append(args, chain)
		}
		batch, err := queryRecords(ctx, q, qs+` ORDER BY chain, seq LIMIT 2000`, args...)
		if err != nil {
			return rows, heads, err
		}
		if len(batch) == 0 {
			return rows, heads, nil
		}
		for _, r := range batch {
			afterChain, afterSeq = r.Chain, r.Seq
			if r.Chain != cur {
				cur, want, prev = r.Chain, 1, ""
				if l, ok := from[r.Chain]; ok {
					want, prev = l.Seq+1, l.Hash
				}
			}
			if r.Seq < want && from != nil {
				continue // sealed by the From checkpoint; may have been archived
			}
			if err := audit.CheckRow(r, want, prev); err != nil {
				return rows, heads, err
			}
			prev, want = r.Hash, want+1
			heads[r.Chain] = audit.Leaf{Chain: r.Chain, Seq: r.Seq, Hash: r.Hash}
			rows++
		}
	}
}

// checkpoints verifies the checkpoint chain and returns it in id order.
func checkpoints(ctx context.Context, q sqlx.QueryerContext) ([]audit.Checkpoint, error) {
	var cps []audit.Checkpoint
	if err := sqlx.SelectContext(ctx, q, &cps, selectCheckpoints+` ORDER BY id`); err != nil {
		return nil, fmt.Errorf("audit: checkpoints: %w", err)
	}
	prev := ""
	for i, c := range cps {
		if c.ID != int64(i+1) {
			return nil, fmt.Errorf("%w: checkpoint %d is missing (checkpoints were deleted)", audit.ErrTampered, i+1)
		}
		if c.PrevHash != prev {
			return nil, fmt.Errorf("%w: checkpoint %d does not link to checkpoint %d", audit.ErrTampered, c.ID, c.ID-1)
		}
		if c.ComputeHash() != c.Hash {
			return nil, fmt.Errorf("%w: checkpoint %d does not match its hash (it was edited)", audit.ErrTampered, c.ID)
		}
		prev = c.Hash
	}
	return cps, nil
}

// checkRoot recomputes checkpoint c's root from its leaves.
func checkRoot(ctx context.Context, q sqlx.QueryerContext, c audit.Checkpoint) ([]audit.Leaf, error) {
	leaves, err := leavesAt(ctx, q, c.ID)
	if err != nil {
		return nil, err
	}
	if int64(len(leaves)) != c.Chains || audit.MerkleRoot(leaves) != c.Root {
		return nil, fmt.Errorf("%w: the chain heads recorded for checkpoint %d do not match its root (they were edited or deleted)", audit.ErrTampered, c.ID)
	}
	return leaves, nil
}

func checkExpected(cps []audit.Checkpoint, a *audit.Anchor) (*audit.Checkpoint, error) {
	if a == nil {
		return nil, nil
	}
	var c *audit.Checkpoint
	if a.ID >= 1 && a.ID <= int64(len(cps)) {
		c = &cps[a.ID-1]
	}
	if err := matchAnchor(c, *a); err != nil {
		return nil, err
	}
	return c, nil
}

// matchAnchor checks the checkpoint a published anchor names (nil: not in
// the store) against it.
func matchAnchor(c *audit.Checkpoint, a audit.Anchor) error {
	if c == nil {
		return fmt.Errorf("%w: published checkpoint %d is missing (checkpoints, and the rows they sealed, were cut off)", audit.ErrTampered, a.ID)
	}
	if c.Hash != a.Hash {
		return fmt.Errorf("%w: checkpoint %d differs from the published one (it and the checkpoints after it were rewritten)", audit.ErrTampered, a.ID)
	}
	return nil
}

// VerifyWith checks every row of every chain (hash, link, seq), the
// checkpoint chain and the latest checkpoint's root, then that every chain
// head any checkpoint sealed is still there: a deleted chain, or rows cut
// off the end of a chain, show there. With opts.Expect, the published
// checkpoint must still be in the chain of checkpoints.
func (p *Store) VerifyWith(ctx context.Context, opts audit.VerifyOptions) (audit.VerifyResult, error) {
	var res audit.VerifyResult
	cps, err := checkpoints(ctx, p.db)
	if err != nil {
		return res, err
	}
	expected, err := checkExpected(cps, opts.Expect)
	if err != nil {
		return res, err
	}
	var from map[string]audit.Leaf
	if opts.From != nil {
		fc, err := checkExpected(cps, opts.From)
		if err != nil {
			return res, fmt.Errorf("-from: %w", err)
		}
		leaves, err := checkRoot(ctx, p.db, *fc)
		if err != nil {
			return res, err
		}
		from = map[string]audit.Leaf{}
		for _, l := range leaves {
			from[l.Chain] = l
		}
	}
	rows, heads, err := p.walkChains(ctx, p.db, "", from, nil)
	res.Rows, res.Chains = rows, int64(len(heads))
	if err != nil {
		return res, err
	}
	var latestLeaves []audit.Leaf
	if len(cps) > 0 {
		latest := cps[len(cps)-1]
		res.Checkpoint = &latest
		if latestLeaves, err = checkRoot(ctx, p.db, latest); err != nil {
			return res, err
		}
	}
	if expected != nil && expected.ID != res.Checkpoint.ID {
		if _, err := checkRoot(ctx, p.db, *expected); err != nil {
			return res, err
		}
	}
	if err := p.checkSealedRows(ctx, "", from, heads); err != nil {
		return res, err
	}
	sealed := map[string]int64{}
	for _, l := range latestLeaves {
		sealed[l.Chain] = l.Seq
	}
	for _, h := range heads {
		res.Unsealed += h.Seq - sealed[h.Chain]
	}
	return res, nil
}

// checkSealedRows compares every leaf any checkpoint recorded (of one chain,
// or all) with the row at its place.
func (p *Store) checkSealedRows(ctx context.Context, chain string, from map[string]audit.Leaf, heads map[string]audit.Leaf) error {
	var bad []struct {
		Checkpoint int64   `db:"checkpoint_id"`
		Chain      string  `db:"chain"`
		Seq        int64   `db:"seq"`
		Hash       string  `db:"hash"`
		RowHash    *string `db:"row_hash"`
	}
	err := p.db.SelectContext(ctx, &bad, `
		SELECT l.checkpoint_id, l.chain, l.seq, l.hash, a.hash AS row_hash
		FROM setflow_audit_checkpoint_leaves l LEFT JOIN setflow_audit a ON a.chain = l.chain AND a.seq = l.seq
		WHERE a.hash IS DISTINCT FROM l.hash AND ($1 = '' OR l.chain = $1)
		ORDER BY l.checkpoint_id, l.chain`, chain)
	if err != nil {
		return fmt.Errorf("audit: sealed rows: %w", err)
	}
	for _, b := range bad {
		if f, ok := from[b.Chain]; ok && b.Seq <= f.Seq && b.RowHash == nil {
			continue // archived
		}
		h, ok := heads[b.Chain]
		switch {
		case b.RowHash != nil:
			return fmt.Errorf("%w: chain %s row %d differs from the head checkpoint %d sealed (the row was rewritten)", audit.ErrTampered, b.Chain, b.Seq, b.Checkpoint)
		case !ok:
			return fmt.Errorf("%w: chain %s, sealed by checkpoint %d, has no rows (the chain was deleted)", audit.ErrTampered, b.Chain, b.Checkpoint)
		default:
			return fmt.Errorf("%w: chain %s ends at row %d but checkpoint %d sealed row %d: rows are missing (they were cut off the end of the chain)", audit.ErrTampered, b.Chain, h.Seq, b.Checkpoint, b.Seq)
		}
	}
	return nil
}

// VerifyChain checks one chain (e.g. UserChain(subject hash)) and its place
// in a checkpoint: its rows, the leaf the checkpoint (opts.Expect, or the
// latest) holds for it, and the Merkle proof of that leaf in the
// checkpoint's root. It reads no other chain's rows and needs no personal
// data: rows name users by their keyed hash. opts.From is not supported.
func (p *Store) VerifyChain(ctx context.Context, chain string, opts audit.VerifyOptions) (audit.ChainResult, error) {
	res := audit.ChainResult{Chain: chain}
	rows, heads, err := p.walkChains(ctx, p.db, chain, nil, nil)
	res.Rows = rows
	if err != nil {
		return res, err
	}
	if h, ok := heads[chain]; ok {
		res.Head = &h
	}
	var cp *audit.Checkpoint
	if opts.Expect != nil {
		if cp, err = checkpointByID(ctx, p.db, opts.Expect.ID); err != nil {
			return res, err
		}
		if err := matchAnchor(cp, *opts.Expect); err != nil {
			return res, err
		}
	} else if cp, err = p.LatestCheckpoint(ctx); err != nil {
		return res, err
	}
	if cp == nil {
		return res, p.checkSealedRows(ctx, chain, nil, heads)
	}
	if cp.ComputeHash() != cp.Hash {
		return res, fmt.Errorf("%w: checkpoint %d does not match its hash (it was edited)", audit.ErrTampered, cp.ID)
	}
	res.Checkpoint = cp
	leaf, proof, err := p.ProveChain(ctx, chain, cp.ID)
	if err != nil {
		return res, err
	}
	if leaf != nil {
		if !audit.VerifyProof(*leaf, *proof, cp.Root) {
			return res, fmt.Errorf("%w: chain %s's head is not in checkpoint %d's root (the recorded heads were edited)", audit.ErrTampered, chain, cp.ID)
		}
		res.Sealed, res.Proof = leaf, proof
	}
	return res, p.checkSealedRows(ctx, chain, nil, heads)
}

// ProveChain returns the leaf checkpoint id holds for chain and its
// inclusion proof, or nil, nil if the checkpoint holds none.
func (p *Store) ProveChain(ctx context.Context, chain string, id int64) (*audit.Leaf, *audit.Proof, error) {
	leaves, err := leavesAt(ctx, p.db, id)
	if err != nil {
		return nil, nil, err
	}
	for i, l := range leaves {
		if l.Chain == chain {
			proof := audit.Prove(leaves, i)
			return &l, &proof, nil
		}
	}
	return nil, nil, nil
}
