package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants/sim"
)

// TestSecondServerOnADataDirInUseIsRefused: two processes must never run
// JetStream on one store. A second `natstx server` (or `natstx nats`) on the
// data directory of a running one exits 1 with an error that names the
// directory and the process holding it; once that one stopped, the directory
// is free again.
func TestSecondServerOnADataDirInUseIsRefused(t *testing.T) {
	dir := t.TempDir()
	first, _ := startServer(t, "--data-dir", dir)
	pid := strconv.Itoa(first.cmd.Process.Pid)
	for _, args := range [][]string{
		{"server", "--data-dir", dir, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t))},
		{"nats", "--data-dir", dir, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t))},
	} {
		stdout, stderr, code := run(t, 30*time.Second, args...)
		if code != 1 {
			t.Fatalf("natstx %s on a directory in use: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
		}
		for _, want := range []string{dir + " is locked by process " + pid, "natstx server", "another data directory"} {
			if !strings.Contains(stderr, want) {
				t.Fatalf("natstx %s: the error does not say %q:\n%s", strings.Join(args, " "), want, stderr)
			}
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.HasPrefix(stderr, "natstx: ") {
			t.Fatalf("want one line starting natstx:, got:\n%s", stderr)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, embedded.LockFile)); err != nil || !strings.Contains(string(b), "pid "+pid) {
		t.Fatalf("lock file: %v %q", err, b)
	}
	if code := first.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("first server: exit %d\n%s", code, first.stderr.String())
	}
	startServer(t, "--data-dir", dir) // free again
}

func TestVersion(t *testing.T) {
	stdout, stderr, code := run(t, 30*time.Second, "version")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"natstx ", "  commit ", "  go           go1.", "  nats-server  v2.", fmt.Sprintf("  protocol     %d\n", messages.Version)} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("version output lacks %q:\n%s", want, stdout)
		}
	}
	stdout, _, code = run(t, 30*time.Second, "version", "--json")
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("version --json: exit %d, %v: %s", code, err, stdout)
	}
	if v["module"] != "github.com/natstx/natstx" || v["protocol"] != float64(messages.Version) || !strings.HasPrefix(v["nats_server"].(string), "v2.") || v["version"] == "" {
		t.Fatalf("version --json: %s", stdout)
	}
}

// TestMistypedSubcommandsAreSuggested: a typo in a subcommand is reported as
// an unknown command with the likely one, before any flag is looked at.
func TestMistypedSubcommandsAreSuggested(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tx", "beginn", "-p", "x"}, `unknown command "beginn" for "natstx tx"; did you mean begin?`},
		{[]string{"tx", "stauts", "abc"}, "did you mean status?"},
		{[]string{"serverr"}, `unknown command "serverr" for "natstx"; did you mean server?`},
		{[]string{"participant", "inventry", "--db", "x.db"}, "did you mean inventory?"},
		{[]string{"tx"}, "tx needs a subcommand: abort, begin, list, resolve, retry, status, watch"},
	} {
		_, stderr, code := run(t, 30*time.Second, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("natstx %s: exit %d, stderr %q; want exit 2 and one line with %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
}

// TestErrorsHaveOnePrefix: errors of the library, which start "natstx: "
// themselves, are not printed as "natstx: natstx: ...".
func TestErrorsHaveOnePrefix(t *testing.T) {
	_, url := startServer(t)
	startSim(t, url, sim.Config{Name: "svc"})
	wantExit(t, 0, "committed", "tx", "begin", "--nats", url, "--id", "done-1", "-p", "svc")
	n := startProc(t, nil, "nats", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--data-dir", t.TempDir())
	bare := strings.TrimSuffix(strings.Fields(n.waitLine(t, "listening on", 20*time.Second))[7], ",")
	for _, args := range [][]string{
		{"tx", "abort", "--nats", url, "done-1"},             // already committed
		{"tx", "begin", "--nats", bare, "-p", "a"},           // no coordinator
		{"tx", "list", "--nats", bare},                       // no status bucket
		{"tx", "begin", "--nats", url, "-p", "x", "-p", "x"}, // named twice
	} {
		_, stderr, code := run(t, 30*time.Second, args...)
		if code == 0 || !strings.HasPrefix(stderr, "natstx: ") || strings.Contains(stderr, "natstx: natstx:") || strings.Count(stderr, "natstx: ") != 1 {
			t.Errorf("natstx %s: exit %d, stderr %q: want one 'natstx: ' prefix", strings.Join(args, " "), code, stderr)
		}
	}
}

// TestWatchPrintsEachChangeOnce: a slow transaction's status is rewritten at
// a re-send every 10 s (its send count changes), but watch prints a
// transaction's line again only when what it shows changed. A participant
// that does not exist never answers: its prepare times out and its abort is
// re-sent for longer than the watch: at 1, 1.5, 2.5, 4.5, 8.5 and 13.5 s
// (the default re-send delays), the last 10 s after the refresh at the
// prepare's re-send, so the watch, 17 s, runs past one rewrite.
func TestWatchPrintsEachChangeOnce(t *testing.T) {
	_, url := startServer(t)
	watch := startProc(t, nil, "tx", "watch", "--nats", url, "--json", "--tx", "ghostly", "--for", "17s")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(watch.stderr.String(), "watching transactions") {
		if time.Now().After(deadline) {
			t.Fatalf("tx watch did not start; stderr:\n%s", watch.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantExit(t, 1, "aborted", "tx", "begin", "--nats", url, "--id", "ghostly", "-p", "nobody-runs-this", "--prepare-timeout", "1s")
	if code := watch.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("watch: exit %d\n%s", code, watch.stderr.String())
	}
	var states []string
	for _, l := range strings.Split(strings.TrimSpace(watch.out()), "\n") {
		var st messages.TxStatus
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			t.Fatalf("watch line %q: %v", l, err)
		}
		states = append(states, st.State)
	}
	if strings.Join(states, ",") != "preparing,aborting" {
		t.Fatalf("want one line per change (preparing, aborting), got %v:\n%s", states, watch.out())
	}
	// The watch saw the rewrite: the status it ended on counts re-sends.
	st := wantExit(t, 0, "aborting", "tx", "status", "--nats", url, "ghostly", "--json")
	var s messages.TxStatus
	if err := json.Unmarshal([]byte(st), &s); err != nil || s.Participants[0].Sends < 2 {
		t.Fatalf("the status was not rewritten with the abort's re-sends during the watch, so this test proves nothing: %v %s", err, st)
	}
}

// TestCleanStopLogsNoDisconnectWarning: a server stopped by SIGTERM logs no
// warning about a disconnect: its own closing of the connection is none.
// (The engine may still warn about a periodic pass its stop cancelled; that
// is the engine's to silence.)
func TestCleanStopLogsNoDisconnectWarning(t *testing.T) {
	p, url := startServer(t, "--log-level", "info")
	startSim(t, url, sim.Config{Name: "svc"})
	wantExit(t, 0, "committed", "tx", "begin", "--nats", url, "-p", "svc")
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr.String())
	}
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(l, "WARN") && strings.Contains(l, "disconnect") {
			t.Fatalf("a clean stop logged a disconnect warning:\n%s", p.stderr.String())
		}
	}
	if !strings.Contains(p.stderr.String(), "embedded NATS server stopped") {
		t.Fatalf("the log does not reach the end of the stop:\n%s", p.stderr.String())
	}
}

// TestParticipantHelpShowsPayloads: each example service's --help gives its
// payload, its seed data, and an example transaction it accepts.
func TestParticipantHelpShowsPayloads(t *testing.T) {
	for kind, want := range map[string][]string{
		"inventory": {`{"item": NAME, "qty": N}`, "widget", `natstx tx begin -p inventory='{"item":"widget","qty":1}'`},
		"payment":   {`{"account": NAME, "amount": N}`, "alice, bob, carol, dave", `natstx tx begin -p payment='{"account":"alice","amount":10}'`},
		"shipping":  {`{"slot": NAME}`, "mon, tue", `natstx tx begin -p shipping='{"slot":"mon"}'`},
	} {
		stdout, _, code := run(t, 30*time.Second, "participant", kind, "--help")
		for _, w := range want {
			if code != 0 || !strings.Contains(stdout, w) {
				t.Errorf("participant %s --help: exit %d, lacks %q:\n%s", kind, code, w, stdout)
			}
		}
	}
}

// TestBenchOnARunningServerUsesItsCoordinatorAndSurvivesItsEnd: with --nats,
// bench drives the running `natstx server` through the coordinator API (its
// transactions show in the server's status bucket), measures the raw publish
// rate into a stream of its own that it deletes, and, when the server is
// killed mid-run, stops at once, prints what it measured and says the run
// was cut short (exit 1).
func TestBenchOnARunningServerUsesItsCoordinatorAndSurvivesItsEnd(t *testing.T) {
	srv, url := startServer(t)
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--nats", url, "-n", "2", "--count", "50", "--jetstream-msgs", "2000", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	s := benchJSON(t, stdout)
	if s["coordinator"] != "api" || s["committed"].(float64) != 50 || s["violations"].(float64) != 0 || s["cut_short"] != false || s["jetstream_msgs"].(float64) != 2000 {
		t.Fatalf("want 50 committed by the server's coordinator, 0 violations, 2000 raw messages: %s", stdout)
	}
	list := wantExit(t, 0, "", "tx", "list", "--nats", url, "--state", "committed", "--json")
	var sts []messages.TxStatus
	if err := json.Unmarshal([]byte(list), &sts); err != nil || len(sts) != 50 {
		t.Fatalf("the server's status bucket holds %d committed transactions, want bench's 50 (%v)", len(sts), err)
	}
	assertNoBenchStream(t, url)

	// The server goes away mid-run.
	b := startProc(t, nil, "bench", "--nats", url, "-n", "2", "--duration", "5m", "--jetstream-msgs", "1000")
	b.waitLine(t, "natstx bench:", 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, _ := run(t, 30*time.Second, "tx", "list", "--nats", url, "--state", "committed", "--json")
		var now []messages.TxStatus
		if json.Unmarshal([]byte(out), &now) == nil && len(now) > 60 {
			break // bench committed some of its own
		}
		if time.Now().After(deadline) {
			t.Fatalf("bench committed nothing within 60s; stdout:\n%s\nstderr:\n%s", b.out(), b.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = srv.stop(t, syscall.SIGKILL, 30*time.Second)
	if code := b.wait(t, 60*time.Second); code != 1 {
		t.Fatalf("bench after the server died: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, b.out(), b.stderr.String())
	}
	if !strings.Contains(b.stderr.String(), "the run was cut short: lost the connection to NATS") {
		t.Fatalf("bench does not say the run was cut short:\n%s", b.stderr.String())
	}
	var n int
	for _, l := range strings.Split(b.out(), "\n") {
		if _, err := fmt.Sscanf(l, "%d transactions in ", &n); err == nil {
			break
		}
	}
	t.Logf("bench cut short:\n%s%s", b.out(), b.stderr.String())
	if n < 1 || !strings.Contains(b.out(), "latency ms: mean") {
		t.Fatalf("bench threw its figures away (%d transactions reported):\n%s", n, b.out())
	}
}

// assertNoBenchStream fails if a stream of bench's raw measurement is left
// on the server at url.
func assertNoBenchStream(t *testing.T, url string) {
	t.Helper()
	nc, js := connectJS(t, url)
	defer nc.Close() // now, not at the test's end: the test goes on to kill the server
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		if strings.HasPrefix(n, "NATSTX_BENCH_") {
			t.Fatalf("bench left its stream %s on the server", n)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
}
