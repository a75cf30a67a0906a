package txn

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
)

// State is where a transaction is in its life.
type State uint8

// The states of a transaction. Committing and Aborting are decided but not
// yet acknowledged by every participant; Committed and Aborted are final.
const (
	Preparing State = iota + 1
	Committing
	Aborting
	Committed
	Aborted
)

var stateNames = [...]string{"unknown", "preparing", "committing", "aborting", "committed", "aborted"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return stateNames[0]
}

// ParseState is the inverse of State.String.
func ParseState(s string) (State, error) {
	for i, n := range stateNames[1:] {
		if n == s {
			return State(i + 1), nil
		}
	}
	return 0, fmt.Errorf("natstx: unknown transaction state %q (want one of %s)", s, strings.Join(stateNames[1:], ", "))
}

// Decided reports whether the outcome is fixed: commit or abort.
func (s State) Decided() bool { return s >= Committing }

// Final reports whether the transaction is over.
func (s State) Final() bool { return s == Committed || s == Aborted }

// Participant is one participant of a transaction and its payload.
type Participant struct {
	Name    string
	Payload []byte
}

// Spec describes a transaction to start.
type Spec struct {
	ID           string
	Participants []Participant
	// PrepareTimeout is how long the transaction waits for votes before it
	// aborts: its overall deadline for a decision.
	PrepareTimeout time.Duration
	// RetryBase is the delay before a command without an answer is re-sent; it
	// doubles at each re-send up to RetryMax.
	RetryBase time.Duration
	RetryMax  time.Duration
	// AbortSends bounds how often abort is sent to a participant that does not
	// acknowledge it. The abort stays in the command stream after the last
	// send, so the participant still receives it when it comes back; commit has
	// no such bound.
	AbortSends int
	// OnePhase sends the only participant commit-one-phase instead of
	// prepare: it prepares and commits at once and decides the outcome
	// alone. Nothing is persisted; the transaction ends with its answer,
	// ack (committed) or vote abort, and commit-one-phase is re-sent without
	// limit until it comes: PrepareTimeout, the participant's deadline, does
	// not abort it (only the participant can), and neither can EventAbort.
	OnePhase bool
}

// Errors returned by New.
var (
	// ErrNoParticipants is returned for a transaction without participants.
	ErrNoParticipants = errors.New("natstx: transaction has no participants")
	// ErrDuplicateParticipant is returned when a participant is named twice.
	ErrDuplicateParticipant = errors.New("natstx: participant named twice")
	// ErrBadTiming is returned for a non-positive timeout or retry delay.
	ErrBadTiming = errors.New("natstx: bad timing")
	// ErrOnePhase is returned for a one-phase transaction that does not
	// have exactly one participant.
	ErrOnePhase = errors.New("natstx: bad one-phase commit")
)

// Validate checks a Spec.
func (s Spec) Validate() error {
	if err := messages.ValidateName("transaction ID", s.ID); err != nil {
		return err
	}
	if len(s.Participants) == 0 {
		return ErrNoParticipants
	}
	seen := make(map[string]bool, len(s.Participants))
	for _, p := range s.Participants {
		if err := messages.ValidateName("participant", p.Name); err != nil {
			return err
		}
		if seen[p.Name] {
			return fmt.Errorf("%w: %q", ErrDuplicateParticipant, p.Name)
		}
		seen[p.Name] = true
	}
	switch {
	case s.PrepareTimeout <= 0:
		return fmt.Errorf("%w: prepare timeout %v is not positive", ErrBadTiming, s.PrepareTimeout)
	case s.RetryBase <= 0:
		return fmt.Errorf("%w: retry delay %v is not positive", ErrBadTiming, s.RetryBase)
	case s.RetryMax < s.RetryBase:
		return fmt.Errorf("%w: maximum retry delay %v is below the base %v", ErrBadTiming, s.RetryMax, s.RetryBase)
	case s.AbortSends < 1:
		return fmt.Errorf("%w: abort sends %d is below 1", ErrBadTiming, s.AbortSends)
	case s.OnePhase && len(s.Participants) != 1:
		return fmt.Errorf("%w: one-phase commit needs exactly one participant, not %d", ErrOnePhase, len(s.Participants))
	}
	return nil
}

// TimerKind names what a timer is for.
type TimerKind uint8

// The timers a transaction uses.
const (
	// TimerPrepare fires at the prepare deadline.
	TimerPrepare TimerKind = iota + 1
	// TimerResend fires when unanswered commands are due to be re-sent.
	TimerResend
)

func (k TimerKind) String() string {
	if k == TimerPrepare {
		return "prepare"
	}
	return "resend"
}

// Timer identifies one armed timer. Seq grows with every timer the
// transaction arms, so a timer that was superseded is recognised and ignored.
type Timer struct {
	Kind TimerKind
	Seq  uint64
}

// TimerRequest asks the driver to deliver Timer as an event After from now.
type TimerRequest struct {
	Timer Timer
	After time.Duration
}

// Send is a command to publish to one participant.
type Send struct {
	Participant string
	Op          messages.Op
	// Attempt counts sends of Op to this participant, from 1.
	Attempt int
	// Payload is set for prepare only.
	Payload []byte
}

// Record is what must be durable before the commands of the same Ready go
// out: the commit decision.
type Record struct {
	ID    string
	State State
	// Participants are all of them, those that voted read-only included.
	Participants []string
	// ReadOnly names those that voted read-only: they hold nothing, and a
	// transaction recovered from the record sends them no commit.
	ReadOnly []string
}

// Ready is the work one step asks of its driver, in this order: persist,
// send, arm timers.
type Ready struct {
	Persist *Record
	Send    []Send
	Timers  []TimerRequest
	// Decided is true in the step that made the decision.
	Decided bool
	// Done is true in the step that ended the transaction: the driver stops its
	// timers and forgets it.
	Done bool
	// Ignored, when not empty, says why the event changed nothing (a late or
	// duplicate vote, a reply from a stranger, a stale timer).
	Ignored string
}

// EventKind names an input.
type EventKind uint8

// The inputs of a transaction.
const (
	// EventVote is a participant's vote: Participant, Yes, ReadOnly, Reason.
	EventVote EventKind = iota + 1
	// EventAck is a participant's acknowledgement of Op (commit or abort).
	EventAck
	// EventFailed says a participant could not handle Op this time (Reason). On
	// prepare it counts as a vote no; on commit or abort the command is re-sent.
	EventFailed
	// EventTimer is a timer that fired.
	EventTimer
	// EventAbort asks to abort (an operator, or the client giving up); it
	// changes nothing once the transaction has decided.
	EventAbort
	// EventCommitRefused says the commit decision could not be recorded
	// because an abort was recorded for the transaction first (a coordinator
	// answered a participant in doubt). The driver sends it only while the
	// commit record is not durable, so no participant has heard commit: the
	// transaction aborts instead.
	EventCommitRefused
	// EventRejected says a reply from Participant (named by the subject it
	// came on) could not be read: Reason is why. It changes nothing but the
	// reason given if that participant's vote is still missing at the
	// deadline: it answered, but nothing it said could be counted.
	EventRejected
)

// Event is one input to Step.
type Event struct {
	Kind        EventKind
	Participant string
	Op          messages.Op
	Yes         bool
	// ReadOnly, with Yes, is a read-only vote: the participant holds
	// nothing, and is sent neither commit nor abort after it.
	ReadOnly bool
	Reason   string
	Timer    Timer
}

// PartResult is what is known of one participant.
type PartResult struct {
	Name string
	Vote Vote
	// Reason is the participant's reason for a no vote, or its last failure.
	Reason string
	// Acked is true once the participant acknowledged the decision.
	Acked bool
	// Sends counts the commands sent to it in the current phase.
	Sends int
	// Rejected is why the first of its replies that could not be read was
	// rejected; empty if none was.
	Rejected string
}

// Outcome is a snapshot of a transaction: its state, why, and each
// participant's result.
type Outcome struct {
	ID     string
	State  State
	Reason string
	// TimedOut is true when the transaction aborted because a vote was
	// missing at the prepare deadline.
	TimedOut bool
	// OnePhase is true for a transaction sent commit-one-phase (Spec.OnePhase).
	OnePhase bool
	// ReadOnly is true when every participant voted read-only: the
	// transaction commits with no second phase (its decision is recorded
	// all the same, so that no abort recorded meanwhile is contradicted).
	ReadOnly     bool
	Participants []PartResult
}

// Committed reports whether the transaction decided to commit (it may still
// be delivering commit to some participants).
func (o Outcome) Committed() bool { return o.State == Committing || o.State == Committed }

// Tx is the state machine of one transaction. It is not safe for concurrent
// use: its driver feeds it one event at a time.
type Tx struct {
	spec      Spec
	state     State
	reason    string
	timedOut  bool
	parts     []PartResult
	index     map[string]int
	seq       uint64
	resend    Timer // the live resend timer
	prepare   Timer // the live prepare timer
	resendGap time.Duration
}

// New validates spec and returns a transaction in Preparing; Start gives its
// first Ready.
func New(spec Spec) (*Tx, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	t := &Tx{spec: spec, state: Preparing, index: make(map[string]int, len(spec.Participants))}
	for i, p := range spec.Participants {
		t.parts = append(t.parts, PartResult{Name: p.Name})
		t.index[p.Name] = i
	}
	return t, nil
}

// Recover rebuilds a transaction after its coordinator died: a commit
// decision (State Committing) is driven to the end again from the first
// attempt; an abort (State Aborting: a transaction found undecided, whose
// abort is now recorded) is sent to every participant. Start gives its first
// Ready.
func Recover(rec Record, spec Spec) (*Tx, error) {
	spec.ID = rec.ID
	spec.Participants = nil
	for _, p := range rec.Participants {
		spec.Participants = append(spec.Participants, Participant{Name: p})
	}
	if rec.State != Committing && rec.State != Aborting {
		return nil, fmt.Errorf("natstx: recovering %s: a record in state %s has nothing to drive", rec.ID, rec.State)
	}
	t, err := New(spec)
	if err != nil {
		return nil, err
	}
	t.state = rec.State
	if rec.State == Committing {
		for i := range t.parts {
			t.parts[i].Vote = VoteYes
		}
		for _, name := range rec.ReadOnly {
			if i, ok := t.index[name]; ok {
				t.parts[i].Vote, t.parts[i].Acked = VoteReadOnly, true // it holds nothing
			}
		}
	} else {
		t.reason = "presumed abort: its coordinator died before deciding"
	}
	return t, nil
}

// RecoverOnePhase rebuilds a one-phase commit whose coordinator died before
// its participant answered: Start sends commit-one-phase without a payload,
// for its driver to send with a deadline long past, so that the participant
// answers what it decided, or, having seen nothing, votes abort without
// doing anything. Its answer ends the transaction as usual.
func RecoverOnePhase(id, participant string, spec Spec) (*Tx, error) {
	spec.ID, spec.OnePhase = id, true
	spec.Participants = []Participant{{Name: participant}}
	return New(spec)
}

// ID is the transaction's ID.
func (t *Tx) ID() string { return t.spec.ID }

// State is the transaction's current state.
func (t *Tx) State() State { return t.state }

// Outcome returns a snapshot of the transaction.
func (t *Tx) Outcome() Outcome {
	return Outcome{ID: t.spec.ID, State: t.state, Reason: t.reason, TimedOut: t.timedOut, ReadOnly: t.allReadOnly(), OnePhase: t.spec.OnePhase,
		Participants: append([]PartResult(nil), t.parts...)}
}

// Start returns the first work: prepare to every participant (or, for a
// recovered transaction, commit), with its timers.
func (t *Tx) Start() Ready {
	var rd Ready
	switch t.state {
	case Preparing:
		for i := range t.parts {
			rd.Send = append(rd.Send, t.send(i, t.phaseOp()))
		}
		if !t.spec.OnePhase { // only the participant decides a one-phase commit
			t.prepare = t.arm(&rd, TimerPrepare, t.spec.PrepareTimeout)
		}
	case Committing, Aborting:
		for i := range t.parts {
			if !t.parts[i].Acked { // a read-only voter of a recovered commit
				rd.Send = append(rd.Send, t.send(i, t.phaseOp()))
			}
		}
	}
	t.resendGap = t.spec.RetryBase
	t.resend = t.arm(&rd, TimerResend, t.resendGap)
	return rd
}

// Step feeds one event and returns the work it causes.
func (t *Tx) Step(ev Event) Ready {
	if t.state.Final() {
		return Ready{Ignored: "transaction is " + t.state.String()}
	}
	switch ev.Kind {
	case EventVote:
		return t.onVote(ev)
	case EventAck:
		return t.onAck(ev)
	case EventFailed:
		return t.onFailed(ev)
	case EventRejected:
		i, ok := t.index[ev.Participant]
		if !ok {
			return Ready{Ignored: fmt.Sprintf("a rejected reply from %q, which is not a participant", ev.Participant)}
		}
		if t.parts[i].Rejected == "" {
			t.parts[i].Rejected = orUnknown(ev.Reason)
		}
		return Ready{}
	case EventTimer:
		return t.onTimer(ev.Timer)
	case EventCommitRefused:
		if t.state != Committing {
			return Ready{Ignored: "commit refused while the transaction is " + t.state.String()}
		}
		for _, p := range t.parts {
			if p.Acked && p.Vote != VoteReadOnly {
				return Ready{Ignored: "commit refused after " + p.Name + " acknowledged commit"}
			}
		}
		t.state = Preparing // undo the decision that never became durable
		return t.decide(false, "commit refused: "+orUnknown(ev.Reason))
	case EventAbort:
		if t.state != Preparing {
			return Ready{Ignored: "abort requested after the decision to " + decisionWord(t.state)}
		}
		if t.spec.OnePhase {
			return Ready{Ignored: "abort requested of a one-phase commit, which its participant decides"}
		}
		return t.decide(false, ev.Reason)
	}
	return Ready{Ignored: fmt.Sprintf("unknown event kind %d", ev.Kind)}
}

func (t *Tx) onVote(ev Event) Ready {
	i, ok := t.index[ev.Participant]
	switch {
	case !ok:
		return Ready{Ignored: fmt.Sprintf("vote from %q, which is not a participant", ev.Participant)}
	case t.state != Preparing:
		return Ready{Ignored: fmt.Sprintf("vote from %s after the decision to %s", ev.Participant, decisionWord(t.state))}
	case t.parts[i].Vote != VotePending:
		return Ready{Ignored: fmt.Sprintf("duplicate vote from %s", ev.Participant)}
	case t.spec.OnePhase && ev.Yes:
		return Ready{Ignored: fmt.Sprintf("a commit vote from %s on a one-phase commit, which is answered ack", ev.Participant)}
	}
	p := &t.parts[i]
	if !ev.Yes {
		// A participant that voted no has aborted already; one that failed to
		// handle prepare is sent abort all the same, in case it prepared.
		p.Vote, p.Reason, p.Acked = VoteNo, ev.Reason, ev.Kind == EventVote
		return t.decide(false, fmt.Sprintf("%s voted abort: %s", ev.Participant, orUnknown(ev.Reason)))
	}
	p.Vote = VoteYes
	if ev.ReadOnly {
		// It holds nothing: no second phase, whatever the decision.
		p.Vote, p.Acked = VoteReadOnly, true
	}
	if VoteResult(t.votes()) == TallyWon {
		if t.allReadOnly() {
			return t.decide(true, "every participant voted read-only")
		}
		return t.decide(true, "every participant voted commit")
	}
	return Ready{}
}

// allReadOnly reports whether every participant voted read-only.
func (t *Tx) allReadOnly() bool {
	for _, p := range t.parts {
		if p.Vote != VoteReadOnly {
			return false
		}
	}
	return true
}

func (t *Tx) onAck(ev Event) Ready {
	i, ok := t.index[ev.Participant]
	want := t.phaseOp()
	switch {
	case !ok:
		return Ready{Ignored: fmt.Sprintf("ack from %q, which is not a participant", ev.Participant)}
	case t.spec.OnePhase && t.state == Preparing && ev.Op == want:
		// The participant committed: the outcome is its own.
		t.parts[i].Vote, t.parts[i].Acked = VoteYes, true
		t.state, t.reason = Committed, "committed in one phase by "+ev.Participant
		return Ready{Decided: true, Done: true}
	case t.state == Preparing || ev.Op != want:
		return Ready{Ignored: fmt.Sprintf("ack of %s from %s while the transaction is %s", ev.Op, ev.Participant, t.state)}
	case t.parts[i].Acked:
		return Ready{Ignored: fmt.Sprintf("duplicate ack from %s", ev.Participant)}
	}
	t.parts[i].Acked = true
	return t.finishIfAcked()
}

func (t *Tx) onFailed(ev Event) Ready {
	i, ok := t.index[ev.Participant]
	if !ok {
		return Ready{Ignored: fmt.Sprintf("failure from %q, which is not a participant", ev.Participant)}
	}
	if ev.Op == messages.OpPrepare && !t.spec.OnePhase {
		if t.state != Preparing || t.parts[i].Vote != VotePending {
			return Ready{Ignored: fmt.Sprintf("prepare failure from %s after its vote or the decision", ev.Participant)}
		}
		ev.Yes, ev.Reason = false, "failed: "+orUnknown(ev.Reason)
		return t.onVote(ev)
	}
	if ev.Op != t.phaseOp() || t.parts[i].Acked {
		return Ready{Ignored: fmt.Sprintf("%s failure from %s while the transaction is %s", ev.Op, ev.Participant, t.state)}
	}
	t.parts[i].Reason = ev.Reason // re-sent by the resend timer
	return Ready{}
}

func (t *Tx) onTimer(tm Timer) Ready {
	switch {
	case tm.Kind == TimerPrepare && tm == t.prepare && t.state == Preparing:
		var missing, rejected []string
		for _, p := range t.parts {
			switch {
			case p.Vote != VotePending:
			case p.Rejected != "":
				rejected = append(rejected, fmt.Sprintf("%s answered, but its replies were rejected: %s", p.Name, p.Rejected))
			default:
				missing = append(missing, p.Name)
			}
		}
		var why []string
		if len(missing) > 0 {
			why = append(why, fmt.Sprintf("no vote from %s within %v (is a participant of that name running?)", strings.Join(missing, ", "), t.spec.PrepareTimeout))
		}
		if len(rejected) > 0 {
			why = append(why, fmt.Sprintf("no valid vote within %v: %s", t.spec.PrepareTimeout, strings.Join(rejected, "; ")))
		}
		t.timedOut = true
		return t.decide(false, "timeout: "+strings.Join(why, "; "))
	case tm.Kind == TimerResend && tm == t.resend:
		return t.resendDue()
	}
	return Ready{Ignored: fmt.Sprintf("stale %s timer", tm.Kind)}
}

// resendDue re-sends the current phase's command to everyone who has not
// answered, and arms the next resend with a doubled delay.
func (t *Tx) resendDue() Ready {
	if t.state == Committing {
		// Every vote read-only: nothing was sent, and the record is durable.
		if fin := t.finishIfAcked(); fin.Done {
			return fin
		}
	}
	var rd Ready
	op := t.phaseOp()
	var gaveUp []string
	for i, p := range t.parts {
		switch {
		case t.state == Preparing && p.Vote != VotePending, t.state != Preparing && p.Acked:
			continue
		case t.state == Aborting && p.Sends >= t.spec.AbortSends:
			gaveUp = append(gaveUp, p.Name)
			continue
		}
		rd.Send = append(rd.Send, t.send(i, op))
	}
	if len(rd.Send) == 0 && len(gaveUp) > 0 {
		// Abort was sent AbortSends times without an answer: stop; the
		// participant receives it from the stream when it comes back.
		t.state = Aborted
		t.reason += fmt.Sprintf(" (abort not acknowledged by %s after %d sends; it stays queued for them)", strings.Join(gaveUp, ", "), t.spec.AbortSends)
		rd.Done = true
		return rd
	}
	t.resendGap = min(2*t.resendGap, t.spec.RetryMax)
	t.resend = t.arm(&rd, TimerResend, t.resendGap)
	return rd
}

// decide moves to Committing or Aborting and returns the decision's work.
func (t *Tx) decide(commit bool, reason string) Ready {
	rd := Ready{Decided: true}
	t.reason = reason
	op := messages.OpAbort
	if commit {
		t.state, op = Committing, messages.OpCommit
		rd.Persist = &Record{ID: t.spec.ID, State: Committing, Participants: t.names(), ReadOnly: t.readOnlyNames()}
	} else {
		t.state = Aborting
	}
	for i := range t.parts {
		t.parts[i].Sends = 0
		if !t.parts[i].Acked {
			rd.Send = append(rd.Send, t.send(i, op))
		}
	}
	t.prepare = Timer{} // a prepare timer that fires now is stale
	t.resendGap = t.spec.RetryBase
	first := t.resendGap
	if commit && t.allReadOnly() {
		// No one to send commit to: the transaction ends once its record
		// is durable (the driver arms the timers after that), unless the
		// record is refused first (EventCommitRefused).
		first = 0
	}
	t.resend = t.arm(&rd, TimerResend, first)
	if !commit {
		if fin := t.finishIfAcked(); fin.Done { // every vote no or read-only
			rd.Done, rd.Send, rd.Timers = true, nil, nil
		}
	}
	return rd
}

// finishIfAcked ends the transaction once every participant acknowledged
// (a participant that voted read-only or no counts as having acknowledged).
func (t *Tx) finishIfAcked() Ready {
	for _, p := range t.parts {
		if !p.Acked {
			return Ready{}
		}
	}
	if t.state == Committing {
		t.state = Committed
	} else {
		t.state = Aborted
	}
	return Ready{Done: true}
}

func (t *Tx) send(i int, op messages.Op) Send {
	p := &t.parts[i]
	p.Sends++
	s := Send{Participant: p.Name, Op: op, Attempt: p.Sends}
	if op.Votes() {
		s.Payload = t.spec.Participants[i].Payload
	}
	return s
}

func (t *Tx) arm(rd *Ready, kind TimerKind, after time.Duration) Timer {
	t.seq++
	tm := Timer{Kind: kind, Seq: t.seq}
	rd.Timers = append(rd.Timers, TimerRequest{Timer: tm, After: after})
	return tm
}

func (t *Tx) phaseOp() messages.Op {
	switch t.state {
	case Preparing:
		if t.spec.OnePhase {
			return messages.OpCommitOnePhase
		}
		return messages.OpPrepare
	case Committing, Committed:
		return messages.OpCommit
	}
	return messages.OpAbort
}

func (t *Tx) votes() []Vote {
	vs := make([]Vote, len(t.parts))
	for i, p := range t.parts {
		vs[i] = p.Vote
	}
	return vs
}

// readOnlyNames names the participants that voted read-only, sorted; nil
// if none did.
func (t *Tx) readOnlyNames() []string {
	var ns []string
	for _, p := range t.parts {
		if p.Vote == VoteReadOnly {
			ns = append(ns, p.Name)
		}
	}
	sort.Strings(ns)
	return ns
}

func (t *Tx) names() []string {
	ns := make([]string, len(t.parts))
	for i, p := range t.parts {
		ns[i] = p.Name
	}
	sort.Strings(ns)
	return ns
}

func decisionWord(s State) string {
	if s == Committing || s == Committed {
		return "commit"
	}
	return "abort"
}

func orUnknown(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
