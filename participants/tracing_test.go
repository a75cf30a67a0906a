package participants_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
)

// newTracing returns a tracer provider that exports every span, as it
// ends, to the returned in-memory exporter.
func newTracing(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// tracingHandler is a Handler that records its contexts' span contexts;
// a prepare with payload "no" votes abort.
func tracingHandler(sc *conformance.HandlerSpans) participants.HandlerFuncs {
	return participants.HandlerFuncs{
		PrepareFunc: func(ctx context.Context, tx participants.Tx, payload []byte) error {
			sc.Record(ctx, "prepare "+tx.ID)
			if string(payload) == "no" {
				return errors.New("out of stock")
			}
			return nil
		},
		CommitFunc: func(ctx context.Context, tx participants.Tx) error {
			sc.Record(ctx, "commit "+tx.ID)
			return nil
		},
	}
}

// waitSpans waits until the exporter holds n spans and returns them.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	eventually(t, fmt.Sprintf("%d spans", n), func() bool { return len(exp.GetSpans()) >= n })
	spans := exp.GetSpans()
	if len(spans) != n {
		t.Fatalf("%d spans, want %d: %v", len(spans), n, names(spans))
	}
	return spans
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// attrs returns a span's attributes by key.
func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// spanOf returns the span whose natstx.txid (and natstx.step, if step is
// not empty) and natstx.op are the given ones, and whose natstx.attempt is
// attempt.
func spanOf(t *testing.T, spans tracetest.SpanStubs, op messages.Op, txid, step string, attempt int) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		a := attrs(s)
		if a[participants.AttrOp].AsString() == string(op) && a[participants.AttrTxID].AsString() == txid &&
			a[participants.AttrStep].AsString() == step && a[participants.AttrAttempt].AsInt64() == int64(attempt) {
			return s
		}
	}
	t.Fatalf("no span of %s %s step %q attempt %d among %v", op, txid, step, attempt, names(spans))
	return tracetest.SpanStub{}
}

// checkChild fails unless s is a consumer span named for op, in parent's
// trace and parent's child, with the participant's attributes, and the
// handler's context (handler, when given) carried s.
func checkChild(t *testing.T, s tracetest.SpanStub, op messages.Op, parent trace.SpanContext, handler []trace.SpanContext) {
	t.Helper()
	if s.Name != participants.SpanPrefix+string(op) || s.SpanKind != trace.SpanKindConsumer {
		t.Errorf("span %q kind %v, want %q consumer", s.Name, s.SpanKind, participants.SpanPrefix+string(op))
	}
	if s.SpanContext.TraceID() != parent.TraceID() || s.Parent.SpanID() != parent.SpanID() || !s.Parent.IsRemote() {
		t.Errorf("span %q: trace %s parent %s (remote %v), want trace %s parent %s (remote)",
			s.Name, s.SpanContext.TraceID(), s.Parent.SpanID(), s.Parent.IsRemote(), parent.TraceID(), parent.SpanID())
	}
	if a := attrs(s); a[participants.AttrParticipant].AsString() != svc {
		t.Errorf("span %q: participant %q, want %q", s.Name, a[participants.AttrParticipant].AsString(), svc)
	}
	if handler != nil && (len(handler) != 1 || handler[0].SpanID() != s.SpanContext.SpanID() || handler[0].TraceID() != s.SpanContext.TraceID()) {
		t.Errorf("span %q %s: the handler's contexts carried %v, want it once", s.Name, s.SpanContext.SpanID(), handler)
	}
}

// TestACommandsTraceContextIsContinuedAroundItsHandler: a prepare that
// carries a traceparent and a tracestate is handled in a consumer span,
// child of the sent span in the sent trace, with the tracestate; the
// handler's context carries that span. A vote abort marks its span an
// error with the reason; the duplicate prepare, answered from the record,
// gets a span of its own, marked duplicate, without a handler call.
func TestACommandsTraceContextIsContinuedAroundItsHandler(t *testing.T) {
	e := newEnv(t, true)
	tp, exp := newTracing(t)
	var sc conformance.HandlerSpans
	cfg := testConfig(tracingHandler(&sc), nil)
	cfg.TracerProvider = tp
	e.start(e.nc, cfg)

	parent, tparent := conformance.RemoteSpan(1)
	c := e.cmd("traced", messages.OpPrepare, 1)
	c.TraceParent, c.TraceState = tparent, "vendor=opaque"
	e.expect(c, messages.VoteCommit, "")
	s := waitSpans(t, exp, 1)[0]
	checkChild(t, s, messages.OpPrepare, parent, sc.Of("prepare traced"))
	a := attrs(s)
	if a[participants.AttrTxID].AsString() != "traced" || a[participants.AttrAttempt].AsInt64() != 1 ||
		a[participants.AttrResult].AsString() != string(messages.VoteCommit) || a[participants.AttrOutcome].AsString() != participants.OutcomePrepared {
		t.Errorf("span attributes %v", s.Attributes)
	}
	if got := s.SpanContext.TraceState().String(); got != "vendor=opaque" {
		t.Errorf("tracestate %q, want vendor=opaque", got)
	}
	if s.Status.Code == codes.Error {
		t.Errorf("a vote commit's span has status %v", s.Status)
	}

	parent2, tparent2 := conformance.RemoteSpan(2)
	c.Attempt, c.TraceParent, c.TraceState = 2, tparent2, ""
	e.expect(c, messages.VoteCommit, "")
	dup := spanOf(t, waitSpans(t, exp, 2), messages.OpPrepare, "traced", "", 2)
	checkChild(t, dup, messages.OpPrepare, parent2, nil)
	if a := attrs(dup); !a[participants.AttrDuplicate].AsBool() || a[participants.AttrOutcome].AsString() != participants.OutcomeDuplicate {
		t.Errorf("duplicate's span attributes %v", dup.Attributes)
	}
	if n := len(sc.Of("prepare traced")); n != 1 {
		t.Errorf("%d prepare calls, want 1", n)
	}

	parent3, tparent3 := conformance.RemoteSpan(3)
	no := e.cmd("refused", messages.OpPrepare, 1)
	no.Payload, no.TraceParent = []byte("no"), tparent3
	e.expect(no, messages.VoteAbort, "out of stock")
	s = spanOf(t, waitSpans(t, exp, 3), messages.OpPrepare, "refused", "", 1)
	checkChild(t, s, messages.OpPrepare, parent3, sc.Of("prepare refused"))
	if s.Status.Code != codes.Error || s.Status.Description != "out of stock" || attrs(s)[participants.AttrOutcome].AsString() != participants.OutcomeVotedNo {
		t.Errorf("vote abort's span: status %v, attributes %v", s.Status, s.Attributes)
	}
}

// TestACommandWithoutTraceContextStartsATrace: with a TracerProvider, a
// command that carries no traceparent (or a broken one) is handled in the
// root span of a new trace, which the handler's context carries.
func TestACommandWithoutTraceContextStartsATrace(t *testing.T) {
	e := newEnv(t, true)
	tp, exp := newTracing(t)
	var sc conformance.HandlerSpans
	cfg := testConfig(tracingHandler(&sc), nil)
	cfg.TracerProvider = tp
	e.start(e.nc, cfg)

	e.expect(e.cmd("plain", messages.OpPrepare, 1), messages.VoteCommit, "")
	broken := e.cmd("broken", messages.OpPrepare, 1)
	broken.TraceParent = "00-not-a-trace-01"
	e.expect(broken, messages.VoteCommit, "")
	spans := waitSpans(t, exp, 2)
	for _, txid := range []string{"plain", "broken"} {
		s := spanOf(t, spans, messages.OpPrepare, txid, "", 1)
		if s.Parent.IsValid() || !s.SpanContext.IsValid() {
			t.Errorf("%s: span %s has parent %v, want a root span", txid, s.SpanContext.SpanID(), s.Parent)
		}
		if h := sc.Of("prepare " + txid); len(h) != 1 || h[0].SpanID() != s.SpanContext.SpanID() {
			t.Errorf("%s: the handler's context carried %v, want span %s", txid, h, s.SpanContext.SpanID())
		}
	}
}

// TestNoTracerProviderNoSpan: without a TracerProvider the handler's
// context carries no span, not even the command's remote one.
func TestNoTracerProviderNoSpan(t *testing.T) {
	e := newEnv(t, true)
	var sc conformance.HandlerSpans
	e.start(e.nc, testConfig(tracingHandler(&sc), nil))
	_, tparent := conformance.RemoteSpan(4)
	c := e.cmd("untraced", messages.OpPrepare, 1)
	c.TraceParent = tparent
	e.expect(c, messages.VoteCommit, "")
	if h := sc.Of("prepare untraced"); len(h) != 1 || h[0].IsValid() {
		t.Fatalf("the handler's contexts carried %v, want one call with no span", h)
	}
}

// TestEachCommandOfABatchContinuesItsOwnTrace: the commands of one batch
// message, each with its own traceparent, are handled each in a child span
// of its own parent.
func TestEachCommandOfABatchContinuesItsOwnTrace(t *testing.T) {
	e := newEnv(t, true)
	tp, exp := newTracing(t)
	var sc conformance.HandlerSpans
	cfg := testConfig(tracingHandler(&sc), nil)
	cfg.TracerProvider = tp
	e.start(e.nc, cfg)

	parents := map[string]trace.SpanContext{}
	var cmds []messages.Command
	for i, txid := range []string{"batch-a", "batch-b", "batch-c"} {
		sc, tparent := conformance.RemoteSpan(byte(10 + i))
		c := e.cmd(txid, messages.OpPrepare, 1)
		c.TraceParent = tparent
		parents[txid] = sc
		cmds = append(cmds, c)
	}
	e.sendBatch(svc, cmds...)
	if got := e.nextReplies(); len(got) != len(cmds) {
		t.Fatalf("%d replies, want %d", len(got), len(cmds))
	}
	spans := waitSpans(t, exp, len(cmds))
	for txid, parent := range parents {
		checkChild(t, spanOf(t, spans, messages.OpPrepare, txid, "", 1), messages.OpPrepare, parent, sc.Of("prepare "+txid))
	}
}

// TestASagaActionContinuesItsTrace: a saga action carrying a traceparent
// is handled in a child span named for the action with the step's name,
// in memory and through a Barrier, and the handler's context carries it; a
// refusal marks the span an error with the reason.
func TestASagaActionContinuesItsTrace(t *testing.T) {
	run := func(t *testing.T, cfg participants.Config, sc *conformance.HandlerSpans) {
		e := newEnv(t, true)
		tp, exp := newTracing(t)
		cfg.TracerProvider = tp
		e.start(e.nc, cfg)
		parent, tparent := conformance.RemoteSpan(20)
		c := sagaCmd("saga-1", messages.OpAction, "reserve", 1, "go")
		c.TraceParent = tparent
		e.expect(c, messages.Ack, "")
		s := spanOf(t, waitSpans(t, exp, 1), messages.OpAction, "saga-1", "reserve", 1)
		checkChild(t, s, messages.OpAction, parent, sc.Of("action saga-1/reserve"))
		if attrs(s)[participants.AttrOutcome].AsString() != participants.OutcomeDone {
			t.Errorf("action's span attributes %v", s.Attributes)
		}
		parent2, tparent2 := conformance.RemoteSpan(21)
		no := sagaCmd("saga-2", messages.OpAction, "reserve", 1, "no")
		no.TraceParent = tparent2
		e.send(no)
		if r := e.next(); r.Result != messages.Refused {
			t.Fatalf("action with payload no: %+v", r)
		}
		s = spanOf(t, waitSpans(t, exp, 2), messages.OpAction, "saga-2", "reserve", 1)
		checkChild(t, s, messages.OpAction, parent2, sc.Of("action saga-2/reserve"))
		if s.Status.Code != codes.Error || s.Status.Description != "out of stock" || attrs(s)[participants.AttrOutcome].AsString() != participants.OutcomeRefused {
			t.Errorf("refusal's span: status %v, attributes %v", s.Status, s.Attributes)
		}
	}
	action := func(sc *conformance.HandlerSpans, ctx context.Context, st participants.Step, payload []byte) error {
		sc.Record(ctx, "action "+st.SagaID+"/"+st.Name)
		if string(payload) == "no" {
			return participants.Refuse("out-of-stock", "out of stock")
		}
		return nil
	}
	t.Run("memory", func(t *testing.T) {
		var sc conformance.HandlerSpans
		cfg := testConfig(nil, nil)
		cfg.SagaHandler = participants.SagaHandlerFuncs{ActionFunc: func(ctx context.Context, st participants.Step, payload []byte) error {
			return action(&sc, ctx, st, payload)
		}}
		run(t, cfg, &sc)
	})
	forEachDatabase(t, func(t *testing.T, db database) {
		var sc conformance.HandlerSpans
		sqldb, table := db.open(t), "natstx_barrier_"+nuid.Next()
		t.Cleanup(func() { _, _ = sqldb.Exec(`DROP TABLE ` + table) })
		b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{
			DB: sqldb, Dialect: db.dialect, Table: table,
			SagaHandler: sqlSagaFuncs{action: func(ctx context.Context, _ *sql.Tx, st participants.Step, payload []byte) error {
				return action(&sc, ctx, st, payload)
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(nil, nil)
		cfg.Handler, cfg.Barrier = nil, b
		run(t, cfg, &sc)
	})
}

// sqlSagaFuncs adapts a function to a SQLSagaHandler whose compensation
// does nothing.
type sqlSagaFuncs struct {
	action func(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error
}

func (f sqlSagaFuncs) Action(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	return f.action(ctx, dbtx, st, payload)
}

func (sqlSagaFuncs) Compensate(context.Context, *sql.Tx, participants.Step, []byte) error { return nil }
