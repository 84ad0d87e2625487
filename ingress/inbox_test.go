package ingress_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/setflow/setflow/ingress"
)

// When the inbox cannot be written the answer is 503 (so that a sender that
// retries, retries) — the only 5xx any route gives.
func TestWebhooksAnswer503WhenInboxIsDown(t *testing.T) {
	e := newWebhookEnv(t)
	if err := e.DB.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path, ct, body string
		headers                []string
	}{
		{http.MethodGet, ingress.PathUnlink + "?app_id=" + appID + "&user_id=1", "", "", []string{kakaoAuth(adminKey)}},
		{http.MethodGet, ingress.PathTalkShare + "?CHAT_TYPE=MemoChat&HASH_CHAT_ID=h", "", "", []string{kakaoAuth(adminKey), "X-Kakao-Resource-ID: r"}},
		{http.MethodPost, ingress.PathTalkChannel, "application/json", `{"event":"added","id":"1","channel_public_id":"_c"}`, []string{kakaoAuth(adminKey), "X-Kakao-Resource-ID: r"}},
	} {
		r := e.do(c.method, c.path, c.ct, c.body, c.headers...)
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d (Retry-After %q), want 503 with Retry-After", c.path, r.Status, r.Header.Get("Retry-After"))
		}
	}
}

// A stuck inbox write (here: a concurrent transaction holding the same dedupe
// key) is cut off by StoreTimeout, so the answer leaves well within 3 s.
func TestSlowInboxWriteIsBounded(t *testing.T) {
	e := newWebhookEnv(t, func(s *ingress.Server) { s.StoreTimeout = 300 * time.Millisecond })
	tx, err := e.DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.Exec(`INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope) VALUES ($1, 'talk-share', '', '{}')`,
		ingress.TalkShareKey("held")); err != nil {
		t.Fatal(err)
	}
	path := ingress.PathTalkShare + "?CHAT_TYPE=MemoChat&HASH_CHAT_ID=h"
	start := time.Now()
	r := e.do(http.MethodGet, path, "", "", kakaoAuth(adminKey), "X-Kakao-Resource-ID: held")
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("got %d, want 503 while the key is held", r.Status)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("answer took %v with a 300 ms store timeout", d)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	expectOK(t, e.do(http.MethodGet, path, "", "", kakaoAuth(adminKey), "X-Kakao-Resource-ID: held"), "after release")
}
