package audit

import (
	"fmt"
	"strings"
	"testing"
)

func TestMerkleProofsForEveryLeaf(t *testing.T) {
	for n := 1; n <= 20; n++ {
		leaves := make([]Leaf, n)
		for i := range leaves {
			leaves[i] = Leaf{Chain: fmt.Sprintf("user:%03d", i), Seq: int64(i + 1), Hash: fmt.Sprint(i)}
		}
		root := MerkleRoot(leaves)
		for i := range leaves {
			pr := Prove(leaves, i)
			if !VerifyProof(leaves[i], pr, root) {
				t.Fatalf("n=%d i=%d: proof fails", n, i)
			}
			if n > 1 && VerifyProof(leaves[(i+1)%n], pr, root) {
				t.Fatalf("n=%d i=%d: proof holds for another leaf", n, i)
			}
		}
	}
	if MerkleRoot(nil) == MerkleRoot([]Leaf{{Chain: "a"}}) {
		t.Fatal("empty tree collides")
	}
}

func TestSubjectHashIsKeyed(t *testing.T) {
	a := SubjectHasher{Key: []byte("a")}.Hash("iss", "42")
	b := SubjectHasher{Key: []byte("b")}.Hash("iss", "42")
	if a == b || strings.Contains(a, "42") || len(a) != 32 {
		t.Fatalf("hashes %q %q", a, b)
	}
	if (SubjectHasher{}).Hash("iss", "") != "" {
		t.Fatal("no user must give no hash")
	}
}
