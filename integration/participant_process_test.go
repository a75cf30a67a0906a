package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
)

// buildNatstx builds the natstx binary into a temporary directory, once per
// test binary run.
var buildNatstx = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "natstx-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "natstx")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/natstx/natstx/cmd/natstx").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// proc is a `natstx participant` child process.
type proc struct {
	cmd    *exec.Cmd
	stderr *lockedWriter
	done   chan error
}

// startProc starts `natstx participant args...` with env added, and waits for
// its ready line.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startNatstx(t, env, append([]string{"participant"}, args...)...)
}

// startNatstx starts `natstx args...` with env added, and waits for the line
// that says it is ready.
func startNatstx(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	bin, err := buildNatstx()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	return startReady(t, cmd, "ready", fmt.Sprintf("natstx %v", args))
}

// startReady starts cmd, collecting its standard error, and waits (30s at
// most) for a line of its standard output that contains marker; it reads the
// rest of that output until the process ends (a child that logs on standard
// output must not block). what names the process in failures. Cleanup
// kills it.
func startReady(t *testing.T, cmd *exec.Cmd, marker, what string) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &lockedWriter{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if !sent && strings.Contains(sc.Text(), marker) {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(p.kill)
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("%s exited before it was ready: %s", what, p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s was not ready after 30s: %s", what, p.stderr)
	}
	return p
}

// kill ends the process if it still runs and waits for it; safe to repeat.
func (p *proc) kill() {
	if p.done == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done = nil
}

// waitCrash waits for the process to die of its injected SIGKILL.
func (p *proc) waitCrash(t *testing.T) {
	t.Helper()
	p.waitKilled(t, "crashing after applying")
}

// waitKilled waits for the process to die of a SIGKILL it gave itself after
// printing marker on standard error.
func (p *proc) waitKilled(t *testing.T, marker string) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done = nil
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("process ended with %v, want killed by SIGKILL; stderr:\n%s", err, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), marker) {
			t.Fatalf("process died without the line %q; stderr:\n%s", marker, p.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("process did not crash within 60s; stderr:\n%s", p.stderr)
	}
}

// lockedWriter collects a child's standard error.
type lockedWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
}

// String returns what was written so far.
func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// rig is an embedded NATS server and a coordinator engine in the test
// process, for participants running elsewhere.
type rig struct {
	t   *testing.T
	srv *embedded.Server
	nc  *nats.Conn
	eng *orchestrator.Engine
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv, nc := startNATS(t, embedded.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng := startEngine(t, ctx, nc, orchestrator.Config{
		PrepareTimeout: 20 * time.Second, RetryBase: 100 * time.Millisecond, RetryMax: time.Second,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)).Named("coordinator"),
	})
	return &rig{t: t, srv: srv, nc: nc, eng: eng}
}

// inProcess runs the example service kind on its SQLite file at path behind
// a Runtime in the test process.
func (r *rig) inProcess(kind, path string, faults *services.Faults) services.Service {
	r.t.Helper()
	ctx := context.Background()
	svc, err := services.Open(ctx, kind, path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = svc.DB().Close() })
	b, err := services.NewBarrier(ctx, svc, faults)
	if err != nil {
		r.t.Fatal(err)
	}
	rt, err := participants.New(r.nc, participants.Config{Name: kind, Barrier: b, AckWait: 2 * time.Second, OpTimeout: time.Second,
		RetryDelay: 20 * time.Millisecond, Logger: zaptest.NewLogger(r.t, zaptest.Level(zap.ErrorLevel)).Named(kind)})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(rt.Stop)
	return svc
}

// order is one transaction of a run and its outcome.
type order struct {
	services.Result
	payloads map[string][]byte
}

// run executes n transactions across the services of kinds, conc at a time,
// with each service's example payload, and returns them with their outcomes.
func (r *rig) run(n, conc int, kinds ...string) []order {
	r.t.Helper()
	orders := make([]order, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req := orchestrator.Request{ID: orchestrator.NewID()}
				o := order{Result: services.Result{ID: req.ID}, payloads: map[string][]byte{}}
				for _, kind := range kinds {
					p := services.Payload(kind, i)
					o.Participants = append(o.Participants, kind)
					o.payloads[kind] = p
					req.Participants = append(req.Participants, orchestrator.Participant{Name: kind, Payload: p})
				}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				out, err := r.eng.Execute(ctx, req)
				cancel()
				if err != nil || !out.State.Decided() {
					r.t.Errorf("transaction %s: %v (state %s)", req.ID, err, out.State)
				}
				o.Committed = out.Committed()
				orders[i] = o
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return orders
}

// verify checks atomicity and exact effects on the services' databases after
// quiescence: the units sold and the funds captured equal the sums of the
// committed orders' payloads (no effect lost, none doubled), the conservation
// invariants hold, and nothing is left staged. It logs the counts.
func (r *rig) verify(orders []order, svcs map[string]services.Service) {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for r.eng.Stats().InFlight > 0 {
		if time.Now().After(deadline) {
			r.t.Fatalf("%d transactions still in flight after 60s", r.eng.Stats().InFlight)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := context.Background()
	results := make([]services.Result, len(orders))
	committed, sold, captured := 0, 0, 0
	for i, o := range orders {
		results[i] = o.Result
		if !o.Committed {
			continue
		}
		committed++
		if p := o.payloads["inventory"]; p != nil {
			var v services.InventoryOrder
			_ = json.Unmarshal(p, &v)
			sold += v.Qty
		}
		if p := o.payloads["payment"]; p != nil {
			var v services.PaymentCharge
			_ = json.Unmarshal(p, &v)
			captured += v.Amount
		}
	}
	violations, problems, err := services.CheckAtomicity(ctx, results, svcs)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, p := range problems {
		r.t.Error("violation:", p)
	}
	report.Counts(r.t, fmt.Sprintf("atomicity: %d transactions, %d committed, %d aborted, %d violations", len(orders), committed, len(orders)-committed, violations))
	lines, err := services.CheckAll(ctx, svcs)
	for _, l := range lines {
		r.t.Log(l)
	}
	if err != nil {
		r.t.Error(err)
	}
	if inv := svcs["inventory"]; inv != nil {
		var got int
		if err := inv.DB().QueryRowContext(ctx, `SELECT SUM(sold) FROM stock`).Scan(&got); err != nil {
			r.t.Fatal(err)
		}
		if got != sold {
			r.t.Errorf("inventory sold %d units; the committed orders add up to %d", got, sold)
		}
	}
	if pay := svcs["payment"]; pay != nil {
		var got int
		if err := pay.DB().QueryRowContext(ctx, `SELECT balance FROM accounts WHERE account = ?`, services.Merchant).Scan(&got); err != nil {
			r.t.Fatal(err)
		}
		if got != captured {
			r.t.Errorf("payment captured %d; the committed charges add up to %d", got, captured)
		}
	}
	if violations != 0 {
		r.t.Errorf("%d atomicity violations", violations)
	}
}

// TestParticipantProcessCrash kills the inventory participant process with
// SIGKILL right after it applied a prepare (or a commit) and before its reply,
// restarts it on the same database, and checks on the services' databases
// that no effect was lost or applied twice.
func TestParticipantProcessCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the natstx binary")
	}
	for _, point := range []string{"after-prepare-apply:4", "after-commit-apply:4"} {
		t.Run(point, func(t *testing.T) {
			r := newRig(t)
			dir := t.TempDir()
			invPath := filepath.Join(dir, "inventory.db")
			args := []string{"inventory", "--db", invPath, "--nats", r.srv.URL(), "--ack-wait", "2s", "--log-level", "error"}
			first := startProc(t, []string{"NATSTX_CRASH_AT=" + point}, args...)
			svcs := map[string]services.Service{
				"payment": r.inProcess("payment", filepath.Join(dir, "payment.db"), &services.Faults{SuccessRate: 0.8, Seed: 7}),
			}
			done := make(chan []order, 1)
			go func() { done <- r.run(30, 6, "inventory", "payment") }()
			first.waitCrash(t)
			startProc(t, nil, args...) // the restart, on the same database
			orders := <-done

			inv, err := services.Open(context.Background(), "inventory", invPath)
			if err != nil {
				t.Fatal(err)
			}
			defer inv.DB().Close()
			svcs["inventory"] = inv
			r.verify(orders, svcs)
		})
	}
}

// TestParticipantInstancesShareWork runs two inventory processes on one
// database and one durable consumer, kills one mid-run, and checks that
// nothing is lost.
func TestParticipantInstancesShareWork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the natstx binary")
	}
	r := newRig(t)
	dir := t.TempDir()
	invPath := filepath.Join(dir, "inventory.db")
	args := []string{"inventory", "--db", invPath, "--nats", r.srv.URL(), "--ack-wait", "2s", "--log-level", "error"}
	doomed := startProc(t, []string{"NATSTX_CRASH_AT=after-prepare-apply:15"}, args...)
	startProc(t, nil, args...)
	svcs := map[string]services.Service{
		"payment": r.inProcess("payment", filepath.Join(dir, "payment.db"), &services.Faults{SuccessRate: 0.9, Seed: 11}),
	}
	done := make(chan []order, 1)
	go func() { done <- r.run(80, 10, "inventory", "payment") }()
	doomed.waitCrash(t)
	orders := <-done
	inv, err := services.Open(context.Background(), "inventory", invPath)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.DB().Close()
	svcs["inventory"] = inv
	r.verify(orders, svcs)
}

// TestRestartedParticipantProcessDoesNotAbortALiveTransaction (issue 9,
// finding 2): the inventory process votes commit on a transaction with a
// 3-minute timeout, is killed before its reply, and restarts on the same
// database. It finds the transaction prepared in its barrier and, after its
// in-doubt time, asks the coordinators about it while the owner still waits
// for the payment vote (payment is not running yet). A second coordinator,
// which does not own the transaction, answers some of those questions: it
// must answer "pending", because the restarted participant sends the
// deadline it kept with the prepare, and nothing may be aborted. Once
// payment runs and votes, the transaction commits everywhere.
func TestRestartedParticipantProcessDoesNotAbortALiveTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the natstx binary")
	}
	r := newRig(t)
	other := startEngine(t, context.Background(), r.connect(), orchestrator.Config{Instance: "other",
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)).Named("other")})

	dir := t.TempDir()
	invPath := filepath.Join(dir, "inventory.db")
	// --in-doubt-after 300ms: the restarted process asks about the
	// transaction within a second instead of after the default 10s.
	args := []string{"inventory", "--db", invPath, "--nats", r.srv.URL(), "--ack-wait", "2s", "--in-doubt-after", "300ms", "--log-level", "error"}
	first := startProc(t, []string{"NATSTX_CRASH_AT=after-prepare-apply:1"}, args...)
	req := orchestrator.Request{ID: orchestrator.NewID(), Timeout: 3 * time.Minute}
	o := order{Result: services.Result{ID: req.ID, Participants: []string{"inventory", "payment"}}, payloads: map[string][]byte{}}
	for _, kind := range o.Participants {
		o.payloads[kind] = services.Payload(kind, 0)
		req.Participants = append(req.Participants, orchestrator.Participant{Name: kind, Payload: o.payloads[kind]})
	}
	type result struct {
		out orchestrator.Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		out, err := r.eng.Execute(ctx, req)
		done <- result{out, err}
	}()
	first.waitCrash(t)
	startProc(t, nil, args...) // the restart: the prepare is in its barrier, its reply never went out

	// The restarted participant asks after its in-doubt time
	// (--in-doubt-after), every half of it, each question to one
	// coordinator of the queue group. Wait until
	// the coordinator that does not own the transaction has answered one
	// (each question has an even chance to reach it).
	deadline := time.Now().Add(150 * time.Second)
	for other.Stats().InDoubtQueries == 0 {
		select {
		case res := <-done:
			t.Fatalf("the transaction ended (%+v, %v) before payment voted; inventory's log:\n%s", res.out, res.err, first.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other coordinator got no question within 150s (the owner answered %d)", r.eng.Stats().InDoubtQueries)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("questions: %d to the owner, %d to the other coordinator", r.eng.Stats().InDoubtQueries, other.Stats().InDoubtQueries)
	svcs := map[string]services.Service{"payment": r.inProcess("payment", filepath.Join(dir, "payment.db"), nil)}
	res := <-done
	if res.err != nil || !res.out.Committed() {
		t.Fatalf("transaction %s: %+v, %v; want committed: a restarted participant aborted a live transaction", req.ID, res.out, res.err)
	}
	o.Committed = true
	inv, err := services.Open(context.Background(), "inventory", invPath)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.DB().Close()
	svcs["inventory"] = inv
	r.verify([]order{o}, svcs)
}

// connect returns a new connection to the rig's server, closed at cleanup.
func (r *rig) connect() *nats.Conn {
	r.t.Helper()
	return connect(r.t, r.srv.URL())
}
