// Package depcheck lets a package's tests pin what it must never link: an
// import that pulls a forbidden package in, directly or through another
// package, fails the test that names it.
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// Forbid fails t for every package in forbidden that pkgs depend on, as `go
// list -deps` lists them. As in go's own patterns, "x/..." is x and every
// package under it; "x" alone is x only (database/sql, not its driver
// interfaces).
func Forbid(t testing.TB, pkgs, forbidden []string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	out, err := exec.Command(goTool, append([]string{"list", "-deps"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", strings.Join(pkgs, " "), err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %d packages", len(deps))
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			tree, ok := strings.CutSuffix(f, "/...")
			if dep == f || ok && (dep == tree || strings.HasPrefix(dep, tree+"/")) {
				t.Errorf("%s depends on %s", strings.Join(pkgs, " and "), dep)
			}
		}
	}
}
