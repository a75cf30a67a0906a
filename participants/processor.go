package participants

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// Settle says what a transport does with a command message after its reply.
type Settle int

// The ways to settle a command message.
const (
	// SettleAck: done; the message is acknowledged.
	SettleAck Settle = iota
	// SettleNak: deliver it again after Config.RetryDelay.
	SettleNak
	// SettleTerm: never deliver it again.
	SettleTerm
)

// String names s.
func (s Settle) String() string {
	switch s {
	case SettleAck:
		return "ack"
	case SettleNak:
		return "nak"
	case SettleTerm:
		return "term"
	}
	return "settle(" + strconv.Itoa(int(s)) + ")"
}

// Answer is a Processor's answer to one command message: a reply to publish
// (when ReplyTo is set) and how to settle the message.
type Answer struct {
	// ReplyTo is the subject Reply goes to; empty when the message did not
	// say (some malformed commands).
	ReplyTo string
	// Reply is the vote or acknowledgement.
	Reply messages.Reply
	// Settle is what to do with the message once the reply is out. If the
	// reply cannot be published, a transport settles SettleAck as SettleNak.
	Settle Settle
}

// Processor is the transport-free core of a participant: it decodes a
// command, applies the idempotency rules (with the in-memory record, or with a
// Barrier in the participant's database), calls the handler, and returns the
// Answer. Runtime feeds it from a JetStream consumer; package wmparticipant
// feeds it from a watermill Router. It also keeps the transactions in doubt
// and resolves them (LoadPrepared, ResolveInDoubt), so every transport gives
// the same recovery guarantee. It is safe for concurrent use.
type Processor struct {
	cfg Config
	log *zap.Logger

	records   *table
	doubt     doubtSet
	lastSweep atomic.Int64 // unix nanos of the last sweep of finished records

	prepares, commits, aborts, onePhases atomic.Uint64
	actions, compensations               atomic.Uint64
	unsupported                          atomic.Uint64
	duplicates, rejected                 atomic.Uint64
	malformed, handlerErrors             atomic.Uint64

	inDoubtQueries, inDoubtResolved, inDoubtContradicted atomic.Uint64

	latency  [len(commandOps)]latency
	outcomes [numOutcomes]atomic.Uint64

	tracer trace.Tracer // nil: tracing is off
}

// NewProcessor returns a Processor for cfg. Only the fields about commands
// and transactions in doubt matter to it (Name, Handler, SagaHandler or
// Barrier, OpTimeout, Retention, InDoubtAfter, Now, Logger, AfterApply,
// TracerProvider).
func NewProcessor(cfg Config) (*Processor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	p := &Processor{cfg: cfg, log: cfg.Logger.With(zap.String("participant", cfg.Name)), records: newTable()}
	if cfg.TracerProvider != nil {
		p.tracer = cfg.TracerProvider.Tracer(TracerName)
	}
	p.lastSweep.Store(p.now().UnixNano())
	return p, nil
}

// now reads Config.Now.
func (p *Processor) now() time.Time {
	if p.cfg.Now != nil {
		return p.cfg.Now()
	}
	return time.Now()
}

// Name is the participant name the Processor serves.
func (p *Processor) Name() string { return p.cfg.Name }

// Stats returns the Processor's counters.
func (p *Processor) Stats() Stats {
	s := Stats{
		Prepares:      p.prepares.Load(),
		Commits:       p.commits.Load(),
		Aborts:        p.aborts.Load(),
		OnePhases:     p.onePhases.Load(),
		Duplicates:    p.duplicates.Load(),
		Rejected:      p.rejected.Load(),
		Actions:       p.actions.Load(),
		Compensations: p.compensations.Load(),
		Unsupported:   p.unsupported.Load(),
		Malformed:     p.malformed.Load(),
		HandlerErrors: p.handlerErrors.Load(),
		Records:       p.records.len(),
		InDoubt:       len(p.InDoubt()),

		InDoubtQueries:      p.inDoubtQueries.Load(),
		InDoubtResolved:     p.inDoubtResolved.Load(),
		InDoubtContradicted: p.inDoubtContradicted.Load(),

		Latency:  make(map[messages.Op]Histogram, len(commandOps)),
		Outcomes: make(map[string]uint64, numOutcomes),
	}
	for i, op := range commandOps {
		s.Latency[op] = p.latency[i].snapshot()
	}
	for i, name := range outcomeNames {
		s.Outcomes[name] = p.outcomes[i].Load()
	}
	return s
}

// State returns what is recorded about transaction txid: from the Barrier
// when there is one (StateNone if it cannot be read), else from memory
// (StateNone if finished longer than Retention ago).
func (p *Processor) State(txid string) State {
	if b := p.cfg.Barrier; b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.OpTimeout)
		defer cancel()
		s, err := b.State(ctx, p.cfg.Name, txid)
		if err != nil {
			p.log.Warn("reading the barrier", zap.String("txid", txid), zap.Error(err))
		}
		return s
	}
	return p.records.state(txid)
}

// Sweep removes in-memory records that finished at least Retention before
// now, and returns how many it removed. Handle also sweeps now and then.
func (p *Processor) Sweep(now time.Time) int {
	p.lastSweep.Store(now.UnixNano())
	return p.records.sweep(now, p.cfg.Retention)
}

// maybeSweep sweeps when half a Retention passed since the last sweep.
func (p *Processor) maybeSweep() {
	now := p.now()
	last := p.lastSweep.Load()
	if now.UnixNano()-last >= int64(p.cfg.Retention/2) && p.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		p.records.sweep(now, p.cfg.Retention)
	}
}

// Handle processes one command message: its headers, body and the subject it
// arrived on (empty if the transport does not know it). It calls respond
// with the answer while it still holds the transaction's lock, so that a
// redelivery of the same command sees the final record; respond publishes
// the reply and settles the message.
func (p *Processor) Handle(h map[string][]string, body []byte, subject string, respond func(Answer)) {
	p.handle(h, body, subject, false, respond)
}

// handle is Handle; inDoubt marks a command made from an in-doubt answer,
// whose contradiction with the record ResolveInDoubt reports itself.
func (p *Processor) handle(h map[string][]string, body []byte, subject string, inDoubt bool, respond func(Answer)) {
	p.maybeSweep()
	cmd, err := messages.DecodeCommand(h, body)
	if err == nil && cmd.Participant != p.cfg.Name {
		err = fmt.Errorf("%w: command for participant %q reached participant %q", messages.ErrMalformed, cmd.Participant, p.cfg.Name)
	}
	if err == nil && subject != "" && subject != cmd.Subject() {
		err = fmt.Errorf("%w: command for %s arrived on subject %q", messages.ErrMalformed, cmd.Subject(), subject)
	}
	if err != nil {
		respond(p.malformedAnswer(h, subject, err))
		return
	}
	hd := p.begin(cmd, inDoubt)
	if cmd.Op.Saga() {
		p.handleSaga(hd, cmd, respond)
		return
	}
	switch cmd.Op {
	case messages.OpPrepare:
		p.prepares.Add(1)
	case messages.OpCommit:
		p.commits.Add(1)
	case messages.OpAbort:
		p.aborts.Add(1)
	case messages.OpCommitOnePhase:
		p.onePhases.Add(1)
	}
	log := &cmdLog{base: p.log, cmd: &cmd}
	tx := Tx{ID: cmd.TxID, Participant: cmd.Participant, Deadline: cmd.Deadline, Attempt: cmd.Attempt}
	if !p.twoPhase() {
		p.answer(hd, cmd, -1, outcome{}, p.unsupportedAnswer(cmd, ReasonNoTwoPhaseHandler, log), respond)
		return
	}

	e := p.records.lock(cmd.TxID)
	defer p.records.unlock(cmd.TxID, e)
	var out outcome
	now := p.now()
	if p.cfg.Barrier != nil {
		out = p.decideDurable(hd.ctx, cmd, tx, now, log)
	} else {
		out = p.decide(hd.ctx, e, cmd, tx, now, log)
	}
	kind := outcomeOf(cmd, out)
	switch {
	case out.rejected && inDoubt:
		kind = -1 // ResolveInDoubt counts it as contradicted
	case out.rejected:
		p.rejected.Add(1)
		log.Error("rejected command that contradicts the record", zap.Stringer("state", out.after), zap.String("reason", out.reason))
	case out.duplicate:
		p.duplicates.Add(1)
		log.Debug("duplicate answered from the record", zap.Stringer("state", out.after), zap.String("result", string(out.result)))
	}
	if out.applied && p.cfg.AfterApply != nil {
		p.cfg.AfterApply(cmd)
	}
	if out.afterKnown {
		p.doubt.update(cmd.TxID, out.after, cmd.Deadline, now)
	}
	p.answer(hd, cmd, kind, out, Answer{
		ReplyTo: cmd.ReplyTo,
		Reply: messages.Reply{
			TxID: cmd.TxID, Op: cmd.Op, Participant: p.cfg.Name, Result: out.result,
			Attempt: cmd.Attempt, Reason: messages.Truncate(out.reason, messages.MaxReasonLen),
		},
		Settle: out.then,
	}, respond)
}

// outcome is the answer to one well-formed command.
type outcome struct {
	result messages.Result
	reason string
	then   Settle
	// applied: the handler ran and its change is durable (or, in memory,
	// recorded).
	applied bool
	// duplicate: answered from the record; rejected: the command
	// contradicts the record.
	duplicate, rejected bool
	// after is the record's state once the command is handled, when
	// afterKnown (not after a failure to apply it).
	after      State
	afterKnown bool
	// code is a saga reply's code.
	code string
}

// in returns o with the record's state after the command.
func (o outcome) in(s State) outcome {
	o.after, o.afterKnown = s, true
	return o
}

// decideDurable answers one command through the Barrier.
func (p *Processor) decideDurable(ctx context.Context, cmd messages.Command, tx Tx, now time.Time, log *cmdLog) outcome {
	b := p.cfg.Barrier
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
	defer cancel()
	call := func(f func(context.Context) error) error { return p.call(parent, log, f) }
	var v verdict
	var err error
	switch cmd.Op {
	case messages.OpPrepare:
		v, err = b.prepare(ctx, tx, cmd.Payload, now, call)
	case messages.OpCommit:
		v, err = b.commit(ctx, tx, now, call)
	case messages.OpAbort:
		v, err = b.abort(ctx, tx, now, call)
	case messages.OpCommitOnePhase:
		v, err = b.onePhase(ctx, tx, cmd.Payload, now, call)
	}
	out := outcome{result: v.result, reason: v.reason, then: SettleAck, after: v.state, afterKnown: v.stateKnown}
	switch {
	case err != nil:
		log.Warn("barrier failed; the command will be delivered again", zap.Error(err))
		return outcome{result: messages.Failed, reason: err.Error(), then: SettleNak}
	case v.rejected:
		out.result, out.then, out.rejected = messages.Failed, SettleTerm, true
		return out
	case v.duplicate:
		out.duplicate = true
		return out
	case v.handlerErr != nil && cmd.Op == messages.OpPrepare,
		v.handlerErr != nil && cmd.Op == messages.OpCommitOnePhase && v.result == messages.VoteAbort:
		log.Info("voted abort", zap.String("reason", v.reason))
		return out
	case v.handlerErr != nil:
		log.Warn(string(cmd.Op)+" failed; it will be retried", zap.Error(v.handlerErr))
		return outcome{result: messages.Failed, reason: v.reason, then: SettleNak}
	}
	if v.reason != "" {
		log.Info("answered without the handler", zap.String("result", string(v.result)), zap.String("reason", v.reason))
	}
	out.applied = v.applied
	return out
}

// decide applies the idempotency rules to one command with the in-memory
// record, calling the Handler (with a context made from ctx) when they say
// so, and updates the record. The caller holds e's lock.
func (p *Processor) decide(ctx context.Context, e *entry, cmd messages.Command, tx Tx, now time.Time, log *cmdLog) outcome {
	state := e.rec.state
	switch cmd.Op {
	case messages.OpPrepare:
		switch state {
		case StateNone:
			if out, prepared := p.prepareFresh(ctx, e, cmd, tx, now, log, false); !prepared {
				return out
			}
			log.Debug("voted commit")
			return outcome{result: messages.VoteCommit, applied: true}.in(StatePrepared)
		case StatePrepared, StateCommitted:
			if e.rec.onePhase {
				return rejectOnePhase(ReasonPrepareOfOnePhase)
			}
			return duplicate(state, outcome{result: messages.VoteCommit})
		case StateReadOnly:
			return duplicate(state, outcome{result: messages.VoteReadOnly})
		case StateAborted:
			return abortVoted(e)
		}
	case messages.OpCommit:
		switch state {
		case StatePrepared:
			if e.rec.onePhase {
				return rejectOnePhase(ReasonCommitOfOnePhase)
			}
			return p.commitPrepared(ctx, e, tx, now, log)
		case StateCommitted, StateReadOnly:
			return duplicate(state, outcome{result: messages.Ack})
		case StateNone:
			return reject(state, ReasonNoRecord)
		case StateAborted:
			return reject(state, ReasonCommitAfterAbort)
		}
	case messages.OpAbort:
		switch state {
		case StateNone:
			e.finish(StateAborted, ReasonAbortedBeforePrepare, now)
			log.Info("abort before prepare: recorded, so a late prepare votes abort")
			return outcome{result: messages.Ack}.in(StateAborted)
		case StatePrepared:
			if e.rec.onePhase {
				return rejectOnePhase(ReasonAbortOfOnePhase)
			}
			if err := p.call(ctx, log, func(ctx context.Context) error { return p.cfg.Handler.Abort(ctx, tx) }); err != nil {
				log.Warn("abort failed; it will be retried", zap.Error(err))
				return outcome{result: messages.Failed, reason: err.Error(), then: SettleNak}
			}
			e.finish(StateAborted, ReasonAborted, now)
			log.Debug("aborted")
			return outcome{result: messages.Ack, applied: true}.in(StateAborted)
		case StateAborted, StateReadOnly:
			return duplicate(state, outcome{result: messages.Ack})
		case StateCommitted:
			return reject(state, ReasonAbortAfterCommit)
		}
	case messages.OpCommitOnePhase:
		return p.decideOnePhase(ctx, e, cmd, tx, now, log)
	}
	// Unreachable: DecodeCommand accepts only these operations.
	return outcome{result: messages.Failed, reason: "unknown operation " + string(cmd.Op), then: SettleTerm}
}

// prepareFresh runs a prepare of either protocol for a transaction with no
// record: the deadline rule, then the handler's Prepare. prepared is true
// when Prepare succeeded: the record is then prepared (for one phase if
// onePhase). Otherwise out is the vote, abort or read-only, recorded.
func (p *Processor) prepareFresh(ctx context.Context, e *entry, cmd messages.Command, tx Tx, now time.Time, log *cmdLog, onePhase bool) (out outcome, prepared bool) {
	if !tx.Deadline.IsZero() && !now.Before(tx.Deadline) {
		e.finish(StateAborted, ReasonDeadlinePassed, now)
		log.Info("voted abort: deadline passed", zap.Time("deadline", tx.Deadline))
		return outcome{result: messages.VoteAbort, reason: ReasonDeadlinePassed}.in(StateAborted), false
	}
	err := p.call(ctx, log, func(ctx context.Context) error { return p.cfg.Handler.Prepare(ctx, tx, cmd.Payload) })
	if errors.Is(err, ReadOnly) {
		e.finish(StateReadOnly, "", now)
		log.Debug("voted read-only")
		return outcome{result: messages.VoteReadOnly, applied: true}.in(StateReadOnly), false
	}
	if err != nil {
		reason := err.Error()
		if reason == "" {
			reason = ReasonPrepareFailed
		}
		e.finish(StateAborted, reason, now)
		log.Info("voted abort", zap.String("reason", reason))
		return outcome{result: messages.VoteAbort, reason: reason}.in(StateAborted), false
	}
	e.rec = record{state: StatePrepared, onePhase: onePhase}
	return outcome{}, true
}

// decideOnePhase applies the rules of commit-one-phase with the in-memory
// record: Prepare and then Commit, the participant deciding the outcome
// itself. A Commit that fails leaves the record prepared for one phase: the
// command delivered again commits it (never in doubt: no one else decides).
func (p *Processor) decideOnePhase(ctx context.Context, e *entry, cmd messages.Command, tx Tx, now time.Time, log *cmdLog) outcome {
	state := e.rec.state
	switch {
	case state == StateNone:
		if out, prepared := p.prepareFresh(ctx, e, cmd, tx, now, log, true); !prepared {
			if out.result == messages.VoteReadOnly {
				out.result = messages.Ack // nothing to commit: done
			}
			return out
		}
	case state == StatePrepared && !e.rec.onePhase:
		return reject(state, ReasonOnePhaseOfPrepared)
	case state == StatePrepared: // its Commit failed before: try again
	case state == StateCommitted, state == StateReadOnly:
		return duplicate(state, outcome{result: messages.Ack})
	default: // aborted
		return abortVoted(e)
	}
	return p.commitPrepared(ctx, e, tx, now, log)
}

// commitPrepared calls Commit for a prepared record, of either protocol,
// and records it committed; a Commit that fails is answered failed and the
// command comes again, the record still prepared. (The command's logger
// names its operation.)
func (p *Processor) commitPrepared(ctx context.Context, e *entry, tx Tx, now time.Time, log *cmdLog) outcome {
	if err := p.call(ctx, log, func(ctx context.Context) error { return p.cfg.Handler.Commit(ctx, tx) }); err != nil {
		log.Warn("commit failed; it will be retried", zap.Error(err))
		return outcome{result: messages.Failed, reason: err.Error(), then: SettleNak}
	}
	e.finish(StateCommitted, "", now)
	log.Debug("committed")
	return outcome{result: messages.Ack, applied: true}.in(StateCommitted)
}

// abortVoted answers a prepare or commit-one-phase of an aborted record
// from it: vote abort, with the reason recorded.
func abortVoted(e *entry) outcome {
	return duplicate(StateAborted, outcome{result: messages.VoteAbort, reason: cmp.Or(e.rec.reason, ReasonAborted)})
}

// duplicate marks a command answered from the record, which is in state;
// Handle counts and logs it.
func duplicate(state State, out outcome) outcome {
	out.duplicate = true
	return out.in(state)
}

// reject answers a command that contradicts the record, which is in state:
// the coordinator and this participant disagree about the transaction, which
// needs a human. Handle counts and logs it.
func reject(state State, reason string) outcome {
	return outcome{result: messages.Failed, reason: reason, then: SettleTerm, rejected: true}.in(state)
}

// rejectOnePhase answers a commit or an abort of a one-phase record that is
// still prepared: a contradiction, which leaves the record as it is, and
// out of doubt (its participant decides it).
func rejectOnePhase(reason string) outcome {
	return outcome{result: messages.Failed, reason: reason, then: SettleTerm, rejected: true}
}

// call runs one handler call with a context made from ctx (which carries the
// command's span, if any) and bounded by OpTimeout, turning a panic into an
// error.
func (p *Processor) call(ctx context.Context, log *cmdLog, f func(context.Context) error) (err error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			log.Error("handler panicked", zap.Any("panic", r), zap.StackSkip("stack", 1))
			err = fmt.Errorf("handler panicked: %v", r)
		}
		if err != nil {
			p.handlerErrors.Add(1)
		}
	}()
	return f(ctx)
}

// malformedAnswer logs and counts a command that did not decode, and answers
// it Failed (when the headers say where and about what) and terminated.
func (p *Processor) malformedAnswer(h map[string][]string, subject string, cause error) Answer {
	p.malformed.Add(1)
	txid := first(h, messages.HeaderTxID)
	fields := []zap.Field{zap.String("subject", subject), zap.Error(cause)}
	if txid != "" {
		fields = append(fields, zap.String("txid", txid))
	}
	p.log.Warn("dropping malformed command", fields...)
	attempt, err := strconv.Atoi(first(h, messages.HeaderAttempt))
	if err != nil || attempt < 1 {
		attempt = 1
	}
	cmd := messages.Command{
		TxID: txid, Op: messages.Op(first(h, messages.HeaderOp)), Participant: p.cfg.Name,
		Attempt: attempt, ReplyTo: first(h, messages.HeaderReplyTo),
	}
	a := Answer{Settle: SettleTerm}
	if cmd.Validate() == nil { // a valid reply-to, txid and op
		a.ReplyTo = cmd.ReplyTo
		a.Reply = messages.Reply{TxID: txid, Op: cmd.Op, Participant: p.cfg.Name, Result: messages.Failed,
			Attempt: attempt, Reason: messages.Truncate(cause.Error(), messages.MaxReasonLen)}
	}
	return a
}

// first returns the first value of header name, or "".
func first(h map[string][]string, name string) string {
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
