package ingress_test

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
)

func unlinkKey(e *whEnv, user, referrer string) string {
	e.t.Helper()
	return mustUnlinkKey(e.t, ingress.Unlink{AppID: appID, UserID: user, ReferrerType: referrer}, e.Clock.Now(), 0)
}

func mustUnlinkKey(t *testing.T, u ingress.Unlink, at time.Time, window time.Duration) string {
	t.Helper()
	k, err := ingress.UnlinkKey([]byte(auditKey), u, at, window)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Each encoding Kakao may use is answered exactly 200 and stored as the same
// kind of envelope: the user-unlinked reaction, on a subject that matches the
// SET whIssuer's.
func TestUnlinkEncodings(t *testing.T) {
	e := newWebhookEnv(t)
	cases := []struct {
		name, method, path, contentType, body, user, referrer string
	}{
		{"GET query", http.MethodGet, ingress.PathUnlink + "?app_id=" + appID + "&user_id=701541&referrer_type=ACCOUNT_DELETE", "", "", "701541", "ACCOUNT_DELETE"},
		{"POST form", http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded; charset=utf-8",
			"app_id=" + appID + "&user_id=701542&referrer_type=UNLINK_FROM_APPS&group_user_token=gut-1", "701542", "UNLINK_FROM_APPS"},
		// JSON numbers for the ids, as a sender that serialises them natively would.
		{"POST JSON", http.MethodPost, ingress.PathUnlink, "application/json",
			`{"app_id": ` + appID + `, "user_id": 701543, "referrer_type": "FORCED_ACCOUNT_DELETE"}`, "701543", "FORCED_ACCOUNT_DELETE"},
	}
	for _, c := range cases {
		r := e.do(c.method, c.path, c.contentType, c.body, kakaoAuth(adminKey))
		expectOK(t, r, c.name)
		en := e.entry(unlinkKey(e, c.user, c.referrer))
		env := en.Envelope
		wantSub := event.Subject{Issuer: whIssuer, UserID: c.user, Format: "kakao_user_id"}
		if env.Source != event.SourceUnlink || env.Subject != wantSub || len(env.Events) != 1 {
			t.Fatalf("%s: envelope %+v", c.name, env)
		}
		ev := env.Events[0]
		if ev.Type != "kakao:unlink-webhook" || ev.Name != "user-unlinked" || ev.Category != "kakao-webhook" ||
			ev.Subject != wantSub || !ev.Time.Equal(e.Clock.Now()) {
			t.Fatalf("%s: event %+v", c.name, ev)
		}
		p := whPayload(t, ev.Payload)
		if p["app_id"] != appID || p["referrer_type"] != c.referrer || p["user_id"] != nil {
			t.Fatalf("%s: payload %v", c.name, p)
		}
		if strings.HasPrefix(c.name, "POST form") && p["group_user_token"] != "gut-1" {
			t.Fatalf("%s: group_user_token not kept: %v", c.name, p)
		}
		wantRaw := c.body
		if c.method == http.MethodGet {
			wantRaw = strings.SplitN(c.path, "?", 2)[1]
		}
		if string(en.Raw) != wantRaw {
			t.Fatalf("%s: raw %q, want %q", c.name, en.Raw, wantRaw)
		}
	}
	if n := e.rows(); n != 3 {
		t.Fatalf("%d inbox rows, want 3", n)
	}
}

// The admin key is required and compared against every configured key; the
// app_id must be ours. Nothing is stored for a refused delivery, and no key
// reaches the logs (checked by newWebhookEnv's cleanup).
func TestUnlinkAuthentication(t *testing.T) {
	e := newWebhookEnv(t)
	q := ingress.PathUnlink + "?app_id=" + appID + "&user_id=42&referrer_type=UNLINK_FROM_APPS"
	for _, c := range []struct {
		name   string
		header []string
	}{
		{"missing", nil},
		{"wrong key", []string{kakaoAuth("wrong-key-1")}},
		{"key prefix", []string{kakaoAuth(adminKey[:10])}},
		{"key with suffix", []string{kakaoAuth(adminKey + "x")}},
		{"bearer scheme", []string{"Authorization: Bearer " + adminKey}},
		{"scheme without key", []string{"Authorization: KakaoAK"}},
	} {
		r := e.do(http.MethodGet, q, "", "", c.header...)
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("%s: got %d, want 401", c.name, r.Status)
		}
		if code, _ := r.errBody(t); code != "authentication_failed" || r.Header.Get("WWW-Authenticate") != "KakaoAK" {
			t.Fatalf("%s: err %q, WWW-Authenticate %q", c.name, code, r.Header.Get("WWW-Authenticate"))
		}
	}
	if n := e.rows(); n != 0 {
		t.Fatalf("%d rows stored from refused requests", n)
	}
	// The second key of a rotation works, and so does a lower-case scheme.
	expectOK(t, e.do(http.MethodGet, q, "", "", kakaoAuth(rotatedKey)), "rotated key")
	expectOK(t, e.do(http.MethodGet, strings.Replace(q, "user_id=42", "user_id=43", 1), "", "", "Authorization: kakaoak "+adminKey), "lower-case scheme")

	// Right key, another app's id.
	other := strings.Replace(q, "app_id="+appID, "app_id=999", 1)
	expectRefused(t, e.do(http.MethodGet, other, "", "", kakaoAuth(adminKey)), http.StatusUnauthorized, "authentication_failed", "app_id")
	if n := e.rows(); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

// With no admin key configured, the route refuses everything.
func TestUnlinkWithoutConfiguredKeys(t *testing.T) {
	e := newWebhookEnv(t, func(s *ingress.Server) { s.Kakao.AdminKeys = nil })
	r := e.do(http.MethodGet, ingress.PathUnlink+"?app_id="+appID+"&user_id=1", "", "", "Authorization: KakaoAK ")
	expectRefused(t, r, http.StatusUnauthorized, "authentication_failed", "no admin key")
	if e.rows() != 0 {
		t.Fatal("stored without a configured key")
	}
}

// The dedupe key is an HMAC under the audit key: it (and the workflow id made
// from it) does not show the user id, changes with the key, and there is no
// unkeyed fallback.
func TestUnlinkKeyIsKeyed(t *testing.T) {
	at := time.Date(2025, 4, 16, 8, 0, 30, 0, time.UTC)
	u := ingress.Unlink{AppID: appID, UserID: "4242424242", ReferrerType: "UNLINK_FROM_APPS"}
	k1, err := ingress.UnlinkKey([]byte("key-one"), u, at, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k1, "unlink:") || len(k1) != len("unlink:")+64 || strings.Contains(k1, u.UserID) {
		t.Fatalf("key %q: want unlink: + 64 hex digits, without the user id", k1)
	}
	if again, _ := ingress.UnlinkKey([]byte("key-one"), u, at.Add(29*time.Second), time.Minute); again != k1 {
		t.Fatal("same inputs in the same bucket give another key")
	}
	k2, _ := ingress.UnlinkKey([]byte("key-two"), u, at, time.Minute)
	if k2 == k1 {
		t.Fatal("the key does not depend on the HMAC key")
	}
	for name, v := range map[string]ingress.Unlink{
		"user":     {AppID: appID, UserID: "4242424243", ReferrerType: u.ReferrerType},
		"referrer": {AppID: appID, UserID: u.UserID, ReferrerType: "ACCOUNT_DELETE"},
		"app":      {AppID: "7654321", UserID: u.UserID, ReferrerType: u.ReferrerType},
	} {
		if k, _ := ingress.UnlinkKey([]byte("key-one"), v, at, time.Minute); k == k1 {
			t.Fatalf("another %s gives the same key", name)
		}
	}
	if k, _ := ingress.UnlinkKey([]byte("key-one"), u, at.Add(30*time.Second), time.Minute); k == k1 {
		t.Fatal("the next bucket gives the same key")
	}
	if k, _ := ingress.UnlinkKey([]byte("key-one"), u, at, 2*time.Minute); k == k1 {
		t.Fatal("another window length gives the same key")
	}
	if k, err := ingress.UnlinkKey(nil, u, at, time.Minute); !errors.Is(err, ingress.ErrNoKeyHash) || k != "" {
		t.Fatalf("without a key: %q, %v; want ErrNoKeyHash", k, err)
	}
	if err := (&ingress.Kakao{}).Validate(); !errors.Is(err, ingress.ErrNoKeyHash) {
		t.Fatalf("Validate without KeyHash: %v", err)
	}
	if err := (&ingress.Kakao{KeyHash: []byte("k")}).Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if ingress.DefaultUnlinkWindow != time.Minute {
		t.Fatalf("DefaultUnlinkWindow %v, want one minute", ingress.DefaultUnlinkWindow)
	}
}

// A server built without KeyHash stores nothing and answers 503, never an
// unkeyed key.
func TestUnlinkWithoutKeyHash(t *testing.T) {
	mem := inbox.NewMemory()
	srv := &ingress.Server{Inbox: mem, Log: slog.New(slog.DiscardHandler),
		Kakao: ingress.Kakao{AdminKeys: []string{adminKey}, AppID: appID}}
	req := httptest.NewRequest(http.MethodGet, ingress.PathUnlink+"?app_id="+appID+"&user_id=1", nil)
	req.Header.Set("Authorization", "KakaoAK "+adminKey)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || mem.Len() != 0 {
		t.Fatalf("got %d with %d entries, want 503 and nothing stored", rec.Code, mem.Len())
	}
}

// Exact repeats within the window (default one minute) of the stored
// delivery are one delivery, answered 200 each time, also across a bucket
// boundary; past the window — a real unlink after a re-link — a repeat is a
// new delivery under a new key. Another referrer type is another delivery.
// Unknown referrer types are accepted.
func TestUnlinkDuplicatesAndWindow(t *testing.T) {
	e := newWebhookEnv(t)
	at := func(m, s, ms int) time.Time {
		return time.Date(2025, 4, 16, 8, m, s, ms*int(time.Millisecond), time.UTC)
	}
	form := url.Values{"app_id": {appID}, "user_id": {"777"}, "referrer_type": {"SOMETHING_NEW"}}.Encode()
	u := ingress.Unlink{AppID: appID, UserID: "777", ReferrerType: "SOMETHING_NEW"}
	send := func(when time.Time, body string, wantRows int, what string) {
		t.Helper()
		e.Clock.Set(when)
		expectOK(t, e.do(http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded", body, kakaoAuth(adminKey)), what)
		if n := e.rows(); n != wantRows {
			t.Fatalf("%s: %d rows, want %d", what, n, wantRows)
		}
	}
	send(at(0, 50, 0), form, 1, "first delivery")
	send(at(0, 59, 0), form, 1, "repeat in the same bucket")
	send(at(1, 10, 0), form, 1, "repeat just across the bucket boundary")
	send(at(1, 49, 999), form, 1, "repeat at the end of the window")
	first := e.entry(mustUnlinkKey(t, u, at(0, 50, 0), 0))
	if !first.Envelope.ReceivedAt.Equal(at(0, 50, 0)) {
		t.Fatalf("first delivery received at %v", first.Envelope.ReceivedAt)
	}
	if p := whPayload(t, first.Envelope.Events[0].Payload); p["referrer_type"] != "SOMETHING_NEW" {
		t.Fatalf("unknown referrer type not recorded: %v", p)
	}

	// One window after the stored delivery: a new unlink (say, after a re-link).
	send(at(1, 50, 0), form, 2, "second real unlink, one window later")
	second := mustUnlinkKey(t, u, at(1, 50, 0), 0)
	if second == first.Envelope.Key || !e.entry(second).Envelope.ReceivedAt.Equal(at(1, 50, 0)) {
		t.Fatalf("second unlink not stored under its own key %s", second)
	}
	// The window now runs from the second delivery.
	send(at(1, 55, 0), form, 2, "repeat of the second, same bucket")
	send(at(2, 30, 0), form, 2, "repeat of the second, next bucket")
	send(at(2, 50, 0), form, 3, "third unlink, one window after the second")
	send(at(5, 0, 0), form, 4, "a repeat minutes later")

	// Another referrer type for the same user is another event.
	other := url.Values{"app_id": {appID}, "user_id": {"777"}, "referrer_type": {"ACCOUNT_DELETE"}}.Encode()
	send(at(5, 1, 0), other, 5, "other referrer type")
	send(at(5, 2, 0), form, 5, "repeat beside another referrer type")

	// Keys never show the user id.
	var keys []string
	if err := e.DB.Select(&keys, `SELECT dedupe_key FROM setflow_inbox`); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "unlink:") || strings.Contains(k, "777") {
			t.Fatalf("dedupe key %q", k)
		}
	}
	// Without a referrer type at all.
	expectOK(t, e.do(http.MethodGet, ingress.PathUnlink+"?app_id="+appID+"&user_id=778", "", "", kakaoAuth(adminKey)), "no referrer type")
}

// A configured window other than the default slides the same way; the same
// logic runs on the in-memory inbox.
func TestUnlinkConfiguredWindowOnMemoryInbox(t *testing.T) {
	mem := inbox.NewMemory()
	var now time.Time
	srv := &ingress.Server{Inbox: mem, Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
		Kakao: ingress.Kakao{AdminKeys: []string{adminKey}, AppID: appID, KeyHash: []byte(auditKey), UnlinkWindow: 10 * time.Minute}}
	h := srv.Handler()
	base := time.Date(2025, 4, 16, 8, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		after    time.Duration
		referrer string
		want     int
	}{
		{9 * time.Minute, "UNLINK_FROM_APPS", 1},  // 08:09, first
		{12 * time.Minute, "UNLINK_FROM_APPS", 1}, // 08:12, next bucket, 3 min later
		{18 * time.Minute, "UNLINK_FROM_APPS", 1}, // 08:18, 9 min later
		{18 * time.Minute, "ACCOUNT_DELETE", 2},   // another referrer type
		{19 * time.Minute, "UNLINK_FROM_APPS", 3}, // 08:19, the window has passed
		{28 * time.Minute, "UNLINK_FROM_APPS", 3}, // 08:28, 9 min after the new one
		{29 * time.Minute, "UNLINK_FROM_APPS", 4}, // 08:29
	} {
		now = base.Add(c.after)
		req := httptest.NewRequest(http.MethodGet, ingress.PathUnlink+"?app_id="+appID+"&user_id=9&referrer_type="+c.referrer, nil)
		req.Header.Set("Authorization", "KakaoAK "+adminKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || mem.Len() != c.want {
			t.Fatalf("+%v %s: %d with %d entries, want 200 with %d", c.after, c.referrer, rec.Code, mem.Len(), c.want)
		}
	}
}

func TestUnlinkBadInput(t *testing.T) {
	e := newWebhookEnv(t, func(s *ingress.Server) { s.MaxBody = 256 })
	a := kakaoAuth(adminKey)
	cases := []struct {
		name, method, path, ct, body string
		status                       int
		descPart                     string
	}{
		{"missing user_id", http.MethodGet, ingress.PathUnlink + "?app_id=" + appID, "", "", 400, "user_id"},
		{"missing app_id", http.MethodPost, ingress.PathUnlink, "application/json", `{"user_id":"1"}`, 400, "app_id"},
		{"missing both", http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded", "referrer_type=X", 400, "app_id and user_id"},
		{"empty user_id", http.MethodGet, ingress.PathUnlink + "?app_id=" + appID + "&user_id=", "", "", 400, "user_id"},
		{"object user_id", http.MethodPost, ingress.PathUnlink, "application/json", `{"app_id":"` + appID + `","user_id":{"id":1}}`, 400, "user_id"},
		{"repeated user_id", http.MethodGet, ingress.PathUnlink + "?app_id=" + appID + "&user_id=1&user_id=2", "", "", 400, "user_id"},
		{"malformed JSON", http.MethodPost, ingress.PathUnlink, "application/json", `{"app_id":`, 400, "JSON"},
		{"JSON array", http.MethodPost, ingress.PathUnlink, "application/json", `[1,2]`, 400, "object"},
		{"two JSON values", http.MethodPost, ingress.PathUnlink, "application/json", `{"a":1} {"b":2}`, 400, "more than one"},
		{"NUL in user_id", http.MethodPost, ingress.PathUnlink, "application/json", `{"app_id":"` + appID + `","user_id":"1\u0000"}`, 400, "user_id"},
		{"malformed form", http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded", "app_id=%zz&user_id=1", 400, "malformed"},
		{"malformed query", http.MethodGet, ingress.PathUnlink + "?app_id=%zz", "", "", 400, "malformed"},
		{"empty body", http.MethodPost, ingress.PathUnlink, "application/json", "", 400, "empty"},
		{"text body", http.MethodPost, ingress.PathUnlink, "text/plain", "app_id=1&user_id=2", 415, "Content-Type"},
		{"no content type", http.MethodPost, ingress.PathUnlink, "", `{"app_id":"1"}`, 415, "Content-Type"},
		{"oversize", http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded", "app_id=" + appID + "&user_id=1&pad=" + strings.Repeat("x", 300), 413, "too large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectRefused(t, e.do(c.method, c.path, c.ct, c.body, a), c.status, "invalid_request", c.descPart)
		})
	}
	r := e.do(http.MethodPut, ingress.PathUnlink, "application/json", `{}`, a)
	expectRefused(t, r, http.StatusMethodNotAllowed, "invalid_request", "GET or POST")
	if allow := r.Header.Get("Allow"); allow != "GET, POST" {
		t.Fatalf("Allow %q", allow)
	}
	if n := e.rows(); n != 0 {
		t.Fatalf("%d rows stored from bad requests", n)
	}
	// A POST without a body but with the query string is read from the query.
	expectOK(t, e.do(http.MethodPost, ingress.PathUnlink+"?app_id="+appID+"&user_id=5", "", "", a), "POST with query")
}
