package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
)

// parseFlagsAnywhere parses flags given before or after the positional
// arguments (`events show <key> --payload`), leaving the positionals in
// fs.Args().
func parseFlagsAnywhere(fs *flag.FlagSet, args []string) error {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	return config.Parse(fs, append([]string{"--"}, pos...))
}

// payloadWarning precedes every printed payload.
const payloadWarning = `WARNING: what follows is a stored delivery as Kakao sent it. It contains
personal data (Kakao user ids, and whatever the event carries). Do not paste it
into tickets, chats or logs; keep it to settling a wire-format question.`

// printPayload is `setflow events show <key> --payload`: the verified claims
// of a SET (the token's payload; its signature was checked when it was
// received), or the fields of a form, query or JSON webhook, as stored in
// the inbox's raw bytes. The warning goes to warn (stderr), the data to out.
func printPayload(ctx context.Context, store inbox.Store, key string, out, warn io.Writer) error {
	e, err := store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("event %q: %w", key, err)
	}
	fmt.Fprintf(warn, "\n%s\n\n", payloadWarning)
	if len(e.Raw) == 0 {
		fmt.Fprintln(out, "(no delivery stored under this key: a placeholder for a parked step; see the audit trail)")
		return nil
	}
	var doc any
	label := "fields"
	switch e.Envelope.Source {
	case event.SourceSET:
		label = "verified claims"
		doc, err = setClaims(e.Raw)
	default:
		doc, err = webhookFields(e.Raw)
	}
	if err != nil {
		return fmt.Errorf("event %q: the stored delivery cannot be read: %w", key, err)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s (%s):\n%s\n", label, e.Envelope.Source, b)
	return nil
}

// setClaims decodes the payload of a compact JWS. It does not verify the
// signature again: only verified tokens are stored.
func setClaims(raw []byte) (any, error) {
	parts := strings.Split(strings.TrimSpace(string(raw)), ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return decodeJSON(payload)
}

// webhookFields reads a JSON body, or else a form body or query string.
func webhookFields(raw []byte) (any, error) {
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
		return decodeJSON(t)
	}
	vals, err := url.ParseQuery(string(raw))
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(vals))
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if v := vals[k]; len(v) == 1 {
			out[k] = v[0]
		} else {
			out[k] = v
		}
	}
	return out, nil
}

// decodeJSON keeps numbers as written (a user id must not become 7.01541e+05).
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
