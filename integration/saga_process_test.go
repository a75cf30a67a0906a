package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants/services"
)

// The saga process tests run `natstx server` and the three example services
// as `natstx participant` processes on SQLite, against an embedded NATS
// server in the test process; the test begins sagas of three steps (reserve
// stock, charge payment, book shipping) through the coordinator API
// (orchestrator.Client.BeginSaga with the definition's text), kills a process
// at a chosen moment, restarts it, and checks on the services' databases,
// once every process is stopped, that every saga ended completed (each step
// applied) or compensated (each step released or never done), and that the
// services' conservation invariants hold, with exact sums: units sold, funds
// captured and deliveries booked are those of the completed sagas.

// sagaKinds are the services a saga's steps go to, in order, and the names
// of their steps.
var (
	sagaKinds = []string{"inventory", "payment", "shipping"}
	sagaSteps = map[string]string{"inventory": "reserve", "payment": "charge", "shipping": "book"}
)

// sagaRig is an embedded NATS server, a `natstx server` process and one
// `natstx participant` process per example service, each on its SQLite file.
type sagaRig struct {
	t        *testing.T
	srv      *embedded.Server
	nc       *nats.Conn
	client   *orchestrator.Client
	dbs      map[string]string
	partArgs []string
	parts    map[string]*proc
	// sagas are the sagas begun, by ID.
	mu    sync.Mutex
	sagas map[string]*sagaCase
}

// sagaCase is one saga the test began: its action payloads by service.
type sagaCase struct {
	id       string
	payloads map[string][]byte
}

// newSagaRig starts NATS, the coordinator process (instance c1) and the
// three participant processes, each given partArgs.
func newSagaRig(t *testing.T, partArgs ...string) (*sagaRig, *proc) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the natstx binary")
	}
	srv, nc := startNATS(t, embedded.Config{Host: "127.0.0.1"})
	client, err := orchestrator.NewClient(nc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &sagaRig{t: t, srv: srv, nc: nc, client: client, dbs: map[string]string{}, partArgs: partArgs,
		parts: map[string]*proc{}, sagas: map[string]*sagaCase{}}
	// The coordinator first: it declares the command stream the
	// participants consume.
	coord := r.startServer("c1")
	for _, kind := range sagaKinds {
		r.dbs[kind] = filepath.Join(dir, kind+".db")
		r.startParticipant(kind)
	}
	return r, coord
}

// startServer runs `natstx server` on the rig's NATS as instance, with a
// short lease so that a restart recovers at once.
func (r *sagaRig) startServer(instance string) *proc {
	r.t.Helper()
	return startNatstx(r.t, nil, "server", "--nats", r.srv.URL(), "--instance", instance,
		"--lease-ttl", "1s", "--retention", "5m", "--log-level", "warn")
}

// startParticipant runs (or runs again) the example service kind on its
// database.
func (r *sagaRig) startParticipant(kind string) *proc {
	r.t.Helper()
	args := append([]string{kind, "--db", r.dbs[kind], "--nats", r.srv.URL(), "--ack-wait", "2s", "--log-level", "error"}, r.partArgs...)
	p := startProc(r.t, nil, args...)
	r.parts[kind] = p
	return p
}

// stopGracefully ends a process with SIGTERM (SIGKILL after 15s) and waits for it.
func stopGracefully(p *proc) {
	if p.done == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		p.done = nil
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

// sagaPolicy is the timing part of a definition.
type sagaPolicy struct {
	timeout, retryInitial, retryMax  time.Duration
	attempts                         int
	compInitial, compMax, stuckAfter time.Duration
	stuckAfterAttempts               int
	// shipping is the book step's action; nil for the example payload.
	shipping []byte
}

// sagaDefinition writes the definition of saga number i in the saga file
// format (JSON), checks that it parses, and returns its text and action
// payloads.
func sagaDefinition(t *testing.T, i int, p sagaPolicy) (string, map[string][]byte) {
	t.Helper()
	payloads := map[string][]byte{}
	var steps []map[string]any
	for _, kind := range sagaKinds {
		pl := services.Payload(kind, i)
		if kind == "shipping" && p.shipping != nil {
			pl = p.shipping
		}
		payloads[kind] = pl
		steps = append(steps, map[string]any{"name": sagaSteps[kind], "participant": kind,
			"action": json.RawMessage(pl), "compensation": json.RawMessage(pl)})
	}
	doc := map[string]any{
		"name":    "order",
		"timeout": p.timeout.String(),
		"retry": map[string]any{"initial_interval": p.retryInitial.String(), "backoff_factor": 2,
			"max_interval": p.retryMax.String(), "max_attempts": p.attempts},
		"compensation": map[string]any{"initial_interval": p.compInitial.String(), "backoff_factor": 2,
			"max_interval": p.compMax.String(), "stuck_after_attempts": p.stuckAfterAttempts, "stuck_after": p.stuckAfter.String()},
		"steps": steps,
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := saga.Parse(b); err != nil {
		t.Fatalf("the test's own definition does not parse: %v\n%s", err, b)
	}
	return string(b), payloads
}

// begin begins sagas prefix-from .. prefix-(from+n-1) through the
// coordinator API, 16 at a time, each with the definition def returns, and
// fails the test if a begin is not answered.
func (r *sagaRig) begin(prefix string, from, n int, def func(i int) (string, map[string][]byte)) []string {
	r.t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	ids := make([]string, n)
	errs := make(chan error, n)
	for k := range n {
		i := from + k
		id := fmt.Sprintf("%s-%04d", prefix, i)
		ids[k] = id
		text, payloads := def(i)
		r.mu.Lock()
		r.sagas[id] = &sagaCase{id: id, payloads: payloads}
		r.mu.Unlock()
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// 10s for the answer, not for the saga: a context deadline
			// would be the saga's (Client.BeginSaga).
			ctx, cancel := context.WithCancel(context.Background())
			defer time.AfterFunc(10*time.Second, cancel).Stop()
			defer cancel()
			st, err := r.client.BeginSaga(ctx, messages.SagaBeginRequest{ID: id, Definition: text})
			switch {
			case err != nil:
				errs <- fmt.Errorf("saga %s: begin: %w", id, err)
			case st.Protocol != messages.ProtocolSaga || st.ID != id:
				errs <- fmt.Errorf("saga %s: begin answered %+v", id, st)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		r.t.Error(err)
	}
	if r.t.Failed() {
		r.t.FailNow()
	}
	return ids
}

// statuses reads the status list (Client.List) and returns the sagas'
// statuses by ID.
func (r *sagaRig) statuses() map[string]messages.TxStatus {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := r.client.List(ctx)
	if err != nil {
		r.t.Fatalf("tx list: %v", err)
	}
	out := map[string]messages.TxStatus{}
	for _, st := range list {
		out[st.ID] = st
	}
	return out
}

// countStates counts the states of ids in a status list; a saga missing from
// the list counts as "missing".
func countStates(list map[string]messages.TxStatus, ids []string) map[string]int {
	n := map[string]int{}
	for _, id := range ids {
		st, ok := list[id]
		if !ok {
			n["missing"]++
			continue
		}
		n[st.State]++
	}
	return n
}

// waitList polls the status list every 25ms until ok says so, for at most
// within, and returns the list that satisfied it; it fails the test with
// the last counts of ids' states when the time is up.
func (r *sagaRig) waitList(what string, ids []string, within time.Duration, ok func(map[string]messages.TxStatus) bool) map[string]messages.TxStatus {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		list := r.statuses()
		if ok(list) {
			return list
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: not within %s; states now %v; not final:\n%s%s", what, within, countStates(list, ids), notFinal(list, ids), r.records(list, ids))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// notFinal describes the sagas of ids that are missing or not final in a
// status list, at most 10, step by step.
func notFinal(list map[string]messages.TxStatus, ids []string) string {
	var b strings.Builder
	n := 0
	for _, id := range ids {
		st, ok := list[id]
		if ok && (st.State == string(saga.StateCompleted) || st.State == string(saga.StateCompensated)) {
			continue
		}
		if n++; n > 10 {
			b.WriteString("...\n")
			break
		}
		if !ok {
			fmt.Fprintf(&b, "%s: not listed\n", id)
			continue
		}
		fmt.Fprintf(&b, "%s: %s (owner %s, updated %s, reason %q)\n", id, st.State, st.Owner, st.UpdatedAt.Format(time.StampMilli), st.Reason)
		for _, s := range st.Steps {
			fmt.Fprintf(&b, "  %s@%s: %s, %d attempts, %d compensation attempts, last error %q, next retry %s, stuck %v\n",
				s.Name, s.Participant, s.Status, s.Attempts, s.CompensationAttempts, s.LastError, s.NextRetryAt.Format(time.StampMilli), s.Stuck)
		}
	}
	return b.String()
}

// sagaRecord is a saga's record as the coordinators keep it
// (orchestrator.SagaBucket), with its key's revision and write time.
type sagaRecord struct {
	Owner   string      `json:"owner"`
	Record  saga.Record `json:"record"`
	rev     uint64
	written time.Time
}

// readRecords reads the saga records of ids; a saga without one is left out.
func (r *sagaRig) readRecords(ids []string) (map[string]sagaRecord, error) {
	js, err := jetstream.New(r.nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, orchestrator.SagaBucket)
	if err != nil {
		return nil, err
	}
	out := map[string]sagaRecord{}
	for _, id := range ids {
		e, err := kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var rec sagaRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("record of %s: %w", id, err)
		}
		rec.rev, rec.written = e.Revision(), e.Created()
		out[id] = rec
	}
	return out, nil
}

// notFinalIDs returns the sagas of ids that are missing or not final in a
// status list.
func notFinalIDs(list map[string]messages.TxStatus, ids []string) []string {
	var out []string
	for _, id := range ids {
		if st, ok := list[id]; !ok || !saga.State(st.State).Final() {
			out = append(out, id)
		}
	}
	return out
}

// records describes the records of the sagas of ids that are missing or not
// final in a status list, at most 10: the state, owner and revision the
// coordinators keep, which the status list may lag.
func (r *sagaRig) records(list map[string]messages.TxStatus, ids []string) string {
	pending := notFinalIDs(list, ids)
	if len(pending) > 10 {
		pending = pending[:10]
	}
	recs, err := r.readRecords(pending)
	if err != nil {
		return "saga records: " + err.Error()
	}
	var b strings.Builder
	for _, id := range pending {
		rec, ok := recs[id]
		if !ok {
			fmt.Fprintf(&b, "record of %s: none\n", id)
			continue
		}
		fmt.Fprintf(&b, "record of %s: %s, owner %s, record revision %d, key revision %d, written %s;", id, rec.Record.State, rec.Owner,
			rec.Record.Revision, rec.rev, rec.written.Format(time.StampMilli))
		for _, s := range rec.Record.Steps {
			fmt.Fprintf(&b, " %s %s/%d/%d", s.Name, s.Status, s.Attempts, s.CompensationAttempts)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// allIDs returns the IDs of every saga begun, sorted.
func (r *sagaRig) allIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.sagas))
	for id := range r.sagas {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// settle waits (at most within) until every saga begun is completed or
// compensated in the status list, and returns the list. A saga whose
// status stays not final for 10s while its record (SagaBucket) is final is
// an error: its final status was lost and nothing wrote it again, so tx
// status and tx list say it still runs. Its record's state then stands in
// for its status in the list returned, so that the databases are still
// checked against how the saga ended.
func (r *sagaRig) settle(within time.Duration) map[string]messages.TxStatus {
	r.t.Helper()
	const staleFor = 10 * time.Second
	ids := r.allIDs()
	deadline := time.Now().Add(within)
	var staleSince time.Time
	for {
		list := r.statuses()
		pending := notFinalIDs(list, ids)
		if len(pending) == 0 {
			return list
		}
		recs, err := r.readRecords(pending)
		stale := err == nil
		for _, id := range pending {
			rec, ok := recs[id]
			stale = stale && ok && rec.Record.State.Final()
		}
		switch {
		case !stale:
			staleSince = time.Time{}
		case staleSince.IsZero():
			staleSince = time.Now()
		case time.Since(staleSince) >= staleFor:
			for _, id := range pending {
				rec := recs[id]
				r.t.Errorf("saga %s: its record says %s (revision %d, written %s by %s), but its status still says %q %s later: the final status was lost and nothing writes it again",
					id, rec.Record.State, rec.Record.Revision, rec.written.Format(time.StampMilli), rec.Owner, list[id].State, staleFor)
				st := list[id]
				st.ID, st.State = id, string(rec.Record.State)
				list[id] = st
			}
			r.t.Logf("stale statuses:\n%s", notFinal(r.statuses(), pending))
			return list
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("every saga completed or compensated: not within %s; states now %v; not final:\n%s%s",
				within, countStates(list, ids), notFinal(list, ids), r.records(list, ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sagaReport is what a run ended with.
type sagaReport struct {
	sagas, completed, compensated, violations int
}

func (s sagaReport) String() string {
	return fmt.Sprintf("%d sagas, %d completed, %d compensated, %d violations", s.sagas, s.completed, s.compensated, s.violations)
}

// check stops the participant processes, opens their databases and checks
// every saga against its final status: CheckSagas (each step applied for a
// completed saga, released or never done for a compensated one), CheckAll
// (the conservation invariants), and the exact sums of what the completed
// sagas took (units sold, funds captured, deliveries booked). It logs the
// counts and returns them.
func (r *sagaRig) check(final map[string]messages.TxStatus) sagaReport {
	r.t.Helper()
	for _, kind := range sagaKinds {
		stopGracefully(r.parts[kind])
	}
	ctx := context.Background()
	svcs := map[string]services.Service{}
	for _, kind := range sagaKinds {
		svc, err := services.Open(ctx, kind, r.dbs[kind])
		if err != nil {
			r.t.Fatal(err)
		}
		r.t.Cleanup(func() { _ = svc.DB().Close() })
		svcs[kind] = svc
	}
	var rep sagaReport
	var results []services.SagaResult
	sold, captured, booked := 0, 0, 0
	for _, id := range r.allIDs() {
		st := final[id]
		res := services.SagaResult{ID: id, Completed: st.State == string(saga.StateCompleted)}
		for _, kind := range sagaKinds {
			res.Steps = append(res.Steps, services.SagaStep{Name: sagaSteps[kind], Participant: kind})
		}
		results = append(results, res)
		rep.sagas++
		if !res.Completed {
			rep.compensated++
			continue
		}
		rep.completed++
		c := r.sagas[id]
		var o services.InventoryOrder
		var ch services.PaymentCharge
		if err := json.Unmarshal(c.payloads["inventory"], &o); err != nil {
			r.t.Fatal(err)
		}
		if err := json.Unmarshal(c.payloads["payment"], &ch); err != nil {
			r.t.Fatal(err)
		}
		sold, captured, booked = sold+o.Qty, captured+ch.Amount, booked+1
	}
	violations, problems, err := services.CheckSagas(ctx, results, svcs)
	if err != nil {
		r.t.Fatal(err)
	}
	rep.violations = violations
	for _, p := range problems {
		r.t.Error("violation:", p)
	}
	lines, err := services.CheckAll(ctx, svcs)
	for _, l := range lines {
		r.t.Log(l)
	}
	if err != nil {
		r.t.Error(err)
	}
	var gotSold, gotCaptured, gotBooked int
	if err := svcs["inventory"].DB().QueryRowContext(ctx, `SELECT COALESCE(SUM(sold), 0) FROM stock`).Scan(&gotSold); err != nil {
		r.t.Fatal(err)
	}
	if err := svcs["payment"].DB().QueryRowContext(ctx, `SELECT balance FROM accounts WHERE account = ?`, services.Merchant).Scan(&gotCaptured); err != nil {
		r.t.Fatal(err)
	}
	if err := svcs["shipping"].DB().QueryRowContext(ctx, `SELECT COALESCE(SUM(booked), 0) FROM slots`).Scan(&gotBooked); err != nil {
		r.t.Fatal(err)
	}
	if gotSold != sold || gotCaptured != captured || gotBooked != booked {
		r.t.Errorf("the services hold %d units sold, %d captured, %d deliveries booked; the completed sagas add up to %d, %d, %d",
			gotSold, gotCaptured, gotBooked, sold, captured, booked)
	}
	report.Counts(r.t, "sagas: "+rep.String())
	if violations != 0 {
		r.t.Errorf("%d violations", violations)
	}
	return rep
}

// stepsOut counts the steps of sagas in a status list whose command is out
// (running or compensating).
func stepsOut(list map[string]messages.TxStatus, ids []string) int {
	n := 0
	for _, id := range ids {
		for _, s := range list[id].Steps {
			if s.Status == string(saga.StepRunning) || s.Status == string(saga.StepCompensating) {
				n++
			}
		}
	}
	return n
}

// compensationsPending counts the steps of sagas in a status list whose
// compensation is out or backing off.
func compensationsPending(list map[string]messages.TxStatus, ids []string) int {
	n := 0
	for _, id := range ids {
		for _, s := range list[id].Steps {
			if s.Status == string(saga.StepCompensating) || s.Status == string(saga.StepCompensationRetrying) {
				n++
			}
		}
	}
	return n
}

// TestSagaCoordinatorKilledMidForwardProcess: the `natstx server` process is
// SIGKILLed while sagas go forward (the status list shows sagas running, with
// commands out), and restarted as the same instance; every saga must end
// completed or compensated, and the services' databases must agree.
// Participants fail 10% of their operations for now (retried) and take up to
// 100ms per command; every eighth saga books an unknown slot, which shipping
// refuses for good, so some sagas compensate too.
func TestSagaCoordinatorKilledMidForwardProcess(t *testing.T) {
	r, c1 := newSagaRig(t, "--success-rate", "0.9", "--latency-max", "100ms", "--concurrency", "4")
	pol := sagaPolicy{timeout: 2 * time.Second, retryInitial: 50 * time.Millisecond, retryMax: 400 * time.Millisecond, attempts: 5,
		compInitial: 50 * time.Millisecond, compMax: 500 * time.Millisecond, stuckAfterAttempts: 50, stuckAfter: time.Minute}
	const n = 80
	ids := r.begin("fwd", 0, n, func(i int) (string, map[string][]byte) {
		p := pol
		if i%8 == 7 {
			p.shipping = []byte(`{"slot":"nowhere"}`)
		}
		return sagaDefinition(t, i, p)
	})
	// Kill once every saga's record is durable (its status is listed) and
	// some are still going forward with a command out.
	at := r.waitList("sagas listed, some running with a command out", ids, 20*time.Second, func(list map[string]messages.TxStatus) bool {
		c := countStates(list, ids)
		return c["missing"] == 0 && c[string(saga.StateRunning)] >= 5 && stepsOut(list, ids) > 0
	})
	c1.kill()
	t.Logf("killed the coordinator with %v (%d steps with a command out)", countStates(at, ids), stepsOut(at, ids))
	time.Sleep(500 * time.Millisecond) // the participants answer into the void meanwhile
	c1b := r.startServer("c1")
	final := r.settle(40 * time.Second)
	rep := r.check(final)
	if rep.sagas != n || rep.completed == 0 {
		t.Errorf("want %d sagas, some completed: %s", n, rep)
	}
	if t.Failed() {
		t.Logf("restarted coordinator's stderr:\n%s", c1b.stderr)
	}
}

// TestSagaCoordinatorKilledMidCompensationProcess: two sagas in three book an
// unknown slot, which shipping refuses for good, so they compensate (refund,
// then release); participants fail 20% of their operations for now and take
// up to 150ms per command, so compensations take a while and are retried.
// The `natstx server` process is SIGKILLed while the status list shows sagas
// compensating, and restarted as the same instance; every saga must end
// completed or compensated, and the services' databases must agree.
func TestSagaCoordinatorKilledMidCompensationProcess(t *testing.T) {
	r, c1 := newSagaRig(t, "--success-rate", "0.8", "--latency-max", "150ms", "--concurrency", "4")
	pol := sagaPolicy{timeout: 2 * time.Second, retryInitial: 50 * time.Millisecond, retryMax: 400 * time.Millisecond, attempts: 6,
		compInitial: 50 * time.Millisecond, compMax: 500 * time.Millisecond, stuckAfterAttempts: 50, stuckAfter: time.Minute}
	const n = 60
	ids := r.begin("comp", 0, n, func(i int) (string, map[string][]byte) {
		p := pol
		if i%3 != 0 {
			p.shipping = []byte(`{"slot":"nowhere"}`)
		}
		return sagaDefinition(t, i, p)
	})
	// Kill once every saga's record is durable (its status is listed) and
	// some are compensating with a compensation out or backing off, so the
	// restarted coordinator must continue compensations it did not finish.
	at := r.waitList("sagas listed, some compensating with a compensation out or backing off", ids, 30*time.Second, func(list map[string]messages.TxStatus) bool {
		c := countStates(list, ids)
		return c["missing"] == 0 && c[string(saga.StateCompensating)] >= 6 && compensationsPending(list, ids) > 0
	})
	c1.kill()
	t.Logf("killed the coordinator with %v (%d steps with a command out, %d compensations out or backing off)", countStates(at, ids), stepsOut(at, ids), compensationsPending(at, ids))
	time.Sleep(500 * time.Millisecond)
	c1b := r.startServer("c1")
	final := r.settle(40 * time.Second)
	rep := r.check(final)
	if rep.sagas != n || rep.compensated == 0 {
		t.Errorf("want %d sagas, some compensated: %s", n, rep)
	}
	// A saga whose shipping step was refused can only be compensated.
	for i, id := range ids {
		if i%3 != 0 && final[id].State != string(saga.StateCompensated) {
			t.Errorf("saga %s books an unknown slot but ended %s", id, final[id].State)
		}
	}
	if t.Failed() {
		t.Logf("restarted coordinator's stderr:\n%s", c1b.stderr)
	}
}

// TestSagaParticipantDownProcess: the payment process is SIGKILLed and stays
// down for longer than the charge step's retry budget (3 attempts of 400ms,
// backing off 100ms then 200ms) and the compensation's stuck threshold (3
// attempts). Sagas begun meanwhile reserve stock, cannot charge (each
// attempt times out: the result is unknown, so the charge is compensated
// too), and turn backward; the charge's compensation needs payment, so it
// keeps being retried, and the saga must show compensation-stuck in the
// status list and in the step's status (attempts, last error, next retry),
// while the reservation before it waits. Once payment is back on its
// database, every saga must end completed or compensated and the services'
// databases must agree. Sagas begun before and after the outage complete.
func TestSagaParticipantDownProcess(t *testing.T) {
	r, coord := newSagaRig(t, "--latency-max", "20ms")
	pol := sagaPolicy{timeout: 400 * time.Millisecond, retryInitial: 100 * time.Millisecond, retryMax: 400 * time.Millisecond, attempts: 3,
		compInitial: 100 * time.Millisecond, compMax: 500 * time.Millisecond, stuckAfterAttempts: 3, stuckAfter: 3 * time.Second}
	def := func(i int) (string, map[string][]byte) { return sagaDefinition(t, i, pol) }

	before := r.begin("before", 0, 20, def)
	r.waitList("the sagas begun before the outage completed", before, 30*time.Second, func(list map[string]messages.TxStatus) bool {
		return countStates(list, before)[string(saga.StateCompleted)] == len(before)
	})

	r.parts["payment"].kill()
	outage := time.Now()
	down := r.begin("down", 20, 20, def)
	stuckList := r.waitList("the sagas begun during the outage compensation-stuck", down, 30*time.Second, func(list map[string]messages.TxStatus) bool {
		return countStates(list, down)[string(saga.StateCompensationStuck)] == len(down)
	})
	// The filter of the status list finds them too. A listing reads the
	// status bucket while the stuck sagas' statuses are rewritten at each
	// attempt; one may be missed by a listing and found by the next.
	var filtered []messages.TxStatus
	seen := map[string]bool{}
	for try := 0; try < 20; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		filtered, err = r.client.List(ctx, string(saga.StateCompensationStuck))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		seen = map[string]bool{}
		for _, st := range filtered {
			seen[st.ID] = true
		}
		if !slices.ContainsFunc(down, func(id string) bool { return !seen[id] }) {
			break
		}
		t.Logf("listing %d: %d of %d stuck sagas listed", try+1, len(filtered), len(down))
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range down {
		if !seen[id] {
			t.Errorf("saga %s is not in tx list --state compensation-stuck (%d listed)", id, len(filtered))
		}
		st := stuckList[id]
		if st.Protocol != messages.ProtocolSaga || len(st.Steps) != 3 {
			t.Fatalf("saga %s: status %+v", id, st)
		}
		reserve, charge, book := st.Steps[0], st.Steps[1], st.Steps[2]
		// Between attempts the step is compensation-retrying with the time of
		// its next retry; while an attempt is out it is compensating, and no
		// retry is scheduled yet.
		retrying := charge.Status == string(saga.StepCompensationRetrying)
		if charge.Name != "charge" || !charge.Stuck || charge.CompensationAttempts < pol.stuckAfterAttempts || charge.Attempts != pol.attempts ||
			charge.LastError == "" || retrying == charge.NextRetryAt.IsZero() || !retrying && charge.Status != string(saga.StepCompensating) {
			t.Errorf("saga %s: the charge step shows %+v; want stuck, compensating or retrying its compensation (then with a next retry time), %d attempts, at least %d compensation attempts and a last error",
				id, charge, pol.attempts, pol.stuckAfterAttempts)
		}
		if reserve.Status != string(saga.StepDone) || book.Status != string(saga.StepPending) {
			t.Errorf("saga %s: reserve %s and book %s; want done (its compensation waits for the charge's) and pending", id, reserve.Status, book.Status)
		}
	}
	{
		ex := stuckList[down[0]].Steps[1]
		t.Logf("%s's charge step while payment is down: %s, %d attempts, %d compensation attempts, last error %q, next retry %s",
			down[0], ex.Status, ex.Attempts, ex.CompensationAttempts, ex.LastError, ex.NextRetryAt.Format(time.RFC3339Nano))
	}
	// tx status shows the same, and, between two attempts, when the next
	// retry is due (the step alternates between an attempt out and a wait).
	var one messages.TxStatus
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		one, err = r.client.Status(ctx, down[0])
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(one.Steps) == 3 && one.Steps[1].Status == string(saga.StepCompensationRetrying) || time.Now().After(deadline) {
			break
		}
	}
	if one.State != string(saga.StateCompensationStuck) || len(one.Steps) != 3 || one.Steps[1].Status != string(saga.StepCompensationRetrying) ||
		!one.Steps[1].Stuck || one.Steps[1].LastError == "" || one.Steps[1].NextRetryAt.IsZero() {
		t.Errorf("tx status %s: %+v; want compensation-stuck with the charge step stuck and waiting to retry, its last error and next retry", down[0], one)
	}
	if !strings.Contains(coord.stderr.String(), "saga step stuck") {
		t.Errorf("the coordinator logged no stuck step; its stderr:\n%s", coord.stderr)
	}

	r.startParticipant("payment")
	t.Logf("payment was down for %s", time.Since(outage).Round(time.Millisecond))
	// The outage is over once payment has worked off what piled up for it:
	// the stuck compensations, retried until they succeed.
	r.waitList("the sagas begun during the outage compensated", down, 40*time.Second, func(list map[string]messages.TxStatus) bool {
		return countStates(list, down)[string(saga.StateCompensated)] == len(down)
	})
	after := r.begin("after", 40, 20, def)
	final := r.settle(40 * time.Second)
	rep := r.check(final)
	c := countStates(final, down)
	if c[string(saga.StateCompensated)] != len(down) {
		t.Errorf("the sagas begun during the outage ended %v; want all compensated", c)
	}
	for _, id := range down {
		st := final[id]
		if len(st.Steps) != 3 || st.Steps[0].Status != string(saga.StepCompensated) || st.Steps[1].Status != string(saga.StepCompensated) ||
			st.Steps[2].Status != string(saga.StepPending) || st.Steps[1].Stuck {
			t.Errorf("saga %s ended with steps %+v; want reserve and charge compensated, book never run", id, st.Steps)
		}
	}
	for _, ids := range [][]string{before, after} {
		if c := countStates(final, ids); c[string(saga.StateCompleted)] != len(ids) {
			t.Errorf("sagas with every service up ended %v; want all completed", c)
		}
	}
	t.Logf("sagas: %d before the outage, %d during it (all seen compensation-stuck), %d after; %s", len(before), len(down), len(after), rep)
	if t.Failed() {
		t.Logf("coordinator's stderr:\n%s", coord.stderr)
	}
}
