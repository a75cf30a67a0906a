package wmparticipant_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
)

// wait bounds every wait of these tests.
const wait = 15 * time.Second

// TestTheWatermillAdapterContinuesTheTrace: on the watermill adapter, with
// a TracerProvider in the Processor's Config, a command carrying a
// traceparent (alone, in a batch, or a saga action) is handled in a
// consumer span, child of the sent span, and the handler's context carries
// it; a command without one gets the root span of a new trace.
func TestTheWatermillAdapterContinuesTheTrace(t *testing.T) {
	n := conformance.StartNATS(t)
	nc, js := n.Conn, n.JS
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	replies, err := nc.SubscribeSync(messages.ReplyFilter("test"))
	if err != nil {
		t.Fatal(err)
	}

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	var hs conformance.HandlerSpans
	const name = "traced"
	stop := start(t, n.URL, participants.Config{
		Name: name, TracerProvider: tp,
		Handler: participants.HandlerFuncs{PrepareFunc: func(ctx context.Context, tx participants.Tx, _ []byte) error {
			hs.Record(ctx, tx.ID)
			return nil
		}},
		SagaHandler: participants.SagaHandlerFuncs{ActionFunc: func(ctx context.Context, st participants.Step, _ []byte) error {
			hs.Record(ctx, st.SagaID)
			return nil
		}},
	})
	defer stop()

	cmd := func(id string, op messages.Op, n byte) messages.Command {
		c := messages.Command{TxID: id, Op: op, Participant: name, Attempt: 1, ReplyTo: messages.ReplySubject("test", name)}
		if op == messages.OpAction {
			c.Step = "reserve"
		}
		if n > 0 {
			_, c.TraceParent = conformance.RemoteSpan(n)
		}
		return c
	}
	publish := func(m *nats.Msg) {
		t.Helper()
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	nextReply := func() {
		t.Helper()
		if _, err := replies.NextMsg(wait); err != nil {
			t.Fatalf("waiting for a reply: %v", err)
		}
	}
	for _, c := range []messages.Command{cmd("alone", messages.OpPrepare, 1), cmd("saga", messages.OpAction, 2), cmd("untraced", messages.OpPrepare, 0)} {
		publish(&nats.Msg{Subject: c.Subject(), Header: nats.Header(c.Header())})
		nextReply()
	}
	h, body, err := messages.EncodeCommandBatch(name, "batch-1", []messages.Command{cmd("in-batch-a", messages.OpPrepare, 3), cmd("in-batch-b", messages.OpPrepare, 4)})
	if err != nil {
		t.Fatal(err)
	}
	publish(&nats.Msg{Subject: messages.BatchSubject(name, "1"), Header: nats.Header(h), Data: body})
	nextReply()

	want := map[string]byte{"alone": 1, "saga": 2, "untraced": 0, "in-batch-a": 3, "in-batch-b": 4}
	deadline := time.Now().Add(wait)
	for len(exp.GetSpans()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	spans := exp.GetSpans()
	if len(spans) != len(want) {
		t.Fatalf("%d spans, want %d", len(spans), len(want))
	}
	for _, s := range spans {
		var id string
		for _, kv := range s.Attributes {
			if kv.Key == participants.AttrTxID {
				id = kv.Value.AsString()
			}
		}
		n, ok := want[id]
		if !ok {
			t.Errorf("span %q of unexpected transaction %q", s.Name, id)
			continue
		}
		delete(want, id)
		if s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("%s: span kind %v", id, s.SpanKind)
		}
		if n == 0 {
			if s.Parent.IsValid() {
				t.Errorf("%s: span has parent %s, want a root span", id, s.Parent.SpanID())
			}
		} else if parent, _ := conformance.RemoteSpan(n); s.SpanContext.TraceID() != parent.TraceID() || s.Parent.SpanID() != parent.SpanID() {
			t.Errorf("%s: span in trace %s with parent %s, want trace %s parent %s", id, s.SpanContext.TraceID(), s.Parent.SpanID(), parent.TraceID(), parent.SpanID())
		}
		if got := hs.Of(id); len(got) != 1 || got[0].SpanID() != s.SpanContext.SpanID() {
			t.Errorf("%s: the handler's context carried %v, want span %s", id, got, s.SpanContext.SpanID())
		}
		if id == "saga" && !hasAttr(s, participants.AttrStep.String("reserve")) {
			t.Errorf("saga action's span lacks the step: %v", s.Attributes)
		}
	}
}

func hasAttr(s tracetest.SpanStub, kv attribute.KeyValue) bool {
	for _, a := range s.Attributes {
		if a == kv {
			return true
		}
	}
	return false
}
