package saga

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
)

// Op is the operation of a command to a participant.
type Op string

// The operations of a saga step.
const (
	OpAction     Op = "action"
	OpCompensate Op = "compensate"
)

// Result is the answer to one attempt of an action or a compensation.
type Result string

// The four results of an attempt.
const (
	// ResultDone: the action (or compensation) is done.
	ResultDone Result = "done"
	// ResultFailed: failed for good; the action left nothing behind. The
	// saga compensates now. For a compensation it is retried all the same.
	ResultFailed Result = "failed"
	// ResultRetry: failed for now; the action left nothing behind and is
	// retried after a back-off, until its attempts run out (then it failed
	// for good), unless the error code is non-retryable.
	ResultRetry Result = "retry"
	// ResultUnknown: the attempt timed out or was lost; the action may have
	// run. It is retried like ResultRetry, and the step is compensated too if
	// the saga compensates (the participant's barrier makes that compensation
	// a no-op when the action never ran). An attempt timeout has this result.
	ResultUnknown Result = "unknown"
)

// EventKind names an input of a saga.
type EventKind string

// The inputs of a saga.
const (
	// EventReply is a participant's answer: Step, Op, Attempt, Result, Code,
	// Reason.
	EventReply EventKind = "reply"
	// EventTimer is a timer that fired: Timer.
	EventTimer EventKind = "timer"
	// EventAbort is an operator's abort, Who and Why: compensate now. It is
	// refused once the saga compensates or is past its pivot.
	EventAbort EventKind = "abort"
	// EventRetryNow is an operator's retry now, Who and Why: every step
	// waiting for its back-off (or only Step, when set) is attempted at once.
	EventRetryNow EventKind = "retry-now"
	// EventResolve is an operator resolving Step by hand, Who and Why (the
	// note): a step being compensated is marked compensated by hand; a step
	// after the pivot being retried forward is marked done by hand.
	EventResolve EventKind = "resolve"
)

// Event is one input to Step. At is the time it happened, from the driver's
// clock: the saga has no clock of its own.
type Event struct {
	// Kind says which fields matter.
	Kind EventKind
	// At is when the event happened; an event without it is ignored.
	At time.Time

	// Step is the step replying (or acted on by an operator).
	Step string
	// Op and Attempt identify the command answered.
	Op      Op
	Attempt int
	// Result is the reply's result.
	Result Result
	// Code is the participant's error code, matched against the step's
	// non-retryable codes.
	Code string
	// Reason is the participant's text for a failure, kept as the step's
	// last error.
	Reason string

	// Timer is the timer that fired.
	Timer Timer

	// Who and Why, for the operator's events.
	Who string
	Why string
}

// TimerKind names what a timer is for.
type TimerKind string

// The timers of a saga.
const (
	// TimerAttempt ends an attempt of Step that got no answer: its result is
	// unknown.
	TimerAttempt TimerKind = "attempt"
	// TimerRetry ends the back-off of Step: its next attempt goes out.
	TimerRetry TimerKind = "retry"
	// TimerDeadline is the saga's deadline.
	TimerDeadline TimerKind = "deadline"
)

// Timer identifies one armed timer. Seq grows with every timer the saga
// arms, so a timer that was superseded is recognised and ignored: a driver
// never needs to cancel one.
type Timer struct {
	// Kind says what the timer is for.
	Kind TimerKind
	// Step is the step of an attempt or retry timer; empty for the deadline.
	Step string
	// Seq numbers the timers the saga armed, from 1.
	Seq uint64
}

// TimerRequest asks the driver to deliver Timer as an event at At, After
// from the event that armed it.
type TimerRequest struct {
	// Timer is what to deliver, as an EventTimer.
	Timer Timer
	// At is when to deliver it; After is the same, from the event's At (zero
	// when At is past).
	At    time.Time
	After time.Duration
}

// Send is a command to publish to a participant.
type Send struct {
	// Saga is the saga's ID.
	Saga string
	// Step is the step the command is for; its reply names it.
	Step string
	// Participant is the service to send it to.
	Participant string
	// Op is the action or its compensation.
	Op Op
	// Attempt counts the attempts of Op for Step, from 1. A command sent
	// again after a recovery keeps its number.
	Attempt int
	// Payload is the step's action or compensation payload.
	Payload []byte
	// Deadline is when this attempt times out; a participant may drop a
	// command past it.
	Deadline time.Time
}

// Ready is the work one step asks of its driver, in this order:
//
//  1. Persist, when set, durably, with compare-and-set on the previous
//     revision; if that fails, send nothing and stop driving the saga
//     (another instance owns it);
//  2. only then Send;
//  3. arm Timers;
//  4. log Stuck at error level and count it.
type Ready struct {
	// Persist is the saga's record to write before anything is sent: set in
	// every Ready that is not ignored (but for a recovered saga's Start, whose
	// record is already durable). It shares payloads with the definition:
	// read only.
	Persist *Record
	// Send are the commands to publish.
	Send []Send
	// Timers are the timers to arm.
	Timers []TimerRequest
	// Stuck names the steps that went past the stuck threshold in this step.
	Stuck []string
	// Done is true in the step that ended the saga, completed or
	// compensated: the driver forgets it and its timers.
	Done bool
	// Ignored, when not empty, says why the event changed nothing (a
	// duplicate or late reply, a stale timer, a refused operator action).
	Ignored string
}

// Params describe a saga to start.
type Params struct {
	// ID names the saga; letters, digits, '-' and '_'.
	ID string
	// Definition is the saga to run.
	Definition Definition
	// Deadline is the caller's deadline, if any; it wins over the
	// definition's when sooner.
	Deadline time.Time
}

// Saga is the state machine of one saga. It is not safe for concurrent use:
// its driver feeds it one event at a time.
type Saga struct {
	plan      *plan
	rec       Record
	started   bool
	recovered bool
	callerDL  time.Time
	seq       uint64
	timers    []Timer // the live timer of each step: attempt or retry
	deadline  Timer
	now       time.Time
}

// New validates p and returns a saga that has not started; Start gives its
// first Ready.
func New(p Params) (*Saga, error) {
	if err := messages.ValidateName("saga ID", p.ID); err != nil {
		return nil, err
	}
	pl, err := compile(p.Definition)
	if err != nil {
		return nil, err
	}
	s := &Saga{plan: pl, callerDL: p.Deadline, timers: make([]Timer, len(pl.def.Steps))}
	s.rec = Record{ID: p.ID, Definition: pl.def, State: StateRunning}
	for _, st := range pl.def.Steps {
		s.rec.Steps = append(s.rec.Steps, StepRecord{Name: st.Name, Status: StepPending})
	}
	return s, nil
}

// ID is the saga's ID.
func (s *Saga) ID() string { return s.rec.ID }

// Clone returns a copy of the saga that events can be tried on without
// changing s (the definition is shared: read only).
func (s *Saga) Clone() *Saga {
	c := *s
	c.rec = s.rec.clone()
	c.timers = slices.Clone(s.timers)
	return &c
}

// State is the saga's current state.
func (s *Saga) State() State { return s.rec.State }

// Record returns a copy of the saga's current record: the state of every
// step, their attempts, last errors and next retries.
func (s *Saga) Record() Record { return s.rec.clone() }

// Participant returns the participant of step name ("" if there is none).
func (s *Saga) Participant(step string) string {
	for _, st := range s.rec.Definition.Steps {
		if st.Name == step {
			return st.Participant
		}
	}
	return ""
}

// Start returns the first work, at now. A new saga persists its first
// record and sends the actions of the steps that depend on nothing; a
// recovered one re-sends what was out and re-arms its timers (see Recover).
func (s *Saga) Start(now time.Time) Ready {
	if s.started {
		return Ready{Ignored: "the saga has started already"}
	}
	s.started, s.now = true, now
	var rd Ready
	if s.recovered {
		before := s.rec.clone()
		s.rearm(&rd)
		s.advance(&rd)
		if !reflect.DeepEqual(before, s.rec) {
			s.persist(&rd)
		}
		return rd
	}
	s.rec.StartedAt = now
	if d := s.plan.def.Deadline; d > 0 {
		s.rec.Deadline = now.Add(d)
	}
	if !s.callerDL.IsZero() && (s.rec.Deadline.IsZero() || s.callerDL.Before(s.rec.Deadline)) {
		s.rec.Deadline = s.callerDL
	}
	s.rec.Deadline = s.rec.Deadline.Truncate(time.Millisecond)
	if !s.rec.Deadline.IsZero() && !now.Before(s.rec.Deadline) {
		s.compensate("deadline passed before the saga started")
	} else if !s.rec.Deadline.IsZero() {
		s.deadline = s.arm(&rd, TimerDeadline, "", s.rec.Deadline)
	}
	s.advance(&rd)
	s.persist(&rd)
	return rd
}

// rearm re-sends what a recovered record had out and arms its timers.
func (s *Saga) rearm(rd *Ready) {
	for i, st := range s.rec.Steps {
		switch st.Status {
		case StepRunning:
			if s.rec.State.forward() {
				s.sendAction(rd, i, false)
			} else {
				s.timers[i] = s.arm(rd, TimerAttempt, st.Name, s.now.Add(s.plan.def.Steps[i].Timeout))
			}
		case StepCompensating:
			s.sendCompensation(rd, i, false)
		case StepRetrying, StepCompensationRetrying:
			s.timers[i] = s.arm(rd, TimerRetry, st.Name, st.NextRetryAt)
		}
	}
	if s.rec.State.forward() && !s.rec.PastPivot && !s.rec.Deadline.IsZero() {
		s.deadline = s.arm(rd, TimerDeadline, "", s.rec.Deadline)
	}
}

// Step feeds one event and returns the work it causes.
func (s *Saga) Step(ev Event) Ready {
	switch {
	case !s.started:
		return Ready{Ignored: "the saga has not started"}
	case s.rec.State.Final():
		return Ready{Ignored: "the saga is " + string(s.rec.State)}
	case ev.At.IsZero():
		return Ready{Ignored: "an event without a time"}
	}
	s.now = ev.At
	var rd Ready
	switch ev.Kind {
	case EventReply:
		rd.Ignored = s.onReply(&rd, ev)
	case EventTimer:
		rd.Ignored = s.onTimer(&rd, ev.Timer)
	case EventAbort, EventRetryNow, EventResolve:
		rd.Ignored = s.onOperator(&rd, ev)
	default:
		rd.Ignored = fmt.Sprintf("unknown event kind %q", ev.Kind)
	}
	if rd.Ignored != "" {
		return Ready{Ignored: rd.Ignored}
	}
	s.advance(&rd)
	s.persist(&rd)
	return rd
}

func (s *Saga) onReply(rd *Ready, ev Event) string {
	i, ok := s.plan.index[ev.Step]
	if !ok {
		return fmt.Sprintf("reply for %q, which is not a step", ev.Step)
	}
	switch ev.Result {
	case ResultDone, ResultFailed, ResultRetry, ResultUnknown:
	default:
		return fmt.Sprintf("reply from %s with unknown result %q", ev.Step, ev.Result)
	}
	st := &s.rec.Steps[i]
	var current int
	var inFlight StepStatus
	switch ev.Op {
	case OpAction:
		current, inFlight = st.Attempts, StepRunning
	case OpCompensate:
		current, inFlight = st.CompensationAttempts, StepCompensating
	default:
		return fmt.Sprintf("reply from %s to unknown operation %q", ev.Step, ev.Op)
	}
	switch {
	case ev.Attempt < 1:
		return fmt.Sprintf("reply to %s of %s without an attempt number", ev.Op, ev.Step)
	case ev.Attempt > current:
		return fmt.Sprintf("reply to %s attempt %d of %s, which was never sent (last sent: %d)", ev.Op, ev.Attempt, ev.Step, current)
	case ev.Attempt < current:
		return fmt.Sprintf("late reply to %s attempt %d of %s: attempt %d is current", ev.Op, ev.Attempt, ev.Step, current)
	case st.Status != inFlight:
		return fmt.Sprintf("duplicate or late reply to %s attempt %d of %s: that attempt was answered or timed out already (%s is %s)", ev.Op, ev.Attempt, ev.Step, ev.Step, st.Status)
	}
	if ev.Op == OpAction {
		s.actionResult(rd, i, ev.Result, ev.Code, orUnknown(ev.Reason))
	} else {
		s.compensationResult(rd, i, ev.Result, ev.Code, orUnknown(ev.Reason))
	}
	return ""
}

func (s *Saga) onTimer(rd *Ready, tm Timer) string {
	if tm.Kind == TimerDeadline {
		switch {
		case tm != s.deadline || tm.Seq == 0:
			return "stale deadline timer"
		case s.rec.PastPivot:
			return fmt.Sprintf("deadline passed after the pivot %s was done: the saga goes on forward", s.plan.def.Steps[s.plan.pivot].Name)
		}
		s.deadline = Timer{}
		s.compensate(fmt.Sprintf("deadline %s passed", s.rec.Deadline.Format(time.RFC3339Nano)))
		return ""
	}
	i, ok := s.plan.index[tm.Step]
	if !ok || tm.Seq == 0 || tm != s.timers[i] {
		return fmt.Sprintf("stale %s timer of %s", tm.Kind, orUnknown(tm.Step))
	}
	s.timers[i] = Timer{}
	st := &s.rec.Steps[i]
	timeout := s.plan.def.Steps[i].Timeout
	switch {
	case tm.Kind == TimerAttempt && st.Status == StepRunning:
		s.actionResult(rd, i, ResultUnknown, "", fmt.Sprintf("attempt %d timed out after %v", st.Attempts, timeout))
	case tm.Kind == TimerAttempt && st.Status == StepCompensating:
		s.compensationResult(rd, i, ResultUnknown, "", fmt.Sprintf("compensation attempt %d timed out after %v", st.CompensationAttempts, timeout))
	case tm.Kind == TimerRetry && st.Status == StepRetrying:
		s.sendAction(rd, i, true)
	case tm.Kind == TimerRetry && st.Status == StepCompensationRetrying:
		s.sendCompensation(rd, i, true)
	default:
		return fmt.Sprintf("%s timer of %s, which is %s", tm.Kind, tm.Step, st.Status) // not reached: timers are cleared with their status
	}
	return ""
}

func (s *Saga) onOperator(rd *Ready, ev Event) string {
	if ev.Who == "" || ev.Why == "" {
		return fmt.Sprintf("%s without who and why: both are recorded", ev.Kind)
	}
	act := OperatorAction{At: s.now, Kind: ev.Kind, Step: ev.Step, Who: ev.Who, Why: ev.Why}
	switch ev.Kind {
	case EventAbort:
		switch {
		case s.rec.PastPivot:
			return fmt.Sprintf("abort refused: the pivot %s is done, the saga only goes forward", s.plan.def.Steps[s.plan.pivot].Name)
		case !s.rec.State.forward():
			return "abort refused: the saga is " + string(s.rec.State) + " already"
		}
		act.Step = ""
		s.compensate(fmt.Sprintf("aborted by %s: %s", ev.Who, ev.Why))
	case EventRetryNow:
		if ev.Step != "" {
			if _, ok := s.plan.index[ev.Step]; !ok {
				return fmt.Sprintf("retry now of %q, which is not a step", ev.Step)
			}
		}
		retried := false
		for i, st := range s.rec.Steps {
			if ev.Step != "" && st.Name != ev.Step {
				continue
			}
			switch st.Status {
			case StepRetrying:
				s.sendAction(rd, i, true)
				retried = true
			case StepCompensationRetrying:
				s.sendCompensation(rd, i, true)
				retried = true
			}
		}
		if !retried {
			if ev.Step != "" {
				return fmt.Sprintf("retry now: %s is %s, not waiting to retry", ev.Step, s.rec.Steps[s.plan.index[ev.Step]].Status)
			}
			return "retry now: no step is waiting to retry"
		}
	case EventResolve:
		i, ok := s.plan.index[ev.Step]
		if !ok {
			return fmt.Sprintf("resolve %q, which is not a step", ev.Step)
		}
		st := &s.rec.Steps[i]
		note := fmt.Sprintf("%s by hand, by %s: %s", "compensated", ev.Who, ev.Why)
		switch {
		case st.Status == StepCompensating || st.Status == StepCompensationRetrying:
			st.Status = StepCompensatedByHand
		case s.plan.afterPivot[i] && (st.Status == StepRunning || st.Status == StepRetrying):
			st.Status, st.MayHaveRun = StepDone, true
			note = fmt.Sprintf("done by hand, by %s: %s", ev.Who, ev.Why)
		default:
			return fmt.Sprintf("resolve %s refused: it is %s; only a step being compensated, or retried forward after the pivot, is resolved by hand", st.Name, st.Status)
		}
		st.Note, st.Stuck, st.NextRetryAt = note, false, time.Time{}
		s.timers[i] = Timer{}
	default:
		return fmt.Sprintf("unknown operator action %q", ev.Kind)
	}
	s.rec.Operator = append(s.rec.Operator, act)
	return ""
}

// actionResult applies the result of the current attempt of step i's
// action.
func (s *Saga) actionResult(rd *Ready, i int, res Result, code, reason string) {
	st := &s.rec.Steps[i]
	def := s.plan.def.Steps[i]
	s.timers[i] = Timer{}
	if res == ResultDone {
		st.Status, st.MayHaveRun, st.Stuck, st.NextRetryAt = StepDone, true, false, time.Time{}
		if i == s.plan.pivot && s.rec.State.forward() {
			s.rec.PastPivot = true // the deadline timer stays, to be refused when it fires
		}
		return
	}
	st.LastError, st.LastCode = reason, code
	if res == ResultUnknown {
		st.MayHaveRun = true
	}
	r := def.Retry
	switch {
	case s.plan.afterPivot[i]:
		// After the pivot: forward only, whatever the error, without limit.
		s.backOff(rd, i, StepRetrying, backoff(r.InitialInterval, r.BackoffFactor, r.MaxInterval, st.Attempts))
		s.checkStuck(rd, i, st.Attempts, st.FirstAttemptAt)
	case !s.rec.State.forward():
		st.Status = StepFailed // the saga compensates: no more attempts
	case res == ResultFailed:
		st.Status = StepFailed
		s.compensate(fmt.Sprintf("step %s failed: %s", def.Name, withCode(reason, code)))
	case res == ResultRetry && code != "" && slices.Contains(r.NonRetryable, code):
		st.Status = StepFailed
		s.compensate(fmt.Sprintf("step %s failed with non-retryable code: %s", def.Name, withCode(reason, code)))
	case st.Attempts >= r.MaxAttempts:
		st.Status = StepFailed
		after := ""
		if st.Attempts > 1 {
			after = fmt.Sprintf(" after %d attempts", st.Attempts)
		}
		s.compensate(fmt.Sprintf("step %s failed%s: %s", def.Name, after, withCode(reason, code)))
	default:
		s.backOff(rd, i, StepRetrying, backoff(r.InitialInterval, r.BackoffFactor, r.MaxInterval, st.Attempts))
	}
}

// compensationResult applies the result of the current attempt of step i's
// compensation: anything but done is retried, without limit.
func (s *Saga) compensationResult(rd *Ready, i int, res Result, code, reason string) {
	st := &s.rec.Steps[i]
	s.timers[i] = Timer{}
	if res == ResultDone {
		st.Status, st.Stuck, st.NextRetryAt = StepCompensated, false, time.Time{}
		return
	}
	st.LastError, st.LastCode = reason, code
	c := s.plan.def.Compensation
	s.backOff(rd, i, StepCompensationRetrying, backoff(c.InitialInterval, c.BackoffFactor, c.MaxInterval, st.CompensationAttempts))
	s.checkStuck(rd, i, st.CompensationAttempts, st.CompensationStartedAt)
}

func (s *Saga) backOff(rd *Ready, i int, status StepStatus, after time.Duration) {
	st := &s.rec.Steps[i]
	st.Status, st.NextRetryAt = status, s.now.Add(after)
	s.timers[i] = s.arm(rd, TimerRetry, st.Name, st.NextRetryAt)
}

// checkStuck marks step i stuck once it failed attempts times, or for as
// long as the stuck threshold, since since.
func (s *Saga) checkStuck(rd *Ready, i, attempts int, since time.Time) {
	st := &s.rec.Steps[i]
	c := s.plan.def.Compensation
	if st.Stuck {
		return
	}
	if (c.StuckAfterAttempts > 0 && attempts >= c.StuckAfterAttempts) || (c.StuckAfter > 0 && s.now.Sub(since) >= c.StuckAfter) {
		st.Stuck = true
		rd.Stuck = append(rd.Stuck, st.Name)
	}
}

// compensate turns the saga backward: no new action goes out, back-offs
// of actions are dropped; actions still out are waited for.
func (s *Saga) compensate(reason string) {
	s.rec.State, s.rec.Reason = StateCompensating, reason
	s.deadline = Timer{}
	for i := range s.rec.Steps {
		if st := &s.rec.Steps[i]; st.Status == StepRetrying {
			st.Status, st.NextRetryAt = StepFailed, time.Time{}
			s.timers[i] = Timer{}
		}
	}
}

// advance sends what has become possible: actions whose dependencies are
// done, or compensations whose dependents are settled; and ends the saga
// when nothing is left.
func (s *Saga) advance(rd *Ready) {
	steps := s.rec.Steps
	if s.rec.State.forward() {
		all := true
		for _, i := range s.plan.topo {
			if steps[i].Status == StepPending && s.depsDone(i) {
				s.sendAction(rd, i, true)
			}
			all = all && steps[i].Status == StepDone
		}
		if all {
			s.finish(rd, StateCompleted)
			return
		}
	} else {
		all := true
		for k := len(s.plan.topo) - 1; k >= 0; k-- {
			i := s.plan.topo[k]
			st := steps[i]
			if st.MayHaveRun && (st.Status == StepDone || st.Status == StepFailed) && s.dependentsSettled(i) {
				s.sendCompensation(rd, i, true)
			}
			all = all && s.settled(i)
		}
		if all {
			s.finish(rd, StateCompensated)
			return
		}
	}
	stuck := slices.ContainsFunc(steps, func(st StepRecord) bool { return st.Stuck })
	switch {
	case s.rec.State.forward() && stuck:
		s.rec.State = StateForwardStuck
	case s.rec.State.forward():
		s.rec.State = StateRunning
	case stuck:
		s.rec.State = StateCompensationStuck
	default:
		s.rec.State = StateCompensating
	}
}

func (s *Saga) depsDone(i int) bool {
	for _, d := range s.plan.deps[i] {
		if s.rec.Steps[d].Status != StepDone {
			return false
		}
	}
	return true
}

func (s *Saga) dependentsSettled(i int) bool {
	for _, d := range s.plan.dependents[i] {
		if !s.settled(d) {
			return false
		}
	}
	return true
}

// settled reports whether step i needs nothing more while compensating:
// never sent, failed without having run, or compensated.
func (s *Saga) settled(i int) bool {
	switch st := s.rec.Steps[i]; st.Status {
	case StepPending, StepCompensated, StepCompensatedByHand:
		return true
	case StepFailed:
		return !st.MayHaveRun
	}
	return false
}

func (s *Saga) finish(rd *Ready, state State) {
	s.rec.State = state
	if state == StateCompleted {
		s.rec.Reason = "every step is done"
	}
	rd.Done, rd.Timers = true, nil
	s.deadline = Timer{}
	clear(s.timers)
}

// sendAction sends an attempt of step i's action: the next one when next,
// else the current one again (after a recovery).
func (s *Saga) sendAction(rd *Ready, i int, next bool) {
	st := &s.rec.Steps[i]
	if next {
		st.Attempts++
		if st.Attempts == 1 {
			st.FirstAttemptAt = s.now
		}
	}
	st.Status, st.NextRetryAt = StepRunning, time.Time{}
	s.send(rd, i, OpAction, st.Attempts, s.plan.def.Steps[i].Action)
}

func (s *Saga) sendCompensation(rd *Ready, i int, next bool) {
	st := &s.rec.Steps[i]
	if next {
		st.CompensationAttempts++
		if st.CompensationAttempts == 1 {
			st.CompensationStartedAt = s.now
		}
	}
	st.Status, st.NextRetryAt = StepCompensating, time.Time{}
	s.send(rd, i, OpCompensate, st.CompensationAttempts, s.plan.def.Steps[i].Compensation)
}

func (s *Saga) send(rd *Ready, i int, op Op, attempt int, payload []byte) {
	def := s.plan.def.Steps[i]
	at := s.now.Add(def.Timeout)
	rd.Send = append(rd.Send, Send{Saga: s.rec.ID, Step: def.Name, Participant: def.Participant, Op: op, Attempt: attempt, Payload: payload, Deadline: at})
	s.timers[i] = s.arm(rd, TimerAttempt, def.Name, at)
}

func (s *Saga) arm(rd *Ready, kind TimerKind, step string, at time.Time) Timer {
	s.seq++
	tm := Timer{Kind: kind, Step: step, Seq: s.seq}
	rd.Timers = append(rd.Timers, TimerRequest{Timer: tm, At: at, After: max(0, at.Sub(s.now))})
	return tm
}

func (s *Saga) persist(rd *Ready) {
	s.rec.Revision++
	rec := s.rec.clone()
	rd.Persist = &rec
}

func withCode(reason, code string) string {
	if code == "" {
		return reason
	}
	return reason + " (code " + code + ")"
}

func orUnknown(s string) string {
	if strings.TrimSpace(s) == "" {
		return "no reason given"
	}
	return s
}
