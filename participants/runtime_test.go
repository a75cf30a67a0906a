package participants_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

func TestConfigValidate(t *testing.T) {
	h := participants.HandlerFuncs{}
	for _, tc := range []struct {
		name  string
		cfg   participants.Config
		field string
	}{
		{"empty name", participants.Config{Handler: h}, "Name"},
		{"bad name", participants.Config{Name: "a.b", Handler: h}, "Name"},
		{"nil handler", participants.Config{Name: svc}, "Handler"},
		{"negative concurrency", participants.Config{Name: svc, Handler: h, Concurrency: -1}, "Concurrency"},
		{"negative ack wait", participants.Config{Name: svc, Handler: h, AckWait: -time.Second}, "AckWait"},
		{"negative retention", participants.Config{Name: svc, Handler: h, Retention: -time.Second}, "Retention"},
		{"negative retry delay", participants.Config{Name: svc, Handler: h, RetryDelay: -time.Second}, "RetryDelay"},
		{"negative stream wait", participants.Config{Name: svc, Handler: h, StreamWait: -time.Second}, "StreamWait"},
		{"op timeout not below ack wait", participants.Config{Name: svc, Handler: h, AckWait: time.Second, OpTimeout: time.Second}, "OpTimeout"},
		{"op timeout above default ack wait", participants.Config{Name: svc, Handler: h, OpTimeout: time.Minute}, "OpTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if !errors.Is(err, participants.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig naming %s", err, tc.field)
			}
			if _, err := participants.New(&nats.Conn{}, tc.cfg); !errors.Is(err, participants.ErrInvalidConfig) {
				t.Fatalf("New() = %v, want ErrInvalidConfig", err)
			}
		})
	}
	if err := (participants.Config{Name: "a.b", Handler: h}).Validate(); !errors.Is(err, messages.ErrInvalidName) {
		t.Errorf("bad name: %v does not wrap messages.ErrInvalidName", err)
	}
	if err := (participants.Config{Name: svc, Handler: h}).Validate(); err != nil {
		t.Errorf("minimal config: %v", err)
	}
	if _, err := participants.New(nil, participants.Config{Name: svc, Handler: h}); !errors.Is(err, participants.ErrInvalidConfig) {
		t.Errorf("New(nil conn) = %v, want ErrInvalidConfig", err)
	}
}

func TestPrepareCommit(t *testing.T) {
	e := newEnv(t, true)
	log, logs := observed()
	var payload atomic.Value
	h := newRecorder()
	h.PrepareFunc = func(_ context.Context, tx participants.Tx, p []byte) error {
		if tx.ID != "tx1" || tx.Participant != svc || tx.Attempt != 1 {
			t.Errorf("Prepare got %+v", tx)
		}
		payload.Store(string(p))
		return nil
	}
	rt := e.start(e.nc, testConfig(h, log))

	c := e.cmd("tx1", messages.OpPrepare, 1)
	c.Payload = []byte("reserve 3 seats")
	rep := e.expect(c, messages.VoteCommit, "")
	if rep.Attempt != 1 {
		t.Errorf("reply attempt %d, want 1", rep.Attempt)
	}
	if got := payload.Load(); got != "reserve 3 seats" {
		t.Errorf("payload %q", got)
	}
	if s := rt.State("tx1"); s != participants.StatePrepared {
		t.Errorf("state %s, want prepared", s)
	}
	rep = e.expect(e.cmd("tx1", messages.OpCommit, 3), messages.Ack, "")
	if rep.Attempt != 3 {
		t.Errorf("reply attempt %d, want the command's 3", rep.Attempt)
	}
	if s := rt.State("tx1"); s != participants.StateCommitted {
		t.Errorf("state %s, want committed", s)
	}
	if h.n(messages.OpPrepare, "tx1") != 1 || h.n(messages.OpCommit, "tx1") != 1 || h.n(messages.OpAbort, "tx1") != 0 {
		t.Errorf("handler calls %v", h.calls)
	}
	e.settled()
	st := rt.Stats()
	if st.Prepares != 1 || st.Commits != 1 || st.Aborts != 0 || st.Duplicates != 0 || st.Records != 1 {
		t.Errorf("stats %+v", st)
	}
	checkTxidOnLines(t, logs)
}

func TestDuplicatePrepare(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	h.PrepareFunc = func(_ context.Context, tx participants.Tx, _ []byte) error {
		if tx.ID == "no" {
			return errors.New("out of stock")
		}
		return nil
	}
	rt := e.start(e.nc, testConfig(h, nil))

	e.expect(e.cmd("yes", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.expect(e.cmd("yes", messages.OpPrepare, 2), messages.VoteCommit, "")
	e.expect(e.cmd("no", messages.OpPrepare, 1), messages.VoteAbort, "out of stock")
	e.expect(e.cmd("no", messages.OpPrepare, 2), messages.VoteAbort, "out of stock")
	if h.n(messages.OpPrepare, "yes") != 1 || h.n(messages.OpPrepare, "no") != 1 {
		t.Errorf("Prepare called %v, want once per transaction", h.calls)
	}
	// After commit, a late duplicate prepare still gets the recorded vote.
	e.expect(e.cmd("yes", messages.OpCommit, 1), messages.Ack, "")
	e.expect(e.cmd("yes", messages.OpPrepare, 3), messages.VoteCommit, "")
	if s := rt.State("no"); s != participants.StateAborted {
		t.Errorf("state of no: %s", s)
	}
	st := rt.Stats()
	if st.Prepares != 5 || st.Duplicates != 3 || st.HandlerErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestAbortBeforePrepare(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	rt := e.start(e.nc, testConfig(h, nil))

	e.expect(e.cmd("tx1", messages.OpAbort, 1), messages.Ack, "")
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteAbort, participants.ReasonAbortedBeforePrepare)
	e.expect(e.cmd("tx1", messages.OpAbort, 2), messages.Ack, "")
	if h.n(messages.OpPrepare, "tx1") != 0 || h.n(messages.OpAbort, "tx1") != 0 {
		t.Errorf("handler called %v; a null abort and a late prepare must not reach it", h.calls)
	}
	if s := rt.State("tx1"); s != participants.StateAborted {
		t.Errorf("state %s", s)
	}
	e.settled()
}

func TestAbortPrepared(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	var fail atomic.Bool
	fail.Store(true)
	h.AbortFunc = func(context.Context, participants.Tx) error {
		if fail.CompareAndSwap(true, false) {
			return errors.New("disk busy")
		}
		return nil
	}
	rt := e.start(e.nc, testConfig(h, nil))

	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.send(e.cmd("tx1", messages.OpAbort, 1))
	if rep := e.next(); rep.Result != messages.Failed || rep.Reason != "disk busy" {
		t.Fatalf("first abort reply %+v, want failed: disk busy", rep)
	}
	if rep := e.next(); rep.Result != messages.Ack || rep.Op != messages.OpAbort {
		t.Fatalf("redelivered abort reply %+v, want ack", rep)
	}
	e.expect(e.cmd("tx1", messages.OpAbort, 2), messages.Ack, "")
	e.expect(e.cmd("tx1", messages.OpPrepare, 2), messages.VoteAbort, participants.ReasonAborted)
	if n := h.n(messages.OpAbort, "tx1"); n != 2 {
		t.Errorf("Abort called %d times, want 2 (one failure, one success)", n)
	}
	if s := rt.State("tx1"); s != participants.StateAborted {
		t.Errorf("state %s", s)
	}
	e.settled()
}

func TestCommitRetry(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	var fail atomic.Bool
	fail.Store(true)
	h.CommitFunc = func(context.Context, participants.Tx) error {
		if fail.CompareAndSwap(true, false) {
			return errors.New("database unavailable")
		}
		return nil
	}
	rt := e.start(e.nc, testConfig(h, nil))

	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.send(e.cmd("tx1", messages.OpCommit, 1))
	if rep := e.next(); rep.Result != messages.Failed || rep.Reason != "database unavailable" || rep.Attempt != 1 {
		t.Fatalf("first commit reply %+v, want failed: database unavailable", rep)
	}
	if s := rt.State("tx1"); s != participants.StatePrepared {
		t.Errorf("state after failed commit %s, want prepared", s)
	}
	if rep := e.next(); rep.Result != messages.Ack || rep.Op != messages.OpCommit || rep.Attempt != 1 {
		t.Fatalf("redelivered commit reply %+v, want ack", rep)
	}
	// Duplicate commit: acknowledged without calling Commit again.
	e.expect(e.cmd("tx1", messages.OpCommit, 2), messages.Ack, "")
	if n := h.n(messages.OpCommit, "tx1"); n != 2 {
		t.Errorf("Commit called %d times, want 2 (one failure, one success)", n)
	}
	e.settled()
	st := rt.Stats()
	if st.Commits != 3 || st.HandlerErrors != 1 || st.Duplicates != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestDuplicateCommit(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	e.start(e.nc, testConfig(h, nil))
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.expect(e.cmd("tx1", messages.OpCommit, 1), messages.Ack, "")
	e.expect(e.cmd("tx1", messages.OpCommit, 2), messages.Ack, "")
	e.expect(e.cmd("tx1", messages.OpCommit, 3), messages.Ack, "")
	if n := h.n(messages.OpCommit, "tx1"); n != 1 {
		t.Errorf("Commit called %d times, want 1", n)
	}
}

func TestRejectedCommands(t *testing.T) {
	e := newEnv(t, true)
	log, logs := observed()
	h := newRecorder()
	rt := e.start(e.nc, testConfig(h, log))

	e.expect(e.cmd("ghost", messages.OpCommit, 1), messages.Failed, participants.ReasonNoRecord)

	e.expect(e.cmd("ab", messages.OpAbort, 1), messages.Ack, "")
	e.expect(e.cmd("ab", messages.OpCommit, 1), messages.Failed, participants.ReasonCommitAfterAbort)

	e.expect(e.cmd("cm", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.expect(e.cmd("cm", messages.OpCommit, 1), messages.Ack, "")
	e.expect(e.cmd("cm", messages.OpAbort, 1), messages.Failed, participants.ReasonAbortAfterCommit)

	// Terminated: nothing pending or redelivered.
	e.settled()
	if h.n(messages.OpCommit, "ghost") != 0 || h.n(messages.OpCommit, "ab") != 0 || h.n(messages.OpAbort, "cm") != 0 {
		t.Errorf("handler called for a rejected command: %v", h.calls)
	}
	if st := rt.Stats(); st.Rejected != 3 {
		t.Errorf("stats %+v, want 3 rejected", st)
	}
	errLines := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(errLines) != 3 {
		t.Fatalf("%d error lines, want 3: %v", len(errLines), errLines)
	}
	for i, want := range []string{"ghost", "ab", "cm"} {
		if got := errLines[i].ContextMap()["txid"]; got != want {
			t.Errorf("error line %d has txid %v, want %s", i, got, want)
		}
	}
	checkTxidOnLines(t, logs)
}

func TestDeadline(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	rt := e.start(e.nc, testConfig(h, nil))

	late := e.cmd("late", messages.OpPrepare, 1)
	late.Deadline = time.Now().Add(-time.Second)
	e.expect(late, messages.VoteAbort, participants.ReasonDeadlinePassed)
	if h.n(messages.OpPrepare, "late") != 0 {
		t.Error("Prepare called after the deadline")
	}
	if s := rt.State("late"); s != participants.StateAborted {
		t.Errorf("state %s", s)
	}
	// A duplicate after the deadline repeats the vote.
	late.Attempt = 2
	e.expect(late, messages.VoteAbort, participants.ReasonDeadlinePassed)

	var got atomic.Value
	h.PrepareFunc = func(_ context.Context, tx participants.Tx, _ []byte) error {
		got.Store(tx.Deadline)
		return nil
	}
	ok := e.cmd("ok", messages.OpPrepare, 1)
	ok.Deadline = time.Now().Add(time.Hour)
	e.expect(ok, messages.VoteCommit, "")
	if d, _ := got.Load().(time.Time); !d.Equal(time.UnixMilli(ok.Deadline.UnixMilli())) {
		t.Errorf("handler saw deadline %v, want %v", d, ok.Deadline)
	}
}

func TestMalformedCommands(t *testing.T) {
	e := newEnv(t, true)
	log, logs := observed()
	h := newRecorder()
	rt := e.start(e.nc, testConfig(h, log))

	good := func(txid string) nats.Header { return nats.Header(e.cmd(txid, messages.OpPrepare, 1).Header()) }
	subject := messages.CommandSubject(svc, "m")

	// No headers at all: nothing to reply to.
	e.publish(&nats.Msg{Subject: subject, Data: []byte("garbage")})
	// Missing operation: no reply either (a reply needs the operation).
	h1 := good("m1")
	h1.Del(messages.HeaderOp)
	e.publish(&nats.Msg{Subject: messages.CommandSubject(svc, "m1"), Header: h1})
	// Wrong protocol version: answered Failed.
	h2 := good("m2")
	h2.Set(messages.HeaderVersion, "99")
	e.publish(&nats.Msg{Subject: messages.CommandSubject(svc, "m2"), Header: h2})
	// Missing attempt: answered Failed.
	h3 := good("m3")
	h3.Del(messages.HeaderAttempt)
	e.publish(&nats.Msg{Subject: messages.CommandSubject(svc, "m3"), Header: h3})
	// Addressed to another participant, on this participant's subject.
	h4 := nats.Header(messages.Command{TxID: "m4", Op: messages.OpPrepare, Participant: "other", Attempt: 1, ReplyTo: messages.ReplySubject("test", svc)}.Header())
	e.publish(&nats.Msg{Subject: messages.CommandSubject(svc, "m4"), Header: h4})
	// Transaction ID that does not match the subject.
	e.publish(&nats.Msg{Subject: messages.CommandSubject(svc, "m5"), Header: good("m6")})
	// Commit with a payload.
	c7 := e.cmd("m7", messages.OpCommit, 1)
	e.publish(&nats.Msg{Subject: c7.Subject(), Header: nats.Header(c7.Header()), Data: []byte("x")})

	// The runtime keeps serving.
	e.send(e.cmd("after", messages.OpPrepare, 1))

	want := map[string]error{"m2": messages.ErrVersion, "m3": messages.ErrMalformed, "m4": messages.ErrMalformed, "m6": messages.ErrMalformed, "m7": messages.ErrMalformed}
	got := map[string]messages.Reply{}
	for len(got) < len(want)+1 {
		rep := e.next()
		got[rep.TxID] = rep
	}
	for txid := range want {
		rep, ok := got[txid]
		if !ok || rep.Result != messages.Failed || rep.Participant != svc || rep.Reason == "" {
			t.Errorf("reply for %s: %+v, want failed with a reason", txid, rep)
		}
	}
	if !strings.Contains(got["m2"].Reason, "version") || !strings.Contains(got["m3"].Reason, messages.HeaderAttempt) ||
		!strings.Contains(got["m4"].Reason, "other") {
		t.Errorf("reasons do not say what is wrong: %+v", got)
	}
	if rep := got["after"]; rep.Result != messages.VoteCommit {
		t.Errorf("command after the malformed ones: %+v", rep)
	}
	eventually(t, "malformed count", func() bool { return rt.Stats().Malformed == 7 })
	e.settled()
	if n := len(h.calls); n != 1 {
		t.Errorf("handler calls %v, want only the good prepare", h.calls)
	}
	warn := logs.FilterMessage("dropping malformed command").All()
	if len(warn) != 7 {
		t.Fatalf("%d warn lines for malformed commands, want 7", len(warn))
	}
	for _, l := range warn {
		m := l.ContextMap()
		if l.Level != zapcore.WarnLevel || m["subject"] == nil || m["error"] == nil {
			t.Errorf("malformed log line %v %v lacks subject or error", l.Level, m)
		}
	}
	checkTxidOnLines(t, logs)
}

func TestHandlerPanic(t *testing.T) {
	e := newEnv(t, true)
	h := participants.HandlerFuncs{PrepareFunc: func(context.Context, participants.Tx, []byte) error { panic("boom") }}
	rt := e.start(e.nc, testConfig(h, nil))
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteAbort, "handler panicked: boom")
	if st := rt.Stats(); st.HandlerErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestPerTransactionSerialization: commands of one transaction wait for each
// other; another transaction does not wait.
func TestPerTransactionSerialization(t *testing.T) {
	e := newEnv(t, true)
	release := make(chan struct{})
	entered := make(chan string, 10)
	h := newRecorder()
	h.PrepareFunc = func(ctx context.Context, tx participants.Tx, _ []byte) error {
		entered <- tx.ID
		if tx.ID == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	cfg := testConfig(h, nil)
	cfg.OpTimeout, cfg.AckWait = wait, 2*wait
	e.start(e.nc, cfg)

	e.send(e.cmd("slow", messages.OpPrepare, 1))
	if got := recv(t, entered); got != "slow" {
		t.Fatalf("entered %s", got)
	}
	e.send(e.cmd("slow", messages.OpPrepare, 2))
	e.send(e.cmd("fast", messages.OpPrepare, 1))
	if rep := e.next(); rep.TxID != "fast" || rep.Result != messages.VoteCommit {
		t.Fatalf("while slow is blocked, got %+v; want fast's vote", rep)
	}
	close(release)
	for _, attempt := range []int{1, 2} {
		rep := e.next()
		if rep.TxID != "slow" || rep.Result != messages.VoteCommit || rep.Attempt != attempt {
			t.Fatalf("got %+v, want slow's vote for attempt %d", rep, attempt)
		}
	}
	if n := h.n(messages.OpPrepare, "slow"); n != 1 {
		t.Errorf("Prepare(slow) called %d times", n)
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatal("timed out")
	}
	var zero T
	return zero
}

func TestJanitor(t *testing.T) {
	e := newEnv(t, true)
	cfg := testConfig(participants.HandlerFuncs{}, nil)
	cfg.Retention = 50 * time.Millisecond
	rt := e.start(e.nc, cfg)

	e.expect(e.cmd("kept", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.expect(e.cmd("gone", messages.OpAbort, 1), messages.Ack, "")
	e.expect(e.cmd("done", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.expect(e.cmd("done", messages.OpCommit, 1), messages.Ack, "")
	eventually(t, "finished records to expire", func() bool { return rt.Stats().Records == 1 })
	if s := rt.State("kept"); s != participants.StatePrepared {
		t.Errorf("prepared record: %s", s)
	}
	if s := rt.State("done"); s != participants.StateNone {
		t.Errorf("expired record: %s", s)
	}
}

func TestStartWithoutStream(t *testing.T) {
	e := newEnv(t, false)
	cfg := testConfig(participants.HandlerFuncs{}, nil)
	cfg.StreamWait = 300 * time.Millisecond
	rt, err := participants.New(e.nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.Stop() // before Start
	if err := rt.Start(context.Background()); !errors.Is(err, participants.ErrStopped) {
		t.Fatalf("Start after Stop = %v, want ErrStopped", err)
	}
	rt, _ = participants.New(e.nc, cfg)
	err = rt.Start(context.Background())
	if !errors.Is(err, participants.ErrStreamMissing) || !strings.Contains(err.Error(), messages.CommandStream) ||
		!strings.Contains(err.Error(), "coordinator") {
		t.Fatalf("Start = %v, want ErrStreamMissing naming %s and the coordinator", err, messages.CommandStream)
	}
	rt.Stop()

	// ctx ends the wait too.
	cfg.StreamWait = wait
	rt, _ = participants.New(e.nc, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := rt.Start(ctx); !errors.Is(err, participants.ErrStreamMissing) {
		t.Fatalf("Start with an ending ctx = %v", err)
	}

	// Stop ends the wait too.
	rt, _ = participants.New(e.nc, cfg)
	done := make(chan error, 1)
	go func() { done <- rt.Start(context.Background()) }()
	time.Sleep(100 * time.Millisecond) // let Start begin waiting
	rt.Stop()
	if err := recv(t, done); !errors.Is(err, participants.ErrStopped) {
		t.Fatalf("Start interrupted by Stop = %v, want ErrStopped", err)
	}
}

func TestStartWaitsForStream(t *testing.T) {
	e := newEnv(t, false)
	rt, err := participants.New(e.nc, testConfig(participants.HandlerFuncs{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	done := make(chan error, 1)
	go func() { done <- rt.Start(context.Background()) }()
	time.Sleep(300 * time.Millisecond) // let Start poll for a missing stream
	e.ensureStreams()
	if err := recv(t, done); err != nil {
		t.Fatal(err)
	}
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
	if err := rt.Start(context.Background()); !errors.Is(err, participants.ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
}

// TestStopWaitsAndLeaksNothing: Stop waits for an in-flight handler, which
// still replies, and leaves no goroutine of the runtime behind.
func TestStopWaitsAndLeaksNothing(t *testing.T) {
	e := newEnv(t, true)
	// A first runtime creates the durable consumer, whose goroutines belong
	// to the (in-process) server and rightly outlive the runtime. After that,
	// the server and connection goroutines are the test's; every goroutine
	// the second runtime starts must be gone after its Stop.
	warm, err := participants.New(e.nc, testConfig(participants.HandlerFuncs{}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := warm.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	warm.Stop()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := participants.HandlerFuncs{PrepareFunc: func(ctx context.Context, _ participants.Tx, _ []byte) error {
		entered <- struct{}{}
		<-release
		return nil
	}}
	cfg := testConfig(h, nil)
	cfg.Retention = 20 * time.Millisecond // the janitor ticks
	rt, err := participants.New(e.nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.send(e.cmd("tx1", messages.OpPrepare, 1))
	recv(t, entered)
	stopped := make(chan struct{})
	go func() {
		rt.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a handler was running")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	recv(t, stopped)
	if rep := e.next(); rep.TxID != "tx1" || rep.Result != messages.VoteCommit {
		t.Fatalf("reply %+v", rep)
	}
	rt.Stop() // twice is fine
	e.settled()
}

// TestSharedConsumer: runtimes with one name split the commands, and each is
// handled exactly once.
func TestSharedConsumer(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	var mu sync.Mutex
	by := map[int]int{}
	mk := func(i int) participants.Handler {
		return participants.HandlerFuncs{PrepareFunc: func(ctx context.Context, tx participants.Tx, p []byte) error {
			mu.Lock()
			by[i]++
			mu.Unlock()
			time.Sleep(time.Millisecond)
			return h.Prepare(ctx, tx, p)
		}}
	}
	cfg := testConfig(nil, nil)
	cfg.Concurrency = 4
	cfg.Handler = mk(1)
	e.start(e2connect(t, e.srv), cfg)
	cfg.Handler = mk(2)
	e.start(e2connect(t, e.srv), cfg)

	const n = 200
	for i := range n {
		e.send(e.cmd(txid(i), messages.OpPrepare, 1))
	}
	seen := map[string]bool{}
	for range n {
		rep := e.next()
		if rep.Result != messages.VoteCommit || seen[rep.TxID] {
			t.Fatalf("reply %+v (seen before: %v)", rep, seen[rep.TxID])
		}
		seen[rep.TxID] = true
	}
	e.settled()
	for i := range n {
		if c := h.n(messages.OpPrepare, txid(i)); c != 1 {
			t.Errorf("%s prepared %d times", txid(i), c)
		}
	}
	t.Logf("prepares per runtime: %v", by)
}

// TestStopOneMidStream: stopping one of two runtimes while commands flow loses
// none of them.
func TestStopOneMidStream(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	h.PrepareFunc = func(context.Context, participants.Tx, []byte) error {
		time.Sleep(2 * time.Millisecond)
		return nil
	}
	cfg := testConfig(h, nil)
	cfg.Concurrency = 8
	cfg.AckWait, cfg.OpTimeout = time.Second, 500*time.Millisecond
	a := e.start(e2connect(t, e.srv), cfg)
	e.start(e2connect(t, e.srv), cfg)

	const n = 300
	for i := range n {
		e.send(e.cmd(txid(i), messages.OpPrepare, 1))
	}
	seen := map[string]bool{}
	for len(seen) < n {
		if len(seen) == n/5 {
			a.Stop()
			t.Logf("stopped one runtime after %d replies; it handled %d prepares", len(seen), a.Stats().Prepares)
		}
		rep := e.next()
		if rep.Result != messages.VoteCommit {
			t.Fatalf("reply %+v", rep)
		}
		seen[rep.TxID] = true
	}
	e.settled()
	for i := range n {
		if c := h.n(messages.OpPrepare, txid(i)); c != 1 {
			t.Errorf("%s prepared %d times, want once", txid(i), c)
		}
	}
}

// TestLoggerDefault: a nil Logger is allowed.
func TestLoggerDefault(t *testing.T) {
	e := newEnv(t, true)
	cfg := testConfig(participants.HandlerFuncs{}, nil)
	cfg.Logger = nil
	e.start(e.nc, cfg)
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
}
