package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
)

// jsSDK is the JavaScript participant SDK's directory.
var jsSDK = filepath.Join("..", "participants", "js")

// startJSParticipant runs the JavaScript example participant
// (participants/js/examples/participant.js: the seed's Service class behind
// the SDK) as a node process with args, and waits for its ready line.
func startJSParticipant(t *testing.T, node string, args ...string) *proc {
	t.Helper()
	ensureJSModules(t)
	cmd := exec.Command(node, append([]string{filepath.Join(jsSDK, "examples", "participant.js")}, args...)...)
	// The seed's Service logs every call on stdout: startReady reads it all.
	return startReady(t, cmd, "(js) ready", "the JavaScript participant")
}

// ensureJSModules installs the JavaScript SDK's packages if they are not.
func ensureJSModules(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(jsSDK, "node_modules", "@nats-io", "jetstream")); err != nil {
		// make test runs `npm ci --prefix participants/js` first; a plain
		// `go test` does it here, from the committed package-lock.json.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := exec.CommandContext(ctx, "npm", "ci", "--prefix", jsSDK).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("npm ci --prefix %s: %v\n%s", jsSDK, err, out)
		}
	}
}

// nodePath finds node. Without it the test is skipped, unless
// NATSTX_REQUIRE_NODE is set (as in CI, like NATSTX_REQUIRE_BROWSER for the
// web console's browser tests), where it fails.
func nodePath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("node"); err == nil {
		return p
	}
	const why = "node is not on PATH: the JavaScript participant SDK (participants/js) needs Node.js 20 or later"
	if os.Getenv("NATSTX_REQUIRE_NODE") != "" {
		t.Fatal(why + ", and NATSTX_REQUIRE_NODE is set: install it")
	}
	t.Skip(why + "; set NATSTX_REQUIRE_NODE=1 to fail instead")
	return ""
}

// startJSServer finds node (nodePath: skipping t without it, or failing)
// and starts `natstx server` as instance on a free port, its data in dir,
// with extra flags; it returns node's path and the server's NATS URL.
func startJSServer(t *testing.T, dir, instance string, extra ...string) (node, url string) {
	t.Helper()
	node = nodePath(t)
	url = fmt.Sprintf("nats://127.0.0.1:%d", freePorts(t, 1)[0])
	args := []string{"server", "--nats-listen", strings.TrimPrefix(url, "nats://"), "--data-dir", filepath.Join(dir, "data"),
		"--instance", instance, "--log-level", "warn"}
	startNatstx(t, nil, append(args, extra...)...)
	return node, url
}

// TestJSParticipant runs a real `natstx server`, the JavaScript example
// participant (success rate 0.85, so some prepares vote abort and some
// commits fail and are retried; a quarter of its replies dropped, so the
// coordinator re-sends) and a Go participant (`natstx participant sim`,
// success rate 0.9), with every command message published a second time
// into the command stream (a duplicate delivery), runs transactions across
// both, and checks with `natstx audit` that every one committed or aborted
// at both participants alike: 0 violations, none in doubt.
func TestJSParticipant(t *testing.T) {
	dir := t.TempDir()
	node, url := startJSServer(t, dir, "coord-js", "--prepare-timeout", "10s")

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Every command message (a single command or a batch), as it enters the
	// stream, is published once more under another message ID: JetStream
	// stores and delivers it a second time.
	var seen, dups atomic.Int64
	sub, err := nc.Subscribe(messages.CommandPrefix+".>", func(m *nats.Msg) {
		if m.Header.Get("Natstx-Test-Dup") != "" {
			return
		}
		seen.Add(1)
		d := nats.NewMsg(m.Subject)
		d.Data = m.Data
		for k, vs := range m.Header {
			d.Header[k] = append([]string(nil), vs...)
		}
		d.Header.Set(messages.HeaderMsgID, m.Header.Get(messages.HeaderMsgID)+".dup")
		d.Header.Set("Natstx-Test-Dup", "1")
		if _, err := js.PublishMsgAsync(d); err == nil {
			dups.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	jsp := startJSParticipant(t, node, "--name", "js-service", "--nats", url, "--store", filepath.Join(dir, "js-service.jsonl"),
		"--success-rate", "0.85", "--drop-reply-rate", "0.25", "--in-doubt-after", "2000", "--log-level", "warn")
	gop := startProc(t, nil, "sim", "--name", "go-ledger", "--nats", url, "--success-rate", "0.9", "--log-level", "warn")

	client, err := orchestrator.NewClient(nc)
	if err != nil {
		t.Fatal(err)
	}
	const n, conc = 60, 8
	var mu sync.Mutex
	outcomes := map[string]string{}
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id := fmt.Sprintf("jsorder-%03d", i)
				req := messages.BeginRequest{ID: id, Wait: true, Participants: []messages.ParticipantSpec{
					{Name: "js-service", Payload: fmt.Appendf(nil, `{"order":%d,"item":"widget"}`, i)},
					{Name: "go-ledger", Payload: fmt.Appendf(nil, `{"order":%d}`, i)},
				}}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				st, err := client.Begin(ctx, req)
				cancel()
				mu.Lock()
				if err != nil {
					outcomes[id] = "error: " + err.Error()
				} else {
					outcomes[id] = st.State
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()

	committed, aborted := 0, 0
	for id, o := range outcomes {
		// The answer comes once the outcome is decided; the
		// acknowledgements may still be on their way.
		switch o {
		case "committed", "committing":
			committed++
		case "aborted", "aborting":
			aborted++
		default:
			t.Errorf("transaction %s: %s", id, o)
		}
	}
	if committed == 0 || aborted == 0 {
		t.Errorf("%d committed and %d aborted: the run must both commit and abort", committed, aborted)
	}
	// Acknowledgements of a decision may still be on their way (dropped
	// replies wait for a re-send): wait until every status is final.
	if stale, _ := convergedStatuses(t, client, 60*time.Second); len(stale) > 0 {
		t.Fatalf("%d transactions not finished after 60s: %v", len(stale), stale)
	}

	rep := runAudit(t, url)
	for _, p := range rep.Problems {
		t.Error("audit problem:", p)
	}
	report.Counts(t, fmt.Sprintf("natstx audit: %d transactions, %d committed, %d aborted, %d in doubt, %d violations",
		rep.Transactions, rep.Committed, rep.Aborted, rep.InDoubt, rep.Violations))
	if rep.Violations != 0 || rep.InDoubt != 0 || rep.Transactions != n || rep.Committed != committed || rep.Aborted != aborted {
		t.Errorf("audit %+v; want %d transactions, %d committed, %d aborted, none in doubt, 0 violations", rep, n, committed, aborted)
	}
	// The plain report, as an operator reads it.
	out, err := exec.Command(mustNatstx(t), "audit", "--nats", url, "--timeout", "20s").CombinedOutput()
	t.Logf("%s", strings.TrimSpace(string(out)))
	if err != nil || !strings.Contains(string(out), " 0 violations") {
		t.Errorf("natstx audit: %v\n%s", err, out)
	}

	// A graceful stop: SIGTERM, the commands in flight finish, exit 0, with
	// the participant's counts.
	if err := jsp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-jsp.done:
		jsp.done = nil
		if err != nil {
			t.Fatalf("the JavaScript participant did not stop cleanly: %v\n%s", err, jsp.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the JavaScript participant did not stop within 30s after SIGTERM:\n%s", jsp.stderr)
	}
	gop.kill()
	stats := regexp.MustCompile(`participant js-service stopped: (\d+) prepares, (\d+) commits, (\d+) aborts, (\d+) duplicates, (\d+) rejected, (\d+) batches, (\d+) replies dropped`).
		FindStringSubmatch(jsp.stderr.String())
	if stats == nil {
		t.Fatalf("no stop line from the JavaScript participant:\n%s", jsp.stderr)
	}
	count := func(i int) int { v, _ := strconv.Atoi(stats[i]); return v }
	t.Logf("JavaScript participant: %s; command messages %d, published again %d; %d transactions: %d committed, %d aborted",
		strings.TrimPrefix(stats[0], "participant js-service stopped: "), seen.Load(), dups.Load(), n, committed, aborted)
	if count(5) != 0 {
		t.Errorf("the JavaScript participant rejected %d commands as contradicting its record", count(5))
	}
	if count(4) == 0 || count(7) == 0 || dups.Load() == 0 {
		t.Errorf("the run must have duplicates (%d) and dropped replies (%d), and commands published twice (%d)", count(4), count(7), dups.Load())
	}
	if count(1) < n {
		t.Errorf("the JavaScript participant handled %d prepares, fewer than the %d transactions", count(1), n)
	}
}

// mustNatstx returns the natstx binary the integration tests build.
func mustNatstx(t *testing.T) string {
	t.Helper()
	bin, err := buildNatstx()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestJSParticipantPassesConformance runs `natstx conformance` against the
// JavaScript example participant, as against any participant in another
// language, with every case: two-phase commit, the saga steps (the example
// serves them through the same adapter), and the crash case: conformance
// runs the participant itself (--start) and restarts it with
// NATSTX_CRASH_AT, which the example honours by killing itself between
// applying a command and replying. Every case must pass, none be skipped.
// No coordinator runs: one declares the command stream and stops, so that
// the probe alone answers the in-doubt questions and can check them fully
// (the answer applied; a transaction committed while another question
// waited is not asked about).
func TestJSParticipantPassesConformance(t *testing.T) {
	dir := t.TempDir()
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	startEngine(t, context.Background(), connect(t, srv.URL()), orchestrator.Config{Instance: "coord-conf"}).Stop()
	node, url := nodePath(t), srv.URL()
	ensureJSModules(t)
	example, err := filepath.Abs(filepath.Join(jsSDK, "examples", "participant.js"))
	if err != nil {
		t.Fatal(err)
	}
	// A short ack wait: a command the crash left unacknowledged comes back
	// that long after it.
	start := strings.Join([]string{shellQuote(node), shellQuote(example), "--name", "js-conf", "--nats", shellQuote(url),
		"--store", shellQuote(filepath.Join(dir, "js-conf.jsonl")), "--success-rate", "1", "--ack-wait", "2000", "--op-timeout", "1000",
		"--in-doubt-after", "1000", "--log-level", "warn"}, " ")
	bin, err := buildNatstx()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "conformance", "--participant", "js-conf", "--nats", url, "--start", start,
		"--in-doubt-wait", "20s", "--crash-wait", "30s").CombinedOutput()
	t.Logf("natstx conformance --participant js-conf --start ...:\n%s", out)
	if err != nil {
		t.Fatalf("conformance against the JavaScript example: %v", err)
	}
	if !regexp.MustCompile(`conformance: \d+ passed, 0 failed, 0 skipped`).Match(out) {
		t.Fatalf("no summary line with every case passed and none skipped in the output")
	}
	for _, c := range []string{"crash-redelivery", "saga-action-duplicate", "saga-compensation", "saga-null-compensation", "saga-batch"} {
		if !regexp.MustCompile(`(?m)^PASS\s+` + c + `\s`).Match(out) {
			t.Errorf("case %s did not pass", c)
		}
	}
	if !strings.Contains(string(out), "NATSTX_CRASH_AT: crashing after applying prepare") || !strings.Contains(string(out), "NATSTX_CRASH_AT: crashing after applying commit") {
		t.Errorf("the participant's standard error does not show it crashed after a prepare and after a commit")
	}
}
