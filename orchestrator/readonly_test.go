package orchestrator_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

// lookOnly votes read-only and counts the second-phase calls it gets,
// which must be none.
func lookOnly(secondPhase *atomic.Int32) participants.HandlerFuncs {
	return participants.HandlerFuncs{
		PrepareFunc: func(context.Context, participants.Tx, []byte) error { return participants.ReadOnly },
		CommitFunc:  func(context.Context, participants.Tx) error { secondPhase.Add(1); return nil },
		AbortFunc:   func(context.Context, participants.Tx) error { secondPhase.Add(1); return nil },
	}
}

// TestAReadOnlyParticipantIsSentNoCommit: a participant that votes
// read-only counts as a yes; the transaction commits at the other, and
// the read-only one is sent no commit (its outcome shows no send of the
// second phase) while the decision record is written as usual.
func TestAReadOnlyParticipantIsSentNoCommit(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	var secondPhase, commits atomic.Int32
	look := f.participant("look", lookOnly(&secondPhase))
	f.participant("write", participants.HandlerFuncs{CommitFunc: func(context.Context, participants.Tx) error { commits.Add(1); return nil }})
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("look", "write")})
	if err != nil || out.State != orchestrator.Committed || out.Reason != "every participant voted commit" {
		t.Fatalf("want committed; got %s (%s) %v", out.State, out.Reason, err)
	}
	for _, p := range out.Participants {
		switch p.Name {
		case "look":
			if p.Vote.String() != "read-only" || !p.Acked || p.Sends != 0 {
				t.Errorf("look: vote %s, acked %v, %d commit sends; want read-only, finished, none sent", p.Vote, p.Acked, p.Sends)
			}
		case "write":
			if p.Vote.String() != "yes" || !p.Acked || p.Sends != 1 {
				t.Errorf("write: vote %s, acked %v, %d commit sends", p.Vote, p.Acked, p.Sends)
			}
		}
	}
	if commits.Load() != 1 || secondPhase.Load() != 0 || look.State(out.ID) != participants.StateReadOnly {
		t.Fatalf("commits at write %d, second-phase calls at look %d, look's state %s", commits.Load(), secondPhase.Load(), look.State(out.ID))
	}
	if _, err := recordBucket(t, f).Get(ctxT(t, 5*time.Second), out.ID); err != nil {
		t.Fatalf("the commit decision of a transaction with a participant to commit: %v", err)
	}
}

// TestEveryParticipantReadOnlyCommitsWithNoSecondPhase: when every vote is
// read-only no participant holds anything: the transaction commits with no
// second phase; its decision is recorded all the same (committed, once
// finished) and its status is final.
func TestEveryParticipantReadOnlyCommitsWithNoSecondPhase(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	var secondPhase atomic.Int32
	a := f.participant("a", lookOnly(&secondPhase))
	b := f.participant("b", lookOnly(&secondPhase))
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil || out.State != orchestrator.Committed || !out.ReadOnly || out.Reason != "every participant voted read-only" {
		t.Fatalf("want committed on read-only votes; got %s (%s), ReadOnly %v, %v", out.State, out.Reason, out.ReadOnly, err)
	}
	waitFor(t, func() bool {
		e, err := recordBucket(t, f).Get(ctxT(t, 5*time.Second), out.ID)
		return err == nil && strings.Contains(string(e.Value()), `"state":"committed"`)
	}, "the decision record marked committed")
	waitFor(t, func() bool {
		e, err := statusBucket(t, f).Get(ctxT(t, 5*time.Second), out.ID)
		if err != nil {
			return false
		}
		st, ok := messages.PeekState(e.Value())
		return ok && st == "committed"
	}, "the final status committed")
	if n := secondPhase.Load(); n != 0 {
		t.Fatalf("%d commit or abort calls at read-only participants", n)
	}
	for _, p := range out.Participants {
		if p.Vote.String() != "read-only" || !p.Acked || p.Sends != 0 {
			t.Errorf("%s: vote %s, acked %v, %d commits sent; want read-only, finished, none", p.Name, p.Vote, p.Acked, p.Sends)
		}
	}
	for _, rt := range []*participants.Runtime{a, b} {
		if st := rt.Stats(); st.Commits != 0 || st.Aborts != 0 {
			t.Errorf("a read-only participant received %d commits and %d aborts", st.Commits, st.Aborts)
		}
	}
}
