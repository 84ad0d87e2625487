package config

import (
	"slices"
	"strings"
	"testing"
)

func TestParseTestUsers(t *testing.T) {
	got, err := ParseTestUsers(" 701541, ,4242 ,")
	if err != nil || !slices.Equal(got, []string{"701541", "4242"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	if got, err := ParseTestUsers(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q, %v", got, err)
	}
	_, err = ParseTestUsers("701541,kim@example.com")
	if err == nil {
		t.Fatal("a non-numeric entry was accepted")
	}
	if strings.Contains(err.Error(), "kim") || !strings.Contains(err.Error(), "entry 2") {
		t.Fatalf("error %q must name the position, not the value", err)
	}
}
