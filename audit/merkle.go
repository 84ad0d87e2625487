package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// The Merkle tree over chain heads follows RFC 6962 (Certificate
// Transparency): a leaf is hashed with a 0x00 prefix and an inner node with
// 0x01, so that a leaf can never pass for a node; a tree of n leaves splits at
// the largest power of two below n. An inclusion proof is the list of sibling
// hashes from the leaf up to the root (RFC 6962 section 2.1.1).

// Leaf is one chain's head as a checkpoint seals it.
type Leaf struct {
	Chain string `json:"chain"`
	Seq   int64  `json:"seq"`
	Hash  string `json:"hash"`
}

func (l Leaf) hash() []byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write([]byte(l.Chain))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(l.Seq, 10)))
	h.Write([]byte{0})
	h.Write([]byte(l.Hash))
	return h.Sum(nil)
}

func nodeHash(left, right []byte) []byte {
	h := sha256.New()
	h.Write([]byte{1})
	h.Write(left)
	h.Write(right)
	return h.Sum(nil)
}

// split is the largest power of two below n (n > 1).
func split(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

func treeHash(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		s := sha256.Sum256(nil)
		return s[:]
	case 1:
		return leaves[0]
	}
	k := split(len(leaves))
	return nodeHash(treeHash(leaves[:k]), treeHash(leaves[k:]))
}

func leafHashes(leaves []Leaf) [][]byte {
	out := make([][]byte, len(leaves))
	for i, l := range leaves {
		out[i] = l.hash()
	}
	return out
}

// MerkleRoot is the root over leaves, which must be sorted by chain.
func MerkleRoot(leaves []Leaf) string {
	return hex.EncodeToString(treeHash(leafHashes(leaves)))
}

// Proof shows that one leaf is in a checkpoint's tree: its index among the
// sorted leaves, the tree size and the sibling hashes, lowest first.
type Proof struct {
	Index int      `json:"index"`
	Size  int      `json:"size"`
	Path  []string `json:"path"`
}

func path(m int, leaves [][]byte) [][]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := split(len(leaves))
	if m < k {
		return append(path(m, leaves[:k]), treeHash(leaves[k:]))
	}
	return append(path(m-k, leaves[k:]), treeHash(leaves[:k]))
}

// Prove builds the proof of leaves[index] (leaves sorted by chain).
func Prove(leaves []Leaf, index int) Proof {
	p := Proof{Index: index, Size: len(leaves)}
	for _, h := range path(index, leafHashes(leaves)) {
		p.Path = append(p.Path, hex.EncodeToString(h))
	}
	return p
}

var errBadProof = errors.New("malformed inclusion proof")

func rootFromPath(leaf []byte, m, n int, path [][]byte) ([]byte, error) {
	if n == 1 {
		if len(path) != 0 || m != 0 {
			return nil, errBadProof
		}
		return leaf, nil
	}
	if len(path) == 0 {
		return nil, errBadProof
	}
	k := split(n)
	last, rest := path[len(path)-1], path[:len(path)-1]
	if m < k {
		left, err := rootFromPath(leaf, m, k, rest)
		if err != nil {
			return nil, err
		}
		return nodeHash(left, last), nil
	}
	right, err := rootFromPath(leaf, m-k, n-k, rest)
	if err != nil {
		return nil, err
	}
	return nodeHash(last, right), nil
}

// VerifyProof reports whether the proof places leaf in the tree with this
// root: all that checking one chain against a checkpoint needs.
func VerifyProof(leaf Leaf, p Proof, root string) bool {
	if p.Size <= 0 || p.Index < 0 || p.Index >= p.Size {
		return false
	}
	hs := make([][]byte, len(p.Path))
	for i, s := range p.Path {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != sha256.Size {
			return false
		}
		hs[i] = b
	}
	got, err := rootFromPath(leaf.hash(), p.Index, p.Size, hs)
	return err == nil && hex.EncodeToString(got) == root
}

func SortLeaves(l []Leaf) {
	slices.SortFunc(l, func(a, b Leaf) int { return strings.Compare(a.Chain, b.Chain) })
}
