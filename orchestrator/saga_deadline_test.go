package orchestrator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
)

// The caller's context deadline, sooner than the saga's own (the request's
// Timeout and the definition's deadline), is the saga's deadline, kept to
// the millisecond: it passes while a step's action hangs, and the saga
// compensates for it, long before the step's timeout. A later context
// deadline leaves the saga's own.
func TestSagaCallersContextDeadlineWinsWhenSooner(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.sagaParticipant("a", always(messages.Ack))
	b := f.sagaParticipant("b", func(cmd messages.Command) (messages.Result, string) {
		if cmd.Op == messages.OpAction {
			return "", "" // the action hangs
		}
		return messages.Ack, ""
	})
	def := threeSteps("a", "b") // each attempt's timeout is 2s
	def.Deadline = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	dl, _ := ctx.Deadline()
	id, err := f.eng.BeginSaga(ctx, orchestrator.SagaRequest{Definition: def, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := f.eng.SagaStatus(id)
	if err != nil {
		t.Fatal(err)
	}
	if want := dl.Truncate(time.Millisecond); !rec.Deadline.Equal(want) {
		t.Fatalf("the saga's deadline is %v, want the context's %v (to the millisecond); its own are 30s and 1m away", rec.Deadline, want)
	}
	rec, err = f.eng.WaitSaga(ctxT(t, 10*time.Second), id)
	if err != nil || rec.State != saga.StateCompensated || !strings.Contains(rec.Reason, "deadline") {
		t.Fatalf("want compensated for the deadline, got %s (%q) %v", rec.State, rec.Reason, err)
	}
	if s, _ := rec.Step("step2"); s.Attempts != 1 {
		t.Fatalf("step2 was attempted %d times before the deadline; want once (its timeout is 2s)", s.Attempts)
	}
	if got := b.seen(); len(got) != 2 || got[1] != "compensate:step2" {
		t.Fatalf("b saw %v, want its action then its compensation", got)
	}

	// A context deadline later than the request's Timeout does not win.
	before := time.Now()
	id, err = f.eng.BeginSaga(ctxT(t, time.Minute), orchestrator.SagaRequest{Definition: threeSteps("a"), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rec, err = f.eng.SagaStatus(id); err != nil {
		t.Fatal(err)
	}
	if lo, hi := before.Add(5*time.Second-time.Millisecond), time.Now().Add(5*time.Second); rec.Deadline.Before(lo) || rec.Deadline.After(hi) {
		t.Fatalf("the saga's deadline is %v, want its Timeout's, within [%v, %v]", rec.Deadline, lo, hi)
	}
}

// Client.BeginSaga sends what its context's deadline leaves, in whole
// milliseconds, as the saga's timeout when sooner than the request's (or
// when the request has none), and the coordinator makes it the saga's
// deadline; a later context deadline leaves the request's timeout; a
// deadline passed begins nothing.
func TestClientBeginSagaSendsASoonerContextDeadline(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.sagaParticipant("a", always(messages.Ack))
	c := newClient(t, f)
	// A second subscriber sees each saga begin request the coordinator gets.
	sent, spy := spyOn[messages.SagaBeginRequest](t, f.nc, messages.APISagaBegin)
	def := `{"name":"t","deadline":"1m","steps":[{"name":"s","participant":"a","action":{}}]}`

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	before := time.Now()
	st, err := c.BeginSaga(ctx, messages.SagaBeginRequest{ID: "soon", Definition: def, TimeoutMs: 60_000})
	if err != nil {
		t.Fatal(err)
	}
	if req, most := sent(), dl.Sub(before).Milliseconds(); req.TimeoutMs > most || req.TimeoutMs < most-3000 {
		t.Fatalf("timeout_ms %d sent; want what the context's deadline left, at most %dms", req.TimeoutMs, most)
	}
	if st.Deadline.Before(dl.Add(-time.Second)) || st.Deadline.After(dl.Add(3*time.Second)) {
		t.Fatalf("the saga's deadline is %v, want about the context's %v", st.Deadline, dl)
	}

	if _, err := c.BeginSaga(ctxT(t, time.Minute), messages.SagaBeginRequest{ID: "later", Definition: def, TimeoutMs: 2000}); err != nil {
		t.Fatal(err)
	}
	if req := sent(); req.TimeoutMs != 2000 {
		t.Fatalf("timeout_ms %d sent; want the request's 2000, sooner than the context's deadline", req.TimeoutMs)
	}
	if _, err := c.BeginSaga(ctxT(t, time.Minute), messages.SagaBeginRequest{ID: "none", Definition: def}); err != nil {
		t.Fatal(err)
	}
	if req := sent(); req.TimeoutMs <= 58_000 || req.TimeoutMs > 60_000 {
		t.Fatalf("timeout_ms %d sent without a timeout of the request's; want what the context's minute left", req.TimeoutMs)
	}

	gone, stop := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer stop()
	if _, err := c.BeginSaga(gone, messages.SagaBeginRequest{ID: "gone", Definition: def}); !errors.Is(err, orchestrator.ErrDeadlineExpired) {
		t.Fatalf("a deadline passed: %v, want ErrDeadlineExpired", err)
	}
	if m, err := spy.NextMsg(200 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("a request went out with its deadline passed: %v %v", m, err)
	}
}
