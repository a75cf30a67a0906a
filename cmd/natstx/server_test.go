package main

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
	"github.com/natstx/natstx/participants/services"
)

func TestServerServesAndShutsDownOnSIGTERM(t *testing.T) {
	p, url := startServer(t)
	nc, js := connectJS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The coordinator declared its stream and status bucket on the embedded
	// server, and answers the API.
	if _, err := js.Stream(ctx, messages.CommandStream); err != nil {
		t.Fatalf("stream %s: %v", messages.CommandStream, err)
	}
	if _, err := js.KeyValue(ctx, messages.StatusBucket); err != nil {
		t.Fatalf("bucket %s: %v", messages.StatusBucket, err)
	}
	m, err := nc.RequestWithContext(ctx, messages.APIBegin, []byte(`{"participants":[]}`))
	if err != nil || !strings.Contains(string(m.Data), "error") {
		t.Fatalf("API begin with no participants: %v %v", m, err)
	}
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stdout:\n%s\nstderr:\n%s", code, p.out(), p.stderr.String())
	}
	if out := p.out(); !strings.Contains(out, "coordinator stopped, no transaction in flight") {
		t.Fatalf("stdout:\n%s", out)
	}
}

func TestServerOnExternalNATSAndNATSCommand(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	n := startProc(t, nil, "nats", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dir)
	line := n.waitLine(t, "listening on", 20*time.Second)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	if !strings.Contains(line, url) || !strings.Contains(line, dir) {
		t.Fatalf("nats ready line %q names neither %s nor %s", line, url, dir)
	}
	// Only NATS runs: no coordinator answers.
	wantExit(t, 1, "no coordinator answered", "tx", "begin", "--nats", url, "-p", "a", "--timeout", "5s")

	s := startProc(t, nil, "server", "--config", filepath.Join("..", "..", "configs", "external.yaml"), "--nats", url, "--log-level", "warn")
	if l := s.waitLine(t, "ready on", 30*time.Second); !strings.Contains(l, url+" (external NATS)") {
		t.Fatalf("server ready line %q", l)
	}
	if code := s.stop(t, syscall.SIGINT, 20*time.Second); code != 0 {
		t.Fatalf("server exit %d; stderr:\n%s", code, s.stderr.String())
	}
	// The external server outlives the coordinator; JetStream kept its files.
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("no JetStream files in --data-dir: %v", err)
	}
	if code := n.stop(t, syscall.SIGINT, 20*time.Second); code != 0 {
		t.Fatalf("nats exit %d; stderr:\n%s", code, n.stderr.String())
	}
}

func TestServerFailsClearlyAndFast(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	start := time.Now()
	wantExit(t, 1, "cannot reach NATS at", "server", "--nats", deadURL(t))
	wantExit(t, 1, "cannot listen on "+taken.Addr().String(), "server", "--nats-listen", taken.Addr().String(), "--data-dir", t.TempDir())
	wantExit(t, 1, "cannot listen on "+taken.Addr().String(), "nats", "--nats-listen", taken.Addr().String(), "--data-dir", t.TempDir())
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("three failing starts took %v", el)
	}
	wantExit(t, 2, "unknown flag: --bogus", "server", "--bogus")
	wantExit(t, 2, "--nats-listen \"nowhere\": want HOST:PORT", "server", "--nats-listen", "nowhere")
	wantExit(t, 2, "--replicas", "server", "--replicas", "0")
	wantExit(t, 2, `--group-commit "maybe": use auto`, "server", "--group-commit", "maybe")
	wantExit(t, 2, "needs both --cluster-name and --cluster-listen", "nats", "--routes", "nats://127.0.0.1:6222")
	wantExit(t, 2, "unknown command \"extra\" for \"natstx server\"", "server", "extra")
}

// printed runs `natstx <cmd> --print-config` with env and args and returns
// the effective settings.
func printed(t *testing.T, env []string, args ...string) map[string]any {
	t.Helper()
	p := startProc(t, env, append(args, "--print-config")...)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("natstx %v --print-config: exit %d; stderr:\n%s", args, code, p.stderr.String())
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(p.out()), &m); err != nil {
		t.Fatalf("--print-config printed no YAML map: %v\n%s", err, p.out())
	}
	return m
}

func TestConfigPrecedenceFlagsEnvFileDefaults(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "natstx.yaml")
	if err := os.WriteFile(cfg, []byte("nats-listen: 127.0.0.1:5001\nprepare-timeout: 2s\nroutes: [nats://127.0.0.1:6001, nats://127.0.0.1:6002]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := printed(t, nil, "server")
	if m["nats-listen"] != "127.0.0.1:4222" || m["prepare-timeout"] != "5s" || m["data-dir"] != "natstx-data" {
		t.Fatalf("defaults: %v", m)
	}
	m = printed(t, nil, "server", "--config", cfg)
	if m["nats-listen"] != "127.0.0.1:5001" || m["prepare-timeout"] != "2s" || m["data-dir"] != "natstx-data" {
		t.Fatalf("file over defaults: %v", m)
	}
	if r, _ := m["routes"].([]any); len(r) != 2 || r[1] != "nats://127.0.0.1:6002" {
		t.Fatalf("routes from a YAML list: %v", m["routes"])
	}
	env := []string{"NATSTX_CONFIG=" + cfg, "NATSTX_NATS_LISTEN=127.0.0.1:5002", "NATSTX_ROUTES=nats://127.0.0.1:7001"}
	m = printed(t, env, "server")
	if m["nats-listen"] != "127.0.0.1:5002" || m["prepare-timeout"] != "2s" {
		t.Fatalf("env over file (file named by NATSTX_CONFIG): %v", m)
	}
	if r, _ := m["routes"].([]any); len(r) != 1 || r[0] != "nats://127.0.0.1:7001" {
		t.Fatalf("routes from NATSTX_ROUTES: %v", m["routes"])
	}
	m = printed(t, env, "server", "--nats-listen", "127.0.0.1:5003")
	if m["nats-listen"] != "127.0.0.1:5003" || m["prepare-timeout"] != "2s" {
		t.Fatalf("flag over env: %v", m)
	}

	bad := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wantExit(t, 2, "unknown key data-dri", "server", "--config", bad("typo.yaml", "data-dri: /tmp/x\n"), "--print-config")
	wantExit(t, 2, "prepare-timeout \"soon\"", "server", "--config", bad("value.yaml", "prepare-timeout: soon\n"), "--print-config")
	wantExit(t, 2, "must be a YAML map", "server", "--config", bad("broken.yaml", "nats-listen: [unclosed\n"), "--print-config")
	wantExit(t, 2, "does not exist", "server", "--config", filepath.Join(dir, "missing.yaml"), "--print-config")
	p := startProc(t, []string{"NATSTX_MAX_IN_FLIGHT=lots"}, "server", "--print-config")
	if code := p.wait(t, 30*time.Second); code != 2 || !strings.Contains(p.stderr.String(), "NATSTX_MAX_IN_FLIGHT: max-in-flight \"lots\"") {
		t.Fatalf("bad environment value: exit %d, stderr %q", code, p.stderr.String())
	}
}

func TestExampleConfigsLoad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "configs", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	top, _ := filepath.Glob(filepath.Join("..", "..", "configs", "*.yaml"))
	files = append(files, top...)
	if len(files) < 6 {
		t.Fatalf("configs/ has %d YAML files, want single, external, three cluster nodes and saga-order: %v", len(files), files)
	}
	names := map[string]bool{}
	sagas := 0
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "saga-") {
			// A saga file for 'tx begin --saga --file', not a server
			// config: it must parse as a saga.
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			def, err := saga.Parse(data)
			if err == nil {
				err = def.Validate()
			}
			if err != nil {
				t.Errorf("%s: %v", f, err)
			} else {
				runOnExampleServices(t, f, def)
			}
			sagas++
			continue
		}
		m := printed(t, nil, "server", "--config", f)
		if strings.Contains(f, "cluster") {
			if m["cluster-name"] == "" || m["replicas"] != "3" || len(m["routes"].([]any)) != 2 {
				t.Errorf("%s: a cluster node needs cluster-name, replicas 3 and routes to the two others: %v", f, m)
			}
			names[m["server-name"].(string)] = true
		}
	}
	if len(names) != 3 {
		t.Errorf("cluster nodes need three distinct server names, got %v", names)
	}
	if sagas == 0 {
		t.Errorf("configs/ has no saga example (saga-*.yaml): %v", files)
	}
}

// runOnExampleServices runs each step of def, a saga file meant for the
// example services, on a fresh one of the kind its participant names: its
// action, then its compensation, each in a transaction of its own, must be
// accepted, and the service's invariants hold after.
func runOnExampleServices(t *testing.T, file string, def saga.Definition) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	svcs := map[string]services.Service{}
	for _, st := range def.Steps {
		svc, ok := svcs[st.Participant]
		if !ok {
			var err error
			if svc, err = services.Open(ctx, st.Participant, filepath.Join(dir, st.Participant+".db")); err != nil {
				t.Errorf("%s: step %s: participant %s is not an example service: %v", file, st.Name, st.Participant, err)
				continue
			}
			t.Cleanup(func() { _ = svc.DB().Close() })
			svcs[st.Participant] = svc
		}
		step := participants.Step{SagaID: "example", Name: st.Name, Participant: st.Participant, Attempt: 1}
		for _, op := range []struct {
			name    string
			payload []byte
			run     func(context.Context, *sql.Tx, participants.Step, []byte) error
		}{{"action", st.Action, svc.Action}, {"compensation", st.Compensation, svc.Compensate}} {
			tx, err := svc.DB().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := op.run(ctx, tx, step, op.payload); err != nil {
				_ = tx.Rollback()
				t.Errorf("%s: step %s: the example %s service failed its %s %s: %v", file, st.Name, st.Participant, op.name, op.payload, err)
				break // no compensation of an action not done
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, svc := range svcs {
		if _, err := svc.Check(ctx); err != nil {
			t.Errorf("%s: after its steps and their compensations, %s: %v", file, name, err)
		}
	}
}

func TestServerDrainTimeoutLeavesInFlightWork(t *testing.T) {
	p, url := startServer(t, "--drain-timeout", "1s")
	// No participant "ghost" runs: the transaction stays preparing.
	wantExit(t, 0, "tx drain-1 preparing", "tx", "begin", "--nats", url, "--id", "drain-1", "-p", "ghost", "--async", "--prepare-timeout", "60s")
	start := time.Now()
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
	out := p.out()
	if !strings.Contains(out, "waiting up to 1s for 1 in flight") ||
		!strings.Contains(out, "coordinator stopped with 1 transactions in flight; they stay in the stream and buckets") {
		t.Fatalf("stdout:\n%s", out)
	}
	if el := time.Since(start); el < time.Second || el > 15*time.Second {
		t.Fatalf("shutdown took %v with --drain-timeout 1s", el)
	}
}

// startSloppy runs, in the test process, a participant name that answers
// every command it is sent, but with a reply header Natstx-Version "1.0",
// which the coordinator cannot read (conformance.StartMalformedReplier,
// on its own connection to url). It returns how many replies it sent so
// far, and a function that stops it (also called when the test ends).
func startSloppy(t *testing.T, url, name string) (replies func() int64, stop func()) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	replies, stopReplier := conformance.StartMalformedReplier(t, nc, name, conformance.VersionOneDotZero)
	return replies, func() { stopReplier(); nc.Close() }
}

// TestServerAndTxStatusShowRejectedReplies: a participant whose replies
// the coordinator cannot read (Natstx-Version "1.0") times the transaction
// out with a reason that names it; `tx status` shows its rejected replies
// and why, and `natstx server` prints at its stop how many of its replies
// it rejected, by participant (none for the participant that speaks the
// protocol right).
func TestServerAndTxStatusShowRejectedReplies(t *testing.T) {
	p, url := startServer(t, "--drain-timeout", "1s")
	loyalty := startProc(t, nil, "participant", "sim", "--name", "loyalty", "--nats", url, "--log-level", "warn")
	loyalty.waitLine(t, "ready", 30*time.Second)
	replies, stopSloppy := startSloppy(t, url, "sloppy")
	wantExit(t, 1, "sloppy answered, but its replies were rejected", "tx", "begin", "--nats", url, "--id", "rej-1",
		"-p", "loyalty", "-p", "sloppy", "--prepare-timeout", "1s")
	if replies() == 0 {
		t.Fatal("sloppy sent no reply")
	}
	status := wantExit(t, 0, "tx rej-1 abort", "tx", "status", "--nats", url, "rej-1")
	var sloppyLine, loyaltyLine string
	for _, l := range strings.Split(status, "\n") {
		switch f := strings.Fields(l); {
		case len(f) > 0 && f[0] == "sloppy":
			sloppyLine = l
		case len(f) > 0 && f[0] == "loyalty":
			loyaltyLine = l
		}
	}
	if !strings.Contains(sloppyLine, `[replies rejected: `) || !strings.Contains(sloppyLine, `"1.0"`) {
		t.Errorf("tx status does not show sloppy's rejected replies and why; sloppy's line %q; status:\n%s", sloppyLine, status)
	}
	if loyaltyLine == "" || strings.Contains(loyaltyLine, "replies rejected") {
		t.Errorf("loyalty's line %q; want it, without rejected replies; status:\n%s", loyaltyLine, status)
	}
	// The participants stop first, the server then (with rej-1 in flight:
	// sloppy's acknowledgements of the abort are rejected too).
	stopSloppy()
	if code := loyalty.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("loyalty exited %d; stderr:\n%s", code, loyalty.stderr.String())
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stdout:\n%s\nstderr:\n%s", code, p.out(), p.stderr.String())
	}
	m := regexp.MustCompile(`(?m)^natstx server: replies rejected as malformed, by participant: (.*) \(the log says why\)$`).FindStringSubmatch(p.out())
	if m == nil {
		t.Fatalf("no rejected replies line at the server's stop; stdout:\n%s", p.out())
	}
	n, err := strconv.Atoi(strings.TrimPrefix(m[1], "sloppy "))
	if err != nil || n < 1 || int64(n) > replies() {
		t.Fatalf("rejected replies by participant %q; want sloppy alone, with 1 to %d (the replies it sent)", m[1], replies())
	}
}
