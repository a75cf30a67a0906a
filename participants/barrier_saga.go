package participants

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/natstx/natstx/messages"
)

// The rows of a saga step, per (participant, saga ID, step), beside the
// two-phase commit rows in the same table (op names with a ':' are never
// two-phase operations, so Purge and PreparedTxs do not see them):
//
//	action:<step>      done | refused (reason, code) | compensated-first
//	compensate:<step>  done
//	failed:<step>      the highest action attempt answered failed (attempt)
const (
	opActionPrefix     = "action:"
	opCompensatePrefix = "compensate:"
	opFailedPrefix     = "failed:"
	// resultRefused marks a saga action refused for good.
	resultRefused = "refused"
)

// sagaRow is one saga row.
type sagaRow struct {
	result, reason, code string
	attempt              int
}

// stepRows are the rows of one saga step; nil when absent.
type stepRows struct {
	action, compensate, failed *sagaRow
}

// state derives the step's state.
func (r stepRows) state() StepState {
	switch {
	case r.action == nil:
		return StepNone
	case r.action.result == resultCompensatedFirst:
		return StepCompensatedFirst
	case r.action.result == resultRefused:
		return StepRefused
	case r.compensate != nil:
		return StepCompensated
	}
	return StepDone
}

// stepRows reads the rows of step st in dbtx, or outside a transaction when
// dbtx is nil.
func (b *Barrier) stepRows(ctx context.Context, dbtx *sql.Tx, participant, sagaID, step string) (stepRows, error) {
	var out stepRows
	rs, err := b.stmt(ctx, dbtx, stmtStepRows).QueryContext(ctx, participant, sagaID, opActionPrefix+step, opCompensatePrefix+step, opFailedPrefix+step)
	if err != nil {
		return out, fmt.Errorf("%w: reading saga %s step %s: %w", ErrBarrier, sagaID, step, err)
	}
	defer rs.Close()
	for rs.Next() {
		var op string
		var code sql.NullString
		var attempt sql.NullInt64
		r := &sagaRow{}
		if err := rs.Scan(&op, &r.result, &r.reason, &code, &attempt); err != nil {
			return out, fmt.Errorf("%w: reading saga %s step %s: %w", ErrBarrier, sagaID, step, err)
		}
		r.code, r.attempt = code.String, int(attempt.Int64)
		switch op {
		case opActionPrefix + step:
			out.action = r
		case opCompensatePrefix + step:
			out.compensate = r
		case opFailedPrefix + step:
			out.failed = r
		}
	}
	if err := rs.Err(); err != nil {
		return out, fmt.Errorf("%w: reading saga %s step %s: %w", ErrBarrier, sagaID, step, err)
	}
	return out, nil
}

// claimStep inserts the saga row op of st unless it exists, and reports
// whether it did.
func (b *Barrier) claimStep(ctx context.Context, dbtx *sql.Tx, st Step, op, result, reason, code string, attempt int, now time.Time) (bool, error) {
	var c sql.NullString
	if code != "" {
		c = sql.NullString{String: code, Valid: true}
	}
	var a sql.NullInt64
	if attempt > 0 {
		a = sql.NullInt64{Int64: int64(attempt), Valid: true}
	}
	res, err := b.stmt(ctx, dbtx, stmtClaimStep).ExecContext(ctx, st.Participant, st.SagaID, op, result, reason, now.UnixMilli(), c, a)
	if err != nil {
		return false, fmt.Errorf("%w: recording %s of saga %s: %w", ErrBarrier, op, st.SagaID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("%w: recording %s of saga %s: %w", ErrBarrier, op, st.SagaID, err)
	}
	return n == 1, nil
}

// StepState returns what the barrier records about participant's step of
// saga sagaID.
func (b *Barrier) StepState(ctx context.Context, participant, sagaID, step string) (StepState, error) {
	if err := b.checkOpen(); err != nil {
		return StepNone, err
	}
	rows, err := b.stepRows(ctx, nil, participant, sagaID, step)
	if err != nil {
		return StepNone, err
	}
	return rows.state(), nil
}

// answerAction answers an action from the step's rows, when its action row
// exists.
func answerAction(rows stepRows) verdict {
	s := rows.state()
	switch s {
	case StepRefused:
		return verdict{result: messages.Refused, reason: rows.action.reason, code: rows.action.code, duplicate: true, step: s}
	case StepCompensatedFirst:
		return verdict{result: messages.Refused, reason: ReasonCompensatedFirst, code: CodeCompensatedFirst, duplicate: true, step: s}
	}
	return verdict{result: messages.Ack, duplicate: true, step: s}
}

// action handles a saga action command at now. A non-nil error is a
// database failure: the command's result is unknown.
func (b *Barrier) action(ctx context.Context, st Step, payload []byte, now time.Time, call func(func(context.Context) error) error) (verdict, error) {
	if b.before != nil {
		if err := call(func(ctx context.Context) error { return b.before(ctx, messages.OpAction, stepTx(st)) }); err != nil {
			return b.recordActionError(ctx, st, now, err)
		}
	}
	var v verdict
	var handlerErr error
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		rows, err := b.stepRows(ctx, dbtx, st.Participant, st.SagaID, st.Name)
		if err != nil {
			return err
		}
		if rows.action != nil {
			v = answerAction(rows)
			return nil
		}
		if rows.failed != nil && st.Attempt <= rows.failed.attempt {
			v = verdict{result: messages.Failed, reason: ReasonAttemptFailed, duplicate: true, step: StepNone}
			return nil
		}
		won, err := b.claimStep(ctx, dbtx, st, opActionPrefix+st.Name, resultDone, "", "", 0, now)
		if err != nil {
			return err
		}
		if !won { // another instance recorded it meanwhile
			if rows, err = b.stepRows(ctx, dbtx, st.Participant, st.SagaID, st.Name); err != nil {
				return err
			}
			v = answerAction(rows)
			return nil
		}
		if handlerErr = call(func(ctx context.Context) error { return b.sh.Action(ctx, dbtx, st, payload) }); handlerErr != nil {
			return handlerErr // roll back the work and the claim
		}
		v = verdict{result: messages.Ack, applied: true, step: StepDone}
		return nil
	})
	if handlerErr != nil {
		return b.recordActionError(ctx, st, now, handlerErr)
	}
	return v, err
}

// recordActionError records, in a new local transaction, an action whose
// handler (or Before) failed: a refusal as the step's action row, so the
// action is never done and duplicates get the same refusal; another error
// as the step's highest failed attempt, so a repeated delivery of that
// attempt stays failed. If the action row was recorded meanwhile, it is the
// answer.
func (b *Barrier) recordActionError(ctx context.Context, st Step, now time.Time, cause error) (verdict, error) {
	refused, reason, code := refusal(cause)
	var v verdict
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		if refused {
			reason = messages.Truncate(orText(reason, ReasonActionFailed), messages.MaxReasonLen)
			code = validCode(code)
			won, err := b.claimStep(ctx, dbtx, st, opActionPrefix+st.Name, resultRefused, reason, code, 0, now)
			if err != nil {
				return err
			}
			if won {
				v = verdict{result: messages.Refused, reason: reason, code: code, handlerErr: cause, step: StepRefused}
				return nil
			}
		} else {
			reason = messages.Truncate(orText(cause.Error(), ReasonActionFailed), messages.MaxReasonLen)
			code = validCode(ErrorCode(cause))
			op := opFailedPrefix + st.Name
			won, err := b.claimStep(ctx, dbtx, st, op, string(messages.Failed), reason, code, st.Attempt, now)
			if err != nil {
				return err
			}
			if !won {
				if _, err := b.stmt(ctx, dbtx, stmtRaiseAttempt).ExecContext(ctx,
					st.Attempt, reason, now.UnixMilli(), st.Participant, st.SagaID, op, st.Attempt); err != nil {
					return fmt.Errorf("%w: recording %s of saga %s: %w", ErrBarrier, op, st.SagaID, err)
				}
			}
		}
		rows, err := b.stepRows(ctx, dbtx, st.Participant, st.SagaID, st.Name)
		if err != nil {
			return err
		}
		if rows.action != nil {
			v = answerAction(rows)
			return nil
		}
		v = verdict{result: messages.Failed, reason: reason, code: code, handlerErr: cause, step: StepNone}
		return nil
	})
	return v, err
}

// compensate handles a saga compensate command at now. A non-nil error is a
// database failure.
func (b *Barrier) compensate(ctx context.Context, st Step, payload []byte, now time.Time, call func(func(context.Context) error) error) (verdict, error) {
	if b.before != nil {
		if err := call(func(ctx context.Context) error { return b.before(ctx, messages.OpCompensate, stepTx(st)) }); err != nil {
			return compensationFailed(err), nil
		}
	}
	var v verdict
	var handlerErr error
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		// Claim the action row first: if it is free, the action was never
		// done, and never will be (it finds the row taken and is refused).
		first, err := b.claimStep(ctx, dbtx, st, opActionPrefix+st.Name, resultCompensatedFirst, ReasonCompensatedFirst, CodeCompensatedFirst, 0, now)
		if err != nil {
			return err
		}
		if first {
			if _, err := b.claimStep(ctx, dbtx, st, opCompensatePrefix+st.Name, resultDone, "", "", 0, now); err != nil {
				return err
			}
			v = verdict{result: messages.Ack, reason: "null compensation: the action was never done", step: StepCompensatedFirst}
			return nil
		}
		rows, err := b.stepRows(ctx, dbtx, st.Participant, st.SagaID, st.Name)
		if err != nil {
			return err
		}
		if rows.action == nil {
			return fmt.Errorf("%w: saga %s step %s: the action row vanished while compensating", ErrBarrier, st.SagaID, st.Name)
		}
		if rows.compensate != nil {
			v = verdict{result: messages.Ack, duplicate: true, step: rows.state()}
			return nil
		}
		won, err := b.claimStep(ctx, dbtx, st, opCompensatePrefix+st.Name, resultDone, "", "", 0, now)
		if err != nil {
			return err
		}
		if !won {
			v = verdict{result: messages.Ack, duplicate: true, step: rows.state()}
			return nil
		}
		if rows.action.result != resultDone {
			// Refused (or compensated first): nothing was done, nothing to undo.
			v = verdict{result: messages.Ack, reason: "the action was refused: nothing to compensate", step: rows.state()}
			return nil
		}
		if handlerErr = call(func(ctx context.Context) error { return b.sh.Compensate(ctx, dbtx, st, payload) }); handlerErr != nil {
			return handlerErr
		}
		v = verdict{result: messages.Ack, applied: true, step: StepCompensated}
		return nil
	})
	if handlerErr != nil {
		return compensationFailed(handlerErr), nil
	}
	return v, err
}

// compensationFailed is the verdict on a compensation whose handler (or
// Before) failed: failed, to be retried by the coordinator.
func compensationFailed(err error) verdict {
	reason := orText(err.Error(), ReasonCompensationFailed)
	code := ErrorCode(err)
	if refused, r, _ := refusal(err); refused {
		reason = ReasonCompensationRefused + orText(r, ReasonCompensationFailed)
	}
	return verdict{result: messages.Failed, reason: reason, code: validCode(code), handlerErr: err, step: StepDone}
}

// stepTx is the Tx that BarrierConfig.Before sees for a saga step: the
// saga's ID, the participant, the attempt and its deadline.
func stepTx(st Step) Tx {
	return Tx{ID: st.SagaID, Participant: st.Participant, Deadline: st.Deadline, Attempt: st.Attempt}
}

// orText returns s, or def when s is empty.
func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
