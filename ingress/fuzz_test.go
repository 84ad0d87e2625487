package ingress_test

// HTTP-level fuzz targets, one per route, against the real Postgres inbox:
// whatever the request, the answer is never a 5xx while Postgres is up; a 2xx
// means exactly one new row was stored, a 4xx that nothing was. Every input
// is made unique per iteration (jti, resource id, the unlink clock), so an
// accepted request is never a duplicate of an earlier one.
//
// deployments/local/test.sh runs each briefly (SETFLOW_FUZZTIME, 10 s); the
// seeds run with every go test.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/secevent"
)

type fuzzEnv struct {
	inbox *inbox.Postgres
	rowsQ func() (int, error)
	h     http.Handler
	clock *whClock
	seq   atomic.Int64
	sign  func(payload []byte) (string, error)
}

// newFuzzEnv starts the ingress on a fresh database, shared by every
// iteration of one fuzzing process. SETs are verified with a static ES256
// key (signing with RSA would cost most of each iteration).
func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	db, _ := testenv.Database(f)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	const kid = "fuzz-es256"
	keys, err := secevent.NewStaticKeys(asIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &priv.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}}})
	if err != nil {
		f.Fatal(err)
	}
	v, err := secevent.NewVerifier(secevent.Config{Issuer: asIssuer, Audiences: []string{asAudience}, Keys: keys,
		Algorithms: []jose.SignatureAlgorithm{jose.ES256}})
	if err != nil {
		f.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: priv},
		(&jose.SignerOptions{}).WithType("secevent+jwt").WithHeader("kid", kid))
	if err != nil {
		f.Fatal(err)
	}
	clk := &whClock{t: time.Date(2025, 4, 16, 7, 53, 17, 0, time.UTC)}
	srv := &ingress.Server{
		Inbox: inbox.NewPostgres(db),
		SETs:  v,
		Log:   slog.New(slog.DiscardHandler),
		Now:   clk.Now,
		Kakao: ingress.Kakao{AdminKeys: []string{adminKey}, AppID: appID, Issuer: whIssuer, KeyHash: []byte(auditKey)},
		// Generous: a loaded CI machine must not turn a slow insert into a 503.
		StoreTimeout: 10 * time.Second,
		Deadline:     20 * time.Second,
	}
	return &fuzzEnv{
		inbox: inbox.NewPostgres(db),
		rowsQ: func() (int, error) {
			var n int
			err := db.Get(&n, `SELECT count(*) FROM setflow_inbox`)
			return n, err
		},
		h:     srv.Handler(),
		clock: clk,
		sign: func(payload []byte) (string, error) {
			jws, err := signer.Sign(payload)
			if err != nil {
				return "", err
			}
			return jws.CompactSerialize()
		},
	}
}

// next returns a number unique to this iteration and moves the clock two
// unlink windows on, so that no unlink is a repeat of an earlier one.
func (fe *fuzzEnv) next() int64 {
	fe.clock.Set(fe.clock.Now().Add(2 * ingress.DefaultUnlinkWindow))
	return fe.seq.Add(1)
}

// check serves req and asserts the invariants.
func (fe *fuzzEnv) check(t *testing.T, req *http.Request) {
	t.Helper()
	before, err := fe.rowsQ()
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	fe.h.ServeHTTP(rec, req)
	after, err := fe.rowsQ()
	if err != nil {
		t.Fatal(err)
	}
	switch code := rec.Code; {
	case code >= 500:
		t.Fatalf("%s %s: %d %s while Postgres is up", req.Method, req.URL.Path, code, rec.Body.String())
	case code >= 200 && code < 300:
		if after != before+1 {
			t.Fatalf("%s %s: %d but %d new rows, want exactly 1", req.Method, req.URL.Path, code, after-before)
		}
	case code >= 400:
		if after != before {
			t.Fatalf("%s %s: %d but %d new rows, want none", req.Method, req.URL.Path, code, after-before)
		}
	default:
		t.Fatalf("%s %s: unexpected status %d", req.Method, req.URL.Path, code)
	}
}

// newFuzzRequest builds a request to path. method selects GET or POST; a
// query that does not parse as a URL is sent as a path-only request.
func newFuzzRequest(method bool, path, query, contentType string, body []byte) *http.Request {
	m := http.MethodPost
	if method {
		m = http.MethodGet
	}
	req := httptest.NewRequest(m, path, strings.NewReader(string(body)))
	req.URL.RawQuery = query
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// FuzzAccountStatus signs fuzzed claims and a fuzzed event (as raw JSON
// text, so escapes, numbers and nesting reach the verifier as written) and
// posts the token.
func FuzzAccountStatus(f *testing.F) {
	fe := newFuzzEnv(f)
	subj := `{"subject_type":"iss-sub","iss":"` + asIssuer + `","sub":"701541"}`
	for _, s := range []struct{ claims, typ, ev string }{
		{`"sub":"701541",`, `"` + asRISC + `account-disabled"`, `{"subject":` + subj + `,"reason":"hijacking"}`},
		{`"sub":"701541",`, `"` + asRISC + `account-credential-change-required"`, `{"subject":` + subj + `,"nickname":"a\u0000b"}`},
		{`"sub":"7015\u0000",`, `"` + asRISC + `account-disabled"`, `{"subject":{"subject_type":"iss-sub","iss":"` + asIssuer + `","sub":"7015\u0000"}}`},
		{`"txm":"\ud800",`, `"` + asRISC + `account-purged"`, `{"subject":` + subj + `,"x":"\udc00\ud800","n":1e999999,"m":-1e-99999}`},
		{`"x":` + strings.Repeat("[", 30) + strings.Repeat("]", 30) + `,`, `"https://schemas.openid.net/secevent/oauth/event-type/user-linked"`, `{"subject":` + subj + `,"unknown":{"a":[1,2,{"b":null}]}}`},
		{`"sub":"1","toe":1744789997,`, `"https://schemas.openid.net/secevent/caep/event-type/session-revoked"`, `{"subject":` + subj + `,"event_timestamp":1744789997123}`},
		{`"sub":1,`, `"a"`, `{}`},
		{``, `"` + asRISC + `account-disabled\u0000"`, `{"subject":` + subj + `}`},
	} {
		f.Add(s.claims, s.typ, s.ev)
	}
	f.Fuzz(func(t *testing.T, claims, typ, ev string) {
		n := fe.next()
		payload := fmt.Sprintf(`{"iss":%q,"aud":%q,"iat":%d,"jti":"fz-%d",%s"events":{%s:%s}}`,
			asIssuer, asAudience, time.Now().Unix(), n, claims, typ, ev)
		tok, err := fe.sign([]byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		fe.check(t, newFuzzRequest(false, ingress.PathAccountStatus, "", ingress.SETContentType, []byte(tok)))
	})
}

// FuzzUnlink fuzzes the method, query string, Content-Type, body and the
// Authorization header of the unlink webhook.
func FuzzUnlink(f *testing.F) {
	fe := newFuzzEnv(f)
	ok := "KakaoAK " + adminKey
	for _, s := range []struct {
		get             bool
		query, ct, body string
		auth            string
	}{
		{true, "app_id=" + appID + "&user_id=701541&referrer_type=UNLINK_FROM_APPS", "", "", ok},
		{false, "", "application/x-www-form-urlencoded", "app_id=" + appID + "&user_id=701542&group_user_token=g%00", ok},
		{false, "", "application/json", `{"app_id":` + appID + `,"user_id":701543,"referrer_type":"\u0000\ud800","x":1e999999}`, ok},
		{false, "tenant=a", "application/json", `{"app_id":"` + appID + `","user_id":"1","user_id":"2"}`, ok},
		{false, "user_id=2", "application/x-www-form-urlencoded", "app_id=" + appID + "&user_id=1", ok},
		{true, "app_id=" + appID + "&user_id=1&user_id=1", "", "", "kakaoak " + adminKey},
		{true, "app_id=" + appID + "&user_id=%ff", "", "", ok},
		{false, "app_id=" + appID + "&user_id=5", "application/json", "", ok},
		{false, "", "application/json", `{"app_id":"` + appID + `","user_id":"1","deep":` + strings.Repeat("[", 400) + strings.Repeat("]", 400) + `}`, ok},
		{true, "app_id=" + appID + "&user_id=1", "", "", "KakaoAK wrong"},
	} {
		f.Add(s.get, s.query, s.ct, []byte(s.body), s.auth)
	}
	f.Fuzz(func(t *testing.T, get bool, query, ct string, body []byte, auth string) {
		fe.next()
		req := newFuzzRequest(get, ingress.PathUnlink, query, ct, body)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		fe.check(t, req)
	})
}

// FuzzTalkShare fuzzes the method, query string, Content-Type, body and the
// resource id (made unique by a per-iteration prefix).
func FuzzTalkShare(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range []struct {
		get             bool
		query, ct, body string
		rid             string
	}{
		{true, "CHAT_TYPE=MemoChat&HASH_CHAT_ID=h&TEMPLATE_ID=12&campaign=spring&ref=a&ref=b", "", "", "r"},
		{false, "", "application/x-www-form-urlencoded", "CHAT_TYPE=DirectChat&HASH_CHAT_ID=h&x=%00", "r"},
		{false, "", "application/json", `{"CHAT_TYPE":"Open\u0000Chat","HASH_CHAT_ID":"\udfff","TEMPLATE_ID":1,"a":1e999999,"b":` +
			strings.Repeat("[", 300) + strings.Repeat("]", 300) + `,"c":{"d":[true,null,"\ud800"]}}`, " r "},
		{false, "CHAT_TYPE=x", "application/json", `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h"}`, "r"},
		{false, "", "application/json", `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h","x":{"a":1,"a":2}}`, "r"},
		{true, "CHAT_TYPE=MemoChat&HASH_CHAT_ID=h&TEMPLATE_ID=99999999999999999999", "", "", "r\xff"},
		{false, "", "application/json", `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h","TEMPLATE_ID":1e3}`, strings.Repeat("r", 300)},
	} {
		f.Add(s.get, s.query, s.ct, []byte(s.body), s.rid)
	}
	f.Fuzz(func(t *testing.T, get bool, query, ct string, body []byte, rid string) {
		n := fe.next()
		req := newFuzzRequest(get, ingress.PathTalkShare, query, ct, body)
		req.Header.Set("Authorization", "KakaoAK "+adminKey)
		req.Header.Set(ingress.ResourceIDHeader, fmt.Sprintf("fz%d-%s", n, rid))
		fe.check(t, req)
	})
}

// FuzzTalkChannel fuzzes the Content-Type, body and the resource id of the
// Talk Channel webhook (POST JSON only).
func FuzzTalkChannel(f *testing.F) {
	fe := newFuzzEnv(f)
	for _, s := range []struct{ ct, body, rid string }{
		{"application/json", `{"event":"added","id":"701541","id_type":"app_user_id","channel_public_id":"_ZeUTxl","channel_uuid":"@s","updated_at":"2025-04-16T07:53:17Z"}`, "r"},
		{"application/json", `{"event":"blocked","id":701541,"plus_friend_public_id":"_Ze","timestamp":1744789997000}`, "r"},
		{"application/json", `{"event":"Deleted\u0000","id":"7","channel_uuid":"@x","timestamp":"1744789997","extra":{"n":1e131072,"s":"\ud800"}}`, "r"},
		{"application/json", `{"event":"added","id":"7","channel_uuid":"@x","updated_at":"9999-12-31T23:59:59-23:59"}`, "r"},
		{"application/json", `{"event":"added","id":"7\u0000","channel_uuid":"@x"}`, "r"},
		{"application/json; charset=utf-8", `{"event":"added","event":"blocked","id":"7","channel_uuid":"@x"}`, "r"},
		{"application/x-www-form-urlencoded", `event=added&id=7&channel_uuid=@x`, "r"},
		{"application/json", `{"event":"added","id":"7","channel_uuid":"@x","timestamp":1e14}`, "r"},
	} {
		f.Add(s.ct, []byte(s.body), s.rid)
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte, rid string) {
		n := fe.next()
		req := newFuzzRequest(false, ingress.PathTalkChannel, "", ct, body)
		req.Header.Set("Authorization", "KakaoAK "+adminKey)
		req.Header.Set(ingress.ResourceIDHeader, fmt.Sprintf("fz%d-%s", n, rid))
		fe.check(t, req)
	})
}
