package ingress_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/kakaoapi"
)

func cidrs(t *testing.T, s ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, v := range s {
		out = append(out, netip.MustParsePrefix(v))
	}
	return out
}

const unlinkQuery = ingress.PathUnlink + "?app_id=" + appID + "&user_id=1"

// The test client connects from 127.0.0.1: listing it admits the request,
// listing only other networks refuses it with 403 and the RFC 8935 body, on
// every webhook route including the SET route, while health checks stay open.
func TestAllowlistDirectPeer(t *testing.T) {
	allowed := newWebhookEnv(t, func(s *ingress.Server) {
		s.Allowlist = &ingress.IPAllowlist{Static: cidrs(t, "127.0.0.1/32")}
	})
	expectOK(t, allowed.do(http.MethodGet, unlinkQuery, "", "", kakaoAuth(adminKey)), "listed peer")

	denied := newWebhookEnv(t, func(s *ingress.Server) {
		s.Allowlist = &ingress.IPAllowlist{Static: cidrs(t, "10.0.0.0/8", "::1/128")}
	})
	expectRefused(t, denied.do(http.MethodGet, unlinkQuery, "", "", kakaoAuth(adminKey)), http.StatusForbidden, "access_denied", "not allowed")
	expectRefused(t, denied.do(http.MethodPost, ingress.PathAccountStatus, ingress.SETContentType, "x.y.z"), http.StatusForbidden, "access_denied", "not allowed")
	expectRefused(t, denied.do(http.MethodPost, ingress.PathTalkChannel, "application/json", `{}`, kakaoAuth(adminKey)), http.StatusForbidden, "access_denied", "")
	if r := denied.do(http.MethodGet, "/healthz", "", ""); r.Status != http.StatusOK {
		t.Fatalf("/healthz behind the allowlist: %d", r.Status)
	}
	if denied.rows() != 0 {
		t.Fatal("a denied request was stored")
	}
	// An allowlist with nothing in it fails closed.
	empty := newWebhookEnv(t, func(s *ingress.Server) { s.Allowlist = &ingress.IPAllowlist{} })
	if r := empty.do(http.MethodGet, unlinkQuery, "", "", kakaoAuth(adminKey)); r.Status != http.StatusForbidden {
		t.Fatalf("empty allowlist: %d, want 403", r.Status)
	}
}

// X-Forwarded-For is believed only from a trusted proxy, read from the right.
func TestAllowlistForwardedFor(t *testing.T) {
	kakao := "203.0.113.0/24"
	trusted := newWebhookEnv(t, func(s *ingress.Server) {
		s.Allowlist = &ingress.IPAllowlist{Static: cidrs(t, kakao), Trusted: cidrs(t, "127.0.0.1/32", "10.0.0.0/8")}
	})
	for _, c := range []struct {
		name string
		xff  []string
		want int
	}{
		{"kakao behind the proxy", []string{"203.0.113.5"}, 200},
		{"client-written entries on the left are ignored", []string{"198.51.100.7, 203.0.113.5"}, 200},
		{"spoofed kakao address on the left", []string{"203.0.113.5, 198.51.100.7"}, 403},
		{"two trusted hops", []string{"203.0.113.5, 10.1.2.3"}, 200},
		{"several header lines", []string{"198.51.100.7", "203.0.113.5, 10.1.2.3"}, 200},
		{"with a port", []string{"203.0.113.5:4711"}, 200},
		{"garbage from the proxy", []string{"203.0.113.5, not-an-ip"}, 403},
		{"no header: the proxy itself", nil, 403},
	} {
		var h []string
		for _, x := range c.xff {
			h = append(h, "X-Forwarded-For: "+x)
		}
		r := trusted.do(http.MethodGet, unlinkQuery, "", "", append(h, kakaoAuth(adminKey))...)
		if r.Status != c.want {
			t.Errorf("%s: got %d, want %d", c.name, r.Status, c.want)
		}
	}
	// The same header from a peer that is not a trusted proxy is ignored.
	untrusted := newWebhookEnv(t, func(s *ingress.Server) {
		s.Allowlist = &ingress.IPAllowlist{Static: cidrs(t, kakao), Trusted: cidrs(t, "10.0.0.0/8")}
	})
	if r := untrusted.do(http.MethodGet, unlinkQuery, "", "", "X-Forwarded-For: 203.0.113.5", kakaoAuth(adminKey)); r.Status != http.StatusForbidden {
		t.Fatalf("XFF from an untrusted peer was believed: %d", r.Status)
	}
}

// kakaoIPAPI stands in for GET /v1/system/ips: it checks the key and answers
// what the test sets.
type kakaoIPAPI struct {
	mu     sync.Mutex
	status int
	body   string
	calls  atomic.Int32
}

func (k *kakaoIPAPI) set(status int, body string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.status, k.body = status, body
}

func (k *kakaoIPAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.calls.Add(1)
	if r.URL.Path != "/v1/system/ips" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "KakaoAK "+adminKey {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"msg":"wrong appKey","code":-401}`))
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(k.status)
	_, _ = w.Write([]byte(k.body))
}

const ipList1 = `{
  "inbound": [
    {"type": "callback", "ips": ["127.0.0.1", "203.0.113.0/28"]},
    {"type": "scrap", "ips": ["198.51.100.1"]}
  ],
  "outbound": [{"domain": "https://kapi.kakao.com", "ips": ["192.0.2.1"]}],
  "updatedDate": "2025-04-01"
}`

func TestAllowlistRefreshFromKakao(t *testing.T) {
	api := &kakaoIPAPI{}
	api.set(http.StatusOK, ipList1)
	stand := httptest.NewServer(api)
	t.Cleanup(stand.Close)
	al := &ingress.IPAllowlist{Source: &kakaoapi.InboundIPs{BaseURL: stand.URL, Key: adminKey}}
	e := newWebhookEnv(t, func(s *ingress.Server) { s.Allowlist = al })
	ctx := context.Background()

	if r := e.do(http.MethodGet, unlinkQuery, "", "", kakaoAuth(adminKey)); r.Status != http.StatusForbidden {
		t.Fatalf("before the first refresh: %d, want 403", r.Status)
	}
	if err := al.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	expectOK(t, e.do(http.MethodGet, unlinkQuery, "", "", kakaoAuth(adminKey)), "after refresh")
	for addr, want := range map[string]bool{"127.0.0.1": true, "203.0.113.9": true, "203.0.113.16": false,
		"198.51.100.1": false /* scrap */, "192.0.2.1": false /* outbound */} {
		if got := al.Allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s allowed=%v, want %v", addr, got, want)
		}
	}

	// Failures keep the previous list: an error status, a changed format, no
	// callback entry, an empty list, a wrong key.
	for _, c := range []struct {
		status int
		body   string
	}{
		{http.StatusInternalServerError, `{"msg":"internal"}`},
		{http.StatusOK, `not json`},
		{http.StatusOK, `{"inbound": [{"type": "scrap", "ips": ["198.51.100.1"]}]}`},
		{http.StatusOK, `{"inbound": []}`},
		{http.StatusOK, `{"outbound": []}`},
	} {
		api.set(c.status, c.body)
		if err := al.Refresh(ctx); err == nil {
			t.Fatalf("refresh with %d %s succeeded", c.status, c.body)
		}
		expectOK(t, e.do(http.MethodGet, unlinkQuery, "", "", kakaoAuth(adminKey)), "previous list kept")
	}
	wrongKey := &ingress.IPAllowlist{Source: &kakaoapi.InboundIPs{BaseURL: stand.URL, Key: "wrong-key-4"}}
	if err := wrongKey.Refresh(ctx); err == nil {
		t.Fatal("refresh with a wrong key succeeded")
	}

	// A new list replaces the old one: 127.0.0.1 is gone.
	api.set(http.StatusOK, `{"inbound": [{"type": "CALLBACK", "ip": "203.0.113.77, 203.0.113.78"}]}`)
	if err := al.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if r := e.do(http.MethodGet, unlinkQuery, "", "", kakaoAuth(adminKey)); r.Status != http.StatusForbidden {
		t.Fatalf("after the list changed: %d, want 403", r.Status)
	}
	if !al.Allowed(netip.MustParseAddr("203.0.113.78")) || al.Allowed(netip.MustParseAddr("203.0.113.76")) {
		t.Fatalf("new list %v", al.Fetched())
	}
}

// Run keeps refreshing; while the API fails, the list stays.
func TestAllowlistRunKeepsRefreshing(t *testing.T) {
	api := &kakaoIPAPI{}
	api.set(http.StatusOK, ipList1)
	stand := httptest.NewServer(api)
	t.Cleanup(stand.Close)
	al := &ingress.IPAllowlist{Source: &kakaoapi.InboundIPs{BaseURL: stand.URL, Key: adminKey},
		Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); al.Run(ctx, 20*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for api.calls.Load() < 2 || len(al.Fetched()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("calls=%d fetched=%v", api.calls.Load(), al.Fetched())
		}
		time.Sleep(10 * time.Millisecond)
	}
	api.set(http.StatusBadGateway, "")
	n := api.calls.Load()
	for api.calls.Load() < n+2 {
		if time.Now().After(deadline) {
			t.Fatal("no refresh after a failure")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !al.Allowed(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("a failed refresh emptied the list")
	}
}

type sourceFunc func(context.Context) ([]netip.Prefix, error)

func (f sourceFunc) Fetch(ctx context.Context) ([]netip.Prefix, error) { return f(ctx) }

// Whatever the source, an error or an empty answer keeps the previous list.
func TestAllowlistRefreshKeepsListOnEmptyOrError(t *testing.T) {
	var answer []netip.Prefix
	var fail error
	al := &ingress.IPAllowlist{Source: sourceFunc(func(context.Context) ([]netip.Prefix, error) { return answer, fail })}
	answer = cidrs(t, "192.0.2.0/24")
	if err := al.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	answer = nil
	if err := al.Refresh(t.Context()); err == nil {
		t.Fatal("an empty list was accepted")
	}
	answer, fail = cidrs(t, "198.51.100.0/24"), errors.New("boom")
	if err := al.Refresh(t.Context()); err == nil {
		t.Fatal("an error was ignored")
	}
	if !al.Allowed(netip.MustParseAddr("192.0.2.10")) || al.Allowed(netip.MustParseAddr("198.51.100.1")) {
		t.Fatalf("list after failures: %v", al.Fetched())
	}
	// IPv4-mapped IPv6 peers are judged as IPv4.
	if !al.Allowed(netip.MustParseAddr("::ffff:192.0.2.10")) {
		t.Fatal("an IPv4-mapped address was not unmapped")
	}
}
