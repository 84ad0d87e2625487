package mailer

import (
	"slices"
	"testing"

	"github.com/setflow/setflow/policy"
)

// The notices by name, for the tests; policy defines them.
var (
	NoticeAccountHijacked      = Kind(policy.NoticeAccountHijacked)
	NoticeCredentialCompromise = Kind(policy.NoticeCredentialCompromise)
	NoticePasswordChanged      = Kind(policy.NoticePasswordChanged)
)

// The mailer has templates for exactly the notices a policy may name: a
// notice added to policy without its templates, or a template left over
// after a notice was removed, fails here.
func TestTemplatesCoverThePolicysNotices(t *testing.T) {
	var got []string
	for _, k := range Kinds() {
		got = append(got, string(k))
	}
	want := slices.Clone(policy.Notices)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("templates for %v, policy's notices %v", got, want)
	}
	for _, k := range want {
		if !Kind(k).Valid() {
			t.Errorf("%s is not a valid kind", k)
		}
	}
	if Kind("hello").Valid() {
		t.Error("a kind without templates is valid")
	}
}
