package ingress_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/talk"
)

func sharePayload(t *testing.T, e *whEnv, resourceID string) talk.SharePayload {
	t.Helper()
	en := e.entry(ingress.TalkShareKey(resourceID))
	if en.Envelope.Source != event.SourceTalkShare || len(en.Envelope.Events) != 1 {
		t.Fatalf("envelope %+v", en.Envelope)
	}
	ev := en.Envelope.Events[0]
	if ev.Type != talk.TypeShare || ev.Name != "talk-share" || ev.Subject.UserID != "" || !ev.Time.Equal(e.Clock.Now()) {
		t.Fatalf("event %+v", ev)
	}
	var p talk.SharePayload
	if err := json.Unmarshal(ev.Payload, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func argsOf(t *testing.T, p talk.SharePayload) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range p.Args {
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			t.Fatal(err)
		}
		out[k] = x
	}
	return out
}

// Query, form and JSON deliveries keep Kakao's members apart from the app's
// serverCallbackArgs; an unknown CHAT_TYPE is recorded as it is.
func TestTalkShareEncodings(t *testing.T) {
	e := newWebhookEnv(t)
	q := url.Values{"CHAT_TYPE": {"MemoChat"}, "HASH_CHAT_ID": {"h-1"}, "TEMPLATE_ID": {"12345"},
		"campaign": {"spring"}, "ref": {"a", "b"}}.Encode()
	expectOK(t, e.do(http.MethodGet, ingress.PathTalkShare+"?"+q, "", "", kakaoAuth(adminKey), "X-Kakao-Resource-ID: r-get"), "GET")
	p := sharePayload(t, e, "r-get")
	if p.ResourceID != "r-get" || p.ChatType != "MemoChat" || p.HashChatID != "h-1" || p.TemplateID == nil || *p.TemplateID != 12345 {
		t.Fatalf("GET payload %+v", p)
	}
	args := argsOf(t, p)
	if len(args) != 2 || args["campaign"] != "spring" || len(args["ref"].([]any)) != 2 {
		t.Fatalf("GET args %v", args)
	}

	form := url.Values{"CHAT_TYPE": {"SomeFutureChat"}, "HASH_CHAT_ID": {"h-2"}, "user_ref": {"u-9"}}.Encode()
	expectOK(t, e.do(http.MethodPost, ingress.PathTalkShare, "application/x-www-form-urlencoded", form,
		kakaoAuth(rotatedKey), "X-Kakao-Resource-ID: r-form"), "POST form")
	p = sharePayload(t, e, "r-form")
	if p.ChatType != "SomeFutureChat" || p.TemplateID != nil || argsOf(t, p)["user_ref"] != "u-9" {
		t.Fatalf("form payload %+v", p)
	}

	body := `{"CHAT_TYPE":"OpenMultiChat","HASH_CHAT_ID":"h-3","TEMPLATE_ID":678,"nested":{"a":[1,2]},"n":12.5,"flag":true}`
	expectOK(t, e.do(http.MethodPost, ingress.PathTalkShare, "application/json", body, kakaoAuth(adminKey), "X-Kakao-Resource-ID: r-json"), "POST JSON")
	p = sharePayload(t, e, "r-json")
	args = argsOf(t, p)
	if *p.TemplateID != 678 || len(args) != 3 || args["n"] != 12.5 || args["flag"] != true ||
		args["nested"].(map[string]any)["a"].([]any)[1] != float64(2) {
		t.Fatalf("JSON payload %+v args %v", p, args)
	}
	if string(e.entry(ingress.TalkShareKey("r-json")).Raw) != body {
		t.Fatal("raw body not kept")
	}
}

// The same X-Kakao-Resource-ID is one delivery, answered 200 every time.
func TestTalkShareDuplicate(t *testing.T) {
	e := newWebhookEnv(t)
	q := ingress.PathTalkShare + "?CHAT_TYPE=DirectChat&HASH_CHAT_ID=h"
	for range 3 {
		expectOK(t, e.do(http.MethodGet, q, "", "", kakaoAuth(adminKey), "X-Kakao-Resource-ID: same"), "duplicate")
	}
	expectOK(t, e.do(http.MethodGet, q, "", "", kakaoAuth(adminKey), "X-Kakao-Resource-ID: other"), "other")
	if n := e.rows(); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

func TestTalkShareRefusals(t *testing.T) {
	e := newWebhookEnv(t, func(s *ingress.Server) { s.MaxBody = 512 })
	ok := ingress.PathTalkShare + "?CHAT_TYPE=MemoChat&HASH_CHAT_ID=h"
	rid := "X-Kakao-Resource-ID: r1"
	a := kakaoAuth(adminKey)
	if r := e.do(http.MethodGet, ok, "", "", rid); r.Status != http.StatusUnauthorized {
		t.Fatalf("no key: %d", r.Status)
	}
	if r := e.do(http.MethodGet, ok, "", "", rid, kakaoAuth("wrong-key-2")); r.Status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", r.Status)
	}
	for _, c := range []struct {
		name, method, path, ct, body string
		headers                      []string
		status                       int
		descPart                     string
	}{
		{"no resource id", http.MethodGet, ok, "", "", []string{a}, 400, "X-Kakao-Resource-ID"},
		{"control char in resource id", http.MethodGet, ok, "", "", []string{a, "X-Kakao-Resource-ID: a\tb"}, 400, "printable"},
		{"long resource id", http.MethodGet, ok, "", "", []string{a, "X-Kakao-Resource-ID: " + strings.Repeat("r", 201)}, 400, "printable"},
		{"missing CHAT_TYPE", http.MethodGet, ingress.PathTalkShare + "?HASH_CHAT_ID=h", "", "", []string{a, rid}, 400, "CHAT_TYPE"},
		{"missing HASH_CHAT_ID", http.MethodPost, ingress.PathTalkShare, "application/json", `{"CHAT_TYPE":"MemoChat"}`, []string{a, rid}, 400, "HASH_CHAT_ID"},
		{"TEMPLATE_ID not a number", http.MethodGet, ok + "&TEMPLATE_ID=abc", "", "", []string{a, rid}, 400, "TEMPLATE_ID"},
		{"TEMPLATE_ID fraction", http.MethodPost, ingress.PathTalkShare, "application/json", `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h","TEMPLATE_ID":1.5}`, []string{a, rid}, 400, "TEMPLATE_ID"},
		{"malformed JSON", http.MethodPost, ingress.PathTalkShare, "application/json", `{"CHAT_TYPE":}`, []string{a, rid}, 400, "JSON"},
		{"wrong content type", http.MethodPost, ingress.PathTalkShare, "application/xml", `<a/>`, []string{a, rid}, 415, "Content-Type"},
		{"oversize", http.MethodPost, ingress.PathTalkShare, "application/json", `{"CHAT_TYPE":"` + strings.Repeat("x", 600) + `"}`, []string{a, rid}, 413, "too large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectRefused(t, e.do(c.method, c.path, c.ct, c.body, c.headers...), c.status, "invalid_request", c.descPart)
		})
	}
	r := e.do(http.MethodDelete, ok, "", "", a, rid)
	if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, POST" {
		t.Fatalf("DELETE: %d Allow=%q", r.Status, r.Header.Get("Allow"))
	}
	if n := e.rows(); n != 0 {
		t.Fatalf("%d rows stored from refused requests", n)
	}
	// A lone surrogate or a NUL is normalised rather than failing the jsonb
	// write with a 503; the raw body keeps them.
	expectOK(t, e.do(http.MethodPost, ingress.PathTalkShare, "application/json",
		`{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h","x":"\ud800","y":["\u0000"]}`, a, rid), "lone surrogate and NUL")
	args := argsOf(t, sharePayload(t, e, "r1"))
	if args["x"] != "\uFFFD" || args["y"].([]any)[0] != "\uFFFD" {
		t.Fatalf("args %v", args)
	}
}

func channelEvent(t *testing.T, e *whEnv, resourceID string) (event.Envelope, talk.ChannelPayload) {
	t.Helper()
	en := e.entry(ingress.TalkChannelKey(resourceID))
	env := en.Envelope
	if env.Source != event.SourceTalkChannel || len(env.Events) != 1 || env.Events[0].Type != talk.TypeChannel {
		t.Fatalf("envelope %+v", env)
	}
	var p talk.ChannelPayload
	if err := json.Unmarshal(env.Events[0].Payload, &p); err != nil {
		t.Fatal(err)
	}
	return env, p
}

// Current and older member names, every timestamp form, and unknown event
// values are accepted and recorded; the event's time is Kakao's.
func TestTalkChannelFields(t *testing.T) {
	e := newWebhookEnv(t)
	post := func(rid, body string) {
		t.Helper()
		expectOK(t, e.do(http.MethodPost, ingress.PathTalkChannel, "application/json", body,
			kakaoAuth(adminKey), "X-Kakao-Resource-ID: "+rid), rid)
	}
	post("cur", `{"event":"added","id":"701541","id_type":"app_user_id","channel_public_id":"_ZeUTxl","channel_uuid":"@setflow","updated_at":"2025-04-16T07:53:17Z"}`)
	env, p := channelEvent(t, e, "cur")
	ev := env.Events[0]
	wantSub := event.Subject{Issuer: whIssuer, UserID: "701541", Format: "app_user_id"}
	wantTime := time.Date(2025, 4, 16, 7, 53, 17, 0, time.UTC)
	if ev.Name != "channel-added" || ev.Subject != wantSub || env.Subject != wantSub || !ev.Time.Equal(wantTime) ||
		p.ChannelPublicID != "_ZeUTxl" || p.ChannelUUID != "@setflow" || p.Legacy || p.TimeSource != "updated_at" {
		t.Fatalf("current fields: %+v %+v", ev, p)
	}

	// Older senders: plus_friend_* and timestamp in milliseconds, seconds, or as a string.
	for _, c := range []struct{ rid, ts string }{
		{"old-ms", `1744789997000`}, {"old-s", `1744789997`}, {"old-str", `"1744789997000"`}, {"old-rfc", `"2025-04-16T07:53:17+00:00"`},
	} {
		post(c.rid, `{"event":"blocked","id":"701541","id_type":"open_id","plus_friend_public_id":"_ZeUTxl","plus_friend_uuid":"@setflow","timestamp":`+c.ts+`}`)
		env, p := channelEvent(t, e, c.rid)
		if env.Events[0].Name != "channel-blocked" || !env.Events[0].Time.Equal(time.Unix(1744789997, 0)) ||
			p.ChannelPublicID != "_ZeUTxl" || p.ChannelUUID != "@setflow" || !p.Legacy || p.TimeSource != "timestamp" ||
			env.Subject.Format != "open_id" {
			t.Fatalf("%s: %+v %+v", c.rid, env.Events[0], p)
		}
	}

	// Unknown event value, no id_type, a uuid only, no time, and extra members.
	e.Clock.Set(time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC))
	post("odd", `{"event":"Deleted By Admin","id":7,"channel_uuid":"@only","new_member":{"x":1}}`)
	env, p = channelEvent(t, e, "odd")
	if env.Events[0].Name != "channel-deleted_by_admin" || p.Event != "Deleted By Admin" || p.IDType != "app_user_id" ||
		p.UserID != "7" || p.TimeSource != "received" || !p.UpdatedAt.Equal(e.Clock.Now()) || strings.ReplaceAll(string(p.Extra["new_member"]), " ", "") != `{"x":1}` {
		t.Fatalf("odd: %+v %+v", env.Events[0], p)
	}

	// Duplicate resource id: 200, still one row each.
	post("cur", `{"event":"added","id":"701541","channel_public_id":"_ZeUTxl","updated_at":"2025-04-16T07:53:17Z"}`)
	if n := e.rows(); n != 6 {
		t.Fatalf("%d rows, want 6", n)
	}
}

func TestTalkChannelRefusals(t *testing.T) {
	e := newWebhookEnv(t)
	a, rid := kakaoAuth(adminKey), "X-Kakao-Resource-ID: r1"
	good := `{"event":"added","id":"1","channel_public_id":"_c","updated_at":"2025-04-16T07:53:17Z"}`
	r := e.do(http.MethodGet, ingress.PathTalkChannel+"?event=added&id=1", "", "", a, rid)
	if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != http.MethodPost {
		t.Fatalf("GET: %d Allow=%q", r.Status, r.Header.Get("Allow"))
	}
	if r := e.do(http.MethodPost, ingress.PathTalkChannel, "application/json", good, rid); r.Status != http.StatusUnauthorized {
		t.Fatalf("no key: %d", r.Status)
	}
	if r := e.do(http.MethodPost, ingress.PathTalkChannel, "application/json", good, rid, kakaoAuth("wrong-key-3")); r.Status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", r.Status)
	}
	for _, c := range []struct {
		name, ct, body string
		headers        []string
		status         int
		descPart       string
	}{
		{"form", "application/x-www-form-urlencoded", "event=added&id=1", []string{a, rid}, 415, "application/json"},
		{"no resource id", "application/json", good, []string{a}, 400, "X-Kakao-Resource-ID"},
		{"malformed", "application/json", `{"event":"added",`, []string{a, rid}, 400, "JSON"},
		{"not an object", "application/json", `"added"`, []string{a, rid}, 400, "object"},
		{"missing event", "application/json", `{"id":"1","channel_public_id":"_c"}`, []string{a, rid}, 400, "event"},
		{"missing id", "application/json", `{"event":"added","channel_public_id":"_c"}`, []string{a, rid}, 400, "id"},
		{"missing channel", "application/json", `{"event":"added","id":"1"}`, []string{a, rid}, 400, "channel_public_id"},
		{"bad updated_at", "application/json", `{"event":"added","id":"1","channel_public_id":"_c","updated_at":"yesterday"}`, []string{a, rid}, 400, "updated_at"},
		{"bad timestamp", "application/json", `{"event":"added","id":"1","channel_public_id":"_c","timestamp":-5}`, []string{a, rid}, 400, "timestamp"},
		{"id is an array", "application/json", `{"event":"added","id":[1],"channel_public_id":"_c"}`, []string{a, rid}, 400, "id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectRefused(t, e.do(http.MethodPost, ingress.PathTalkChannel, c.ct, c.body, c.headers...), c.status, "invalid_request", c.descPart)
		})
	}
	if n := e.rows(); n != 0 {
		t.Fatalf("%d rows stored from refused requests", n)
	}
}
