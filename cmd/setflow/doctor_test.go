package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.temporal.io/api/operatorservice/v1"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/searchattr"
	"github.com/setflow/setflow/internal/temporalsetup"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/simulator"
)

// doctorStandIns play Kakao (issuer discovery, JWKS, the IP list API) and a
// HubSpot-style CRM as their documentation describes them; each can be made
// to misbehave the way a misconfiguration would show.
type doctorStandIns struct {
	mu            sync.Mutex
	issuer        *httptest.Server
	kakao         *httptest.Server
	crm           *httptest.Server
	key           *simulator.Key
	claimedIssuer string // "" : the issuer's own URL
	jwksGarbage   bool
}

const (
	doctorAdminKey = "doctor-admin-S3cr3t-77"
	doctorCRMToken = "doctor-crm-S3cr3t-88"
)

func newDoctorStandIns(t *testing.T) *doctorStandIns {
	t.Helper()
	key, err := simulator.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s := &doctorStandIns{key: key}
	s.issuer = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		claimed, garbage := s.claimedIssuer, s.jwksGarbage
		s.mu.Unlock()
		switch r.URL.Path {
		case "/.well-known/sse-configuration": // Kakao documents sse-, not ssf-
			if claimed == "" {
				claimed = s.issuer.URL
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": claimed, "jwks_uri": s.issuer.URL + "/.well-known/jwks.json",
				"delivery_methods_supported": "https://schemas.openid.net/secevent/risc/delivery-method/push"})
		case "/.well-known/jwks.json":
			if garbage {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"keys": "not a list"}`))
				return
			}
			key.JWKSHandler().ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.issuer.Close)
	s.kakao = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/v1/system/ips" || r.Header.Get("Authorization") != "KakaoAK "+doctorAdminKey {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"msg":"wrong appKey(admin key) format","code":-401}`))
			return
		}
		_, _ = w.Write([]byte(`{"inbound":[{"type":"callback","ips":["203.0.113.0/28"]}],"outbound":[]}`))
	}))
	t.Cleanup(s.kakao.Close)
	s.crm = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+doctorCRMToken {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"results":[]}`))
	}))
	t.Cleanup(s.crm.Close)
	return s
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// `setflow doctor` passes a good configuration item by item, and each
// misconfiguration fails its own item (and the command).
func TestDoctor(t *testing.T) {
	s := newDoctorStandIns(t)
	db, dbURL := testenv.Database(t)
	temporal := testenv.Temporal(t, "")
	mail := testenv.Mailpit(t)
	mailHost, mailPort, _ := net.SplitHostPort(mail.SMTPAddr())

	good := map[string]string{
		"-issuer": s.issuer.URL, "-audiences": "8c67b0d4e2e76140", "-discovery": "true",
		"-jwks-url":         s.issuer.URL + "/.well-known/jwks.json",
		"-database-url":     dbURL,
		"-temporal-address": temporal.FrontendHostPort(), "-temporal-namespace": "default",
		"-kakao-app-id": "1234567", "-kakao-api-url": s.kakao.URL,
		"-crm": "hubspot", "-hubspot-url": s.crm.URL,
		"-smtp-host": mailHost, "-smtp-port": mailPort, "-smtp-tls": "none", "-mail-from": "Security <security@example.test>",
		"-timeout": "3s",
	}
	goodEnv := map[string]string{
		config.EnvKakaoAdminKeys: doctorAdminKey,
		config.EnvAuditKey:       "doctor-audit-key-0123456789abcdef",
		config.EnvCodecKeys:      "k1:" + codecKey,
		"SETFLOW_HUBSPOT_TOKEN":  doctorCRMToken,
		config.EnvTestUsers:      "701541",
	}
	run := func(t *testing.T, flags, env map[string]string) (string, error) {
		t.Helper()
		for k, v := range goodEnv {
			if e, ok := env[k]; ok {
				v = e
			}
			t.Setenv(k, v)
		}
		var args []string
		for k, v := range good {
			if f, ok := flags[k]; ok {
				v = f
			}
			args = append(args, k+"="+v)
		}
		var out bytes.Buffer
		err := doctor(context.Background(), args, &out)
		for _, secret := range []string{doctorAdminKey, doctorCRMToken, codecKey} {
			if strings.Contains(out.String(), secret) {
				t.Errorf("doctor printed a secret:\n%s", out.String())
			}
		}
		return out.String(), err
	}
	expectFail := func(t *testing.T, out string, err error, item, why string) {
		t.Helper()
		if err == nil {
			t.Fatalf("doctor passed; want %s to fail:\n%s", item, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "FAIL  "+item) {
				if !strings.Contains(line, why) {
					t.Fatalf("%s failed without saying %q:\n%s", item, why, out)
				}
				return
			}
		}
		t.Fatalf("no FAIL line for %s:\n%s", item, out)
	}

	// The namespace lacks setflow's search attributes until they are
	// registered (the test server starts with them: remove them first).
	var names []string
	for name := range searchattr.All() {
		names = append(names, name)
	}
	if _, err := temporal.Client().OperatorService().RemoveSearchAttributes(context.Background(),
		&operatorservice.RemoveSearchAttributesRequest{Namespace: "default", SearchAttributes: names}); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, nil, nil)
	expectFail(t, out, err, "search attributes", "lacks")
	if _, err := temporalsetup.Register(context.Background(), temporal.Client(), "default"); err != nil {
		t.Fatal(err)
	}
	failures := func(out string) int { return strings.Count(out, "FAIL  ") }

	t.Run("passes", func(t *testing.T) {
		out, err := run(t, nil, nil)
		items := []string{"settings", "audit key", "codec keys", "discovery", "jwks", "kakao admin key",
			"postgres", "temporal", "search attributes", "smtp", "crm"}
		if err != nil {
			t.Fatalf("doctor failed a good configuration: %v\n%s", err, out)
		}
		if failures(out) != 0 {
			t.Fatalf("a good configuration failed:\n%s", out)
		}
		for _, item := range items {
			if !strings.Contains(out, "PASS  "+item) {
				t.Errorf("no PASS for %s:\n%s", item, out)
			}
		}
		if !strings.Contains(out, "1 test account(s) in shadow") {
			t.Errorf("test accounts not reported:\n%s", out)
		}
	})
	for _, tc := range []struct {
		name, item, why string
		flags, env      map[string]string
		standIns        func(bool)
	}{
		{name: "no audience", item: "settings", why: "SETFLOW_AUDIENCES", flags: map[string]string{"-audiences": ""}},
		{name: "test user not an id", item: "settings", why: "SETFLOW_TEST_USERS", env: map[string]string{config.EnvTestUsers: "kim"}},
		{name: "no audit key", item: "audit key", why: config.EnvAuditKey, env: map[string]string{config.EnvAuditKey: ""}},
		{name: "no codec keys", item: "codec keys", why: config.EnvCodecKeys, env: map[string]string{config.EnvCodecKeys: ""}},
		{name: "issuer mismatch", item: "discovery", why: "names issuer", standIns: func(on bool) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.claimedIssuer = ""; on {
				s.claimedIssuer = "https://kauth.kakao.com"
			}
		}},
		{name: "no discovery document", item: "discovery", why: "no discovery document", flags: map[string]string{"-issuer": s.kakao.URL}},
		{name: "jwks unparsable", item: "jwks", why: "jwks.json", standIns: func(on bool) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.jwksGarbage = on
		}},
		{name: "jwks unreachable", item: "jwks", why: "connect", flags: map[string]string{"-discovery": "false", "-jwks-url": "http://" + closedAddr(t) + "/jwks.json"}},
		{name: "admin key refused", item: "kakao admin key", why: "HTTP 401", env: map[string]string{config.EnvKakaoAdminKeys: doctorAdminKey + ",stale-key-S3cr3t"}},
		{name: "postgres unreachable", item: "postgres", why: "unreachable", flags: map[string]string{"-database-url": "postgres://postgres@" + closedAddr(t) + "/x?sslmode=disable"}},
		{name: "temporal unreachable", item: "temporal", why: "namespace default", flags: map[string]string{"-temporal-address": closedAddr(t)}},
		{name: "smtp unreachable", item: "smtp", why: "connect", flags: map[string]string{"-smtp-port": strings.Split(closedAddr(t), ":")[1]}},
		{name: "crm token refused", item: "crm", why: "refuses SETFLOW_HUBSPOT_TOKEN", env: map[string]string{"SETFLOW_HUBSPOT_TOKEN": "wrong-S3cr3t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.standIns != nil {
				tc.standIns(true)
				defer tc.standIns(false)
			}
			out, err := run(t, tc.flags, tc.env)
			expectFail(t, out, err, tc.item, tc.why)
			if n := failures(out); n != 1 {
				t.Errorf("%d items failed, want only %s:\n%s", n, tc.item, out)
			}
		})
	}
	// A schema behind the binary: run setflow migrate.
	t.Run("schema behind", func(t *testing.T) {
		db.MustExec(`DELETE FROM setflow_schema_version WHERE version_id = (SELECT max(version_id) FROM setflow_schema_version)`)
		out, err := run(t, nil, nil)
		expectFail(t, out, err, "postgres", "run setflow migrate")
	})
}
