package ingress_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/ingress"
)

func unlinkKey(e *whEnv, user, referrer string) string {
	return ingress.UnlinkKey(ingress.Unlink{AppID: appID, UserID: user, ReferrerType: referrer}, e.Clock.Now(), time.Hour)
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

// Repeats within the window are one delivery, answered 200 each time; after
// the window a new delivery is stored. Unknown referrer types are accepted.
func TestUnlinkDuplicatesAndWindow(t *testing.T) {
	e := newWebhookEnv(t, func(s *ingress.Server) { s.Kakao.UnlinkWindow = 10 * time.Minute })
	e.Clock.Set(time.Date(2025, 4, 16, 8, 0, 0, 0, time.UTC))
	form := url.Values{"app_id": {appID}, "user_id": {"777"}, "referrer_type": {"SOMETHING_NEW"}}.Encode()
	for i := range 3 {
		expectOK(t, e.do(http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded", form, kakaoAuth(adminKey)), "repeat")
		e.Clock.Set(e.Clock.Now().Add(2 * time.Minute)) // 08:00, 08:02, 08:04: one bucket
		_ = i
	}
	if n := e.rows(); n != 1 {
		t.Fatalf("%d rows after three repeats in one window, want 1", n)
	}
	key := ingress.UnlinkKey(ingress.Unlink{AppID: appID, UserID: "777", ReferrerType: "SOMETHING_NEW"},
		time.Date(2025, 4, 16, 8, 0, 0, 0, time.UTC), 10*time.Minute)
	if p := whPayload(t, e.entry(key).Envelope.Events[0].Payload); p["referrer_type"] != "SOMETHING_NEW" {
		t.Fatalf("unknown referrer type not recorded: %v", p)
	}
	// Another referrer type for the same user is another event.
	other := url.Values{"app_id": {appID}, "user_id": {"777"}, "referrer_type": {"ACCOUNT_DELETE"}}.Encode()
	expectOK(t, e.do(http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded", other, kakaoAuth(adminKey)), "other referrer")
	// The next window.
	e.Clock.Set(time.Date(2025, 4, 16, 8, 10, 0, 0, time.UTC))
	expectOK(t, e.do(http.MethodPost, ingress.PathUnlink, "application/x-www-form-urlencoded", form, kakaoAuth(adminKey)), "next window")
	if n := e.rows(); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
	// Without a referrer type at all.
	expectOK(t, e.do(http.MethodGet, ingress.PathUnlink+"?app_id="+appID+"&user_id=778", "", "", kakaoAuth(adminKey)), "no referrer type")
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
		{"NUL in JSON", http.MethodPost, ingress.PathUnlink, "application/json", `{"app_id":"` + appID + `","user_id":"1\u0000"}`, 400, "NUL"},
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
