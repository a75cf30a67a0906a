package participants

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/natstx/natstx/messages"
)

// Step identifies the saga step an action or compensate command belongs to.
type Step struct {
	// SagaID is the saga's ID (the command's transaction ID).
	SagaID string
	// Name is the step's name in the saga definition.
	Name string
	// Participant is the name of this participant.
	Participant string
	// Attempt counts the coordinator's attempts of this operation of this
	// step, from 1.
	Attempt int
	// Deadline is the attempt's deadline the coordinator sent, zero if none.
	// It is for information: the coordinator treats an attempt it got no
	// answer to by then as unknown (the action may have run) and the barrier
	// keeps a late action safe, so the participant does not refuse it.
	Deadline time.Time
}

// SagaHandler is a participant service's part of a saga, with the record
// of each step kept in memory (Config.SagaHandler). For each (saga ID,
// step) the Processor calls Action at most once successfully, never after a
// compensation of the step, and Compensate only after a successful Action
// and at most once successfully; see docs/PARTICIPANTS.md for every rule.
// The context ends after Config.OpTimeout.
type SagaHandler interface {
	// Action does the step's work described by payload, at once and for
	// good (no prepared state). A nil error answers done (ack). An error made
	// with Refuse (or wrapping ErrRefused) refuses the step for good: the
	// action is never done, the saga compensates, and a duplicate action is
	// answered the same refusal. Any other error answers failed: nothing was
	// done this time and the coordinator may try again (a later attempt);
	// WithCode gives it a code the saga's retry policy may list as never
	// retried.
	Action(ctx context.Context, step Step, payload []byte) error
	// Compensate undoes a done action; payload is the step's compensation
	// payload. A nil error answers ack; any error answers failed and the
	// coordinator tries again later, without limit: a compensation must
	// finally succeed. A compensation cannot be refused: a refusal error is
	// answered failed.
	Compensate(ctx context.Context, step Step, payload []byte) error
}

// SQLSagaHandler is a saga participant service whose business data lives in
// a SQL database behind a Barrier (BarrierConfig.SagaHandler). Each method
// runs inside the local database transaction dbtx that the Barrier opened,
// with the step's record written in the same transaction: make the change
// with dbtx, never commit or roll it back. An error rolls dbtx back, so
// nothing of a refused or failed action remains. The results are those of
// SagaHandler. The Barrier calls Action at most once successfully per
// (participant, saga ID, step), never after the step's compensation, and
// Compensate only after a successful Action and at most once successfully,
// across every process sharing the database.
type SQLSagaHandler interface {
	// Action does the step's work; see SagaHandler.Action.
	Action(ctx context.Context, dbtx *sql.Tx, step Step, payload []byte) error
	// Compensate undoes a done action; see SagaHandler.Compensate.
	Compensate(ctx context.Context, dbtx *sql.Tx, step Step, payload []byte) error
}

// SagaHandlerFuncs adapts plain functions to a SagaHandler, for tests and
// small services. A nil function succeeds.
type SagaHandlerFuncs struct {
	// ActionFunc is called by Action.
	ActionFunc func(ctx context.Context, step Step, payload []byte) error
	// CompensateFunc is called by Compensate.
	CompensateFunc func(ctx context.Context, step Step, payload []byte) error
}

// Action calls ActionFunc, or succeeds if it is nil.
func (h SagaHandlerFuncs) Action(ctx context.Context, step Step, payload []byte) error {
	if h.ActionFunc == nil {
		return nil
	}
	return h.ActionFunc(ctx, step, payload)
}

// Compensate calls CompensateFunc, or succeeds if it is nil.
func (h SagaHandlerFuncs) Compensate(ctx context.Context, step Step, payload []byte) error {
	if h.CompensateFunc == nil {
		return nil
	}
	return h.CompensateFunc(ctx, step, payload)
}

var _ SagaHandler = SagaHandlerFuncs{}

// ErrRefused is what every refusal of a saga action wraps (see Refuse): the
// action will never be done, for a business reason.
var ErrRefused = errors.New("natstx: refused")

// RefusedError is a saga action's refusal for good, with an optional code.
// Make one with Refuse.
type RefusedError struct {
	// Code classifies the refusal (letters, digits, '-' and '_', at most
	// messages.MaxCodeLen bytes), sent in the reply's Natstx-Code header;
	// empty for none.
	Code string
	// Reason is the text sent as the reply's reason.
	Reason string
}

// Error is "refused (code): reason".
func (e *RefusedError) Error() string {
	if e.Code == "" {
		return "refused: " + e.Reason
	}
	return "refused (" + e.Code + "): " + e.Reason
}

// Unwrap returns ErrRefused.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// Refuse returns the error a saga action returns to refuse the step for
// good: the reply is refused with reason and code (e.g. "out-of-stock").
func Refuse(code, reason string) error { return &RefusedError{Code: code, Reason: reason} }

// CodedError is a saga failure "for now" with a code; make one with
// WithCode.
type CodedError struct {
	// Code is sent in the reply's Natstx-Code header.
	Code string
	// Err is the failure; its text is the reply's reason.
	Err error
}

// Error is Err's text.
func (e *CodedError) Error() string {
	if e.Err == nil {
		return e.Code
	}
	return e.Err.Error()
}

// Unwrap returns Err.
func (e *CodedError) Unwrap() error { return e.Err }

// WithCode returns err with code: a failed reply to a saga command carries
// the code, which the step's retry policy may list as never retried. It
// returns nil for a nil err.
func WithCode(code string, err error) error {
	if err == nil {
		return nil
	}
	return &CodedError{Code: code, Err: err}
}

// ErrorCode returns the code err carries (from Refuse or WithCode), or "".
func ErrorCode(err error) string {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Code
	}
	var c *CodedError
	if errors.As(err, &c) {
		return c.Code
	}
	return ""
}

// refusal reports whether err refuses an action for good, with the reason
// and code of the reply.
func refusal(err error) (refused bool, reason, code string) {
	var r *RefusedError
	switch {
	case errors.As(err, &r):
		return true, r.Reason, r.Code
	case errors.Is(err, ErrRefused):
		return true, err.Error(), ""
	}
	return false, "", ""
}

// validCode returns code if a reply may carry it, else "".
func validCode(code string) string {
	if code == "" || len(code) > messages.MaxCodeLen || messages.ValidateName("code", code) != nil {
		return ""
	}
	return code
}

// StepState is what a participant records about one saga step.
type StepState int

// The states of a saga step's record.
const (
	// StepNone: no action of the step was done, refused or compensated
	// (failed attempts leave no state).
	StepNone StepState = iota
	// StepDone: the action is done and not compensated.
	StepDone
	// StepRefused: the action was refused for good; it is never done and
	// needs no compensation.
	StepRefused
	// StepCompensated: the action was done, then compensated.
	StepCompensated
	// StepCompensatedFirst: a compensation arrived before any action was
	// done ("null compensation"); the action is never done.
	StepCompensatedFirst
)

// String names s.
func (s StepState) String() string {
	switch s {
	case StepNone:
		return "none"
	case StepDone:
		return "done"
	case StepRefused:
		return "refused"
	case StepCompensated:
		return "compensated"
	case StepCompensatedFirst:
		return "compensated-first"
	}
	return "unknown"
}

// Reasons and codes the Processor answers saga commands with by itself,
// without the handler.
const (
	// ReasonCompensatedFirst answers an action whose compensation arrived
	// first: the action is never done (refused, CodeCompensatedFirst).
	ReasonCompensatedFirst = "compensated before the action arrived: the action is never done"
	// CodeCompensatedFirst is the code of ReasonCompensatedFirst.
	CodeCompensatedFirst = "compensated-first"
	// ReasonAttemptFailed answers a repeated delivery of an action attempt
	// that was answered failed: that attempt stays failed (nothing done), a
	// later attempt may do the action.
	ReasonAttemptFailed = "this attempt was answered failed already; a later attempt may do the action"
	// ReasonActionFailed replaces an empty error text from an action.
	ReasonActionFailed = "action failed"
	// ReasonCompensationFailed replaces an empty error text from a
	// compensation.
	ReasonCompensationFailed = "compensation failed"
	// ReasonCompensationRefused prefixes the reason of a compensation whose
	// handler returned a refusal: a compensation cannot be refused, so it is
	// answered failed and retried.
	ReasonCompensationRefused = "a compensation cannot be refused; answered failed, to be retried: "
	// ReasonNoSagaHandler answers an action or compensate command to a
	// participant that does not implement sagas; the command is terminated.
	ReasonNoSagaHandler = "this participant does not implement saga steps (no saga handler)"
	// ReasonNoTwoPhaseHandler answers a prepare, commit or abort to a
	// participant that implements only sagas; the command is terminated.
	ReasonNoTwoPhaseHandler = "this participant does not implement two-phase commit (saga steps only)"
)
