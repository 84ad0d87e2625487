package pgurl

import "testing"

func TestWithDatabase(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:p@h:5432/postgres?sslmode=disable": "postgres://u:p@h:5432/x?sslmode=disable",
		"postgres://u@h:5432/postgres":                   "postgres://u@h:5432/x",
		"postgres://u@h:5432":                            "postgres://u@h:5432/x",
		"postgres://u@h?sslmode=require":                 "postgres://u@h/x?sslmode=require",
	} {
		if got := WithDatabase(in, "x"); got != want {
			t.Errorf("WithDatabase(%q) = %q, want %q", in, got, want)
		}
	}
}
