package audit

import (
	"strconv"
	"time"
)

// Checkpoint commits to the heads of all chains at one moment: Root is the
// Merkle root over the leaves (chain, seq, head hash) sorted by chain, and
// Hash chains it to the checkpoint before it. Publishing ID:Hash somewhere
// setflow cannot write lets a later `audit verify -expect` detect rows (or
// whole chains) removed after it, and checkpoints rewritten after it.
type Checkpoint struct {
	ID        int64     `json:"id" db:"id"`
	PrevHash  string    `json:"prev_hash" db:"prev_hash"`
	Root      string    `json:"root" db:"root"`
	Chains    int64     `json:"chains" db:"chains"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	Hash      string    `json:"hash" db:"hash"`
}

func (c Checkpoint) ComputeHash() string {
	return hashParts("setflow-audit-checkpoint-v1", strconv.FormatInt(c.ID, 10), c.PrevHash, c.Root,
		strconv.FormatInt(c.Chains, 10), c.CreatedAt.UTC().Format(time.RFC3339Nano))
}

// Anchor is the published form of the checkpoint, ID:HASH.
func (c Checkpoint) Anchor() Anchor { return Anchor{ID: c.ID, Hash: c.Hash} }
