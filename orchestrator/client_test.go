package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/auth/authtest"
	"github.com/natstx/natstx/participants"
)

func newClient(t *testing.T, f *fixture) *orchestrator.Client {
	t.Helper()
	c, err := orchestrator.NewClient(f.nc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func specs(names ...string) []messages.ParticipantSpec {
	ps := make([]messages.ParticipantSpec, len(names))
	for i, n := range names {
		ps[i] = messages.ParticipantSpec{Name: n, Payload: []byte(`{"n":1}`)}
	}
	return ps
}

func TestClientBeginWaitsForTheOutcomeAndStatusReadsIt(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.participant("a", yes)
	f.participant("b", yes)
	c := newClient(t, f)
	st, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("a", "b"), Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "committed" || st.Owner != f.eng.Instance() || len(st.Participants) != 2 || st.StartedAt.IsZero() {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, func() bool {
		got, err := c.Status(ctxT(t, 5*time.Second), st.ID)
		return err == nil && got.State == "committed"
	}, "the status bucket to say committed")
}

func TestClientBeginAsyncThenListAndWatch(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	release := make(chan struct{})
	f.participant("a", holding(release, nil))
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	c := newClient(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("a")})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "preparing" {
		t.Fatalf("async begin answered %s", st.State)
	}
	waitFor(t, func() bool {
		l, err := c.List(ctxT(t, 5*time.Second), "preparing")
		return err == nil && len(l) == 1 && l[0].ID == st.ID
	}, "List(preparing) to show the transaction")
	close(release)
	seen := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for !seen["committed"] {
		select {
		case u := <-updates:
			if u.ID == st.ID {
				seen[u.State] = true
			}
		case <-deadline:
			t.Fatalf("watch saw only %v", seen)
		}
	}
	if l, err := c.List(ctxT(t, 5*time.Second), "preparing"); err != nil || len(l) != 0 {
		t.Fatalf("List(preparing) after the end: %v %v", l, err)
	}
	if _, err := c.List(ctxT(t, 5*time.Second), "sleeping"); err == nil || !strings.Contains(err.Error(), "sleeping") {
		t.Fatalf("List with a bad state: %v", err)
	}
}

func TestClientAbortsAPreparingTransactionOnly(t *testing.T) {
	f := newFixture(t, orchestrator.Config{NoOnePhase: true}) // a one-phase commit cannot be aborted
	release := make(chan struct{})
	f.participant("a", holding(release, nil))
	t.Cleanup(func() { close(release) })
	f.participant("b", yes)
	c := newClient(t, f)
	st, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("a")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := c.Status(ctxT(t, 5*time.Second), st.ID); return err == nil }, "the status to be written")
	got, err := c.Abort(ctxT(t, 10*time.Second), st.ID, "operator says no")
	if err != nil || (got.State != "aborting" && got.State != "aborted") || got.Reason != "operator says no" {
		t.Fatalf("abort: %+v %v", got, err)
	}
	done, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("b"), Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		s, err := c.Status(ctxT(t, 5*time.Second), done.ID)
		return err == nil && s.State == "committed"
	}, "commit status")
	if _, err := c.Abort(ctxT(t, 10*time.Second), done.ID, ""); err == nil || !strings.Contains(err.Error(), "is committed") {
		t.Fatalf("aborting a committed transaction: %v", err)
	}
}

func TestClientErrorsAreClear(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	c := newClient(t, f)
	if _, err := c.Status(ctxT(t, 5*time.Second), "never-ran"); !errors.Is(err, orchestrator.ErrUnknownTx) {
		t.Fatalf("unknown ID: %v", err)
	}
	if _, err := c.Status(ctxT(t, 5*time.Second), "bad.id"); !errors.Is(err, messages.ErrInvalidName) {
		t.Fatalf("bad ID: %v", err)
	}
	if _, err := c.Begin(ctxT(t, 5*time.Second), messages.BeginRequest{}); err == nil || !strings.Contains(err.Error(), "no participants") {
		t.Fatalf("begin without participants: %v", err)
	}
	if _, err := c.Begin(ctxT(t, 5*time.Second), messages.BeginRequest{Participants: specs("a"), TimeoutMs: -1}); err == nil || !strings.Contains(err.Error(), "timeout_ms") {
		t.Fatalf("negative timeout: %v", err)
	}
	// Garbage on the API subject is answered with an error, not dropped.
	m, err := f.nc.Request(messages.APIBegin, []byte("{not json"), 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "not valid JSON") {
		t.Fatalf("garbage begin: %v %s", err, m.Data)
	}

	lonely, err := orchestrator.NewClient(bareNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lonely.Begin(ctxT(t, 5*time.Second), messages.BeginRequest{Participants: specs("a")}); !errors.Is(err, orchestrator.ErrNoCoordinator) {
		t.Fatalf("no coordinator: %v", err)
	}
	if _, err := lonely.Status(ctxT(t, 5*time.Second), "x"); err == nil || !strings.Contains(err.Error(), "no coordinator has run here") {
		t.Fatalf("no bucket: %v", err)
	}
}

func TestStatusSaysWhoItWaitsForAndSinceWhen(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.participant("a", yes)
	c := newClient(t, f)
	before := time.Now()
	st, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("a", "ghost"), TimeoutMs: 60_000})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		got, err := c.Status(ctxT(t, 5*time.Second), st.ID)
		return err == nil && len(got.Participants) == 2 && got.Participants[0].Vote == "yes"
	}, "a's vote to show")
	got, err := c.Status(ctxT(t, 5*time.Second), st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "preparing" || len(got.Waiting) != 1 || got.Waiting[0] != "ghost" || got.WaitingSince.Before(before.Add(-time.Second)) {
		t.Fatalf("want preparing, waiting for ghost since the start; got %+v", got)
	}
}

// TestStatusLingerKeepsAFastTransactionsDecisionOutOfTheBucket: with a
// StatusLinger longer than the transaction, its committing status is never
// written (its begin and final statuses are); with a negative one every
// change is.
func TestStatusLingerKeepsAFastTransactionsDecisionOutOfTheBucket(t *testing.T) {
	for _, tc := range []struct {
		linger time.Duration
		want   string
	}{
		{time.Hour, "preparing,committed"},
		{-1, "preparing,committing,committed"},
	} {
		f := newFixture(t, orchestrator.Config{StatusLinger: tc.linger, NoOnePhase: true}) // a committing status is two-phase
		// A slow prepare and a slow commit: the transaction is preparing,
		// then committing, for 300ms each, long enough for any watcher to
		// see each status that is written (the bucket keeps only the
		// latest one per transaction).
		slow := func() { time.Sleep(300 * time.Millisecond) }
		f.participant("a", participants.HandlerFuncs{
			PrepareFunc: func(context.Context, participants.Tx, []byte) error { slow(); return nil },
			CommitFunc:  func(context.Context, participants.Tx) error { slow(); return nil },
		})
		c := newClient(t, f)
		ctx, cancel := context.WithCancel(context.Background())
		updates, err := c.Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")})
		if err != nil || !out.Committed() {
			t.Fatalf("linger %v: %s %v", tc.linger, out.State, err)
		}
		var states []string
		deadline := time.After(10 * time.Second)
		for len(states) == 0 || states[len(states)-1] != "committed" {
			select {
			case u := <-updates:
				if u.ID == out.ID {
					states = append(states, u.State)
				}
			case <-deadline:
				t.Fatalf("linger %v: watch saw only %v", tc.linger, states)
			}
		}
		cancel()
		if got := strings.Join(states, ","); got != tc.want {
			t.Errorf("linger %v: the bucket held %s, want %s", tc.linger, got, tc.want)
		}
	}
}

// TestAPIBeginsBeyondTheRateAreRefusedClearly: with MaxBeginRate 5, a burst
// of 30 begins through the API gets at most the burst and what the rate
// refills accepted, the rest refused with ErrRateLimited's message, and the
// accepted ones run; a bad rate is refused by Validate.
func TestAPIBeginsBeyondTheRateAreRefusedClearly(t *testing.T) {
	f := newFixture(t, orchestrator.Config{MaxBeginRate: 5})
	f.participant("a", yes)
	c := newClient(t, f)
	start := time.Now()
	accepted, refused := 0, 0
	for range 30 {
		_, err := c.Begin(ctxT(t, 5*time.Second), messages.BeginRequest{Participants: specs("a")})
		switch {
		case err == nil:
			accepted++
		case strings.Contains(err.Error(), "begin rate limit reached") && strings.Contains(err.Error(), "--max-begin-rate"):
			refused++
		default:
			t.Fatalf("begin: %v", err)
		}
	}
	elapsed := time.Since(start).Seconds()
	t.Logf("30 begins in %.2fs: %d accepted, %d refused", elapsed, accepted, refused)
	if refused == 0 || float64(accepted) > 5+5*elapsed+1 || accepted < 5 {
		t.Fatalf("%d accepted and %d refused in %.2fs at 5 a second (burst 5)", accepted, refused, elapsed)
	}
	if st := f.eng.Stats(); st.Rejected != int64(refused) {
		t.Fatalf("Stats.Rejected %d, want %d", st.Rejected, refused)
	}
	if _, err := orchestrator.New(f.nc, orchestrator.Config{MaxBeginRate: -1}); err == nil || !strings.Contains(err.Error(), "MaxBeginRate") {
		t.Fatalf("a negative rate: %v", err)
	}
}

// TestClientRequestsCarryTheCallersTraceContext: Begin, BeginSaga, AbortAs
// and ActOnSaga send the W3C trace context of their ctx's span in the
// request headers (traceparent, tracestate), and nothing without a span;
// AbortAs sends who asks.
func TestClientRequestsCarryTheCallersTraceContext(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	release := make(chan struct{})
	f.participant("a", holding(release, nil))
	t.Cleanup(func() { close(release) })
	c := newClient(t, f)
	// A second subscriber on the API subjects sees each request the
	// coordinator gets.
	spy, err := f.nc.SubscribeSync("natstx.api.v1.>")
	if err != nil {
		t.Fatal(err)
	}
	traced := func(n byte) (context.Context, string) {
		ts, err := trace.ParseTraceState("vendor=x" + string('0'+n))
		if err != nil {
			t.Fatal(err)
		}
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{0x4b, n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, SpanID: trace.SpanID{0x0a, n, 1, 2, 3, 4, 5, 6},
			TraceFlags: trace.FlagsSampled, TraceState: ts,
		})
		return trace.ContextWithSpanContext(ctxT(t, 10*time.Second), sc),
			"00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	}
	// next returns the next request the spy saw on subject.
	next := func(subject string) *nats.Msg {
		t.Helper()
		for range 16 {
			m, err := spy.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for a request on %s: %v", subject, err)
			}
			if m.Subject == subject {
				return m
			}
		}
		t.Fatalf("no request on %s among the next 16", subject)
		return nil
	}
	check := func(what string, m *nats.Msg, traceparent string, n byte) {
		t.Helper()
		if got := m.Header.Values(messages.HeaderTraceParent); len(got) != 1 || got[0] != traceparent {
			t.Errorf("%s: traceparent %q, want %q", what, got, traceparent)
		}
		if got := m.Header.Get(messages.HeaderTraceState); got != "vendor=x"+string('0'+n) {
			t.Errorf("%s: tracestate %q", what, got)
		}
	}

	ctx, tp := traced(1)
	st, err := c.Begin(ctx, messages.BeginRequest{Participants: specs("a")})
	if err != nil {
		t.Fatal(err)
	}
	check("begin", next(messages.APIBegin), tp, 1)
	waitFor(t, func() bool { _, err := c.Status(ctxT(t, 5*time.Second), st.ID); return err == nil }, "the status to be written")
	ctx, tp = traced(2)
	if _, err := c.AbortAs(ctx, st.ID, "operator says no", "alice"); err != nil {
		t.Fatal(err)
	}
	m := next(messages.APIAbort(st.Owner))
	check("abort", m, tp, 2)
	var req messages.AbortRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Who != "alice" || req.Reason != "operator says no" {
		t.Errorf("abort request %s (%v), want who alice", m.Data, err)
	}

	ctx, tp = traced(3)
	def := `{"name":"t","steps":[{"name":"s","participant":"a","action":{}}]}`
	sst, err := c.BeginSaga(ctx, messages.SagaBeginRequest{ID: "traced-saga", Definition: def})
	if err != nil {
		t.Fatal(err)
	}
	check("saga begin", next(messages.APISagaBegin), tp, 3)
	waitFor(t, func() bool { _, err := c.Status(ctxT(t, 5*time.Second), sst.ID); return err == nil }, "the saga's status to be written")
	ctx, tp = traced(4)
	// Whatever the coordinator answers, the request went out traced.
	_, _ = c.ActOnSaga(ctx, messages.SagaActRequest{ID: sst.ID, Action: messages.SagaRetry, Who: "alice", Why: "now"})
	check("saga act", next(messages.APISagaAct(sst.Owner)), tp, 4)

	if _, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("a")}); err != nil {
		t.Fatal(err)
	}
	if m := next(messages.APIBegin); m.Header.Get(messages.HeaderTraceParent) != "" || m.Header.Get(messages.HeaderTraceState) != "" {
		t.Errorf("begin without a span sent trace headers %v", m.Header)
	}
}

// Client.Begin sends what its context's deadline leaves, in whole
// milliseconds, as the transaction's timeout_ms when sooner than the
// request's; without a timeout_ms, as caller_timeout_ms, which the
// coordinator takes when sooner than its own prepare timeout. A later
// context deadline leaves the timeout that applies, and a deadline passed
// begins nothing. The prepares carry the deadline the coordinator took.
func TestClientBeginSendsASoonerContextDeadline(t *testing.T) {
	const prepare = 30 * time.Second // the coordinator's
	f := newFixture(t, orchestrator.Config{PrepareTimeout: prepare})
	var mu sync.Mutex
	deadlines := map[string]time.Time{} // each transaction's, as its prepare at a says
	f.participant("a", participants.HandlerFuncs{PrepareFunc: func(_ context.Context, tx participants.Tx, _ []byte) error {
		mu.Lock()
		defer mu.Unlock()
		deadlines[tx.ID] = tx.Deadline
		return nil
	}})
	c := newClient(t, f)
	// A second subscriber sees each begin request the coordinator gets.
	sent, spy := spyOn[messages.BeginRequest](t, f.nc, messages.APIBegin)
	// begin runs transaction id to its outcome with ctx and the request's
	// timeoutMs, and returns the request sent and the deadline its prepare
	// carried, and when it began, within [from, to].
	begin := func(ctx context.Context, id string, timeoutMs int64) (req messages.BeginRequest, deadline, from, to time.Time) {
		t.Helper()
		from = time.Now()
		st, err := c.Begin(ctx, messages.BeginRequest{ID: id, Participants: specs("a"), TimeoutMs: timeoutMs, Wait: true})
		to = time.Now()
		if err != nil || st.State != "committed" {
			t.Fatalf("%s: %s %v", id, st.State, err)
		}
		mu.Lock()
		deadline = deadlines[id]
		mu.Unlock()
		return sent(), deadline, from, to
	}
	near := func(id string, got, want time.Time) {
		t.Helper()
		if got.Before(want.Add(-time.Second)) || got.After(want.Add(time.Second)) {
			t.Fatalf("%s: its prepare's deadline is %v, want about %v", id, got, want)
		}
	}
	// within checks that the deadline is timeout after the transaction
	// began, at the coordinator, to the millisecond.
	within := func(id string, got, from, to time.Time, timeout time.Duration) {
		t.Helper()
		if lo, hi := from.Add(timeout-time.Millisecond), to.Add(timeout); got.Before(lo) || got.After(hi) {
			t.Fatalf("%s: its prepare's deadline is %v, want %v after it began, within [%v, %v]", id, got, timeout, lo, hi)
		}
	}

	// Sooner than the request's timeout: the context's deadline is sent.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	req, got, from, _ := begin(ctx, "soon", 60_000)
	if most := dl.Sub(from).Milliseconds(); req.TimeoutMs > most || req.TimeoutMs < most-3000 || req.CallerTimeoutMs != 0 {
		t.Fatalf("timeout_ms %d, caller_timeout_ms %d sent; want what the context's deadline left as timeout_ms, at most %dms", req.TimeoutMs, req.CallerTimeoutMs, most)
	}
	near("soon", got, dl)

	// Later than the request's timeout: the request's is sent.
	req, got, from, to := begin(ctxT(t, time.Minute), "later", 2000)
	if req.TimeoutMs != 2000 || req.CallerTimeoutMs != 0 {
		t.Fatalf("timeout_ms %d, caller_timeout_ms %d sent; want the request's 2000, sooner than the context's deadline", req.TimeoutMs, req.CallerTimeoutMs)
	}
	within("later", got, from, to, 2*time.Second)

	// Without a timeout of the request's, the context's deadline goes as
	// caller_timeout_ms: it wins when sooner than the coordinator's prepare
	// timeout, ...
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dl, _ = ctx.Deadline()
	req, got, from, _ = begin(ctx, "default-soon", 0)
	if most := dl.Sub(from).Milliseconds(); req.TimeoutMs != 0 || req.CallerTimeoutMs > most || req.CallerTimeoutMs < most-3000 {
		t.Fatalf("timeout_ms %d, caller_timeout_ms %d sent; want no timeout_ms and what the context's deadline left, at most %dms", req.TimeoutMs, req.CallerTimeoutMs, most)
	}
	near("default-soon", got, dl)
	// ... and leaves it when later.
	req, got, from, to = begin(ctxT(t, time.Minute), "default-later", 0)
	if req.TimeoutMs != 0 || req.CallerTimeoutMs <= 57_000 || req.CallerTimeoutMs > 60_000 {
		t.Fatalf("timeout_ms %d, caller_timeout_ms %d sent; want no timeout_ms and what the context's minute left", req.TimeoutMs, req.CallerTimeoutMs)
	}
	within("default-later", got, from, to, prepare)
	// A context without a deadline sends none.
	req, got, from, to = begin(waitOnly(t, 10*time.Second), "none", 0)
	if req.TimeoutMs != 0 || req.CallerTimeoutMs != 0 {
		t.Fatalf("timeout_ms %d, caller_timeout_ms %d sent for a context without a deadline; want neither", req.TimeoutMs, req.CallerTimeoutMs)
	}
	within("none", got, from, to, prepare)

	// A deadline passed begins nothing, and sends nothing.
	gone, stop := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer stop()
	if _, err := c.Begin(gone, messages.BeginRequest{ID: "gone", Participants: specs("a")}); !errors.Is(err, orchestrator.ErrDeadlineExpired) {
		t.Fatalf("a deadline passed: %v, want ErrDeadlineExpired", err)
	}
	if m, err := spy.NextMsg(200 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("a request went out with its deadline passed: %v %v", m, err)
	}
	// A negative caller_timeout_ms is refused, naming it.
	if _, err := c.Begin(waitOnly(t, 5*time.Second), messages.BeginRequest{Participants: specs("a"), CallerTimeoutMs: -1}); err == nil || !strings.Contains(err.Error(), "caller_timeout_ms") {
		t.Fatalf("caller_timeout_ms -1: %v, want it refused", err)
	}
}

// waitOnly returns a context without a deadline, cancelled after d: it
// bounds a wait without giving a deadline to what it begins.
func waitOnly(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	timer := time.AfterFunc(d, cancel)
	t.Cleanup(func() {
		timer.Stop()
		cancel()
	})
	return ctx
}

// TestClientAsTheOperatorOfASecureDeployment runs the Client as the
// operator identity of `natstx auth init` (the NATSTX_OPERATORS account, no
// JetStream of its own, the status bucket imported under
// messages.JetStreamAPIPrefix) against a coordinator in the NATSTX account:
// Begin first (the API only), then Watch, Status, List and Abort, which
// find the imported JetStream API by themselves. The operator's connection
// meets no permission violation.
func TestClientAsTheOperatorOfASecureDeployment(t *testing.T) {
	d := secureDeployment(t)
	op, errs := operatorConn(t, d)
	c, err := orchestrator.NewClient(op)
	if err != nil {
		t.Fatal(err)
	}
	// No participant "a" or "b" runs: the transaction stays preparing until
	// the operator aborts it (two of them: a one-phase commit, with one,
	// cannot be aborted).
	st, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("a", "b"), TimeoutMs: 60_000})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "preparing" {
		t.Fatalf("async begin answered %s", st.State)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates, err := c.Watch(ctx)
	if err != nil {
		t.Fatalf("the operator watches the status bucket: %v", err)
	}
	waitFor(t, func() bool {
		got, err := c.Status(ctxT(t, 5*time.Second), st.ID)
		return err == nil && got.State == "preparing"
	}, "the operator to read the transaction preparing")
	if l, err := c.List(ctxT(t, 5*time.Second), "preparing"); err != nil || len(l) != 1 || l[0].ID != st.ID {
		t.Fatalf("the operator lists the preparing transactions: %v, %v; want %s", l, err, st.ID)
	}
	got, err := c.AbortAs(ctxT(t, 10*time.Second), st.ID, "operator says no", "ops")
	if err != nil || (got.State != "aborting" && got.State != "aborted") {
		t.Fatalf("the operator aborts: %+v, %v", got, err)
	}
	deadline := time.After(10 * time.Second)
	for seen := false; !seen; {
		select {
		case u := <-updates:
			seen = u.ID == st.ID && (u.State == "aborting" || u.State == "aborted")
		case <-deadline:
			t.Fatal("the operator's watch did not see the abort")
		}
	}
	if err := op.Flush(); err != nil {
		t.Fatal(err)
	}
	if e := errs(); len(e) > 0 {
		t.Errorf("the operator's connection met errors: %v", e)
	}
}

// secureDeployment runs a NATS server on the configuration of `natstx auth
// init` (orchestrator/auth/authtest) with a coordinator connected as the
// coordinator identity; both stop with t.
func secureDeployment(t *testing.T) *authtest.Deployment {
	t.Helper()
	d := authtest.Start(t)
	eng, err := orchestrator.New(d.Connect(t, messages.RoleCoordinator, ""),
		orchestrator.Config{Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Stop)
	return d
}

// operatorConn connects the operator identity of d and returns the
// connection and a function returning the asynchronous errors NATS reported
// to it so far (permission violations).
func operatorConn(t *testing.T, d *authtest.Deployment) (*nats.Conn, func() []string) {
	t.Helper()
	var (
		mu   sync.Mutex
		errs []string
	)
	nc := d.Connect(t, messages.RoleOperator, "", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err.Error())
	}))
	return nc, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(errs)
	}
}
