package conformance

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
)

// sagaCmd is a saga command for step of saga.
func (e *env) sagaCmd(saga string, op messages.Op, step string, attempt int, payload string) messages.Command {
	c := e.cmd(saga, op, attempt)
	c.Step = step
	if payload != "" {
		c.Payload = []byte(payload)
	}
	return c
}

// expectSaga sends cmd and checks the next reply: result, reason ("*" for
// any), code, and the step echoed.
func (e *env) expectSaga(cmd messages.Command, result messages.Result, reason, code string) {
	e.t.Helper()
	e.publish(cmd.Subject(), cmd.Header(), cmd.Payload)
	rep := e.reply(fmt.Sprintf("%s %s/%s", cmd.Op, cmd.TxID, cmd.Step))
	if rep.TxID != cmd.TxID || rep.Op != cmd.Op || rep.Participant != name || rep.Step != cmd.Step || rep.Attempt != cmd.Attempt ||
		rep.Result != result || reason != "*" && rep.Reason != reason || rep.Code != code {
		e.t.Fatalf("%s %s/%s attempt %d: got %+v, want result %q reason %q code %q", cmd.Op, cmd.TxID, cmd.Step, cmd.Attempt, rep, result, reason, code)
	}
}

// Action refuses the payload "no" with code out-of-stock, and otherwise
// counts; Compensate counts. Both fail when told to (failNext).
func (c *counter) Action(_ context.Context, st participants.Step, payload []byte) error {
	if string(payload) == "no" {
		return participants.Refuse("out-of-stock", "out of stock")
	}
	return c.do(messages.OpAction, st.SagaID+"/"+st.Name)
}

// Compensate counts, or fails when told to.
func (c *counter) Compensate(_ context.Context, st participants.Step, _ []byte) error {
	return c.do(messages.OpCompensate, st.SagaID+"/"+st.Name)
}

// sagaConfig is config() with c as the saga handler only.
func sagaConfig(c *counter) participants.Config {
	cfg := config()
	cfg.SagaHandler = c
	return cfg
}

// testSagaRefused: a refusal carries its reason and code, a duplicate gets
// the same, and the refused action's compensation is a no-op ack.
func testSagaRefused(t *testing.T, start Start) {
	e := newEnv(t)
	h := newCounter()
	defer start(t, e.URL, sagaConfig(h))()
	e.expectSaga(e.sagaCmd("s1", messages.OpAction, "reserve", 1, "no"), messages.Refused, "out of stock", "out-of-stock")
	e.expectSaga(e.sagaCmd("s1", messages.OpAction, "reserve", 2, "no"), messages.Refused, "out of stock", "out-of-stock")
	e.expectSaga(e.sagaCmd("s1", messages.OpCompensate, "reserve", 1, ""), messages.Ack, "*", "")
	e.expectSaga(e.sagaCmd("s1", messages.OpCompensate, "reserve", 2, ""), messages.Ack, "*", "")
	if n := h.n(messages.OpCompensate, "s1/reserve"); n != 0 {
		t.Errorf("compensation of a refused action called the handler %d times", n)
	}
	e.noMoreReplies()
}

// testSagaFailed: a failed action is answered failed and is not delivered
// again by the transport (the coordinator retries by the step's policy);
// the next attempt does it.
func testSagaFailed(t *testing.T, start Start) {
	e := newEnv(t)
	h := newCounter()
	defer start(t, e.URL, sagaConfig(h))()
	h.mu.Lock()
	h.failNext[messages.OpAction] = true
	h.mu.Unlock()
	e.expectSaga(e.sagaCmd("s1", messages.OpAction, "ship", 1, "go"), messages.Failed, "try again", "")
	e.noMoreReplies()
	e.expectSaga(e.sagaCmd("s1", messages.OpAction, "ship", 2, "go"), messages.Ack, "", "")
	if n := h.n(messages.OpAction, "s1/ship"); n != 1 {
		t.Errorf("action done %d times, want 1", n)
	}
}

// testSagaNotImplemented: a saga command to a participant without saga
// support is answered failed with the reason and terminated.
func testSagaNotImplemented(t *testing.T, start Start) {
	e := newEnv(t)
	cfg := config()
	cfg.Handler = newCounter()
	defer start(t, e.URL, cfg)()
	e.expectSaga(e.sagaCmd("s1", messages.OpAction, "reserve", 1, "go"), messages.Failed, participants.ReasonNoSagaHandler, "")
	e.expectSaga(e.sagaCmd("s1", messages.OpCompensate, "reserve", 1, ""), messages.Failed, participants.ReasonNoSagaHandler, "")
	e.noMoreReplies() // terminated: not delivered again
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
}

// testSagaDurableRestart: the inventory service behind a barrier reserves
// once, answers the duplicate after a restart, releases once, refuses an
// order it cannot serve with its code, and keeps its invariants.
func testSagaDurableRestart(t *testing.T, start Start) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "inventory.db")
	cfg, svc := inventory(t, path)
	stop := start(t, e.URL, cfg)
	e.expectSaga(e.sagaCmd("s1", messages.OpAction, "reserve", 1, string(services.Payload("inventory", 0))), messages.Ack, "", "")
	stop()
	_ = svc.DB().Close()

	cfg, svc = inventory(t, path)
	defer svc.DB().Close()
	defer start(t, e.URL, cfg)()
	e.expectSaga(e.sagaCmd("s1", messages.OpAction, "reserve", 2, string(services.Payload("inventory", 0))), messages.Ack, "", "")
	ctx := context.Background()
	if st, err := services.StepState(ctx, svc, "s1", "reserve"); err != nil || st != services.TxApplied {
		t.Fatalf("inventory has s1/reserve %s (%v), want applied", st, err)
	}
	e.expectSaga(e.sagaCmd("s1", messages.OpCompensate, "reserve", 1, ""), messages.Ack, "", "")
	e.expectSaga(e.sagaCmd("s1", messages.OpCompensate, "reserve", 2, ""), messages.Ack, "", "")
	if st, err := services.StepState(ctx, svc, "s1", "reserve"); err != nil || st != services.TxReleased {
		t.Fatalf("inventory has s1/reserve %s (%v), want released", st, err)
	}
	e.expectSaga(e.sagaCmd("s2", messages.OpAction, "reserve", 1, `{"item": "widget", "qty": 1000000000}`), messages.Refused, "*", services.CodeOutOfStock)
	if _, err := svc.Check(ctx); err != nil {
		t.Fatal(err)
	}
}
