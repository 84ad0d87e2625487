package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/talk"
)

const (
	webhookAdminKey = "it-admin-key-5f1c0e9a7b3d"
	webhookAppID    = "987654"
)

// webhooks is the stack's inbox behind an ingress configured for the
// admin-key webhooks.
type webhooks struct {
	*stack
	URL string
}

func (s *stack) withWebhooks() *webhooks {
	s.t.Helper()
	srv := &ingress.Server{Inbox: s.Inbox, Log: s.log, Ready: s.DB.PingContext,
		Kakao: ingress.Kakao{AdminKeys: []string{"it-old-key-0000", webhookAdminKey}, AppID: webhookAppID, Issuer: testIssuer,
			KeyHash: subjects.Key}}
	ts := httptest.NewServer(srv.Handler())
	s.t.Cleanup(ts.Close)
	return &webhooks{stack: s, URL: ts.URL}
}

// deliver sends d as Kakao would and returns the status; the answer must come
// within Kakao's 3 s.
func (w *webhooks) deliver(d simulator.Delivery) int {
	w.t.Helper()
	if d.AdminKey == "" {
		d.AdminKey = webhookAdminKey
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := d.Request(ctx, w.URL)
	if err != nil {
		w.t.Fatal(err)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if took := time.Since(start); took > 3*time.Second {
		w.t.Fatalf("%s answered after %v", d.Path, took)
	}
	if resp.StatusCode == http.StatusOK && len(body) != 0 {
		w.t.Fatalf("%s: 200 with body %q", d.Path, body)
	}
	return resp.StatusCode
}

// startWorkerForWebhooks runs the real activities with the Talk store and hook.
func (w *webhooks) startWorkerForWebhooks(c client.Client, hook talk.ShareHook) {
	w.t.Helper()
	acts := w.activities()
	acts.TalkShareHook = hook
	w.startWorkerWith(c, acts)
}

// steps lists an event's audit trail as step=outcome.
func (w *webhooks) steps(key string) ([]audit.Record, string) {
	w.t.Helper()
	recs, err := w.Audit.ForEvent(context.Background(), key)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, r.Step+"="+r.Outcome)
	}
	return recs, strings.Join(out, ",")
}

// shareHook is a service's own Talk Share activity: it fails its first call,
// so the test sees Temporal retry it with the same idempotency key.
type shareHook struct {
	mu    sync.Mutex
	calls []string
}

func (h *shareHook) OnTalkShare(_ context.Context, key string, d talk.Delivery) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, key+"|"+d.ResourceID+"|"+d.ChatType+"|"+string(d.Args["campaign"]))
	if len(h.calls) == 1 {
		return errors.New("service temporarily unavailable")
	}
	return nil
}

func (h *shareHook) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

// All three admin-key webhooks are answered 200 at once while Temporal is down,
// wait in the inbox, and run their reactions when it is back: the unlink
// webhook revokes the sessions that existed when it arrived (the user-unlinked
// reaction, in the user's stream), a Talk Share delivery (about no user) is
// recorded and handed to the service's hook by a reaction workflow of its
// own, and the Talk Channel relationship is recorded with its marketing
// consent, an older event never overwriting a newer one.
func TestWebhooksEndToEnd(t *testing.T) {
	s := newStack(t)
	w := s.withWebhooks()
	hostPort := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.startRelay(hostPort) // nothing listens there yet
	now := time.Now()
	s.insertSession("old", "701541", now.Add(-time.Hour))
	s.insertSession("later", "701541", now.Add(time.Hour))
	s.insertSession("other", "999", now.Add(-time.Hour))

	// While Temporal is down.
	unlink := simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm,
		Fields: map[string]any{"app_id": webhookAppID, "user_id": "701541", "referrer_type": "UNLINK_FROM_APPS"}}
	if st := w.deliver(unlink); st != http.StatusOK {
		t.Fatalf("unlink: %d", st)
	}
	var unlinkKey string
	if err := s.DB.Get(&unlinkKey, `SELECT dedupe_key FROM setflow_inbox WHERE source = 'unlink'`); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(unlinkKey, "unlink:") || strings.Contains(unlinkKey, "701541") {
		t.Fatalf("unlink key %q must be a derived hash", unlinkKey)
	}
	share := simulator.Delivery{Path: ingress.PathTalkShare, Encoding: simulator.EncodingQuery, ResourceID: "share-1",
		Fields: map[string]any{"CHAT_TYPE": "MultiChat", "HASH_CHAT_ID": "hc-1", "TEMPLATE_ID": 4321, "campaign": "spring"}}
	if st := w.deliver(share); st != http.StatusOK {
		t.Fatalf("talk share: %d", st)
	}
	// Recent enough that no event time is clamped (at most 7 days old).
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	added := simulator.Delivery{Path: ingress.PathTalkChannel, ResourceID: "ch-added",
		Fields: map[string]any{"event": "added", "id": "701541", "id_type": "app_user_id",
			"channel_public_id": "_ZeUTxl", "channel_uuid": "@setflow", "updated_at": t0.Add(5 * time.Minute).Format(time.RFC3339)}}
	if st := w.deliver(added); st != http.StatusOK {
		t.Fatalf("talk channel: %d", st)
	}
	waitFor(t, "a failed delivery attempt", func() bool { return s.inboxStatus(ingress.TalkShareKey("share-1")).Attempts >= 1 })

	// Temporal comes back.
	srv := startTemporalAt(t, hostPort)
	hook := &shareHook{}
	w.startWorkerForWebhooks(srv.Client(), hook)

	// Unlink: the user-unlinked reaction.
	res := s.waitReaction(unlinkKey)
	if res.SessionsRevoked != 1 || !s.revoked("old") || s.revoked("later") || s.revoked("other") {
		t.Fatalf("unlink reaction %+v: old=%v later=%v other=%v", res, s.revoked("old"), s.revoked("later"), s.revoked("other"))
	}
	// The contact changed (now unlinked): crm_upsert asks for a sync, which
	// finds no CRM configured.
	s.expectAudit(unlinkKey, defaultTrail("user-unlinked")...)

	// Talk Share: recorded once, hook retried with the same key, audited
	// without the argument values.
	shareKey := ingress.TalkShareKey("share-1")
	s.waitReaction(shareKey)
	var d struct {
		ChatType   string `db:"chat_type"`
		HashChatID string `db:"hash_chat_id"`
		TemplateID int64  `db:"template_id"`
		Campaign   string `db:"campaign"`
		N          int    `db:"n"`
	}
	if err := s.DB.Get(&d, `SELECT chat_type, hash_chat_id, template_id, args->>'campaign' AS campaign, count(*) OVER () AS n
		FROM setflow_talk_share_deliveries WHERE event_key = $1`, shareKey); err != nil {
		t.Fatal(err)
	}
	if d.N != 1 || d.ChatType != "MultiChat" || d.HashChatID != "hc-1" || d.TemplateID != 4321 || d.Campaign != "spring" {
		t.Fatalf("recorded delivery %+v", d)
	}
	wantCall := shareKey + "/talk-share/talk_share_hook|share-1|MultiChat|\"spring\""
	if calls := hook.Calls(); len(calls) != 2 || calls[0] != wantCall || calls[1] != wantCall {
		t.Fatalf("hook calls %q, want twice %q (one failure, one retry)", calls, wantCall)
	}
	recs, got := w.steps(shareKey)
	if got != "talk-share/received=received,talk-share/record_talk_share=done,talk-share/talk_share_hook=done,talk-share/completed=done" {
		t.Fatalf("talk share audit %s", got)
	}
	if det := recs[1].Detail; det["chat_type"] != "MultiChat" || det["template_id"] != float64(4321) ||
		fmt.Sprint(det["arg_keys"]) != "[campaign]" || strings.Contains(fmt.Sprint(det), "spring") {
		t.Fatalf("record_talk_share audit detail %v", det)
	}
	if recs[2].Detail["ran"] != true {
		t.Fatalf("hook audit detail %v", recs[2].Detail)
	}

	// Talk Channel: added, then an older blocked that must not win, then a newer blocked.
	store := talk.NewPostgres(s.DB)
	relationship := func() talk.Relationship {
		t.Helper()
		r, err := store.Relationship(context.Background(), testIssuer, "app_user_id", "701541", "_ZeUTxl")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	channelStep := func(key string) map[string]any {
		t.Helper()
		s.waitReaction(key)
		recs, got := w.steps(key)
		for _, r := range recs {
			if strings.HasSuffix(r.Step, "/record_channel") {
				r.Detail["outcome"] = r.Outcome
				return r.Detail
			}
		}
		t.Fatalf("channel audit %s has no record_channel step", got)
		return nil
	}
	det := channelStep(ingress.TalkChannelKey("ch-added"))
	if det["applied"] != true || det["status"] != "added" || det["marketing_consent"] != true {
		t.Fatalf("added: audit %v", det)
	}
	if r := relationship(); r.Status != "added" || r.MarketingConsent == nil || !*r.MarketingConsent {
		t.Fatalf("after added: %+v", r)
	}

	olderBlocked := simulator.Delivery{Path: ingress.PathTalkChannel, ResourceID: "ch-old-blocked",
		Fields: map[string]any{"event": "blocked", "id": "701541", "id_type": "app_user_id",
			"plus_friend_public_id": "_ZeUTxl", "plus_friend_uuid": "@setflow", "timestamp": t0.UnixMilli()}}
	if st := w.deliver(olderBlocked); st != http.StatusOK {
		t.Fatalf("older blocked: %d", st)
	}
	det = channelStep(ingress.TalkChannelKey("ch-old-blocked"))
	if det["applied"] != false || det["status"] != "added" || det["marketing_consent"] != true || det["outcome"] != "superseded" {
		t.Fatalf("older blocked: audit %v", det)
	}
	if r := relationship(); r.Status != "added" || !*r.MarketingConsent {
		t.Fatalf("an older event overwrote a newer one: %+v", r)
	}

	newerBlocked := added
	newerBlocked.ResourceID = "ch-new-blocked"
	newerBlocked.Fields = map[string]any{"event": "blocked", "id": "701541", "channel_public_id": "_ZeUTxl",
		"updated_at": t0.Add(10 * time.Minute).Format(time.RFC3339)}
	if st := w.deliver(newerBlocked); st != http.StatusOK {
		t.Fatalf("newer blocked: %d", st)
	}
	det = channelStep(ingress.TalkChannelKey("ch-new-blocked"))
	if det["applied"] != true || det["status"] != "blocked" || det["marketing_consent"] != false {
		t.Fatalf("newer blocked: audit %v", det)
	}
	if r := relationship(); r.Status != "blocked" || *r.MarketingConsent || !r.UpdatedAt.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("after newer blocked: %+v", r)
	}

	// A duplicate Talk Share delivery after its reaction: 200, stored and run once.
	if st := w.deliver(share); st != http.StatusOK {
		t.Fatalf("duplicate share: %d", st)
	}
	var rows int
	if err := s.DB.Get(&rows, `SELECT count(*) FROM setflow_inbox WHERE dedupe_key = $1`, shareKey); err != nil || rows != 1 {
		t.Fatalf("inbox rows %d (%v)", rows, err)
	}
	if n := s.runsOf(shareKey); n != 1 {
		t.Fatalf("%d runs of the share reaction, want 1", n)
	}
	if calls := hook.Calls(); len(calls) != 2 {
		t.Fatalf("hook called %d times after a duplicate", len(calls))
	}
}

// A refused delivery (here: wrong key, another app) stores nothing, so no
// reaction ever starts for it.
func TestWebhookRefusalsStoreNothing(t *testing.T) {
	s := newStack(t)
	w := s.withWebhooks()
	bad := []simulator.Delivery{
		{Path: ingress.PathUnlink, AdminKey: "it-wrong-key", Encoding: simulator.EncodingQuery,
			Fields: map[string]any{"app_id": webhookAppID, "user_id": "1"}},
		{Path: ingress.PathUnlink, Encoding: simulator.EncodingJSON, Fields: map[string]any{"app_id": "other-app", "user_id": "1"}},
		{Path: ingress.PathTalkShare, Encoding: simulator.EncodingQuery, Fields: map[string]any{"CHAT_TYPE": "MemoChat", "HASH_CHAT_ID": "h"}}, // no resource id
	}
	want := []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusBadRequest}
	for i, d := range bad {
		if st := w.deliver(d); st != want[i] {
			t.Fatalf("delivery %d: %d, want %d", i, st, want[i])
		}
	}
	var rows int
	if err := s.DB.Get(&rows, `SELECT count(*) FROM setflow_inbox`); err != nil || rows != 0 {
		t.Fatalf("inbox rows %d (%v), want 0", rows, err)
	}
}
