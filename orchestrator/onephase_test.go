package orchestrator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

// heardFrom runs a transaction with participant name alone, so that eng has
// heard from it lately (the condition of one-phase commit), and returns the
// transaction's outcome: in two phases.
func heardFrom(t *testing.T, eng *orchestrator.Engine, name string) orchestrator.Outcome {
	t.Helper()
	out, err := eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts(name)})
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("a first transaction with %s: %s (%s) %v", name, out.State, out.Reason, err)
	}
	return out
}

// TestASingleParticipantIsCommittedInOnePhase: a transaction with one
// participant that the coordinator has heard from lately is sent
// commit-one-phase, not prepare and commit (the first one, before it has
// heard from it, is sent prepare); it ends with the participant's ack,
// writes no decision record, and its final status says committed, in one
// phase.
func TestASingleParticipantIsCommittedInOnePhase(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	c := newCounting()
	a := f.participant("a", c)
	if first := heardFrom(t, f.eng, "a"); first.OnePhase {
		t.Fatal("the first transaction with a participant never heard from was sent commit-one-phase")
	}
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil || out.State != orchestrator.Committed || !out.OnePhase || out.Reason != "committed in one phase by a" {
		t.Fatalf("want committed in one phase; got %s (%s), one phase %v, %v", out.State, out.Reason, out.OnePhase, err)
	}
	if commits, _ := c.count(out.ID); commits != 1 {
		t.Fatalf("%d commits at a", commits)
	}
	if st := a.Stats(); st.OnePhases != 1 || st.Prepares != 1 || st.Commits != 1 {
		t.Fatalf("a handled %d commit-one-phase, %d prepare, %d commit; want 1, then the first transaction's 1 and 1", st.OnePhases, st.Prepares, st.Commits)
	}
	if _, err := recordBucket(t, f).Get(ctxT(t, 5*time.Second), out.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("decision record of a one-phase commit: %v, want none", err)
	}
	waitFor(t, func() bool {
		e, err := statusBucket(t, f).Get(ctxT(t, 5*time.Second), out.ID)
		return err == nil && strings.Contains(string(e.Value()), `"state":"committed"`) && strings.Contains(string(e.Value()), `"one_phase":true`)
	}, "the final status: committed, one phase")
}

// TestOnePhaseRefusalAndNoOnePhase: the participant's refusal aborts a
// one-phase commit with its reason; Config.NoOnePhase sends prepare and
// commit to a single participant instead, with a decision record.
func TestOnePhaseRefusalAndNoOnePhase(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.participant("no", participants.HandlerFuncs{PrepareFunc: func(_ context.Context, _ participants.Tx, p []byte) error {
		if len(p) > 0 && p[0] == '!' {
			return errors.New("out of stock")
		}
		return nil
	}})
	heardFrom(t, f.eng, "no")
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: []orchestrator.Participant{{Name: "no", Payload: []byte("!")}}})
	if err != nil || out.State != orchestrator.Aborted || !out.OnePhase || !strings.Contains(out.Reason, "no voted abort: out of stock") {
		t.Fatalf("want aborted by the refusal; got %s (%s) %v", out.State, out.Reason, err)
	}

	two := f.engine(orchestrator.Config{Instance: "two-phase", NoOnePhase: true})
	b := f.participant("b", yes)
	heardFrom(t, two, "b")
	out, err = two.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("b")})
	if err != nil || out.State != orchestrator.Committed || out.OnePhase {
		t.Fatalf("want committed in two phases; got %s (%s), one phase %v, %v", out.State, out.Reason, out.OnePhase, err)
	}
	if st := b.Stats(); st.OnePhases != 0 || st.Prepares != 2 || st.Commits != 2 {
		t.Fatalf("b handled %d commit-one-phase, %d prepare, %d commit; want 0, 2, 2", st.OnePhases, st.Prepares, st.Commits)
	}
	if _, err := recordBucket(t, f).Get(ctxT(t, 5*time.Second), out.ID); err != nil {
		t.Fatalf("decision record of a two-phase commit: %v", err)
	}
}

// TestAOnePhaseCommitWaitsForItsParticipantPastTheDeadline: the timeout
// does not abort a one-phase commit, which only its participant decides:
// with the participant gone past the deadline the transaction is still
// preparing, and once the participant is back it votes abort (the deadline
// passed), which ends it. A participant never heard from is sent prepare,
// and the timeout aborts its transaction, naming it.
func TestAOnePhaseCommitWaitsForItsParticipantPastTheDeadline(t *testing.T) {
	f := newFixture(t, orchestrator.Config{RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("nobody-runs-this"), Timeout: 100 * time.Millisecond})
	if err != nil || out.OnePhase || out.Committed() || !out.State.Decided() || !strings.Contains(out.Reason, "no vote from nobody-runs-this") {
		t.Fatalf("a participant never heard from: %s (%s), one phase %v, %v; want aborted at the timeout", out.State, out.Reason, out.OnePhase, err)
	}
	first := f.participant("late", yes)
	heardFrom(t, f.eng, "late")
	first.Stop()
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("late"), Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // past the deadline, several re-sends
	if st, err := f.eng.Status(id); err != nil || st.State != orchestrator.Preparing {
		t.Fatalf("past the deadline with the participant away: %s %v, want preparing", st.State, err)
	}
	if aborted, err := f.eng.Abort(id, "enough"); aborted || !errors.Is(err, orchestrator.ErrOnePhaseAbort) {
		t.Fatalf("an operator's abort of a one-phase commit: aborted %v, %v; want refused with ErrOnePhaseAbort", aborted, err)
	}
	c := newCounting()
	f.participant("late", c)
	out, err = f.eng.Wait(ctxT(t, 10*time.Second), id)
	if err != nil || out.State != orchestrator.Aborted || !out.OnePhase || !strings.Contains(out.Reason, participants.ReasonDeadlinePassed) {
		t.Fatalf("want aborted by the participant, deadline passed; got %s (%s) %v", out.State, out.Reason, err)
	}
	if n := c.preparesStarted.Load(); n != 0 {
		t.Fatalf("the handler prepared %d times after the deadline", n)
	}
}

// TestAOnePhaseCommitOfADeadCoordinatorIsAskedOfItsParticipant: the
// coordinator dies after sending commit-one-phase; the participant commits,
// its answer lost with the coordinator. Another instance finds the
// transaction undecided and, instead of presuming abort, asks the
// participant (commit-one-phase with a deadline long past), which answers
// that it committed: the transaction ends committed, no abort recorded.
func TestAOnePhaseCommitOfADeadCoordinatorIsAskedOfItsParticipant(t *testing.T) {
	const id = "one-phase-orphan"
	hit := make(chan string, 1)
	hook := func(p orchestrator.FaultPoint, txid string) bool {
		if p != orchestrator.PointPrepareSent || txid != id {
			return false
		}
		hit <- txid
		return true
	}
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, FaultHook: hook})
	c := newCounting()
	a := f.participant("a", c)
	heardFrom(t, f.eng, "a")
	_, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{ID: id, Participants: parts("a")})
	if err != nil {
		t.Fatal(err)
	}
	waitHit(t, hit)
	waitFor(t, func() bool { commits, _ := c.count(id); return commits == 1 }, "a to commit in one phase")
	c2 := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease})
	waitFor(t, func() bool { st, err := c2.Status(id); return err == nil && st.State == orchestrator.Committed }, "c2 to learn the commit from a")
	if n := c2.Stats().OnePhaseTakeovers; n != 1 {
		t.Fatalf("c2 counted %d one-phase takeovers, want 1", n)
	}
	if commits, aborts := c.count(id); commits != 1 || aborts != 0 || a.State(id) != participants.StateCommitted {
		t.Fatalf("a: %d commits, %d aborts, state %s", commits, aborts, a.State(id))
	}
	if _, err := recordBucket(t, f).Get(ctxT(t, 5*time.Second), id); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a decision record for a one-phase commit taken over: %v, want none", err)
	}
	if r := c2.Resolve(ctxT(t, 5*time.Second), messages.OutcomeRequest{ID: id, DeadlineMs: 1}); r.Outcome != messages.OutcomeCommit {
		t.Fatalf("asked about it once it ended: %+v, want commit", r)
	}
}
