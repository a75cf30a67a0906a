package participants

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/natstx/natstx/messages"
)

// TracerName is the instrumentation name of the tracer the Processor takes
// from Config.TracerProvider.
const TracerName = "github.com/natstx/natstx/participants"

// SpanPrefix begins the name of a command's span: "natstx.participant
// prepare", "natstx.participant action", and so on.
const SpanPrefix = "natstx.participant "

// The attributes of a command's span. The coordinator's spans carry the
// first ones too.
const (
	AttrTxID        = attribute.Key("natstx.txid")        // the transaction (or saga) ID
	AttrParticipant = attribute.Key("natstx.participant") // this participant's name
	AttrOp          = attribute.Key("natstx.op")          // prepare, commit, abort, action, compensate
	AttrAttempt     = attribute.Key("natstx.attempt")     // which send of the operation
	AttrStep        = attribute.Key("natstx.step")        // the saga step; saga commands only
	AttrResult      = attribute.Key("natstx.result")      // the reply's result; none when no reply went out
	AttrReason      = attribute.Key("natstx.reason")      // the reply's reason, when there is one
	AttrOutcome     = attribute.Key("natstx.outcome")     // what the record made of it: one of the Outcome* names
	AttrDuplicate   = attribute.Key("natstx.duplicate")   // true: answered from the record, no handler call
	AttrInDoubt     = attribute.Key("natstx.in_doubt")    // true: an outcome applied after asking the coordinators
)

// traceContext is the W3C trace context propagator, whatever the global one
// is: the protocol's headers are the W3C ones (messages.HeaderTraceParent).
var traceContext = propagation.TraceContext{}

// handling is one well-formed command on its way to an answer: when it
// arrived, and its span with the context that carries it (the handler's
// parent context), when tracing is on.
type handling struct {
	ctx   context.Context
	span  trace.Span // nil when tracing is off
	start time.Time
}

// begin starts handling cmd: with a tracer, a consumer span whose parent is
// the trace context cmd carries (none, or a broken one: a new trace).
func (p *Processor) begin(cmd messages.Command, inDoubt bool) handling {
	h := handling{ctx: context.Background(), start: time.Now()}
	if p.tracer == nil {
		return h
	}
	if cmd.TraceParent != "" {
		h.ctx = traceContext.Extract(h.ctx, propagation.MapCarrier{
			messages.HeaderTraceParent: cmd.TraceParent,
			messages.HeaderTraceState:  cmd.TraceState,
		})
	}
	attrs := []attribute.KeyValue{
		AttrTxID.String(cmd.TxID),
		AttrParticipant.String(cmd.Participant),
		AttrOp.String(string(cmd.Op)),
		AttrAttempt.Int(cmd.Attempt),
	}
	if cmd.Step != "" {
		attrs = append(attrs, AttrStep.String(cmd.Step))
	}
	if inDoubt {
		attrs = append(attrs, AttrInDoubt.Bool(true))
	}
	h.ctx, h.span = p.tracer.Start(h.ctx, SpanPrefix+string(cmd.Op),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	return h
}

// answer records the latency of cmd and what the record made of it (kind,
// an index of outcomeNames, or -1 for nothing to count), calls respond with
// a, and then ends cmd's span, marked with the answer: an error status, with
// the reason, for every answer but a vote commit or an ack.
func (p *Processor) answer(h handling, cmd messages.Command, kind int, out outcome, a Answer, respond func(Answer)) {
	p.latency[opIndex(cmd.Op)].observe(time.Since(h.start))
	if kind >= 0 {
		p.outcomes[kind].Add(1)
	}
	respond(a)
	if h.span == nil {
		return
	}
	result, reason := string(a.Reply.Result), a.Reply.Reason
	if a.ReplyTo == "" {
		result, reason = "none", out.reason
	}
	attrs := []attribute.KeyValue{AttrResult.String(result)}
	if reason != "" {
		attrs = append(attrs, AttrReason.String(reason))
	}
	if kind >= 0 {
		attrs = append(attrs, AttrOutcome.String(outcomeNames[kind]))
	}
	if out.duplicate {
		attrs = append(attrs, AttrDuplicate.Bool(true))
	}
	h.span.SetAttributes(attrs...)
	if success := a.ReplyTo != "" && (a.Reply.Result == messages.VoteCommit || a.Reply.Result == messages.VoteReadOnly || a.Reply.Result == messages.Ack); !success {
		if reason == "" {
			reason = result
		}
		h.span.SetStatus(codes.Error, reason)
	}
	h.span.End()
}
