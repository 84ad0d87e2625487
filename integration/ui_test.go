package integration

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"

	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/guard/guarddb"
	"github.com/setflow/setflow/internal/temporalsetup"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/workflows"
)

// An operator looks at setflow in the Temporal UI: a real headless browser
// opens the workflow list filtered by a setflow search attribute, and a held
// user's stream. The list finds the held streams by SetflowOutcome; the
// stream's page shows its summary and current details naming the held event
// and the command that decides it. Screenshots are saved as artefacts.
func TestTemporalUIShowsSetflowWorkflows(t *testing.T) {
	browser := testenv.Chromium(t)
	shots := testenv.Artefacts(t, "temporal-ui")
	uiPort := freePort(t)
	hostPort := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  testenv.TemporalBinary(t),
		ClientOptions: &client.Options{HostPort: hostPort, Namespace: "default", Logger: nopLogger{}},
		EnableUI:      true,
		UIPort:        fmt.Sprint(uiPort),
		LogLevel:      "error",
		ExtraArgs:     temporalsetup.DevServerArgs(),
		Stdout:        io.Discard,
		Stderr:        io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	s := newStack(t)
	s.startRelay(hostPort)
	acts := s.activities()
	acts.Guard = guarddb.NewStore(s.DB, guard.Limit{Max: 2, Window: time.Hour})
	s.startWorkerWith(srv.Client(), acts)
	var keys []string
	deliver := func(i int) {
		keys = append(keys, s.deliverSET(simulator.SET{UserID: fmt.Sprintf("88%04d", i),
			EventType: secevent.EventAccountDisabled, IssuedAt: time.Now()}))
	}
	// The guard's count is not serialised (a storm guard, not a quota): three
	// admissions in flight at once could all pass. The first is admitted
	// before the others arrive, so the next two are held whatever the timing.
	deliver(0)
	waitFor(t, "the first event admitted", func() bool {
		var n int
		if err := s.DB.Get(&n, `SELECT count(*) FROM setflow_guard_admissions WHERE event_key = $1`, keys[0]); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	deliver(1)
	deliver(2)
	waitFor(t, "two held streams", func() bool { return s.countWorkflows(`SetflowOutcome = "held"`) == 2 })
	var heldID, heldKey string
	for i, k := range keys {
		if id := workflows.UserStreamID(subjects.Hash(testIssuer, fmt.Sprintf("88%04d", i))); strings.Contains(s.auditSteps(k), "hold=held") {
			heldID, heldKey = id, k
			break
		}
	}
	desc, err := srv.Client().DescribeWorkflowExecution(context.Background(), heldID, "")
	if err != nil {
		t.Fatal(err)
	}
	runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1500, 1000))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	bctx, tcancel := context.WithTimeout(bctx, 5*time.Minute)
	defer tcancel()
	ui := fmt.Sprintf("http://127.0.0.1:%d/namespaces/default/workflows", uiPort)
	// open navigates and waits until the page's text holds every want (the
	// UI is a single-page app that loads its data after the page).
	open := func(name, click, u string, want ...string) string {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Navigate(u)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var text string
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if click != "" {
				// Open a section the way an operator does (it is collapsed).
				_, _ = chromedp.Run(bctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => {
					const e = Array.from(document.querySelectorAll('button, a, summary, [role=tab], h2, h3, span, div'))
						.reverse().find(e => e.innerText && e.innerText.trim() === %q);
					if (e) { e.click(); return true }
					return false
				})()`, click)))
			}
			text, err = chromedp.Run(bctx, chromedp.Evaluate[string](
				// Markdown (summary, details) is rendered in sandboxed iframes.
				"document.body.innerText + '\\n' + Array.from(document.querySelectorAll('iframe')).map(f => f.srcdoc || (f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : '')).join('\\n')"))
			missing := ""
			for _, w := range want {
				if !strings.Contains(text, w) {
					missing = w
				}
			}
			if err == nil && missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the page never showed %q (%v):\n%s", name, missing, err, text)
			}
			time.Sleep(2 * time.Second)
		}
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		return text
	}

	list := open("held-list", "", ui+"?query="+url.QueryEscape(`SetflowOutcome = "held"`), "of 2", heldID)
	if strings.Contains(list, "setflow-event/") {
		t.Errorf("the held search lists a reaction:\n%s", list)
	}
	open("all", "", ui+"?query="+url.QueryEscape(`SetflowEventType = "account-disabled"`), "of 3")
	page := open("held-stream", "User Metadata", fmt.Sprintf("%s/%s/%s/history", ui, url.PathEscape(heldID), runID),
		"user "+strings.TrimPrefix(heldID, "setflow-user/")[:12], "started by account-disabled", "Waiting on an operator", heldKey)
	if !strings.Contains(page, "setflow holds approve|reject "+heldKey) {
		t.Errorf("the held stream's details do not say how to decide:\n%s", page)
	}
	for i := range 3 {
		if u := fmt.Sprintf("88%04d", i); strings.Contains(page, u) {
			t.Errorf("the page shows user id %s", u)
		}
	}
}
