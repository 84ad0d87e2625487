// Package audit is setflow's append-only record of what happened to each event:
// one row per event and per reaction step. Rows carry a keyed hash of the
// subject, never the user id in clear, and are hash-chained per chain: each
// user's rows form their own chain ("user:<subject hash>"), rows that name no
// user go to one of ShardChains shard chains by event key. Appends to
// different chains share no lock and no row. Periodic checkpoints (Checkpoint)
// commit to the heads of all chains with a Merkle root and are themselves
// hash-chained, so that verification detects edited, deleted or re-ordered
// rows, deleted chains and, against a published checkpoint, rows cut off the
// end.
//
// This package holds the records, the hashes and the proofs, and links no
// database code: workflows build records with it. Package auditdb keeps the
// chains in PostgreSQL, writes checkpoints and verifies them.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Record is one audit row.
type Record struct {
	ID          int64          `json:"id,omitempty"`
	EventKey    string         `json:"event_key"`
	EventType   string         `json:"event_type"`
	SubjectHash string         `json:"subject_hash"`
	Step        string         `json:"step"`
	Outcome     string         `json:"outcome"`
	Detail      map[string]any `json:"detail,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	PrevHash    string         `json:"prev_hash,omitempty"`
	Hash        string         `json:"hash,omitempty"`
	// Chain and Seq place the row: set by Append (ChainFor), ignored on input.
	Chain string `json:"chain,omitempty"`
	Seq   int64  `json:"seq,omitempty"`
}

// Log appends records.
type Log interface {
	// Append writes the record once: a second Append for the same event key and
	// step is a no-op reporting inserted=false, so retries never duplicate rows.
	Append(ctx context.Context, r Record) (inserted bool, err error)
	// ForEvent lists an event's records in the order they were written.
	ForEvent(ctx context.Context, eventKey string) ([]Record, error)
}

// SubjectHasher turns a user into an audit handle. Kakao user ids are short
// numbers, so a plain hash could be reversed by enumeration: the hash is keyed.
type SubjectHasher struct{ Key []byte }

// Hash returns the keyed handle of (issuer, user id); "" for no user.
func (h SubjectHasher) Hash(issuer, userID string) string {
	if userID == "" {
		return ""
	}
	m := hmac.New(sha256.New, h.Key)
	m.Write([]byte(issuer))
	m.Write([]byte{0})
	m.Write([]byte(userID))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// ShardChains is the number of chains that hold the rows naming no user (Talk
// Share, SSF stream events). A chain per event would add a checkpoint leaf per
// event forever; one chain would be a single hot row again. 64 shards keep the
// checkpoint small and make two such appends meet on one chain head rarely
// (and then one simply retries).
const ShardChains = 64

// LegacyChain holds the rows written before per-chain audit (migration
// 00009), in their original order and with their original hashes.
const LegacyChain = "legacy"

// ChainFor names the chain a row belongs to: the user's, or a shard by event key.
func ChainFor(subjectHash, eventKey string) string {
	if subjectHash != "" {
		return UserChain(subjectHash)
	}
	s := sha256.Sum256([]byte(eventKey))
	return fmt.Sprintf("shard:%02d", int(s[0])%ShardChains)
}

// UserChain is the chain of a user's rows, by subject hash.
func UserChain(subjectHash string) string { return "user:" + subjectHash }

// CanonicalDetail renders detail the way it reads back from jsonb (sorted keys,
// numbers as float64), so that the hash computed now verifies later.
func CanonicalDetail(d map[string]any) ([]byte, error) {
	if d == nil {
		d = map[string]any{}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		return nil, err
	}
	return json.Marshal(back)
}

func hashParts(parts ...string) string {
	h := sha256.New()
	for _, part := range parts {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// legacyRowHash is the hash of a row of the single pre-00009 chain.
func legacyRowHash(prev string, r Record, detail []byte) string {
	return hashParts(prev, r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome,
		string(detail), r.CreatedAt.UTC().Format(time.RFC3339Nano))
}

// ContentHash covers what a row says. Nothing in it needs personal data: the
// subject is its keyed hash.
func ContentHash(r Record, detail []byte) string {
	return hashParts(r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome,
		string(detail), r.CreatedAt.UTC().Format(time.RFC3339Nano))
}

// RowHashPrefix versions the per-chain row hash.
const RowHashPrefix = "setflow-audit-v2"

// RowHash chains a row to its predecessor in its chain: the SHA-256, in hex,
// of "setflow-audit-v2|<chain>|<seq>|<prev hash>|<content hash>". Chain and
// seq are hashed too, so a row moved to another place (re-ordered, or into
// another chain) no longer matches. auditdb's Append has PostgreSQL compute
// the same expression, because only the insert knows seq and prev hash;
// the fields are hex, decimal and chain names, so "|" cannot be forged.
func RowHash(prev string, r Record, detail []byte) string {
	if r.Chain == LegacyChain {
		return legacyRowHash(prev, r, detail)
	}
	s := sha256.Sum256([]byte(RowHashPrefix + "|" + r.Chain + "|" + strconv.FormatInt(r.Seq, 10) + "|" + prev + "|" + ContentHash(r, detail)))
	return hex.EncodeToString(s[:])
}
