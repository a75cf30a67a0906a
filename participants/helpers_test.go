package participants_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait in these tests.
const wait = 15 * time.Second

const svc = "svc"

// env is an embedded NATS server with the command stream, a connection, and a
// subscription on the reply subject commands name.
type env struct {
	t           *testing.T
	srv         *embedded.Server
	nc          *nats.Conn
	js          jetstream.JetStream
	replyFilter string // every reply subject the tests' commands name
	replies     *nats.Subscription
}

func newEnv(t *testing.T, withStream bool) *env {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	e := &env{t: t, srv: srv, nc: e2connect(t, srv), replyFilter: messages.ReplyFilter("test")}
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	if withStream {
		e.ensureStreams()
	}
	if e.replies, err = e.nc.SubscribeSync(e.replyFilter); err != nil {
		t.Fatal(err)
	}
	return e
}

func e2connect(t *testing.T, srv *embedded.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (e *env) ensureStreams() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := orchestrator.EnsureStreams(ctx, e.js, orchestrator.StreamOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// testConfig is a Config with short timings for tests.
func testConfig(h participants.Handler, log *zap.Logger) participants.Config {
	return participants.Config{
		Name:       svc,
		Handler:    h,
		AckWait:    2 * time.Second,
		OpTimeout:  time.Second,
		RetryDelay: 20 * time.Millisecond,
		StreamWait: wait,
		Logger:     log,
	}
}

// start creates and starts a runtime on nc; Stop runs at cleanup.
func (e *env) start(nc *nats.Conn, cfg participants.Config) *participants.Runtime {
	e.t.Helper()
	rt, err := participants.New(nc, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := rt.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(rt.Stop)
	return rt
}

func (e *env) cmd(txid string, op messages.Op, attempt int) messages.Command {
	return messages.Command{TxID: txid, Op: op, Participant: svc, Attempt: attempt, ReplyTo: messages.ReplySubject("test", svc)}
}

// send publishes cmd into the command stream.
func (e *env) send(cmd messages.Command) {
	e.t.Helper()
	e.publish(&nats.Msg{Subject: cmd.Subject(), Header: nats.Header(cmd.Header()), Data: cmd.Payload})
}

func (e *env) publish(msg *nats.Msg) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, msg); err != nil {
		e.t.Fatalf("publishing to %s: %v", msg.Subject, err)
	}
}

// next returns the next reply.
func (e *env) next() messages.Reply {
	e.t.Helper()
	msg, err := e.replies.NextMsg(wait)
	if err != nil {
		e.t.Fatalf("waiting for a reply: %v", err)
	}
	rep, err := messages.DecodeReply(map[string][]string(msg.Header), msg.Data)
	if err != nil {
		e.t.Fatalf("decoding reply: %v", err)
	}
	return rep
}

// expect sends cmd and checks the next reply's result and reason.
func (e *env) expect(cmd messages.Command, result messages.Result, reason string) messages.Reply {
	e.t.Helper()
	e.send(cmd)
	rep := e.next()
	if rep.TxID != cmd.TxID || rep.Op != cmd.Op || rep.Participant != svc || rep.Result != result || rep.Reason != reason {
		e.t.Fatalf("%s %s: got reply %+v, want result %q reason %q", cmd.Op, cmd.TxID, rep, result, reason)
	}
	return rep
}

// settled waits until the participant's consumer has no pending or
// unacknowledged command.
func (e *env) settled() {
	e.t.Helper()
	eventually(e.t, "consumer to settle", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		cons, err := e.js.Consumer(ctx, messages.CommandStream, messages.ConsumerName(svc))
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	})
}

// eventually polls cond until it holds, failing after wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a Handler that counts calls per operation and transaction and
// delegates to optional functions.
type recorder struct {
	participants.HandlerFuncs
	mu    sync.Mutex
	calls map[string]int
}

func newRecorder() *recorder { return &recorder{calls: make(map[string]int)} }

func (r *recorder) count(op messages.Op, txid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[string(op)+" "+txid]++
}

func (r *recorder) n(op messages.Op, txid string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[string(op)+" "+txid]
}

func (r *recorder) Prepare(ctx context.Context, tx participants.Tx, payload []byte) error {
	r.count(messages.OpPrepare, tx.ID)
	return r.HandlerFuncs.Prepare(ctx, tx, payload)
}

func (r *recorder) Commit(ctx context.Context, tx participants.Tx) error {
	r.count(messages.OpCommit, tx.ID)
	return r.HandlerFuncs.Commit(ctx, tx)
}

func (r *recorder) Abort(ctx context.Context, tx participants.Tx) error {
	r.count(messages.OpAbort, tx.ID)
	return r.HandlerFuncs.Abort(ctx, tx)
}

// observed returns a logger whose lines the test can read.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// checkTxidOnLines fails if a line about a command lacks the txid field.
func checkTxidOnLines(t *testing.T, logs *observer.ObservedLogs) {
	t.Helper()
	lifecycle := map[string]bool{"participant started": true, "participant stopped": true, "consuming commands": true,
		"removed finished transaction records": true, "dropping malformed command": true}
	for _, l := range logs.All() {
		if lifecycle[l.Message] {
			continue
		}
		if _, ok := l.ContextMap()["txid"]; !ok {
			t.Errorf("log line %q has no txid: %v", l.Message, l.ContextMap())
		}
	}
}

func txid(i int) string { return fmt.Sprintf("tx-%04d", i) }
