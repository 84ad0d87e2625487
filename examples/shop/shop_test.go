package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/setflow/setflow/internal/testenv"
)

// readEnvFile reads examples/shop/setflow.env: the test runs setflow with
// exactly the configuration the example documents.
func readEnvFile(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out
}

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The shop, wired to a real `setflow dev` (ingress, relay, worker on a
// Temporal dev server) by configuration only, in a real browser: log in
// with Kakao, see the account page; a hijacking account-disabled event
// sent with `setflow send` ends the session (reload → logged out) and a new
// login is refused with a clear message until Kakao re-enables the account
// and the user logs in again.
func TestShopBrowserHijackingLockout(t *testing.T) {
	browser := testenv.Chromium(t)
	root := testenv.RepoRoot(t)
	db, dbURL := testenv.Database(t)
	temporal := testenv.Temporal(t, "")
	shots := testenv.Artefacts(t, "shop")
	work := t.TempDir()

	bin := filepath.Join(work, "setflow")
	build := exec.Command("go", "build", "-o", bin, "./cmd/setflow")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	devKey := filepath.Join(work, "signing-key.pem")
	ingressAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	const token = "shop-test-status-token"

	// The shop first: it creates its schema, which setflow is pointed at.
	shop, err := NewShop(context.Background(), Config{
		DatabaseURL: dbURL, StatusURL: "http://" + adminAddr, StatusToken: token,
		Issuer: "https://dev.setflow.local", Audience: "setflow-dev-app",
		JWKSURL: "http://" + ingressAddr + "/dev/jwks.json", DevKey: devKey, HookSecret: "shop-dev-hook-secret",
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer shop.Close()
	site := httptest.NewServer(shop.Handler())
	defer site.Close()

	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work}
	env = append(env, readEnvFile(t, filepath.Join(root, "examples", "shop", "setflow.env"))...)
	env = append(env, "SETFLOW_DATABASE_URL="+dbURL, "TEMPORAL_ADDRESS="+temporal.FrontendHostPort(),
		"SETFLOW_LISTEN="+ingressAddr, "SETFLOW_ADMIN_LISTEN="+adminAddr, "SETFLOW_STATUS_TOKENS="+token,
		"SETFLOW_METRICS_LISTEN=", "SETFLOW_DEV_KEY="+devKey, "SETFLOW_LOG_LEVEL=info",
		"SETFLOW_POLICY_FILE="+filepath.Join(root, "examples", "shop", "policy.yaml"),
		"SETFLOW_SERVICE_HOOK_URL="+site.URL+"/setflow/events")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dev := exec.CommandContext(ctx, bin, "dev")
	dev.Env, dev.Dir = env, work
	var devOut syncBuffer
	dev.Stdout, dev.Stderr = &devOut, &devOut
	dev.Cancel = func() error { return dev.Process.Signal(os.Interrupt) }
	dev.WaitDelay = 20 * time.Second
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = dev.Wait()
		if t.Failed() {
			t.Logf("setflow dev output:\n%s", devOut.String())
		}
	}()
	waitUntil(t, 60*time.Second, "setflow dev's ingress and status API", func() bool {
		for _, u := range []string{"http://" + ingressAddr + "/dev/jwks.json", "http://" + adminAddr + "/v1/subjects/x"} {
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		return true
	})
	send := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"send", "--url", "http://" + ingressAddr + "/webhooks/kakao/account-status"}, args...)...)
		cmd.Env, cmd.Dir = env, work
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "-> 202") {
			t.Fatalf("setflow send %v: %v\n%s", args, err, out)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1000, 700))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	bctx, tcancel := context.WithTimeout(bctx, 10*time.Minute)
	defer tcancel()
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg) // 100: PNG
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	text := func(id string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("text of #%s: %v", id, err)
		}
		return s
	}
	const kakaoID = "4242001"
	login := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(
			chromedp.Navigate(site.URL+"/"),
			chromedp.WaitVisible(chromedp.ID("kakao-login")),
			chromedp.Click(chromedp.ID("kakao-login")),
			chromedp.WaitVisible(chromedp.ID("kakao-user-id")),
			chromedp.SetValue(chromedp.ID("kakao-user-id"), kakaoID),
			shot(name),
			chromedp.Click(chromedp.ID("kakao-agree")),
		)
	}
	// 1. Log in, see the account page.
	if err := chromedp.Do(bctx, login("1-kakao-login"), chromedp.WaitVisible(chromedp.ID("account-title")), shot("2-account")); err != nil {
		t.Fatalf("login: %v", err)
	}
	if got := text("account-name"); got != "Kakao user "+kakaoID {
		t.Fatalf("account page shows %q", got)
	}
	var account string
	if err := db.Get(&account, `SELECT account_id::text FROM shop.social_accounts WHERE provider_user_id = $1`, kakaoID); err != nil {
		t.Fatal(err)
	}
	if account == kakaoID {
		t.Fatal("the shop's account id equals the Kakao id: the mapping would not be exercised")
	}

	// 2. Kakao reports the account hijacked and disabled. A SET's times are
	// whole seconds and revocation keeps sessions created after the event:
	// the hijacking happens at least a second after this login.
	time.Sleep(1100 * time.Millisecond)
	send("account-disabled", "--user", kakaoID, "--field", "reason=hijacking")
	waitUntil(t, 3*time.Minute, "setflow to revoke the shop session and lock the shop user", func() bool {
		var live, locked int
		_ = db.Get(&live, `SELECT count(*) FROM shop.sessions WHERE revoked_at IS NULL`)
		_ = db.Get(&locked, `SELECT count(*) FROM shop.users WHERE locked`)
		return live == 0 && locked == 1
	})

	// setflow told the shop too (notify_service, signed), with the state.
	securityEvent := func(name string, locked bool) func() bool {
		return func() bool {
			var n int
			_ = db.Get(&n, `SELECT count(*) FROM shop.security_events WHERE account_id = $1 AND event = $2 AND locked = $3`, account, name, locked)
			return n == 1
		}
	}
	waitUntil(t, 3*time.Minute, "the shop to receive account-disabled from notify_service", securityEvent("account-disabled", true))

	// 3. Reload: logged out, with the reason.
	if err := chromedp.Do(bctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("message")), shot("3-reload-logged-out")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := text("message"); !strings.Contains(got, "disabled for your protection") {
		t.Fatalf("after reload: %q", got)
	}

	// 4. A new login is refused with a clear message.
	if err := chromedp.Do(bctx, login("4-login-again"), chromedp.WaitVisible(chromedp.ID("refused")), shot("5-login-refused")); err != nil {
		t.Fatalf("refused login: %v", err)
	}
	if got := text("refused"); !strings.Contains(got, "Login refused") || !strings.Contains(got, "re-enabled") {
		t.Fatalf("refusal: %q", got)
	}
	var live int
	_ = db.Get(&live, `SELECT count(*) FROM shop.sessions WHERE revoked_at IS NULL`)
	if live != 0 {
		t.Fatalf("a refused login created %d sessions", live)
	}

	// 5. Kakao re-enables the account; the user re-authenticates and is in.
	// At least a second after the disable: within the same second (whole-
	// second SET times) the disable wins the tie and the account stays
	// locked, as user-state.md says.
	time.Sleep(1100 * time.Millisecond)
	send("account-enabled", "--user", kakaoID)
	waitUntil(t, 3*time.Minute, "setflow to unlock the shop user", func() bool {
		var locked int
		_ = db.Get(&locked, `SELECT count(*) FROM shop.users WHERE locked`)
		return locked == 0
	})
	waitUntil(t, 3*time.Minute, "the shop to receive account-enabled from notify_service", securityEvent("account-enabled", false))
	if err := chromedp.Do(bctx, login("6-reauthenticate"), chromedp.WaitVisible(chromedp.ID("account-title")),
		chromedp.WaitVisible(chromedp.ID("security-events")), shot("7-account-again")); err != nil {
		t.Fatalf("login after re-enable: %v", err)
	}
	if got := text("security-events"); !strings.Contains(got, "account-disabled") || !strings.Contains(got, "account-enabled") {
		t.Fatalf("security events on the account page: %q", got)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
