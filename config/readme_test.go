package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update", false, "rewrite README.md's configuration table from Settings")

const readmePath = "../README.md"

// readmeTable finds the settings table in README.md's "## Configuration"
// section: the text before it, its rows and the text after it.
func readmeTable(t *testing.T) (before string, rows []string, after string) {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	sec := strings.Index(text, "\n## Configuration\n")
	if sec < 0 {
		t.Fatal("README.md has no ## Configuration section")
	}
	head := strings.SplitN(MarkdownTable(), "\n", 2)[0]
	start := strings.Index(text[sec:], "\n"+head+"\n")
	if start < 0 {
		t.Fatalf("README.md's Configuration section has no table headed %q", head)
	}
	start += sec + 1
	end := start
	for end < len(text) && strings.HasPrefix(text[end:], "|") {
		nl := strings.IndexByte(text[end:], '\n')
		if nl < 0 {
			end = len(text)
			break
		}
		end += nl + 1
	}
	return text[:start], strings.Split(strings.TrimSuffix(text[start:end], "\n"), "\n"), text[end:]
}

// README.md's configuration table is Settings, row for row, both ways: a
// setting added in code and not documented fails, and so does a documented
// one the code lacks or describes otherwise. `go test ./config -run README
// -update` rewrites the table.
func TestREADMEConfigurationTableMatchesTheCode(t *testing.T) {
	before, got, after := readmeTable(t)
	want := strings.Split(strings.TrimSuffix(MarkdownTable(), "\n"), "\n")
	if *updateREADME {
		if err := os.WriteFile(readmePath, []byte(before+strings.Join(want, "\n")+"\n"+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	variable := func(row string) string {
		if f := strings.Split(row, "`"); len(f) > 1 {
			return f[1]
		}
		return row
	}
	byVar := func(rows []string) map[string]string {
		m := map[string]string{}
		for _, r := range rows[2:] {
			m[variable(r)] = r
		}
		return m
	}
	if len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("README.md's table header %q, want %q", got[:min(2, len(got))], want[:2])
	}
	gotRows, wantRows := byVar(got), byVar(want)
	for v, row := range wantRows {
		switch readme, ok := gotRows[v]; {
		case !ok:
			t.Errorf("README.md does not document %s:\n%s", v, row)
		case readme != row:
			t.Errorf("README.md documents %s otherwise than the code:\nREADME: %s\ncode:   %s", v, readme, row)
		}
	}
	for v := range gotRows {
		if _, ok := wantRows[v]; !ok {
			t.Errorf("README.md documents %s, which no setting reads", v)
		}
	}
	if !t.Failed() && strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Error("README.md's rows are in another order than Settings")
	}
	if t.Failed() {
		t.Log("run: go test ./config -run README -update")
	}
}
