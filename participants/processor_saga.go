package participants

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// twoPhase reports whether the participant implements two-phase commit.
func (p *Processor) twoPhase() bool {
	return p.cfg.Handler != nil || p.cfg.Barrier != nil && p.cfg.Barrier.h != nil
}

// sagas reports whether the participant implements saga steps.
func (p *Processor) sagas() bool {
	return p.cfg.SagaHandler != nil || p.cfg.Barrier != nil && p.cfg.Barrier.sh != nil
}

// unsupportedAnswer answers a command of a kind the participant does not
// implement: failed, with reason, terminated; commit-one-phase, which only
// this participant decides and which failed would have re-sent for ever, is
// refused for good: vote abort.
func (p *Processor) unsupportedAnswer(cmd messages.Command, reason string, log *cmdLog) Answer {
	p.unsupported.Add(1)
	log.Warn("command of a kind this participant does not implement; terminated", zap.String("reason", reason))
	result := messages.Failed
	if cmd.Op == messages.OpCommitOnePhase {
		result = messages.VoteAbort
	}
	return Answer{
		ReplyTo: cmd.ReplyTo,
		Reply: messages.Reply{TxID: cmd.TxID, Op: cmd.Op, Participant: p.cfg.Name, Result: result,
			Attempt: cmd.Attempt, Reason: reason, Step: cmd.Step},
		Settle: SettleTerm,
	}
}

// StepState returns what is recorded about step of saga sagaID: from the
// Barrier when there is one (StepNone if it cannot be read), else from
// memory (StepNone if refused or compensated longer than Retention ago).
func (p *Processor) StepState(sagaID, step string) StepState {
	if b := p.cfg.Barrier; b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.OpTimeout)
		defer cancel()
		s, err := b.StepState(ctx, p.cfg.Name, sagaID, step)
		if err != nil {
			p.log.Warn("reading the barrier", zap.String("txid", sagaID), zap.String("step", step), zap.Error(err))
		}
		return s
	}
	return p.records.stepState(sagaKey(sagaID, step))
}

// handleSaga answers one well-formed action or compensate command. Sagas
// have no in-doubt phase here: the coordinator drives every step to an
// answer, so nothing is tracked for later questions. A failed answer is
// settled SettleAck: the coordinator, not the transport, retries by the
// step's policy, and an attempt answered failed must never be done later.
func (p *Processor) handleSaga(hd handling, cmd messages.Command, respond func(Answer)) {
	if cmd.Op == messages.OpAction {
		p.actions.Add(1)
	} else {
		p.compensations.Add(1)
	}
	log := &cmdLog{base: p.log, cmd: &cmd}
	if !p.sagas() {
		p.answer(hd, cmd, -1, outcome{}, p.unsupportedAnswer(cmd, ReasonNoSagaHandler, log), respond)
		return
	}
	st := Step{SagaID: cmd.TxID, Name: cmd.Step, Participant: cmd.Participant, Attempt: cmd.Attempt, Deadline: cmd.Deadline}
	key := sagaKey(cmd.TxID, cmd.Step)
	e := p.records.lock(key)
	defer p.records.unlock(key, e)
	now := p.now()
	var out outcome
	if p.cfg.Barrier != nil {
		out = p.decideSagaDurable(hd.ctx, cmd, st, now, log)
	} else {
		out = p.decideSaga(hd.ctx, e, cmd, st, now, log)
	}
	if out.duplicate {
		p.duplicates.Add(1)
		log.Debug("duplicate answered from the record", zap.String("result", string(out.result)), zap.String("reason", out.reason))
	}
	if out.applied && p.cfg.AfterApply != nil {
		p.cfg.AfterApply(cmd)
	}
	a := Answer{Settle: out.then}
	if out.result != "" { // no reply when the result is unknown
		a.ReplyTo = cmd.ReplyTo
		a.Reply = messages.Reply{
			TxID: cmd.TxID, Op: cmd.Op, Participant: p.cfg.Name, Result: out.result, Attempt: cmd.Attempt,
			Reason: messages.Truncate(out.reason, messages.MaxReasonLen), Step: cmd.Step, Code: validCode(out.code),
		}
	}
	p.answer(hd, cmd, outcomeOf(cmd, out), out, a, respond)
}

// decideSagaDurable answers one saga command through the Barrier.
func (p *Processor) decideSagaDurable(ctx context.Context, cmd messages.Command, st Step, now time.Time, log *cmdLog) outcome {
	b := p.cfg.Barrier
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
	defer cancel()
	call := func(f func(context.Context) error) error { return p.call(parent, log, f) }
	var v verdict
	var err error
	if cmd.Op == messages.OpAction {
		v, err = b.action(ctx, st, cmd.Payload, now, call)
	} else {
		v, err = b.compensate(ctx, st, cmd.Payload, now, call)
	}
	if err != nil {
		// The local transaction may or may not have committed: answer
		// nothing (the coordinator's attempt times out: unknown) and have
		// the command delivered again, to be answered from the record.
		log.Warn("barrier failed; no answer, the command will be delivered again", zap.Error(err))
		return outcome{then: SettleNak, reason: "no answer: the barrier failed; delivered again: " + err.Error()}
	}
	out := outcome{result: v.result, reason: v.reason, code: v.code, then: SettleAck, duplicate: v.duplicate, applied: v.applied}
	p.logSaga(log, out, v.handlerErr)
	return out
}

// logSaga logs a saga answer that is not a plain success.
func (p *Processor) logSaga(log *cmdLog, out outcome, handlerErr error) {
	switch {
	case out.duplicate:
	case out.result == messages.Refused:
		log.Info("action refused", zap.String("reason", out.reason), zap.String("code", out.code))
	case out.result == messages.Failed:
		log.Warn("failed; the coordinator retries by the step's policy", zap.String("reason", out.reason), zap.String("code", out.code), zap.Error(handlerErr))
	case out.reason != "":
		log.Info("answered without the handler", zap.String("result", string(out.result)), zap.String("reason", out.reason))
	}
}

// decideSaga applies the barrier's saga rules to one command with the
// in-memory record, calling the SagaHandler (with a context made from ctx)
// when they say so. The caller holds e's lock.
func (p *Processor) decideSaga(ctx context.Context, e *entry, cmd messages.Command, st Step, now time.Time, log *cmdLog) outcome {
	r := &e.rec
	finish := func(s StepState, reason, code string) {
		r.step, r.reason, r.code, r.finishedAt = s, reason, code, now
	}
	var out outcome
	if cmd.Op == messages.OpAction {
		out = p.sagaAction(ctx, r, st, cmd.Payload, finish, now, log)
	} else {
		out = p.sagaCompensate(ctx, r, st, cmd.Payload, finish, log)
	}
	p.logSaga(log, out, nil)
	return out
}

func (p *Processor) sagaAction(ctx context.Context, r *record, st Step, payload []byte, finish func(StepState, string, string), now time.Time, log *cmdLog) outcome {
	switch r.step {
	case StepDone, StepCompensated:
		return outcome{result: messages.Ack, duplicate: true}
	case StepRefused:
		return outcome{result: messages.Refused, reason: r.reason, code: r.code, duplicate: true}
	case StepCompensatedFirst:
		return outcome{result: messages.Refused, reason: ReasonCompensatedFirst, code: CodeCompensatedFirst, duplicate: true}
	}
	if st.Attempt <= r.failedAttempt {
		return outcome{result: messages.Failed, reason: ReasonAttemptFailed, duplicate: true}
	}
	err := p.call(ctx, log, func(ctx context.Context) error { return p.cfg.SagaHandler.Action(ctx, st, payload) })
	if err == nil {
		finish(StepDone, "", "")
		return outcome{result: messages.Ack, applied: true}
	}
	if refused, reason, code := refusal(err); refused {
		reason = messages.Truncate(orText(reason, ReasonActionFailed), messages.MaxReasonLen)
		finish(StepRefused, reason, validCode(code))
		return outcome{result: messages.Refused, reason: reason, code: r.code}
	}
	r.failedAttempt, r.finishedAt = st.Attempt, now
	return outcome{result: messages.Failed, reason: orText(err.Error(), ReasonActionFailed), code: ErrorCode(err)}
}

func (p *Processor) sagaCompensate(ctx context.Context, r *record, st Step, payload []byte, finish func(StepState, string, string), log *cmdLog) outcome {
	switch r.step {
	case StepNone:
		finish(StepCompensatedFirst, "", "")
		return outcome{result: messages.Ack, reason: "null compensation: the action was never done"}
	case StepRefused:
		// Nothing was done, nothing to undo; the record stays refused.
		return outcome{result: messages.Ack, reason: "the action was refused: nothing to compensate"}
	case StepCompensated, StepCompensatedFirst:
		return outcome{result: messages.Ack, duplicate: true}
	}
	if err := p.call(ctx, log, func(ctx context.Context) error { return p.cfg.SagaHandler.Compensate(ctx, st, payload) }); err != nil {
		v := compensationFailed(err)
		return outcome{result: v.result, reason: v.reason, code: v.code}
	}
	finish(StepCompensated, "", "")
	return outcome{result: messages.Ack, applied: true}
}
