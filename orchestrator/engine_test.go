package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is an embedded server, an engine and named participants whose
// handlers the test chooses.
type fixture struct {
	t   testing.TB
	srv *embedded.Server
	nc  *nats.Conn
	eng *orchestrator.Engine
}

func newFixture(t testing.TB, cfg orchestrator.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, srv: startNATS(t)}
	f.nc = f.connect()
	f.eng = f.engine(cfg)
	return f
}

// startNATS starts an embedded server that is stopped at the end of the
// test.
func startNATS(t testing.TB) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func (f *fixture) connect() *nats.Conn {
	f.t.Helper()
	nc, err := nats.Connect(f.srv.URL())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(nc.Close)
	return nc
}

// engine starts one more coordinator on the fixture's server, on its own
// connection; it is stopped at the end of the test.
func (f *fixture) engine(cfg orchestrator.Config) *orchestrator.Engine {
	f.t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(f.t, zaptest.Level(zap.WarnLevel))
	}
	eng, err := orchestrator.New(f.connect(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := eng.Start(ctxT(f.t, 20*time.Second)); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(eng.Stop)
	return eng
}

func (f *fixture) participant(name string, h participants.Handler) *participants.Runtime {
	f.t.Helper()
	rt, err := participants.New(f.nc, participants.Config{Name: name, Handler: h})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := rt.Start(ctxT(f.t, 10*time.Second)); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(rt.Stop)
	return rt
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func parts(names ...string) []orchestrator.Participant {
	ps := make([]orchestrator.Participant, len(names))
	for i, n := range names {
		ps[i] = orchestrator.Participant{Name: n, Payload: []byte("payload for " + n)}
	}
	return ps
}

var yes = participants.HandlerFuncs{}

// holding returns a handler whose Prepare waits until release is closed
// (or its context ends), then returns err: a participant that is slow to
// vote.
func holding(release <-chan struct{}, err error) participants.HandlerFuncs {
	return participants.HandlerFuncs{PrepareFunc: func(ctx context.Context, _ participants.Tx, _ []byte) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return err
	}}
}

// bareNATS starts an embedded server that no coordinator uses and returns a
// connection to it.
func bareNATS(t testing.TB) *nats.Conn {
	t.Helper()
	return (&fixture{t: t, srv: startNATS(t)}).connect()
}

// spyOn subscribes on nc to subject, a second subscriber beside the
// coordinator, and returns a function that waits for the next message
// there and decodes it as a T, and the subscription.
func spyOn[T any](t testing.TB, nc *nats.Conn, subject string) (func() T, *nats.Subscription) {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() T {
		t.Helper()
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("nothing on %s: %v", subject, err)
		}
		var v T
		if err := json.Unmarshal(m.Data, &v); err != nil {
			t.Fatalf("%s: %v in %s", subject, err, m.Data)
		}
		return v
	}, sub
}

func TestAllVoteCommitCommits(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	var commits atomic.Int32
	h := participants.HandlerFuncs{CommitFunc: func(context.Context, participants.Tx) error { commits.Add(1); return nil }}
	f.participant("a", h)
	f.participant("b", h)
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	if out.State != orchestrator.Committed || commits.Load() != 2 {
		t.Fatalf("want committed on both; got %s with %d commits (%s)", out.State, commits.Load(), out.Reason)
	}
	for _, p := range out.Participants {
		if !p.Acked || p.Vote.String() != "yes" {
			t.Errorf("participant %s: vote %s, acked %v", p.Name, p.Vote, p.Acked)
		}
	}
	st, err := f.eng.Status(out.ID)
	if err != nil || st.State != orchestrator.Committed {
		t.Fatalf("Status after the end: %v %v", st.State, err)
	}
}

func TestOneAbortVoteAbortsEverywhere(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	var prepares, aborts atomic.Int32
	a := f.participant("a", participants.HandlerFuncs{
		PrepareFunc: func(context.Context, participants.Tx, []byte) error { prepares.Add(1); return nil },
		AbortFunc:   func(context.Context, participants.Tx) error { aborts.Add(1); return nil },
	})
	f.participant("b", participants.HandlerFuncs{PrepareFunc: func(context.Context, participants.Tx, []byte) error {
		return errors.New("out of stock")
	}})
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	if out.Committed() || !strings.Contains(out.Reason, "b voted abort: out of stock") {
		t.Fatalf("want abort naming b and its reason; got %s: %s", out.State, out.Reason)
	}
	waitFor(t, func() bool { return a.State(out.ID) == participants.StateAborted }, "a to end aborted")
	// a handles its prepare and the abort in either order: prepared then
	// aborted, or the abort first, remembered, and the prepare refused.
	if p, ab := prepares.Load(), aborts.Load(); p != ab {
		t.Fatalf("a prepared %d times and aborted %d times", p, ab)
	}
}

func TestNoParticipantsIsRejected(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	_, err := f.eng.Execute(ctxT(t, 5*time.Second), orchestrator.Request{})
	if !errors.Is(err, orchestrator.ErrNoParticipants) {
		t.Fatalf("want ErrNoParticipants, got %v", err)
	}
}

func TestBadNamesAreRejected(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	for _, req := range []orchestrator.Request{
		{Participants: parts("a.b")},
		{Participants: parts("")},
		{ID: "tx>1", Participants: parts("a")},
		{Participants: parts("a", "a")},
	} {
		_, err := f.eng.Begin(ctxT(t, 5*time.Second), req)
		if !errors.Is(err, messages.ErrInvalidName) && !errors.Is(err, orchestrator.ErrDuplicateParticipant) {
			t.Errorf("request %+v: want a name error, got %v", req, err)
		}
	}
}

func TestUnknownParticipantTimesOutAndAborts(t *testing.T) {
	f := newFixture(t, orchestrator.Config{AbortSends: 2, RetryBase: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	f.participant("a", yes)
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a", "ghost"), Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if out.Committed() || !out.TimedOut || !strings.Contains(out.Reason, "no vote from ghost") {
		t.Fatalf("want a timeout abort naming ghost; got %s: %s", out.State, out.Reason)
	}
	if f.eng.Stats().Timeouts != 1 {
		t.Fatalf("want 1 timeout counted, got %d", f.eng.Stats().Timeouts)
	}
	// The engine is not stuck on it: abort gives up on ghost after 2 sends.
	waitFor(t, func() bool { return f.eng.Stats().InFlight == 0 }, "the aborted transaction to finish")
	st, _ := f.eng.Status(out.ID)
	if st.State != orchestrator.Aborted || !strings.Contains(st.Reason, "not acknowledged by ghost") {
		t.Fatalf("final status: %s: %s", st.State, st.Reason)
	}
}

func TestDuplicateTransactionID(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	block := make(chan struct{})
	f.participant("a", holding(block, nil))
	id := orchestrator.NewID()
	if _, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{ID: id, Participants: parts("a")}); err != nil {
		t.Fatal(err)
	}
	_, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{ID: id, Participants: parts("a")})
	if !errors.Is(err, orchestrator.ErrDuplicateTx) || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("while in flight: want ErrDuplicateTx, got %v", err)
	}
	close(block)
	out, err := f.eng.Wait(ctxT(t, 10*time.Second), id)
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("the first one: %s %v", out.State, err)
	}
	_, err = f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{ID: id, Participants: parts("a")})
	if !errors.Is(err, orchestrator.ErrDuplicateTx) || !strings.Contains(err.Error(), "already run") {
		t.Fatalf("after the end: want ErrDuplicateTx, got %v", err)
	}
}

func TestPayloadOverTheLimitIsRejected(t *testing.T) {
	f := newFixture(t, orchestrator.Config{MaxPayload: 1024})
	f.participant("a", yes)
	req := orchestrator.Request{Participants: []orchestrator.Participant{{Name: "a", Payload: make([]byte, 1025)}}}
	_, err := f.eng.Execute(ctxT(t, 5*time.Second), req)
	if !errors.Is(err, orchestrator.ErrPayloadTooLarge) || !strings.Contains(err.Error(), "participant a") {
		t.Fatalf("want ErrPayloadTooLarge naming a, got %v", err)
	}
	req.Participants[0].Payload = make([]byte, 1024)
	if out, err := f.eng.Execute(ctxT(t, 10*time.Second), req); err != nil || out.State != orchestrator.Committed {
		t.Fatalf("at the limit: %s %v", out.State, err)
	}
}

func TestExpiredDeadlineIsRejected(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a")})
	if !errors.Is(err, orchestrator.ErrDeadlineExpired) {
		t.Fatalf("want ErrDeadlineExpired, got %v", err)
	}
}

func TestMalformedRepliesAreDroppedAndServiceGoesOn(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.participant("a", yes)
	subject := messages.ReplySubject(f.eng.Instance(), "a")
	bad := []*nats.Msg{
		{Subject: subject, Data: []byte("not the protocol at all")},
		{Subject: subject, Header: nats.Header{messages.HeaderVersion: {"99"}}},
		{Subject: subject, Header: nats.Header(messages.Reply{TxID: "x", Op: "prepare", Participant: "a", Result: "maybe", Attempt: 1}.Header())},
		{Subject: subject, Header: nats.Header(messages.Reply{TxID: "x", Op: "commit", Participant: "a", Result: messages.VoteCommit, Attempt: 1}.Header())},
	}
	for _, m := range bad {
		if err := f.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// A well-formed reply for a transaction nobody runs is counted as stray.
	stray := messages.Reply{TxID: "nobody", Op: messages.OpPrepare, Participant: "a", Result: messages.VoteCommit, Attempt: 1}
	if err := f.nc.PublishMsg(&nats.Msg{Subject: subject, Header: nats.Header(stray.Header())}); err != nil {
		t.Fatal(err)
	}
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("after malformed replies: %s %v", out.State, err)
	}
	waitFor(t, func() bool {
		return f.eng.Stats().MalformedReplies == int64(len(bad)) && f.eng.Stats().StrayReplies == 1
	},
		"malformed and stray replies to be counted")
}

func TestAVoteInAnotherParticipantsNameIsDroppedAsMalformed(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	release := make(chan struct{})
	f.participant("a", holding(release, errors.New("refused")))
	f.participant("b", yes)
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	// b (or whoever may publish on b's reply subject) votes commit for a.
	forged := messages.Reply{TxID: id, Op: messages.OpPrepare, Participant: "a", Result: messages.VoteCommit, Attempt: 1}
	if err := f.nc.PublishMsg(&nats.Msg{Subject: messages.ReplySubject(f.eng.Instance(), "b"), Header: nats.Header(forged.Header())}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.eng.Stats().MalformedReplies >= 1 }, "the vote on b's subject in a's name to be dropped")
	close(release)
	out, err := f.eng.Wait(ctxT(t, 10*time.Second), id)
	if err != nil || out.Committed() {
		t.Fatalf("want abort from a's own refusal; got %s %v", out.State, err)
	}
}

func TestForgedVoteFromNonParticipantIsIgnored(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	release := make(chan struct{})
	f.participant("a", holding(release, errors.New("refused")))
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil {
		t.Fatal(err)
	}
	forged := messages.Reply{TxID: id, Op: messages.OpPrepare, Participant: "mallory", Result: messages.VoteCommit, Attempt: 1}
	if err := f.nc.PublishMsg(&nats.Msg{Subject: messages.ReplySubject(f.eng.Instance(), "mallory"), Header: nats.Header(forged.Header())}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.eng.Stats().Ignored >= 1 }, "the forged vote to be ignored")
	close(release)
	out, err := f.eng.Wait(ctxT(t, 10*time.Second), id)
	if err != nil || out.Committed() {
		t.Fatalf("want abort from a's refusal; got %s %v", out.State, err)
	}
}

func TestClientCancelWhilePreparingAborts(t *testing.T) {
	f := newFixture(t, orchestrator.Config{NoOnePhase: true}) // a one-phase commit cannot be aborted
	release := make(chan struct{})
	f.participant("a", holding(release, errors.New("released")))
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a")})
	if err != nil || out.Committed() || !strings.Contains(out.Reason, "client gave up") {
		t.Fatalf("want an abort because the client gave up; got %s %q %v", out.State, out.Reason, err)
	}
}

func TestCommitIsResentUntilAcknowledged(t *testing.T) {
	f := newFixture(t, orchestrator.Config{RetryBase: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	var failures atomic.Int32
	f.participant("a", participants.HandlerFuncs{CommitFunc: func(context.Context, participants.Tx) error {
		if failures.Add(1) <= 5 {
			return errors.New("disk busy")
		}
		return nil
	}})
	out, err := f.eng.Execute(ctxT(t, 30*time.Second), orchestrator.Request{Participants: parts("a"), Timeout: 200 * time.Millisecond})
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("want committed after retries; got %s %v", out.State, err)
	}
	if failures.Load() < 6 {
		t.Fatalf("commit called %d times, want at least 6", failures.Load())
	}
}

func TestStoppedEngineRefusesWork(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.eng.Stop()
	if _, err := f.eng.Begin(ctxT(t, time.Second), orchestrator.Request{Participants: parts("a")}); !errors.Is(err, orchestrator.ErrStopped) {
		t.Fatalf("want ErrStopped, got %v", err)
	}
	if _, err := f.eng.Status("x"); !errors.Is(err, orchestrator.ErrStopped) {
		t.Fatalf("Status: want ErrStopped, got %v", err)
	}
}

func TestUnknownTransactionStatus(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	if _, err := f.eng.Status("never-seen"); !errors.Is(err, orchestrator.ErrUnknownTx) {
		t.Fatalf("want ErrUnknownTx, got %v", err)
	}
	if _, err := f.eng.Wait(ctxT(t, time.Second), "never-seen"); !errors.Is(err, orchestrator.ErrUnknownTx) {
		t.Fatalf("Wait: want ErrUnknownTx, got %v", err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	nc := bareNATS(t)
	for _, c := range []struct {
		cfg  orchestrator.Config
		want string
	}{
		{orchestrator.Config{Instance: "a.b"}, "Config.Instance"},
		{orchestrator.Config{RetryBase: time.Second, RetryMax: time.Millisecond}, "Config.RetryMax"},
		{orchestrator.Config{MaxInFlight: -1}, "Config.MaxInFlight"},
		{orchestrator.Config{PrepareTimeout: -time.Second}, "Config.PrepareTimeout"},
		{orchestrator.Config{MaxPayload: 64 << 20}, "Config.MaxPayload"},
	} {
		if _, err := orchestrator.New(nc, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: want an error naming %s, got %v", c.cfg, c.want, err)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDrainRefusesNewWorkAndWaitsForTheRest(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	release := make(chan struct{})
	f.participant("a", holding(release, nil))
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() { drained <- f.eng.Drain(ctxT(t, 20*time.Second)) }()
	waitFor(t, func() bool {
		_, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("a")})
		return errors.Is(err, orchestrator.ErrDraining)
	}, "Begin to be refused while draining")
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with a transaction in flight", err)
	default:
	}
	close(release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if out, err := f.eng.Status(id); err != nil || out.State != orchestrator.Committed {
		t.Fatalf("the transaction in flight: %s %v", out.State, err)
	}
	// A drained instance no longer takes begin requests from the API.
	m, err := f.nc.Request(messages.APIBegin, []byte(`{"participants":[{"name":"a"}]}`), 500*time.Millisecond)
	if err == nil {
		t.Fatalf("a draining instance answered a begin request: %s", m.Data)
	}
}

func TestNoAPIKeepsTheEngineOffTheAPISubjects(t *testing.T) {
	f := newFixture(t, orchestrator.Config{NoAPI: true})
	f.participant("a", yes)
	if out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")}); err != nil || out.State != orchestrator.Committed {
		t.Fatalf("Execute: %s %v", out.State, err)
	}
	if _, err := f.nc.Request(messages.APIStatus, []byte(`{"id":"x"}`), 500*time.Millisecond); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("want no responders on the API, got %v", err)
	}
}
