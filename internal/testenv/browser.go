package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// Chromium returns the browser the UI tests drive (SETFLOW_CHROMIUM, else
// Debian's); deployments/local/lib.sh ensure_chromium installs it.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("SETFLOW_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	Unavailable(t, "chromium (deployments/local/lib.sh ensure_chromium installs it)")
	return ""
}

// Artefacts is where a test saves screenshots: SETFLOW_TEST_ARTIFACTS/<name>
// (test.sh keeps them in .test-artifacts), else a new directory under the
// system's temp dir that the test prints (and keeps).
func Artefacts(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("SETFLOW_TEST_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "setflow-"+name+"-screenshots-"); err != nil {
			t.Fatal(err)
		}
	} else {
		dir = filepath.Join(dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", dir)
	return dir
}
