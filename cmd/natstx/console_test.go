package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/natstx/natstx/participants/sim"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the web console's screenshots to docs/console-list.png, console-detail.png and console-dashboard.png")

// browserPath finds Chromium (or Chrome). Without one the test is skipped,
// unless NATSTX_REQUIRE_BROWSER is set (as in CI), where it fails.
func browserPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("NATSTX_REQUIRE_BROWSER") != "" {
		t.Fatal("no chromium on PATH, and NATSTX_REQUIRE_BROWSER is set: install it (Debian: apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (Debian: apt-get install chromium); set NATSTX_REQUIRE_BROWSER=1 to fail instead")
	return ""
}

// browser starts headless Chromium for the test and returns its tab's
// context, ended at the test's end or after limit. JavaScript exceptions in
// the pages fail the test.
func browser(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	path := browserPath(t)
	dir, err := os.MkdirTemp("", "natstx-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(dir), chromedp.WindowSize(1280, 860))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	tctx, tcancel := context.WithTimeout(actx, limit)
	ctx, cancel := chromedp.NewContext(tctx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancel()
		tcancel()
		acancel()
		t.Fatalf("starting %s: %v", path, err)
	}
	var mu sync.Mutex
	var exceptions []string
	thrown := chromedp.Events(ctx, runtime.ExceptionThrown)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range thrown {
			if err != nil {
				return
			}
			mu.Lock()
			exceptions = append(exceptions, ev.ExceptionDetails.Text+" "+fmt.Sprint(ev.ExceptionDetails.Exception))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		tcancel()
		acancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, e := range exceptions {
			t.Errorf("JavaScript exception in the console: %s", e)
		}
		// Chromium's helper processes may still write in its directory
		// for a moment after it stopped.
		for i := 0; i < 50; i++ {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("could not remove %s", dir)
	})
	return ctx
}

// waitJS waits, up to limit, until the JavaScript expression is true in the
// page; what says what for the failure.
func waitJS(t *testing.T, ctx context.Context, limit time.Duration, what, expr string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if _, err := chromedp.Run(wctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main") ? document.querySelector("main").innerText : document.body.innerText`))
		t.Fatalf("%s: %v; the page shows:\n%s", what, err, html)
	}
}

// textOf returns the text of the element matching css.
func textOf(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("text of %s: %v", css, err)
	}
	return s
}

// screenshot writes the page as PNG to the test's directory, and to docs/
// with -update-screenshots.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dirs := []string{t.TempDir()}
	if *updateScreenshots {
		dirs = append(dirs, filepath.Join("..", "..", "docs"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
}

// rowState is the JavaScript for the state of transaction id's row in the
// list.
func rowState(id string) string {
	return fmt.Sprintf(`(document.querySelector('#tx-rows tr[data-id=%q]') || {dataset: {}}).dataset.state`, id)
}

// TestConsoleInABrowser drives the web console of `natstx server
// --ui-listen` in headless Chromium, on a real server with real
// participants: the list shows a committed and an aborted transaction; the
// unfinished filter finds the one stuck on a participant that served a
// transaction before and was then stopped; its page names that participant
// and how long it has waited; the confirmed abort decides it, and once that
// participant is back and has acknowledged, the list shows it aborted; the
// dashboard counts them all.
func TestConsoleInABrowser(t *testing.T) {
	ctx := browser(t, 3*time.Minute)
	p, url := startServer(t, "--ui-listen", "127.0.0.1:0")
	line := p.waitLine(t, "web console on", 10*time.Second)
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`).FindString(line)
	if base == "" {
		t.Fatalf("no console URL in %q", line)
	}
	startSim(t, url, sim.Config{Name: "inventory"})
	startSim(t, url, sim.Config{Name: "payment"})
	startSim(t, url, sim.Config{Name: "fraud-check", SuccessRate: sim.Rate(0)})
	// warehouse is a participant process: it serves order-2 (voting yes and
	// acknowledging the commit, so order-2 is committed, not committing),
	// then it is stopped.
	warehouse := startProc(t, nil, "participant", "sim", "--name", "warehouse", "--nats", url, "--log-level", "warn")
	warehouse.waitLine(t, "ready", 30*time.Second)
	wantExit(t, 0, "tx order-1 committed", "tx", "begin", "--nats", url, "--id", "order-1", "-p", `inventory={"item":"widget","qty":2}`, "-p", `payment={"account":"alice","amount":30}`)
	wantExit(t, 0, "tx order-2 committed", "tx", "begin", "--nats", url, "--id", "order-2", "-p", `inventory={"item":"gadget","qty":1}`, "-p", `payment={"account":"bob","amount":12}`, "-p", `warehouse={"slot":"sun"}`)
	wantExit(t, 1, "transaction order-3 aborted", "tx", "begin", "--nats", url, "--id", "order-3", "-p", `payment={"account":"carol","amount":99}`, "-p", `fraud-check={"account":"carol"}`)
	if code := warehouse.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("warehouse exited %d; stderr:\n%s", code, warehouse.stderr.String())
	}
	// warehouse is stopped: the prepare of order-4 is never answered, and
	// the transaction waits for it up to its 10-minute prepare timeout.
	wantExit(t, 0, "tx order-4 preparing", "tx", "begin", "--nats", url, "--async", "--id", "order-4", "--prepare-timeout", "10m", "-p", `inventory={"item":"gizmo","qty":1}`, "-p", `warehouse={"slot":"mon"}`)

	// The list shows each with its state.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 860), chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 20*time.Second, "the list shows order-1 and order-2 committed, order-3 aborted and order-4 preparing",
		rowState("order-1")+` === "committed" && `+rowState("order-2")+` === "committed" && `+rowState("order-3")+` === "aborted" && `+rowState("order-4")+` === "preparing"`)
	if r := textOf(t, ctx, `#tx-rows tr[data-id="order-3"] td.reason`); !strings.Contains(r, "fraud-check") {
		t.Errorf("order-3's reason in the list is %q; want it to name fraud-check", r)
	}
	if w := textOf(t, ctx, `#tx-rows tr[data-id="order-4"] td.waiting-on`); !strings.Contains(w, "warehouse") {
		t.Errorf("order-4 waits on %q in the list; want warehouse", w)
	}
	screenshot(t, ctx, "console-list.png")

	// The unfinished filter leaves only order-4.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("f-unfinished"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 20*time.Second, "the unfinished filter shows order-4 alone",
		`(() => { const ids = [...document.querySelectorAll("#tx-rows tr[data-id]")].map(r => r.dataset.id); return ids.length === 1 && ids[0] === "order-4"; })()`)
	if u, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.search`)); err != nil || u != "?unfinished=1" {
		t.Errorf("the filter is not in the page's URL: %q %v", u, err)
	}

	// Its page names the participant it waits for and how long it waited.
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`#tx-rows tr[data-id="order-4"] a`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 20*time.Second, "order-4's page says it waits for warehouse",
		`!!document.getElementById("waiting-on") && document.getElementById("waiting-on").textContent === "warehouse"`)
	waiting := textOf(t, ctx, "#waiting-for")
	if !regexp.MustCompile(`^waiting \d+(ms|s|m\d\ds)$`).MatchString(waiting) {
		t.Errorf("the wait shows as %q; want e.g. \"waiting 12s\"", waiting)
	}
	if v := textOf(t, ctx, `#participants tr[data-participant="warehouse"] td:nth-child(2)`); v != "pending" {
		t.Errorf("warehouse's vote shows as %q; want pending", v)
	}
	if v := textOf(t, ctx, `#participants tr[data-participant="inventory"] td:nth-child(2)`); v != "yes" {
		t.Errorf("inventory's vote shows as %q; want yes", v)
	}
	history, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("history").classList.contains("hidden") ? document.getElementById("history-empty").textContent : document.querySelectorAll("#history tbody tr").length + " events"`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("order-4's history: %s", history)
	screenshot(t, ctx, "console-detail.png")

	// The abort asks for confirmation, then ends the transaction.
	confirmAction(t, ctx, "action-abort", "test-operator", "warehouse is down")
	waitJS(t, ctx, 20*time.Second, "the abort is confirmed",
		`!document.getElementById("action-result").classList.contains("hidden")`)
	// Decided: it is aborting, and waits for warehouse to acknowledge the
	// abort. warehouse comes back (a new process), answers its commands,
	// and it is over.
	waitJS(t, ctx, 20*time.Second, "order-4's page shows it aborting",
		`document.querySelector("#tx-state .state") && ["aborting", "aborted"].includes(document.querySelector("#tx-state .state").dataset.state)`)
	startProc(t, nil, "participant", "sim", "--name", "warehouse", "--nats", url, "--log-level", "warn").waitLine(t, "ready", 30*time.Second)
	waitJS(t, ctx, 30*time.Second, "order-4's page shows it aborted",
		`document.querySelector("#tx-state .state") && document.querySelector("#tx-state .state").dataset.state === "aborted"`)
	if r := textOf(t, ctx, "#tx-reason"); !strings.Contains(r, "warehouse is down") {
		t.Errorf("order-4's reason is %q; want the operator's why", r)
	}
	if by := textOf(t, ctx, `#history tr[data-event="operator"] td:last-child`); by != "test-operator" {
		t.Errorf("the operator event of order-4's history is by %q; want test-operator", by)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 20*time.Second, "the list shows order-4 aborted", rowState("order-4")+` === "aborted"`)
	out := wantExit(t, 0, "tx order-4 aborted", "tx", "status", "--nats", url, "order-4")
	t.Logf("tx status order-4:\n%s", out)

	// The dashboard shows the coordinator's counters and draws its charts
	// from a few snapshots.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"dashboard")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 20*time.Second, "the dashboard counts 4 begun, 2 committed, 2 aborted (one for a vote, one by the operator), none recovered or fenced, and draws its lines and bars",
		`(() => { const v = (k) => (document.querySelector('[data-stat="' + k + '"] .v') || {}).textContent;
			const cause = (c) => (document.querySelector('#chart-abort-causes rect.bar[data-label="' + c + '"]') || { getAttribute: () => null }).getAttribute("data-value");
			return v("begun") === "4" && v("committed") === "2" && v("aborted") === "2" &&
				v("recovered") === "0" && v("orphans aborted") === "0" && v("fenced") === "0" &&
				cause("vote") === "1" && cause("operator") === "1" && cause("timeout") === "0" &&
				document.querySelectorAll("#chart-inflight path.line").length === 1 &&
				document.querySelectorAll("#chart-decide-hist rect.bar").length > 0 &&
				document.querySelectorAll("#chart-write-hist rect.bar").length > 0 &&
				document.querySelectorAll("#chart-saga-hist rect.bar").length > 0; })()`)
	screenshot(t, ctx, "console-dashboard.png")
}

// TestConsoleResolvesAStuckStep: a saga whose step after the pivot keeps
// failing is forward-stuck; its page offers that step's Resolve button, and
// keeps the very same button while it refreshes the steps every second (a
// button replaced under the pointer loses the click being made on it); the
// confirmed resolve completes the saga.
func TestConsoleResolvesAStuckStep(t *testing.T) {
	ctx := browser(t, 2*time.Minute)
	p, url := startServer(t, "--ui-listen", "127.0.0.1:0")
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`).FindString(p.waitLine(t, "web console on", 10*time.Second))
	if base == "" {
		t.Fatal("no console URL")
	}
	startSim(t, url, sim.Config{Name: "inventory"})
	startSim(t, url, sim.Config{Name: "shipping", SuccessRate: sim.Rate(0)})
	file := filepath.Join(t.TempDir(), "stuck.yaml")
	def := `name: stuck
retry: {initial_interval: 100ms, max_interval: 300ms}
compensation: {initial_interval: 100ms, max_interval: 300ms, stuck_after_attempts: 2}
steps:
  - {name: reserve, participant: inventory, pivot: true, action: {item: widget, qty: 1}, compensation: {item: widget, qty: 1}}
  - {name: ship, participant: shipping, action: {slot: mon}}
`
	if err := os.WriteFile(file, []byte(def), 0o600); err != nil {
		t.Fatal(err)
	}
	wantExit(t, 0, "saga-1", "tx", "begin", "--nats", url, "--saga", "--file", file, "--async", "--id", "saga-1")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"tx/saga-1")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 30*time.Second, "saga-1's page offers ship's Resolve button", `!!document.getElementById("action-resolve-ship")`)
	attempts := `Number(document.querySelector('#steps tr[data-step="ship"] td:nth-child(4)').textContent)`
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(() => { document.getElementById("action-resolve-ship").dataset.mark = "kept"; return `+attempts+`; })()`))
	if err != nil {
		t.Fatal(err)
	}
	// Retried forward every 300ms at most, the step shows more attempts
	// once the page has refreshed with a newer status.
	waitJS(t, ctx, 30*time.Second, "the page shows ship's later attempts", fmt.Sprintf("%s > %d", attempts, seen))
	if mark := textOfJS(t, ctx, `document.getElementById("action-resolve-ship").dataset.mark || "replaced"`); mark != "kept" {
		t.Fatalf("the Resolve button after the page refreshed: %s; want the same button kept", mark)
	}
	confirmAction(t, ctx, "action-resolve-ship", "test-operator", "shipped by hand")
	waitJS(t, ctx, 30*time.Second, "saga-1's page shows it completed",
		`document.querySelector("#tx-state .state") && document.querySelector("#tx-state .state").dataset.state === "completed"`)
	if st := textOf(t, ctx, `#steps tr[data-step="ship"] td:nth-child(3)`); st != "done" {
		t.Errorf("ship shows as %q after the resolve; want done", st)
	}
	if note := textOf(t, ctx, `#steps tr[data-step="ship"] td:nth-child(8)`); note != "done by hand, by test-operator: shipped by hand" {
		t.Errorf("ship's note is %q; want who resolved it and why", note)
	}
	waitJS(t, ctx, 10*time.Second, "ship's Resolve button is gone", `!document.getElementById("action-resolve-ship")`)
}

// confirmAction clicks the action button of id, then fills the
// confirmation dialog with who and why and confirms.
func confirmAction(t *testing.T, ctx context.Context, id, who, why string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID(id)), chromedp.WaitVisible(chromedp.ID("confirm-why"))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("confirm-who"), who),
		chromedp.SendKeys(chromedp.ID("confirm-why"), why),
		chromedp.Click(chromedp.ID("confirm-ok"))); err != nil {
		t.Fatal(err)
	}
}

// textOfJS returns the string the JavaScript expression gives in the page.
func textOfJS(t *testing.T, ctx context.Context, expr string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return s
}

// TestConsoleTokenAndLoopback: natstx server refuses a console on an
// address other than loopback without a token; with NATSTX_UI_TOKEN, every
// request needs it, and /login?token= signs a browser in with a cookie.
func TestConsoleTokenAndLoopback(t *testing.T) {
	wantExit(t, 2, "not a loopback address", "server", "--nats", deadURL(t), "--ui-listen", "0.0.0.0:0")
	wantExit(t, 2, "at least 16", "server", "--nats", deadURL(t), "--ui-listen", "127.0.0.1:0", "--ui-token", "short")
	wantExit(t, 2, "--ui-token needs --ui-listen", "server", "--nats", deadURL(t), "--ui-token", "0123456789abcdef0123")

	token := "0123456789abcdef0123456789abcdef"
	port := freePort(t)
	p := startProc(t, []string{"NATSTX_UI_TOKEN=" + token}, "server", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--data-dir", t.TempDir(), "--log-level", "warn", "--ui-listen", "0.0.0.0:0")
	line := p.waitLine(t, "web console on", 30*time.Second)
	if !strings.Contains(line, "sign in at") {
		t.Errorf("the console line %q does not say it asks for a token", line)
	}
	m := regexp.MustCompile(`:(\d+)/`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no port in %q", line)
	}
	base := "http://127.0.0.1:" + m[1]
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, h map[string]string) (int, string, *http.Response) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp
	}
	if code, body, _ := get("/api/tx", nil); code != http.StatusUnauthorized || !strings.Contains(body, "token") {
		t.Errorf("no token: %d %s", code, body)
	}
	if code, _, _ := get("/api/tx", map[string]string{"Authorization": "Bearer " + token + "x"}); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
	if code, body, _ := get("/api/tx", map[string]string{"Authorization": "Bearer " + token}); code != http.StatusOK || !strings.Contains(body, `"transactions"`) {
		t.Errorf("right token: %d %s", code, body)
	}
	code, _, resp := get("/login?token="+token, nil)
	if code != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d, cookies %v", code, resp.Cookies())
	}
	ck := resp.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || strings.Contains(ck.Value, token) {
		t.Errorf("the login cookie %+v is not HttpOnly and SameSite=Strict, or holds the token", ck)
	}
	if code, _, _ := get("/api/stats", map[string]string{"Cookie": ck.Name + "=" + ck.Value}); code != http.StatusOK {
		t.Errorf("with the login cookie: %d", code)
	}
	if code, _, resp := get("/", nil); code != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("a page without the token: %d to %q; want a redirect to /login", code, resp.Header.Get("Location"))
	}
}

// TestDemoKeepsTheConsoleUpUntilCtrlC: natstx demo --ui serves the console
// on loopback during the run, keeps it up after, with the run's
// transactions and counters, and stops on SIGINT.
func TestDemoKeepsTheConsoleUpUntilCtrlC(t *testing.T) {
	wantExit(t, 2, "loopback only", "demo", "--ui", "--ui-listen", "0.0.0.0:0")
	wantExit(t, 2, "--ui-listen needs --ui", "demo", "--ui-listen", "127.0.0.1:0")
	p := startProc(t, nil, "demo", "--ui", "--ui-listen", "127.0.0.1:0", "--count", "5", "--concurrency", "5", "--success-rates", "1,1,1", "--latency-max", "1ms")
	line := p.waitLine(t, "web console on", 60*time.Second)
	base := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`).FindString(line)
	if base == "" {
		t.Fatalf("no console URL in %q", line)
	}
	p.waitLine(t, "atomicity: 5 transactions, 5 committed", 60*time.Second)
	p.waitLine(t, "stay up until Ctrl-C", 10*time.Second)
	code, body := scrape(t, base+"api/tx?state=committed")
	if code != http.StatusOK || !strings.Contains(body, `"matched":5`) {
		t.Errorf("the demo's console lists: %d %s", code, body)
	}
	code, body = scrape(t, base+"api/stats")
	if code != http.StatusOK || !strings.Contains(body, `"begun":5`) {
		t.Errorf("the demo's console counts: %d %s", code, body)
	}
	if code := p.stop(t, syscall.SIGINT, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT; stdout:\n%s\nstderr:\n%s", code, p.out(), p.stderr.String())
	}
}
