// Package conformance is the test suite every natstx participant transport
// must pass, in the spirit of watermill's tests.TestPubSub: the native
// JetStream Runtime and the watermill adapter both run it, each with a
// one-call test file.
//
//	func TestConformance(t *testing.T) { conformance.Run(t, start) }
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
)

// Start starts a participant transport for cfg against the NATS server at
// url and returns a function that stops it (waiting for in-flight commands).
// cfg's timings are short; the transport must honour AckWait and RetryDelay.
type Start func(t *testing.T, url string, cfg participants.Config) (stop func())

// wait bounds every wait of the suite.
const wait = 15 * time.Second

const name = "conformance"

// Run runs the suite against start: every black-box case of package wire
// (the cases `natstx conformance` runs against any participant), here also
// checking how often the handler ran, then the cases that need to control
// the handler or the participant's database.
func Run(t *testing.T, start Start) {
	t.Run("Wire", func(t *testing.T) { testWire(t, start) })
	t.Run("WireCrash", func(t *testing.T) { testWireCrash(t, start) })
	t.Run("CommitRetried", func(t *testing.T) { testCommitRetried(t, start) })
	t.Run("DurableRestart", func(t *testing.T) { testDurableRestart(t, start) })
	t.Run("InDoubtAfterRestart", func(t *testing.T) { testInDoubtAfterRestart(t, start) })
	t.Run("SagaActionRefused", func(t *testing.T) { testSagaRefused(t, start) })
	t.Run("SagaActionFailed", func(t *testing.T) { testSagaFailed(t, start) })
	t.Run("SagaNotImplemented", func(t *testing.T) { testSagaNotImplemented(t, start) })
	t.Run("SagaDurableRestart", func(t *testing.T) { testSagaDurableRestart(t, start) })
}

// env is an embedded NATS server with the command stream (NATS) and a reply
// subscription.
type env struct {
	t *testing.T
	*NATS
	replies *nats.Subscription
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := StartNATS(t)
	sub, err := n.Conn.SubscribeSync(messages.ReplyFilter("conformance"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, NATS: n, replies: sub}
}

func (e *env) cmd(txid string, op messages.Op, attempt int) messages.Command {
	return messages.Command{TxID: txid, Op: op, Participant: name, Attempt: attempt, ReplyTo: messages.ReplySubject("conformance", name)}
}

func (e *env) publish(subject string, h map[string][]string, body []byte) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: nats.Header(h), Data: body}); err != nil {
		e.t.Fatal(err)
	}
}

// expect sends cmd and checks the next reply.
func (e *env) expect(cmd messages.Command, result messages.Result, reason string) {
	e.t.Helper()
	e.publish(cmd.Subject(), cmd.Header(), cmd.Payload)
	e.next(cmd.TxID, cmd.Op, result, reason)
}

// next checks the next reply; reason "*" accepts any.
func (e *env) next(txid string, op messages.Op, result messages.Result, reason string) {
	e.t.Helper()
	rep := e.reply(string(op) + " " + txid)
	if rep.TxID != txid || rep.Op != op || rep.Participant != name || rep.Result != result || reason != "*" && rep.Reason != reason {
		e.t.Fatalf("%s %s: got %+v, want result %q reason %q", op, txid, rep, result, reason)
	}
}

// reply returns the next reply, to what (the command, for failures).
func (e *env) reply(what string) messages.Reply {
	e.t.Helper()
	msg, err := e.replies.NextMsg(wait)
	if err != nil {
		e.t.Fatalf("waiting for the reply to %s: %v", what, err)
	}
	rep, err := messages.DecodeReply(map[string][]string(msg.Header), msg.Data)
	if err != nil {
		e.t.Fatalf("decoding the reply to %s: %v", what, err)
	}
	return rep
}

// noMoreReplies checks that nothing else is answered for a short while.
func (e *env) noMoreReplies() {
	e.t.Helper()
	if msg, err := e.replies.NextMsg(300 * time.Millisecond); err == nil {
		e.t.Fatalf("unexpected reply %v %q", msg.Header, msg.Data)
	}
}

// counter is a Handler that counts its successful calls and can fail.
type counter struct {
	mu       sync.Mutex
	calls    map[string]int
	failNext map[messages.Op]bool
}

func newCounter() *counter {
	return &counter{calls: map[string]int{}, failNext: map[messages.Op]bool{}}
}

func (c *counter) do(op messages.Op, txid string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failNext[op] {
		c.failNext[op] = false
		return errors.New("try again")
	}
	c.calls[string(op)+" "+txid]++
	return nil
}

func (c *counter) n(op messages.Op, txid string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[string(op)+" "+txid]
}

func (c *counter) Prepare(_ context.Context, tx participants.Tx, _ []byte) error {
	return c.do(messages.OpPrepare, tx.ID)
}
func (c *counter) Commit(_ context.Context, tx participants.Tx) error {
	return c.do(messages.OpCommit, tx.ID)
}
func (c *counter) Abort(_ context.Context, tx participants.Tx) error {
	return c.do(messages.OpAbort, tx.ID)
}

func config() participants.Config {
	return participants.Config{Name: name, AckWait: 2 * time.Second, OpTimeout: time.Second, RetryDelay: 20 * time.Millisecond, StreamWait: wait}
}

// inventory opens the inventory service's database at path and returns it
// with config() behind its barrier.
func inventory(t *testing.T, path string) (participants.Config, services.Service) {
	t.Helper()
	svc, err := services.Open(context.Background(), "inventory", path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := services.NewBarrier(context.Background(), svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config()
	cfg.Barrier = b
	return cfg, svc
}

func testCommitRetried(t *testing.T, start Start) {
	e := newEnv(t)
	h := newCounter()
	cfg := config()
	cfg.Handler = h
	defer start(t, e.URL, cfg)()
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
	h.mu.Lock()
	h.failNext[messages.OpCommit] = true
	h.mu.Unlock()
	e.expect(e.cmd("tx1", messages.OpCommit, 1), messages.Failed, "try again")
	e.next("tx1", messages.OpCommit, messages.Ack, "") // redelivered by the transport
	if n := h.n(messages.OpCommit, "tx1"); n != 1 {
		t.Errorf("commit applied %d times, want 1", n)
	}
	e.noMoreReplies()
}

func testDurableRestart(t *testing.T, start Start) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "inventory.db")
	cfg, svc := inventory(t, path)
	stop := start(t, e.URL, cfg)
	prep := e.cmd("tx1", messages.OpPrepare, 1)
	prep.Payload = services.Payload("inventory", 0)
	e.expect(prep, messages.VoteCommit, "")
	stop()
	_ = svc.DB().Close()

	cfg, svc = inventory(t, path)
	defer svc.DB().Close()
	defer start(t, e.URL, cfg)()
	prep.Attempt = 2
	e.expect(prep, messages.VoteCommit, "")
	e.expect(e.cmd("tx1", messages.OpCommit, 1), messages.Ack, "")
	e.expect(e.cmd("tx1", messages.OpCommit, 2), messages.Ack, "")
	st, err := svc.TxState(context.Background(), "tx1")
	if err != nil || st != services.TxApplied {
		t.Fatalf("inventory has tx1 %s (%v), want applied", st, err)
	}
	if _, err := svc.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// outcomes answers in-doubt questions on messages.APIOutcome, standing in for
// the coordinators: pending until decide is called, then the decided
// outcome. It keeps the questions.
type outcomes struct {
	mu      sync.Mutex
	outcome string
	asked   []messages.OutcomeRequest
}

func (e *env) outcomes() *outcomes {
	e.t.Helper()
	o := &outcomes{outcome: messages.OutcomePending}
	nc := e.Connect(e.t)
	if _, err := nc.Subscribe(messages.APIOutcome, func(m *nats.Msg) {
		var req messages.OutcomeRequest
		_ = json.Unmarshal(m.Data, &req)
		o.mu.Lock()
		o.asked = append(o.asked, req)
		resp := messages.OutcomeResponse{Outcome: o.outcome, Reason: "conformance"}
		o.mu.Unlock()
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	}); err != nil {
		e.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return o
}

// decide makes every later answer outcome.
func (o *outcomes) decide(outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.outcome = outcome
}

// questions returns the questions about txid so far.
func (o *outcomes) questions(txid string) []messages.OutcomeRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	var qs []messages.OutcomeRequest
	for _, q := range o.asked {
		if q.ID == txid {
			qs = append(qs, q)
		}
	}
	return qs
}

// waitFor polls cond until it holds, failing after wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", wait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testInDoubtAfterRestart: a transaction a durable participant prepared
// before it restarted is asked about after the restart, with the deadline
// its prepare carried, and the answer is applied exactly once.
func testInDoubtAfterRestart(t *testing.T, start Start) {
	e := newEnv(t)
	o := e.outcomes()
	path := filepath.Join(t.TempDir(), "inventory.db")
	cfg, svc := inventory(t, path)
	cfg.InDoubtAfter = -1 // the first process never asks
	stop := start(t, e.URL, cfg)
	deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	prep := e.cmd("tx1", messages.OpPrepare, 1)
	prep.Payload = services.Payload("inventory", 0)
	prep.Deadline = deadline
	e.expect(prep, messages.VoteCommit, "")
	stop()
	_ = svc.DB().Close()

	cfg, svc = inventory(t, path)
	defer svc.DB().Close()
	cfg.InDoubtAfter = 50 * time.Millisecond
	defer start(t, e.URL, cfg)()
	waitFor(t, "a question about tx1 after the restart", func() bool { return len(o.questions("tx1")) > 0 })
	if q := o.questions("tx1")[0]; q.DeadlineMs != deadline.UnixMilli() {
		t.Fatalf("question %+v, want deadline_ms %d kept from the prepare", q, deadline.UnixMilli())
	}
	o.decide(messages.OutcomeCommit)
	waitFor(t, "tx1 applied", func() bool {
		st, err := svc.TxState(context.Background(), "tx1")
		return err == nil && st == services.TxApplied
	})
	e.expect(e.cmd("tx1", messages.OpCommit, 1), messages.Ack, "")
	if _, err := svc.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}
