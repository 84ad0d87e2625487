package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/unknowns"
)

// `events show <key>` prints nothing personal; with --payload it prints the
// verified claims of a SET, or the fields of a form or JSON webhook, after a
// warning that they are personal data.
func TestEventsShowPayload(t *testing.T) {
	db, url := testenv.Database(t)
	ctx := context.Background()
	in := inbox.NewPostgres(db)
	key, err := simulator.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	claims, err := simulator.SET{Issuer: "https://kauth.kakao.com", Audience: "aud", UserID: "70154177",
		EventType: "account-disabled", Fields: map[string]any{"reason": "hijacking"}}.Claims()
	if err != nil {
		t.Fatal(err)
	}
	token, err := key.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	put := func(k string, src event.Source, user string, raw string) {
		t.Helper()
		env := event.Envelope{Key: k, Source: src, ReceivedAt: now, IssuedAt: now,
			Subject: event.Subject{Issuer: "https://kauth.kakao.com", UserID: user},
			Events:  []event.Event{{Type: "t", Name: "n", Subject: event.Subject{UserID: user}, Time: now, Payload: json.RawMessage(`{}`)}}}
		if _, err := in.Put(ctx, inbox.Entry{Envelope: env, Raw: []byte(raw)}); err != nil {
			t.Fatal(err)
		}
	}
	put("set:jti-1", event.SourceSET, "70154177", token)
	put("unlink:abc", event.SourceUnlink, "90019001", "app_id=1234&user_id=90019001&referrer_type=ACCOUNT_DELETE")
	put("talk-channel:r1", event.SourceTalkChannel, "90029002", `{"event":"added","id":90029002,"channel_public_id":"_ab"}`)
	env := environ(map[string]string{"SETFLOW_DATABASE_URL": url})

	for _, tc := range []struct {
		key, user string
		want      []string
	}{
		{"set:jti-1", "70154177", []string{"verified claims (set)", `"reason": "hijacking"`, "risc/event-type/account-disabled", `"sub": "70154177"`}},
		{"unlink:abc", "90019001", []string{"fields (unlink)", `"user_id": "90019001"`, `"referrer_type": "ACCOUNT_DELETE"`}},
		{"talk-channel:r1", "90029002", []string{"fields (talk-channel)", `"id": 90029002`}},
	} {
		out, code := runSetflow(t, env, "events", "show", tc.key)
		if code != 0 || !strings.Contains(out, "key:        "+tc.key) {
			t.Fatalf("show %s: exit %d\n%s", tc.key, code, out)
		}
		if strings.Contains(out, tc.user) || strings.Contains(out, "WARNING") {
			t.Errorf("show %s without --payload prints personal data:\n%s", tc.key, out)
		}
		out, code = runSetflow(t, env, "events", "show", tc.key, "--payload")
		if code != 0 {
			t.Fatalf("show %s --payload: exit %d\n%s", tc.key, code, out)
		}
		if !strings.Contains(out, "WARNING") || !strings.Contains(out, "personal data") {
			t.Errorf("show %s --payload has no warning:\n%s", tc.key, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("show %s --payload lacks %q:\n%s", tc.key, w, out)
			}
		}
	}
	if out, code := runSetflow(t, env, "events", "show", "--payload", "set:nope"); code == 0 {
		t.Fatalf("an unknown key succeeded:\n%s", out)
	}
}

// `events unknowns` lists the recorded shapes, one line per kind.
func TestEventsUnknowns(t *testing.T) {
	db, url := testenv.Database(t)
	env := environ(map[string]string{"SETFLOW_DATABASE_URL": url})
	out, code := runSetflow(t, env, "events", "unknowns")
	if code != 0 || !strings.Contains(out, "no unexpected delivery shapes recorded") {
		t.Fatalf("empty: exit %d\n%s", code, out)
	}
	if err := unknowns.NewPostgres(db).Add(context.Background(), map[unknowns.Kind]int64{
		{Route: "set", Kind: unknowns.EventField, Detail: "user-profile-changed.nickname"}: 3,
		{Route: "set", Kind: unknowns.Redelivered, Detail: "after 202"}:                    1,
	}); err != nil {
		t.Fatal(err)
	}
	out, code = runSetflow(t, env, "events", "unknowns")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, w := range []string{"ROUTE", "event-field", "user-profile-changed.nickname", "redelivered", "after 202"} {
		if !strings.Contains(out, w) {
			t.Errorf("unknowns lacks %q:\n%s", w, out)
		}
	}
}
