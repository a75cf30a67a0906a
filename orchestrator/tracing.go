package orchestrator

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/txn"
)

// TracerName is the instrumentation name of the engine's spans.
const TracerName = "github.com/natstx/natstx/orchestrator"

// Span attribute keys the engine (and the participant SDK) set.
const (
	AttrTxID        = attribute.Key("natstx.txid")
	AttrProtocol    = attribute.Key("natstx.protocol")
	AttrParticipant = attribute.Key("natstx.participant")
	AttrOp          = attribute.Key("natstx.op")
	AttrStep        = attribute.Key("natstx.step")
	AttrAttempt     = attribute.Key("natstx.attempt")
	AttrResult      = attribute.Key("natstx.result")
	AttrState       = attribute.Key("natstx.state")
	AttrReason      = attribute.Key("natstx.reason")
	AttrRecovered   = attribute.Key("natstx.recovered")
)

// The spans of one transaction (or saga): the transaction's own, from
// begin to its end; one per phase below it (prepare, then decision (the
// commit record's write) and commit, or abort; one-phase for a commit in
// one phase; forward and compensate for a saga); and one per command below its phase, from its send to its
// answer. A command sent again gets a new span linked to the one before.
type txTrace struct {
	tracer trace.Tracer
	ctx    context.Context // the transaction span's
	root   trace.Span
	phase  trace.Span
	// phaseCtx is the current phase's context, the parent of its commands.
	phaseCtx  context.Context
	phaseName string
	// open are the commands waiting for an answer, last the latest command
	// sent, each by participant and step.
	open map[string]trace.Span
	last map[string]trace.SpanContext
}

// traceCarrier carries a trace context in NATS headers (exact header
// names, as messages.HeaderTraceParent spells them; other spellings are
// found too).
type traceCarrier map[string][]string

func (c traceCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func (c traceCarrier) Set(key, value string) { c[key] = []string{value} }

func (c traceCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// w3c is the propagator of every trace context the engine reads and
// writes: W3C trace context, whatever the process's global propagator.
var w3c = propagation.TraceContext{}

// traceContextOf returns ctx with the remote span context a message's
// headers carry, if any.
func traceContextOf(ctx context.Context, h map[string][]string) context.Context {
	if h == nil {
		return ctx
	}
	return w3c.Extract(ctx, traceCarrier(h))
}

// startTrace begins the spans of a transaction or saga, as a child of the
// span ctx carries (the caller's), or a new trace. When tracing is off it
// returns nil, unless the caller gave a trace context: that is passed on
// to the participants unchanged (spans that record nothing), so that their
// spans stay in the caller's trace, as W3C trace context asks of a service
// that does not trace.
func (e *Engine) startTrace(ctx context.Context, name, id, protocol string, recovered bool, attrs ...attribute.KeyValue) *txTrace {
	tracer := e.tracer
	if tracer == nil {
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return nil
		}
		tracer = passOn
	}
	attrs = append(attrs, AttrTxID.String(id), AttrProtocol.String(protocol))
	if recovered {
		attrs = append(attrs, AttrRecovered.Bool(true))
	}
	tctx, root := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
	return &txTrace{tracer: tracer, ctx: tctx, root: root, open: map[string]trace.Span{}, last: map[string]trace.SpanContext{}}
}

// passOn is the tracer of an engine that does not trace: its spans record
// nothing and carry their parent's span context, the caller's.
var passOn = noop.NewTracerProvider().Tracer(TracerName)

// firstPhase names the phase a transaction of spec begins in: "one-phase"
// for a commit-one-phase (there is no other), "prepare" for the rest.
func firstPhase(spec txn.Spec) string {
	if spec.OnePhase {
		return "one-phase"
	}
	return "prepare"
}

// enterPhase ends the current phase, and the commands still open in it,
// and begins phase name.
func (t *txTrace) enterPhase(name string) {
	if t == nil || t.phaseName == name {
		return
	}
	t.endPhase("the phase ended before an answer")
	t.phaseCtx, t.phase = t.tracer.Start(t.ctx, "natstx.phase."+name)
	t.phaseName = name
}

func (t *txTrace) endPhase(unanswered string) {
	for k, sp := range t.open {
		sp.SetStatus(codes.Unset, unanswered)
		sp.AddEvent(unanswered)
		sp.End()
		delete(t.open, k)
	}
	if t.phase != nil {
		t.phase.End()
		t.phase, t.phaseName = nil, ""
	}
}

// command begins the span of a command and returns its trace context for
// the command's headers. A command sent again ends the span of the one
// before (unanswered) and links to it.
func (t *txTrace) command(participant, step string, op messages.Op, attempt int) (traceparent, tracestate string) {
	if t == nil {
		return "", ""
	}
	if t.phase == nil {
		t.enterPhase("commands")
	}
	key := participant + "/" + step
	if sp := t.open[key]; sp != nil {
		sp.AddEvent("no answer: sent again")
		sp.End()
		delete(t.open, key)
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		AttrParticipant.String(participant), AttrOp.String(string(op)), AttrAttempt.Int(attempt))}
	if step != "" {
		opts = append(opts, trace.WithAttributes(AttrStep.String(step)))
	}
	if prev, ok := t.last[key]; ok && attempt > 1 {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: prev, Attributes: []attribute.KeyValue{attribute.String("natstx.link", "previous attempt")}}))
	}
	ctx, sp := t.tracer.Start(t.phaseCtx, "natstx.command."+string(op), opts...)
	t.open[key], t.last[key] = sp, sp.SpanContext()
	c := traceCarrier{}
	w3c.Inject(ctx, c)
	return c.Get(messages.HeaderTraceParent), c.Get(messages.HeaderTraceState)
}

// answered ends the span of the command participant (and step) answered.
func (t *txTrace) answered(participant, step, result, reason string, failed bool) {
	if t == nil {
		return
	}
	key := participant + "/" + step
	sp := t.open[key]
	if sp == nil {
		return
	}
	sp.SetAttributes(AttrResult.String(result))
	if reason != "" {
		sp.SetAttributes(AttrReason.String(reason))
	}
	if failed {
		sp.SetStatus(codes.Error, reason)
	}
	sp.End()
	delete(t.open, key)
}

// end ends every span of the transaction: state is its final state, and
// reason why it did not succeed, if it did not.
func (t *txTrace) end(state, reason string) {
	if t == nil {
		return
	}
	t.endPhase("no answer before the end")
	t.root.SetAttributes(AttrState.String(state))
	if reason != "" {
		t.root.SetAttributes(AttrReason.String(reason))
		t.root.SetStatus(codes.Error, reason)
	}
	t.root.End()
}
