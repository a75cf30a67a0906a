package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants/sim"
)

func decodeStatus(t *testing.T, stdout string) messages.TxStatus {
	t.Helper()
	var st messages.TxStatus
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("not one TxStatus in JSON: %v\n%s", err, stdout)
	}
	return st
}

func TestTxBeginStatusListWatchAbort(t *testing.T) {
	// --status-linger 0: every state change is written, so the watcher sees
	// the decision too (by default a fast transaction's is not).
	_, url := startServer(t, "--status-linger", "0")
	inventory := startSim(t, url, sim.Config{Name: "inventory"})
	payment := startSim(t, url, sim.Config{Name: "payment"})
	refuser := startSim(t, url, sim.Config{Name: "refuser", SuccessRate: sim.Rate(0)})

	// A watcher started before the transactions sees each one's changes.
	watch := startProc(t, nil, "tx", "watch", "--nats", url, "--json", "--tx", "order-1", "--count", "3", "--for", "60s")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(watch.stderr.String(), "watching transactions") {
		if time.Now().After(deadline) {
			t.Fatalf("tx watch did not start; stderr:\n%s", watch.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// begin with payloads from flags waits for the outcome: committed.
	stdout, stderr, code := run(t, 30*time.Second, "tx", "begin", "--nats", url, "--id", "order-1",
		"-p", `inventory={"sku":"A","qty":1}`, "-p", `payment={"amount":10}`)
	if code != 0 || !strings.HasPrefix(stdout, "tx order-1 committed") || !strings.Contains(stdout, "inventory  vote yes  acked") {
		t.Fatalf("begin: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !inventory.Committed("order-1") || !payment.Committed("order-1") {
		t.Fatalf("order-1 reported committed but not applied by both services")
	}

	// watch printed the three state changes of order-1, ending committed.
	if c := watch.wait(t, 20*time.Second); c != 0 {
		t.Fatalf("watch exit %d; stderr:\n%s", c, watch.stderr.String())
	}
	var states []string
	for _, l := range strings.Split(strings.TrimSpace(watch.out()), "\n") {
		st := decodeStatus(t, l)
		if st.ID != "order-1" {
			t.Fatalf("watch --tx order-1 printed %s", st.ID)
		}
		states = append(states, st.State)
	}
	if strings.Join(states, ",") != "preparing,committing,committed" {
		t.Fatalf("watch saw %v", states)
	}

	// status, as text and JSON.
	stdout = wantExit(t, 0, "tx order-1 committed", "tx", "status", "order-1", "--nats", url)
	if !strings.Contains(stdout, "payment    vote yes  acked") {
		t.Fatalf("status:\n%s", stdout)
	}
	stdout, _, _ = run(t, 30*time.Second, "tx", "status", "order-1", "--nats", url, "--json")
	if st := decodeStatus(t, stdout); st.State != "committed" || len(st.Participants) != 2 || !st.Participants[0].Acked {
		t.Fatalf("status --json: %+v", st)
	}

	// begin from a YAML file; a refusing participant aborts it: exit 1.
	file := filepath.Join(t.TempDir(), "order.yaml")
	if err := os.WriteFile(file, []byte("id: order-2\nparticipants:\n  - name: inventory\n    payload: {sku: B, qty: 2}\n  - name: refuser\n    payload: plain text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = run(t, 30*time.Second, "tx", "begin", "--nats", url, "--file", file, "--json")
	if code != 1 || !strings.Contains(stderr, "transaction order-2 aborted") {
		t.Fatalf("begin of an aborting transaction: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	st := decodeStatus(t, stdout)
	// begin returns once the abort is decided: aborting, or already aborted.
	if (st.State != "aborting" && st.State != "aborted") || st.Participants[1].Name != "refuser" || st.Participants[1].Vote != "no" ||
		!strings.Contains(st.Reason, "refuser voted abort") {
		t.Fatalf("aborted status: %+v", st)
	}
	if inventory.Committed("order-2") {
		t.Fatal("order-2 aborted but inventory applied it")
	}

	// --async returns while a participant that does not run ("ghost") has
	// not voted; the operator aborts it.
	wantExit(t, 0, "tx order-3 preparing", "tx", "begin", "--nats", url, "--id", "order-3", "-p", "inventory", "-p", "ghost", "--async", "--prepare-timeout", "60s")
	wantExit(t, 0, "tx order-3 preparing", "tx", "status", "order-3", "--nats", url)
	stdout = wantExit(t, 0, "", "tx", "abort", "order-3", "--nats", url, "--reason", "test abort", "--who", "alice", "--json")
	if st := decodeStatus(t, stdout); (st.State != "aborting" && st.State != "aborted") || !strings.Contains(st.Reason, "test abort") {
		t.Fatalf("abort --json: %+v", st)
	}
	// Its history: begun, the prepares sent, inventory's vote, the
	// operator's abort (by alice) and the decision it made.
	stdout = wantExit(t, 0, "history (", "tx", "status", "order-3", "--nats", url, "--history")
	for _, want := range []string{"begun", "prepare to inventory, ghost #1", "vote      inventory  yes", "operator", "abort: test abort (by alice)", "decided"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("status --history lacks %q:\n%s", want, stdout)
		}
	}
	if plain := wantExit(t, 0, "tx order-3", "tx", "status", "order-3", "--nats", url); strings.Contains(plain, "history") {
		t.Fatalf("status without --history prints it:\n%s", plain)
	}
	stdout = wantExit(t, 0, "", "tx", "status", "order-3", "--nats", url, "--history", "--json")
	if st := decodeStatus(t, stdout); len(st.History) < 5 || st.History[0].Event != messages.EventBegun {
		t.Fatalf("status --history --json: %+v", st.History)
	}
	wantExit(t, 1, "only a preparing transaction can be aborted", "tx", "abort", "order-3", "--nats", url)
	wantExit(t, 1, "only a preparing transaction can be aborted", "tx", "abort", "order-1", "--nats", url)

	// list, all and by state, as a table and as JSON.
	stdout = wantExit(t, 0, "order-1", "tx", "list", "--nats", url)
	for _, want := range []string{"ID", "STATE", "order-2", "order-3", "inventory,payment"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("list lacks %q:\n%s", want, stdout)
		}
	}
	stdout = wantExit(t, 0, "", "tx", "list", "--nats", url, "--state", "committed", "--json")
	var list []messages.TxStatus
	if err := json.Unmarshal([]byte(stdout), &list); err != nil || len(list) != 1 || list[0].ID != "order-1" {
		t.Fatalf("list --state committed --json: %v %s", err, stdout)
	}
	wantExit(t, 0, "no transactions", "tx", "list", "--nats", url, "--state", "committing")

	// Unknown transaction IDs.
	wantExit(t, 1, "no transaction order-404 on this NATS", "tx", "status", "order-404", "--nats", url)
	wantExit(t, 1, "no transaction order-404 on this NATS", "tx", "abort", "order-404", "--nats", url)
	// A duplicate ID is refused by the coordinator.
	wantExit(t, 1, "duplicate transaction ID", "tx", "begin", "--nats", url, "--id", "order-1", "-p", "inventory")
	_ = refuser
}

func TestTxWrongInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("participants:\n  - nom: inventory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		want string
		args []string
	}{
		{"unknown flag: --bogus", []string{"tx", "begin", "--bogus"}},
		{"no participants", []string{"tx", "begin"}},
		{"does-not-exist.yaml: no such file", []string{"tx", "begin", "--file", filepath.Join(dir, "does-not-exist.yaml")}},
		{"field nom not found", []string{"tx", "begin", "--file", bad}},
		{"participant \"in ventory\" has ' '", []string{"tx", "begin", "-p", "in ventory={}"}},
		{"participant inventory is named twice", []string{"tx", "begin", "-p", "inventory", "-p", "inventory"}},
		{"nope.json: no such file", []string{"tx", "begin", "-p", "inventory=@" + filepath.Join(dir, "nope.json")}},
		{"--state \"bogus\": want one of preparing", []string{"tx", "list", "--state", "bogus"}},
		{"accepts 1 arg(s), received 0", []string{"tx", "status"}},
		{"transaction ID \"a.b\" has '.'", []string{"tx", "status", "a.b"}},
		{"accepts 1 arg(s), received 2", []string{"tx", "abort", "a", "b"}},
		{"tx needs a subcommand", []string{"tx"}},
		{"--count must not be negative", []string{"tx", "watch", "--count", "-1"}},
	} {
		wantExit(t, 2, c.want, c.args...)
	}
}

func TestClientCommandsFailFastWhenNATSIsUnreachable(t *testing.T) {
	url := deadURL(t)
	for _, args := range [][]string{
		{"tx", "begin", "-p", "inventory"},
		{"tx", "status", "order-1"},
		{"tx", "list"},
		{"tx", "watch"},
		{"tx", "abort", "order-1"},
		{"publish", "--participant", "inventory", "--tx", "order-1", "--op", "commit"},
		{"bench", "--count", "1"},
		{"participant", "sim", "--name", "x", "--connect-wait", "1s"},
	} {
		start := time.Now()
		stdout, stderr, code := run(t, 20*time.Second, append(args, "--nats", url)...)
		if code != 1 || !strings.Contains(stderr, "cannot reach NATS at "+url) || !strings.Contains(stderr, "--nats") {
			t.Errorf("natstx %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("natstx %s took %v to report unreachable NATS", strings.Join(args, " "), el)
		}
	}
	// The same, with the URL from the environment; the server says that the
	// variable made it look for an external NATS.
	p := startProc(t, []string{"NATSTX_NATS=" + url}, "tx", "list")
	if code := p.wait(t, 10*time.Second); code != 1 || !strings.Contains(p.stderr.String(), "cannot reach NATS at "+url) {
		t.Errorf("NATSTX_NATS: exit %d, stderr %q", code, p.stderr.String())
	}
	p = startProc(t, []string{"NATSTX_NATS=" + url}, "server")
	if code := p.wait(t, 10*time.Second); code != 1 || !strings.Contains(p.stderr.String(), "NATSTX_NATS is set, so the server uses that NATS instead of embedding one") {
		t.Errorf("server with NATSTX_NATS: exit %d, stderr %q", code, p.stderr.String())
	}
}

func TestTxWatchEndsWhenNATSGoesAway(t *testing.T) {
	srv, url := startServer(t)
	watch := startProc(t, nil, "tx", "watch", "--nats", url)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(watch.stderr.String(), "watching transactions") {
		if time.Now().After(deadline) {
			t.Fatalf("tx watch did not start; stderr:\n%s", watch.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = srv.cmd.Process.Kill()
	if code := watch.wait(t, 20*time.Second); code != 1 || !strings.Contains(watch.stderr.String(), "lost the connection to NATS") {
		t.Fatalf("watch after the server died: exit %d, stderr:\n%s", code, watch.stderr.String())
	}
}

// TestTxBeginTimeoutBoundsOnlyTheWait: tx begin's --timeout bounds the wait
// for the outcome, never the transaction. Without --prepare-timeout (or a
// file's timeout) the request carries no timeout, and the transaction gets
// the coordinator's prepare timeout even when --timeout is shorter; with
// it, the request carries --prepare-timeout, even when longer than
// --timeout.
func TestTxBeginTimeoutBoundsOnlyTheWait(t *testing.T) {
	const prepare = 4 * time.Second // the coordinator's
	_, url := startServer(t, "--prepare-timeout", prepare.String())
	startSim(t, url, sim.Config{Name: "inventory"})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A second subscriber sees each begin request the coordinator gets.
	sent := spyOn[messages.BeginRequest](t, nc, messages.APIBegin)

	// ghost never votes: no outcome within the 1s wait.
	wantExit(t, 1, "no outcome within --timeout 1s", "tx", "begin", "--nats", url, "--id", "wait-1", "-p", "inventory", "-p", "ghost", "--timeout", "1s")
	if req := sent(); req.TimeoutMs != 0 || req.CallerTimeoutMs != 0 {
		t.Fatalf("timeout_ms %d, caller_timeout_ms %d sent; want neither (the coordinator's prepare timeout), not the 1s wait", req.TimeoutMs, req.CallerTimeoutMs)
	}
	// It times out at the coordinator's prepare timeout, not after 1s.
	var st messages.TxStatus
	for limit := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st = decodeStatus(t, wantExit(t, 0, "", "tx", "status", "wait-1", "--nats", url, "--json", "--history"))
		if st.State == "aborting" || st.State == "aborted" {
			break
		}
		if time.Now().After(limit) {
			t.Fatalf("wait-1 still %s 20s after it began", st.State)
		}
	}
	var begun, timedOut time.Time
	for _, ev := range st.History {
		switch ev.Event {
		case messages.EventBegun:
			begun = ev.At
		case messages.EventTimeout:
			timedOut = ev.At
		}
	}
	if took := timedOut.Sub(begun); !st.TimedOut || begun.IsZero() || timedOut.IsZero() || took < prepare-100*time.Millisecond || took > prepare+3*time.Second {
		t.Fatalf("wait-1 timed out %v after it began (timed out: %v), want the coordinator's prepare timeout %v: %+v", took, st.TimedOut, prepare, st.History)
	}

	// --prepare-timeout longer than --timeout is sent as it is.
	wantExit(t, 0, "tx wait-2 preparing", "tx", "begin", "--nats", url, "--id", "wait-2", "-p", "inventory", "-p", "ghost", "--prepare-timeout", "20s", "--timeout", "2s", "--async")
	if req := sent(); req.TimeoutMs != 20_000 || req.CallerTimeoutMs != 0 {
		t.Fatalf("timeout_ms %d, caller_timeout_ms %d sent; want --prepare-timeout's 20000 alone, not the 2s wait", req.TimeoutMs, req.CallerTimeoutMs)
	}
	wantExit(t, 0, "", "tx", "abort", "wait-2", "--nats", url)
}
