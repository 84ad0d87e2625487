package event_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/internal/testenv"
)

// storableCases are JSON texts and what Storable makes of them; want "" means
// unchanged.
var storableCases = []struct{ name, in, want string }{
	{"plain", `{"nickname":"라이언","n":1.5e3,"ok":true,"x":null,"a":[]}`, ""},
	{"escapes kept", `{"a":"\n\t\"\\\/\u00e9\ud83d\ude00\u0001"}`, ""},
	{"whitespace kept", " {\n \"a\" : [ 1 , 2 ] \n} ", ""},
	{"NUL escape", `{"nickname":"a\u0000b"}`, `{"nickname":"a` + "\uFFFD" + `b"}`},
	{"NUL in a member name", `{"a\u0000":1}`, `{"a` + "\uFFFD" + `":1}`},
	{"lone high surrogate", `["\ud800"]`, `["` + "\uFFFD" + `"]`},
	{"lone high surrogate before another escape", `["\ud800\u0041"]`, `["` + "\uFFFD" + `A"]`},
	{"lone low surrogate", `["x\udc00y"]`, `["x` + "\uFFFD" + `y"]`},
	{"reversed pair", `["\ude00\ud83d"]`, `["` + "\uFFFD\uFFFD" + `"]`},
	{"other escapes re-encoded with a NUL", `["\u0000\"\n\u001f\/"]`, `["` + "\uFFFD" + `\"\n\u001f/"]`},
	{"invalid UTF-8", "[\"a\xffb\"]", `["a` + "\uFFFD" + `b"]`},
	{"number beyond numeric", `{"n":1e131072}`, `{"n":"1e131072"}`},
	{"number at numeric's limit", `{"n":1e131071}`, ""},
	{"tiny number beyond numeric", `[1e-16384]`, `["1e-16384"]`},
	{"tiny number at numeric's limit", `[1e-16383]`, ""},
	{"zero with a huge exponent", `[0e999999999]`, ""},
	{"exponent beyond ±10^9", `[0e99999999999999999999]`, `["0e99999999999999999999"]`},
	{"negative huge", `[-12.5E+200000]`, `["-12.5E+200000"]`},
	{"deep", strings.Repeat("[", event.MaxStoredDepth) + `"\u0000"` + strings.Repeat("]", event.MaxStoredDepth),
		strings.Repeat("[", event.MaxStoredDepth) + `"` + "\uFFFD" + `"` + strings.Repeat("]", event.MaxStoredDepth)},
	{"too deep with a NUL inside", `{"a":` + strings.Repeat("[", event.MaxStoredDepth) + `"\u0000"` + strings.Repeat("]", event.MaxStoredDepth) + `}`,
		`{"a":` + strings.Repeat("[", event.MaxStoredDepth-1) + `"[\"` + "\uFFFD" + `\"]"` + strings.Repeat("]", event.MaxStoredDepth-1) + `}`},
	{"too deep", strings.Repeat("[", event.MaxStoredDepth+1) + strings.Repeat("]", event.MaxStoredDepth+1),
		strings.Repeat("[", event.MaxStoredDepth) + `"[]"` + strings.Repeat("]", event.MaxStoredDepth)},
	{"not JSON", `{"a":`, `"{\"a\":"`},
	{"empty", ``, ""},
}

func TestStorableJSON(t *testing.T) {
	for _, c := range storableCases {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if want == "" {
				want = c.in
			}
			got := string(event.StorableJSON(json.RawMessage(c.in)))
			if got != want {
				t.Fatalf("got  %q\nwant %q", trunc(got), trunc(want))
			}
			if again := string(event.StorableJSON(json.RawMessage(got))); again != got {
				t.Fatalf("not idempotent: %q", trunc(again))
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:100] + "…" + s[len(s)-100:]
	}
	return s
}

// Everything Storable returns is accepted by PostgreSQL's jsonb, and
// whatever jsonb accepts as it is (at a depth Storable keeps) is left alone.
func TestStorableJSONInPostgres(t *testing.T) {
	db, _ := testenv.Database(t)
	extra := []string{
		strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
		`{"a":` + strings.Repeat(`{"b":`, 600) + `"\ud800"` + strings.Repeat("}", 600) + `}`,
		`[0.` + strings.Repeat("1", 16384) + `]`,
		`[1` + strings.Repeat("0", 131072) + `]`,
		`["\uDBFF\uDFFF", "\uD800\uDC00", 100e-16385, 9.99e131071]`,
	}
	inputs := extra
	for _, c := range storableCases {
		if c.in != "" {
			inputs = append(inputs, c.in)
		}
	}
	for _, in := range inputs {
		out := event.StorableJSON(json.RawMessage(in))
		if !json.Valid(out) {
			t.Fatalf("%q: output is not JSON: %q", trunc(in), trunc(string(out)))
		}
		if err := pgAccepts(t, db, string(out)); err != nil {
			t.Fatalf("%q: jsonb refuses the output %q: %v", trunc(in), trunc(string(out)), err)
		}
		if string(out) != in && pgAccepts(t, db, in) == nil && depth(in) <= event.MaxStoredDepth {
			t.Fatalf("%q: jsonb accepts it, yet it was changed to %q", trunc(in), trunc(string(out)))
		}
	}
}

func pgAccepts(t *testing.T, db *sqlx.DB, s string) error {
	t.Helper()
	var n int
	return db.QueryRowContext(t.Context(), `SELECT octet_length($1::jsonb::text)`, s).Scan(&n)
}

func depth(s string) int {
	d, maxD, inStr := 0, 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '[' || c == '{'):
			d++
			maxD = max(maxD, d)
		case !inStr && (c == ']' || c == '}'):
			d--
		}
	}
	return maxD
}

func TestStorableKeyAndText(t *testing.T) {
	for _, k := range []string{"set:abc", "talk-share:r-1", "set:라이언", ""} {
		if got := event.StorableKey(k); got != k {
			t.Fatalf("StorableKey(%q) = %q, want it unchanged", k, got)
		}
	}
	a, b := event.StorableKey("set:a\x00"), event.StorableKey("set:a\uFFFD")
	c := event.StorableKey("set:a\xff")
	if a == b || a == c || !strings.HasPrefix(a, "set:a\uFFFD~") || strings.ContainsRune(a, 0) {
		t.Fatalf("keys %q %q %q", a, b, c)
	}
	if event.StorableKey("set:a\x00") != a || event.StorableKey(a) != a {
		t.Fatal("StorableKey is not stable or not idempotent")
	}
	if got := event.StorableText("a\x00b\xffc"); got != "a\uFFFDb\uFFFDc" {
		t.Fatalf("StorableText %q", got)
	}
}

func TestEnvelopeStorable(t *testing.T) {
	at := time.Date(2025, 4, 16, 7, 53, 17, 0, time.UTC)
	sub := event.Subject{Issuer: "https://kauth.kakao.com", UserID: "7\x00", Format: "x\xff"}
	env := event.Envelope{Key: "set:j\x00", Source: event.SourceSET, Subject: sub, IssuedAt: at, ReceivedAt: at, TxnID: "t\x00",
		Events: []event.Event{{Type: "ty\x00", Name: "n", Category: "c", Subject: sub, Time: at, Payload: json.RawMessage(`{"nickname":"\u0000"}`)}}}
	got := env.Storable()
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `\u0000`) || got.Key != event.StorableKey(env.Key) || got.Subject.UserID != "7\uFFFD" ||
		got.Subject.Format != "x\uFFFD" || got.TxnID != "t\uFFFD" || got.Events[0].Type != "ty\uFFFD" ||
		string(got.Events[0].Payload) != `{"nickname":"`+"\uFFFD"+`"}` {
		t.Fatalf("storable envelope %s", b)
	}
	if env.Subject.UserID != "7\x00" || string(env.Events[0].Payload) != `{"nickname":"\u0000"}` {
		t.Fatal("Storable changed its receiver")
	}
	plain := event.Envelope{Key: "k", Source: event.SourceSET, Events: []event.Event{{Type: "t", Payload: json.RawMessage(`{"a": 1}`)}}}
	if p := plain.Storable(); string(p.Events[0].Payload) != `{"a": 1}` || p.Key != "k" {
		t.Fatalf("a plain envelope changed: %+v", p)
	}
}

// FuzzStorableJSON: for any input, the output is JSON that jsonb accepts,
// Storable is idempotent, and JSON that jsonb already accepts (at a depth
// Storable keeps) is returned unchanged.
func FuzzStorableJSON(f *testing.F) {
	db, _ := testenv.Database(f)
	for _, c := range storableCases {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := event.StorableJSON(json.RawMessage(in))
		if len(in) == 0 {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON: %q", out)
		}
		if again := event.StorableJSON(out); string(again) != string(out) {
			t.Fatalf("not idempotent: %q -> %q", out, again)
		}
		if err := pgAccepts(t, db, string(out)); err != nil {
			t.Fatalf("jsonb refuses %q (from %q): %v", out, in, err)
		}
		if json.Valid([]byte(in)) && string(out) != in && depth(in) <= event.MaxStoredDepth && pgAccepts(t, db, in) == nil {
			t.Fatalf("jsonb accepts %q, yet it became %q", in, out)
		}
	})
}
