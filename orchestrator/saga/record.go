package saga

import (
	"fmt"
	"slices"
	"time"

	"github.com/natstx/natstx/messages"
)

// State is where a saga is in its life.
type State string

// The states of a saga. Completed and Compensated are final; the two stuck
// states are not: the saga keeps retrying, visibly, until the stuck steps
// succeed or an operator resolves them.
const (
	// StateRunning: going forward, step by step.
	StateRunning State = "running"
	// StateForwardStuck: past the pivot, a step after it has failed beyond the
	// stuck threshold; it is still retried forward.
	StateForwardStuck State = "forward-stuck"
	// StateCompensating: undoing, in reverse dependency order.
	StateCompensating State = "compensating"
	// StateCompensationStuck: a compensation has failed beyond the stuck
	// threshold; it is still retried, and an operator may retry it now or
	// mark it compensated by hand.
	StateCompensationStuck State = "compensation-stuck"
	// StateCompleted: every step is done.
	StateCompleted State = "completed"
	// StateCompensated: every step that may have run is compensated.
	StateCompensated State = "compensated"
)

// Final reports whether the saga is over.
func (s State) Final() bool { return s == StateCompleted || s == StateCompensated }

// Stuck reports whether the saga is in one of the stuck states.
func (s State) Stuck() bool { return s == StateForwardStuck || s == StateCompensationStuck }

func (s State) forward() bool { return s == StateRunning || s == StateForwardStuck }

func (s State) valid() bool {
	return s.forward() || s == StateCompensating || s == StateCompensationStuck || s.Final()
}

// StepStatus is where one step is.
type StepStatus string

// The statuses of a step.
const (
	// StepPending: its action was never sent.
	StepPending StepStatus = "pending"
	// StepRunning: an attempt of its action is out, unanswered.
	StepRunning StepStatus = "running"
	// StepRetrying: its action failed for now; the next attempt waits for
	// its back-off (StepRecord.NextRetryAt).
	StepRetrying StepStatus = "retrying"
	// StepDone: its action is done.
	StepDone StepStatus = "done"
	// StepFailed: its action failed and is not retried. If it may have run
	// (StepRecord.MayHaveRun) it is still compensated.
	StepFailed StepStatus = "failed"
	// StepCompensating: an attempt of its compensation is out, unanswered.
	StepCompensating StepStatus = "compensating"
	// StepCompensationRetrying: its compensation failed; the next attempt
	// waits for its back-off.
	StepCompensationRetrying StepStatus = "compensation-retrying"
	// StepCompensated: its compensation is done.
	StepCompensated StepStatus = "compensated"
	// StepCompensatedByHand: an operator marked it compensated
	// (StepRecord.Note says who and why).
	StepCompensatedByHand StepStatus = "compensated-by-hand"
)

var stepStatuses = []StepStatus{StepPending, StepRunning, StepRetrying, StepDone, StepFailed,
	StepCompensating, StepCompensationRetrying, StepCompensated, StepCompensatedByHand}

// StepRecord is the persisted state of one step: what `tx status` shows.
type StepRecord struct {
	// Name is the step's name in the definition.
	Name string `json:"name"`
	// Status is where the step is.
	Status StepStatus `json:"status"`
	// Attempts counts the attempts of the action sent; the last one is the
	// current one.
	Attempts int `json:"attempts,omitempty"`
	// FirstAttemptAt is when the first attempt of the action was sent.
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	// MayHaveRun is true once an attempt of the action was answered done or
	// had the result unknown: the step is compensated if the saga
	// compensates. A step whose attempts all failed has not run.
	MayHaveRun bool `json:"may_have_run,omitempty"`
	// CompensationAttempts counts the attempts of the compensation sent.
	CompensationAttempts int `json:"compensation_attempts,omitempty"`
	// CompensationStartedAt is when the first compensation attempt was sent.
	CompensationStartedAt time.Time `json:"compensation_started_at,omitzero"`
	// LastError and LastCode are the last failure of the step's action or
	// compensation (kept after a later success, for the record).
	LastError string `json:"last_error,omitempty"`
	LastCode  string `json:"last_code,omitempty"`
	// NextRetryAt is when the next attempt goes out, while the step is
	// retrying or compensation-retrying.
	NextRetryAt time.Time `json:"next_retry_at,omitzero"`
	// Stuck is true while the step's compensation (or, after the pivot, its
	// action) has failed beyond the stuck threshold.
	Stuck bool `json:"stuck,omitempty"`
	// Note is set when an operator resolved the step by hand: who, why.
	Note string `json:"note,omitempty"`
}

// OperatorAction is one operator action the saga accepted, kept in its
// record.
type OperatorAction struct {
	// At is the time of the event that carried the action.
	At time.Time `json:"at"`
	// Kind is EventAbort, EventRetryNow or EventResolve.
	Kind EventKind `json:"kind"`
	// Step is the step acted on, if any.
	Step string `json:"step,omitempty"`
	// Who acted, and Why (for a resolve, the note).
	Who string `json:"who"`
	Why string `json:"why"`
}

// Record is the durable state of one saga: everything Recover needs to
// continue it. A Ready's Persist is a Record; its Revision grows by one with
// each. It is plain data with JSON tags; a driver stores it as it likes (one
// key, compare-and-set on the previous revision), and may store the
// Definition apart as long as Recover receives it back.
type Record struct {
	// ID is the saga's ID.
	ID string `json:"id"`
	// Revision counts the records persisted, from 1 (Start's).
	Revision uint64 `json:"revision"`
	// Definition is the saga's definition with its defaults applied.
	Definition Definition `json:"definition"`
	// State is the saga's state.
	State State `json:"state"`
	// Reason says why the saga compensates (or completed).
	Reason string `json:"reason,omitempty"`
	// StartedAt is the time Start was given.
	StartedAt time.Time `json:"started_at"`
	// Deadline is when the saga stops going forward; zero means none.
	Deadline time.Time `json:"deadline,omitzero"`
	// PastPivot is true once the pivot's action was done while the saga ran
	// forward: it will not compensate any more.
	PastPivot bool `json:"past_pivot,omitempty"`
	// Steps are the steps' records, in the definition's order.
	Steps []StepRecord `json:"steps"`
	// Operator lists the operator actions accepted, oldest first.
	Operator []OperatorAction `json:"operator,omitempty"`
}

// clone copies r deeply enough for the machine to go on changing its own
// copy; the definition's payloads are shared and read-only.
func (r Record) clone() Record {
	r.Steps = slices.Clone(r.Steps)
	r.Operator = slices.Clone(r.Operator)
	return r
}

// StuckSteps returns the records of the stuck steps: what a
// compensation-stuck (or forward-stuck) saga is waiting for.
func (r Record) StuckSteps() []StepRecord {
	var stuck []StepRecord
	for _, s := range r.Steps {
		if s.Stuck {
			stuck = append(stuck, s)
		}
	}
	return stuck
}

// Step returns the record of the named step.
func (r Record) Step(name string) (StepRecord, bool) {
	for _, s := range r.Steps {
		if s.Name == name {
			return s, true
		}
	}
	return StepRecord{}, false
}

// Recover rebuilds a saga from its record, after its coordinator died or
// when another instance takes it over: Start then continues it forward or
// backward from where the record stands. Commands that were out (a step
// running or compensating) are sent again with the same attempt number, for
// the participant's barrier makes them idempotent; except the action of a
// step that was running while the saga compensates, which is not sent again:
// the saga waits for its answer or its timeout before compensating it.
// Back-offs end at their recorded NextRetryAt, the deadline at its recorded
// time. A final record has nothing to drive and is an error.
func Recover(rec Record) (*Saga, error) {
	p, err := compile(rec.Definition)
	if err != nil {
		return nil, fmt.Errorf("natstx saga: recovering %s: %w", rec.ID, err)
	}
	if err := messages.ValidateName("saga ID", rec.ID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if !rec.State.valid() {
		return nil, fmt.Errorf("%w: %s: unknown state %q", ErrBadRecord, rec.ID, rec.State)
	}
	if rec.State.Final() {
		return nil, fmt.Errorf("%w: %s: a record in state %s has nothing to drive", ErrBadRecord, rec.ID, rec.State)
	}
	if len(rec.Steps) != len(p.def.Steps) {
		return nil, fmt.Errorf("%w: %s: %d step records for %d steps", ErrBadRecord, rec.ID, len(rec.Steps), len(p.def.Steps))
	}
	for i, s := range rec.Steps {
		switch {
		case s.Name != p.def.Steps[i].Name:
			return nil, fmt.Errorf("%w: %s: step record %d is %q, the definition's step is %q", ErrBadRecord, rec.ID, i+1, s.Name, p.def.Steps[i].Name)
		case !slices.Contains(stepStatuses, s.Status):
			return nil, fmt.Errorf("%w: %s: step %q has unknown status %q", ErrBadRecord, rec.ID, s.Name, s.Status)
		case s.Status != StepPending && s.Attempts < 1:
			return nil, fmt.Errorf("%w: %s: step %q is %s without an attempt", ErrBadRecord, rec.ID, s.Name, s.Status)
		}
	}
	rec = rec.clone()
	rec.Definition = p.def
	return &Saga{plan: p, rec: rec, timers: make([]Timer, len(rec.Steps)), recovered: true}, nil
}
