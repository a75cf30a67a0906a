package orchestrator_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
)

// spanTree prints spans as "name (attempt) <- parent name", for messages.
func spanTree(spans tracetest.SpanStubs) string {
	names := map[trace.SpanID]string{}
	for _, s := range spans {
		names[s.SpanContext.SpanID()] = s.Name
	}
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "\n  %s %v <- %s (links %d)", s.Name, attrs(s), names[s.Parent.SpanID()], len(s.Links))
	}
	return b.String()
}

func attrs(s tracetest.SpanStub) map[string]string {
	m := map[string]string{}
	for _, a := range s.Attributes {
		m[string(a.Key)] = a.Value.String()
	}
	return m
}

// commandsIn returns the headers of the commands a message of the command
// stream carries: its own, or those of each item of a batch.
func commandsIn(t *testing.T, m *nats.Msg) []nats.Header {
	if !messages.IsBatch(m.Header) {
		return []nats.Header{m.Header}
	}
	items, err := messages.DecodeBatch(m.Header, m.Data)
	if err != nil {
		t.Errorf("a batch of commands does not decode: %v", err)
		return nil
	}
	hs := make([]nats.Header, len(items))
	for i, it := range items {
		hs[i] = it.Header
	}
	return hs
}

// The engine's spans of one transaction form one trace under the caller's
// span: the transaction, its phases, and a span per command whose context
// the command carries; a prepare sent again is a new span linked to the
// one before.
func TestEngineTracesATransactionUnderTheCallersSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f := newFixture(t, orchestrator.Config{TracerProvider: tp, RetryBase: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond})
	f.participant("a", yes)
	// The trace context of each command to slow, as published.
	var mu sync.Mutex
	var carried []string
	seen := func() int { mu.Lock(); defer mu.Unlock(); return len(carried) }
	sub, err := f.nc.Subscribe("natstx.cmd.slow.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range commandsIn(t, m) {
			carried = append(carried, c.Get(messages.HeaderTraceParent))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// slow answers its prepare only once it has been sent three times.
	f.participant("slow", participants.HandlerFuncs{PrepareFunc: func(ctx context.Context, _ participants.Tx, _ []byte) error {
		deadline := time.Now().Add(5 * time.Second)
		for seen() < 3 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}})

	ctx, caller := tp.Tracer("test").Start(ctxT(t, 20*time.Second), "checkout")
	out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a", "slow")})
	caller.End()
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("%v %v", out.State, err)
	}
	spans := exp.GetSpans()
	byName := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID() != caller.SpanContext().TraceID() {
			t.Errorf("span %s is in another trace", s.Name)
		}
		byName[s.Name] = append(byName[s.Name], s)
	}
	tree := spanTree(spans)
	root := byName["natstx.transaction"]
	if len(root) != 1 || root[0].Parent.SpanID() != caller.SpanContext().SpanID() {
		t.Fatalf("want one transaction span under the caller's:%s", tree)
	}
	if a := attrs(root[0]); a["natstx.txid"] != out.ID || a["natstx.state"] != "committed" {
		t.Errorf("transaction span attributes %v", a)
	}
	for _, phase := range []string{"prepare", "decision", "commit"} {
		p := byName["natstx.phase."+phase]
		if len(p) != 1 || p[0].Parent.SpanID() != root[0].SpanContext.SpanID() {
			t.Errorf("want one %s phase under the transaction:%s", phase, tree)
		}
	}
	var prepares []tracetest.SpanStub
	for _, s := range byName["natstx.command.prepare"] {
		if attrs(s)["natstx.participant"] == "slow" {
			prepares = append(prepares, s)
		}
	}
	if len(prepares) < 3 {
		t.Fatalf("%d prepare spans for slow, want 3 or more:%s", len(prepares), tree)
	}
	ids := map[trace.SpanID]bool{}
	for _, s := range prepares {
		ids[s.SpanContext.SpanID()] = true
	}
	for _, s := range byName["natstx.command.commit"] {
		ids[s.SpanContext.SpanID()] = true
	}
	mu.Lock()
	for _, tp := range carried {
		// 00-<trace id>-<span id>-<flags>
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != caller.SpanContext().TraceID().String() {
			t.Errorf("a command carries traceparent %q, not of the caller's trace", tp)
			continue
		}
		if id, err := trace.SpanIDFromHex(parts[2]); err != nil || !ids[id] {
			t.Errorf("a command carries span %s, which is none of slow's command spans", parts[2])
		}
	}
	if len(carried) < len(prepares) {
		t.Errorf("%d commands to slow seen, %d prepare spans", len(carried), len(prepares))
	}
	mu.Unlock()
	for _, s := range prepares {
		attempt := attrs(s)["natstx.attempt"]
		if attempt == "1" {
			if len(s.Links) != 0 {
				t.Errorf("the first prepare links to %d spans", len(s.Links))
			}
			continue
		}
		if len(s.Links) != 1 {
			t.Errorf("prepare attempt %s has %d links, want 1 (the attempt before)", attempt, len(s.Links))
			continue
		}
		if _, ok := ids[s.Links[0].SpanContext.SpanID()]; !ok {
			t.Errorf("prepare attempt %s links to a span that is not a prepare of slow", attempt)
		}
	}
	// One commit per participant; one whose acknowledgement was slow to
	// come (a loaded machine) is sent again, as a linked span.
	firsts := map[string]int{}
	for _, s := range byName["natstx.command.commit"] {
		if a := attrs(s); a["natstx.attempt"] == "1" {
			firsts[a["natstx.participant"]]++
		} else if len(s.Links) != 1 {
			t.Errorf("commit attempt %s to %s has %d links, want 1 (the attempt before)", a["natstx.attempt"], a["natstx.participant"], len(s.Links))
		}
	}
	if len(firsts) != 2 || firsts["a"] != 1 || firsts["slow"] != 1 {
		t.Errorf("first commit command spans by participant %v, want one each to a and slow:%s", firsts, tree)
	}
}

// TestAnEngineThatDoesNotTracePassesTheCallersTraceOn: with tracing off
// the engine records no span, but the commands of a transaction begun
// under a caller's span carry the caller's trace context unchanged, so
// that the participants' spans join the caller's trace; a transaction
// begun without one sends no trace context.
func TestAnEngineThatDoesNotTracePassesTheCallersTraceOn(t *testing.T) {
	f := newFixture(t, orchestrator.Config{NoOnePhase: true}) // prepare and commit, both carrying it
	f.participant("a", yes)
	var mu sync.Mutex
	carried := map[string][]string{} // traceparents by transaction
	sub, err := f.nc.Subscribe("natstx.cmd.a.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range commandsIn(t, m) {
			id := c.Get(messages.HeaderTxID)
			carried[id] = append(carried[id], c.Get(messages.HeaderTraceParent))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// The engine publishes on its own connection: the subscription must be
	// at the server before the first prepare goes out.
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	callerTrace, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	callerSpan, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	caller := trace.NewSpanContext(trace.SpanContextConfig{TraceID: callerTrace, SpanID: callerSpan, TraceFlags: trace.FlagsSampled, Remote: true})
	traced, err := f.eng.Execute(trace.ContextWithRemoteSpanContext(ctxT(t, 10*time.Second), caller), orchestrator.Request{Participants: parts("a")})
	if err != nil || !traced.Committed() {
		t.Fatalf("%v %v", traced.State, err)
	}
	plain, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil || !plain.Committed() {
		t.Fatalf("%v %v", plain.State, err)
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(carried[traced.ID]) >= 2 && len(carried[plain.ID]) >= 2
	}, "the prepare and commit of both transactions")
	mu.Lock()
	defer mu.Unlock()
	for _, tp := range carried[traced.ID] {
		if tp != want {
			t.Errorf("a command of the transaction begun under the caller's span carries traceparent %q, want the caller's %q", tp, want)
		}
	}
	for _, tp := range carried[plain.ID] {
		if tp != "" {
			t.Errorf("a command of a transaction begun without a trace carries traceparent %q", tp)
		}
	}
}

// TestACommitInOnePhaseIsTracedAsOnePhase: a transaction sent
// commit-one-phase has one phase span, one-phase, holding its command; no
// prepare, decision or commit phase.
func TestACommitInOnePhaseIsTracedAsOnePhase(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f := newFixture(t, orchestrator.Config{TracerProvider: tp})
	f.participant("a", yes)
	heardFrom(t, f.eng, "a")
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil || !out.Committed() || !out.OnePhase {
		t.Fatalf("want committed in one phase: %s (%s), one phase %v, %v", out.State, out.Reason, out.OnePhase, err)
	}
	spans := exp.GetSpans()
	tree := spanTree(spans)
	var root *tracetest.SpanStub
	for i, s := range spans {
		if s.Name == "natstx.transaction" && attrs(s)["natstx.txid"] == out.ID {
			root = &spans[i]
		}
	}
	if root == nil {
		t.Fatalf("no transaction span for %s:%s", out.ID, tree)
	}
	phases := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		if s.Parent.SpanID() == root.SpanContext.SpanID() {
			phases[s.Name] = s
		}
	}
	phase, ok := phases["natstx.phase.one-phase"]
	if len(phases) != 1 || !ok {
		t.Fatalf("want the one phase natstx.phase.one-phase under the transaction, got %d phases:%s", len(phases), tree)
	}
	var cmds int
	for _, s := range spans {
		if s.Parent.SpanID() == phase.SpanContext.SpanID() {
			if s.Name != "natstx.command.commit-one-phase" {
				t.Errorf("span %s under the one-phase phase", s.Name)
			}
			cmds++
		}
	}
	if cmds == 0 {
		t.Errorf("no commit-one-phase command span under the one-phase phase:%s", tree)
	}
}

// A saga's spans: the saga, its forward and compensate phases, and a span
// per step command with the step named.
func TestEngineTracesASagaAndItsCompensation(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f := newFixture(t, orchestrator.Config{TracerProvider: tp})
	f.sagaParticipant("a", always(messages.Ack))
	f.sagaParticipant("b", always(messages.Refused))
	rec, err := f.eng.ExecuteSaga(ctxT(t, 20*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b")})
	if err != nil || rec.State != saga.StateCompensated {
		t.Fatalf("%s %v", rec.State, err)
	}
	spans := exp.GetSpans()
	tree := spanTree(spans)
	count := map[string]int{}
	var root tracetest.SpanStub
	for _, s := range spans {
		count[s.Name]++
		if s.Name == "natstx.saga" {
			root = s
		}
	}
	if count["natstx.saga"] != 1 || count["natstx.phase.forward"] != 1 || count["natstx.phase.compensate"] != 1 ||
		count["natstx.command.action"] != 2 || count["natstx.command.compensate"] != 1 {
		t.Fatalf("spans %v:%s", count, tree)
	}
	if a := attrs(root); a["natstx.state"] != string(saga.StateCompensated) || !strings.Contains(a["natstx.reason"], "step2") {
		t.Errorf("saga span attributes %v", a)
	}
	for _, s := range spans {
		if strings.HasPrefix(s.Name, "natstx.command.") && attrs(s)["natstx.step"] == "" {
			t.Errorf("command span without its step: %v", attrs(s))
		}
	}
}

// One trace spans the caller, the coordinator and every participant of a
// transaction: each participant's span of each command it handled is a
// child of the coordinator's span of that command; the prepares sent again
// to a slow participant are linked spans, and its span of the one it
// answered is the child of that attempt's.
func TestOneTraceSpansTheCoordinatorAndEveryParticipant(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	f := newFixture(t, orchestrator.Config{TracerProvider: tp, RetryBase: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond})
	var prepares atomic.Int32
	start := func(name string, h participants.Handler) {
		rt, err := participants.New(f.nc, participants.Config{Name: name, Handler: h, TracerProvider: tp})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rt.Stop)
	}
	start("inventory", yes)
	start("payment", yes)
	// slow's first prepare takes long enough for the engine to send it twice
	// more.
	start("slow", participants.HandlerFuncs{PrepareFunc: func(ctx context.Context, _ participants.Tx, _ []byte) error {
		if prepares.Add(1) == 1 {
			deadline := time.Now().Add(5 * time.Second)
			for f.eng.Stats().Resends < 4 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		return nil
	}})
	ctx, caller := tp.Tracer("test").Start(ctxT(t, 20*time.Second), "checkout")
	out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("inventory", "payment", "slow")})
	caller.End()
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("%v %v", out.State, err)
	}
	// The participants end their spans once their reply is out: wait for
	// the commits' spans of all three.
	participantSpans := func() (spans tracetest.SpanStubs) {
		for _, s := range exp.GetSpans() {
			if strings.HasPrefix(s.Name, "natstx.participant ") {
				spans = append(spans, s)
			}
		}
		return spans
	}
	waitFor(t, func() bool {
		n := 0
		for _, s := range participantSpans() {
			if s.Name == "natstx.participant commit" {
				n++
			}
		}
		return n == 3
	}, "each participant's span of its commit")
	spans := exp.GetSpans()
	tree := spanTree(spans)
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
		if s.SpanContext.TraceID() != caller.SpanContext().TraceID() {
			t.Errorf("span %s %v is in another trace:%s", s.Name, attrs(s), tree)
		}
	}
	handled := map[string]bool{}
	for _, s := range participantSpans() {
		a := attrs(s)
		parent, ok := byID[s.Parent.SpanID()]
		if !ok || parent.Name != "natstx.command."+a["natstx.op"] || attrs(parent)["natstx.participant"] != a["natstx.participant"] ||
			attrs(parent)["natstx.attempt"] != a["natstx.attempt"] {
			t.Errorf("participant span %s %v is not the child of the coordinator's span of its command:%s", s.Name, a, tree)
		}
		if s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("participant span %s is of kind %v", s.Name, s.SpanKind)
		}
		handled[a["natstx.participant"]+" "+a["natstx.op"]] = true
	}
	for _, p := range []string{"inventory", "payment", "slow"} {
		if !handled[p+" prepare"] || !handled[p+" commit"] {
			t.Errorf("no span of %s's prepare and commit:%s", p, tree)
		}
	}
	// slow's prepares: attempt 1, then attempts linked to the one before.
	linked := 0
	for _, s := range spans {
		if s.Name == "natstx.command.prepare" && attrs(s)["natstx.participant"] == "slow" && attrs(s)["natstx.attempt"] != "1" {
			if len(s.Links) != 1 || byID[s.Links[0].SpanContext.SpanID()].Name != "natstx.command.prepare" {
				t.Errorf("prepare attempt %s to slow is not linked to the attempt before:%s", attrs(s)["natstx.attempt"], tree)
			}
			linked++
		}
	}
	if linked < 2 {
		t.Errorf("%d re-sent prepares to slow, want 2 or more:%s", linked, tree)
	}
}
