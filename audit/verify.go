package audit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrTampered reports a broken chain or checkpoint.
var ErrTampered = errors.New("audit chain broken")

// Anchor is a published checkpoint, ID:HASH.
type Anchor struct {
	ID   int64
	Hash string
}

func (a Anchor) String() string { return strconv.FormatInt(a.ID, 10) + ":" + a.Hash }

// ParseAnchor reads "ID:HASH" as printed by `setflow audit verify` and
// `setflow audit checkpoint`; empty means none.
func ParseAnchor(s string) (*Anchor, error) {
	if s == "" {
		return nil, nil
	}
	id, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(id, 10, 64)
	if !ok || err != nil || n <= 0 || len(hash) != 64 {
		return nil, fmt.Errorf("checkpoint %q must be ID:HASH as printed by setflow audit verify or setflow audit checkpoint", s)
	}
	return &Anchor{ID: n, Hash: hash}, nil
}

// VerifyResult summarises a check of all chains.
type VerifyResult struct {
	Rows   int64 // rows verified
	Chains int64 // chains with rows
	// Unsealed counts the rows written after the latest checkpoint: only
	// their chain protects them until the next checkpoint.
	Unsealed int64
	// Checkpoint is the latest checkpoint (nil if none yet): publish its
	// anchor, and check later with VerifyOptions.Expect.
	Checkpoint *Checkpoint
}

// VerifyOptions narrow a check.
type VerifyOptions struct {
	// From is a checkpoint whose sealed rows may have been archived (deleted):
	// each chain it sealed is checked from the row after its sealed head,
	// which the next row must link to.
	From *Anchor
	// Expect is a checkpoint published earlier: it must still be there with
	// this hash, the checkpoints after it must chain to it, and every row it
	// sealed must still be there. Without it, someone able to write the
	// database could cut rows off the end of chains and rewrite the
	// checkpoints after them.
	Expect *Anchor
}

// CheckRow checks one row against the chain read so far (prev: the hash of
// the row before it, or "" for the first; want: its seq).
func CheckRow(r Record, want int64, prev string) error {
	if r.Seq != want {
		return fmt.Errorf("%w at row %d: chain %s has no row %d before it (a row was deleted)", ErrTampered, r.ID, r.Chain, want)
	}
	if r.PrevHash != prev {
		return fmt.Errorf("%w at row %d: it does not link to the row before it in chain %s (a row was deleted, inserted or re-ordered)", ErrTampered, r.ID, r.Chain)
	}
	detail, err := CanonicalDetail(r.Detail)
	if err != nil {
		return err
	}
	if RowHash(prev, r, detail) != r.Hash {
		return fmt.Errorf("%w at row %d: its content does not match its hash (the row was edited, re-ordered or moved to chain %s)", ErrTampered, r.ID, r.Chain)
	}
	return nil
}

// ChainResult is the check of one chain.
type ChainResult struct {
	Chain string
	Rows  int64
	Head  *Leaf // nil: the chain has no rows
	// Checkpoint is the checkpoint the chain was checked against (the
	// latest, or the expected one); Sealed its leaf for the chain and Proof
	// the leaf's inclusion proof in its root. Sealed is nil while the chain
	// has not been checkpointed yet.
	Checkpoint *Checkpoint
	Sealed     *Leaf
	Proof      *Proof
}
