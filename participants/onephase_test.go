package participants_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// onePhase is a commit-one-phase command for txid, with payload and a
// deadline a minute away.
func onePhase(e *env, txid string, attempt int, payload string) messages.Command {
	c := e.cmd(txid, messages.OpCommitOnePhase, attempt)
	c.Payload, c.Deadline = []byte(payload), time.Now().Add(time.Minute)
	return c
}

// TestBarrierOnePhaseCommitsInOneLocalTransaction: commit-one-phase runs
// the handler's Prepare and Commit in one local transaction and answers
// ack; its duplicates are answered from the record; a refusal is a vote
// abort, a read-only prepare an ack that leaves nothing; a Commit that fails
// leaves nothing (it all rolls back) and the command delivered again
// commits; a past deadline (the probe of a coordinator taking the
// transaction over) votes abort without the handler, and so does the
// original command arriving after it; and a transaction prepared for
// two-phase commit is not committed in one phase.
func TestBarrierOnePhaseCommitsInOneLocalTransaction(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		rt := r.startRuntime(t)
		r.expect(onePhase(r.env, "one", 1, "ok"), messages.Ack, "")
		r.expect(onePhase(r.env, "one", 2, "ok"), messages.Ack, "")
		if p, c := r.ledger.n(messages.OpPrepare, "one"), r.ledger.n(messages.OpCommit, "one"); p != 1 || c != 1 {
			t.Errorf("one: Prepare called %d times, Commit %d; want once each", p, c)
		}
		if s := r.ledger.state(t, r.sqldb, "one"); s != "applied" || rt.State("one") != participants.StateCommitted {
			t.Errorf("one: effect %s, state %s; want applied, committed", s, rt.State("one"))
		}

		r.expect(onePhase(r.env, "no", 1, "no"), messages.VoteAbort, "out of stock")
		r.expect(onePhase(r.env, "no", 2, "no"), messages.VoteAbort, "out of stock")
		r.expect(onePhase(r.env, "look", 1, "read-only"), messages.Ack, "")
		if s := r.ledger.state(t, r.sqldb, "look"); s != "none" || rt.State("look") != participants.StateReadOnly {
			t.Errorf("look: effect %s, state %s; want none, read-only", s, rt.State("look"))
		}

		r.ledger.fail(messages.OpCommit, errors.New("lock timeout"))
		r.send(onePhase(r.env, "retry", 1, "ok"))
		if rep := r.next(); rep.Result != messages.Failed || rep.Reason != "lock timeout" {
			t.Fatalf("failing commit: reply %+v", rep)
		}
		if rep := r.next(); rep.Result != messages.Ack { // the redelivery
			t.Fatalf("redelivered one-phase commit: reply %+v", rep)
		}
		if s := r.ledger.state(t, r.sqldb, "retry"); s != "applied" || r.ledger.n(messages.OpCommit, "retry") != 1 {
			t.Errorf("retry: effect %s after %d commits", s, r.ledger.n(messages.OpCommit, "retry"))
		}

		probe := r.cmd("late", messages.OpCommitOnePhase, 3)
		probe.Deadline = time.UnixMilli(1)
		r.expect(probe, messages.VoteAbort, participants.ReasonDeadlinePassed)
		r.expect(onePhase(r.env, "late", 1, "ok"), messages.VoteAbort, participants.ReasonDeadlinePassed)
		if n := r.ledger.n(messages.OpPrepare, "late"); n != 0 || r.ledger.state(t, r.sqldb, "late") != "none" {
			t.Errorf("late: Prepare called %d times after the probe", n)
		}

		prep := r.cmd("two", messages.OpPrepare, 1)
		r.expect(prep, messages.VoteCommit, "")
		r.expect(onePhase(r.env, "two", 1, "ok"), messages.Failed, participants.ReasonOnePhaseOfPrepared)
		if n := r.ledger.n(messages.OpCommit, "two"); n != 0 {
			t.Errorf("two: a transaction prepared for two-phase commit was committed %d times in one phase", n)
		}
		if st := rt.Stats(); st.OnePhases != 10 || st.InDoubt != 1 { // "two" is in doubt, the others never
			t.Errorf("stats %+v, want 10 one-phase commands and 1 in doubt", st)
		}
		r.settled()
	})
}

// TestOnePhaseInMemoryCommitsOnceAndIsNeverInDoubt: with the in-memory
// record, a Commit that fails after Prepare leaves the transaction prepared
// for one phase, not in doubt: the command delivered again commits it
// without preparing again; commit, abort or prepare of it is a
// contradiction that leaves it out of doubt.
func TestOnePhaseInMemoryCommitsOnceAndIsNeverInDoubt(t *testing.T) {
	var prepares, commits, aborts atomic.Int32
	failCommit := atomic.Bool{}
	failCommit.Store(true)
	h := participants.HandlerFuncs{
		PrepareFunc: func(context.Context, participants.Tx, []byte) error { prepares.Add(1); return nil },
		CommitFunc: func(context.Context, participants.Tx) error {
			commits.Add(1)
			if failCommit.Swap(false) {
				return errors.New("disk busy")
			}
			return nil
		},
		AbortFunc: func(context.Context, participants.Tx) error { aborts.Add(1); return nil },
	}
	proc, err := participants.NewProcessor(testConfig(h, nil))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t}
	handle := func(c messages.Command) participants.Answer {
		var a participants.Answer
		proc.Handle(c.Header(), c.Payload, c.Subject(), func(got participants.Answer) { a = got })
		return a
	}
	one := onePhase(e, "one", 1, "ok")
	if a := handle(one); a.Reply.Result != messages.Failed || a.Settle != participants.SettleNak {
		t.Fatalf("failing commit: %+v", a)
	}
	if ids := proc.InDoubt(); len(ids) != 0 || proc.State("one") != participants.StatePrepared {
		t.Fatalf("after a failed commit: in doubt %v, state %s; want none, prepared", ids, proc.State("one"))
	}
	for _, c := range []messages.Command{e.cmd("one", messages.OpCommit, 1), e.cmd("one", messages.OpAbort, 1), e.cmd("one", messages.OpPrepare, 1)} {
		if a := handle(c); a.Reply.Result != messages.Failed || a.Settle != participants.SettleTerm {
			t.Errorf("%s of a one-phase transaction: %+v, want failed and terminated", c.Op, a)
		}
		if ids := proc.InDoubt(); len(ids) != 0 {
			t.Errorf("after a rejected %s: in doubt %v", c.Op, ids)
		}
	}
	if a := handle(one); a.Reply.Result != messages.Ack || a.Settle != participants.SettleAck {
		t.Fatalf("delivered again: %+v", a)
	}
	if a := handle(onePhase(e, "one", 2, "ok")); a.Reply.Result != messages.Ack {
		t.Fatalf("duplicate: %+v", a)
	}
	if p, c, ab := prepares.Load(), commits.Load(), aborts.Load(); p != 1 || c != 2 || ab != 0 || proc.State("one") != participants.StateCommitted {
		t.Fatalf("Prepare %d, Commit %d, Abort %d, state %s; want 1, 2 (one failed), 0, committed", p, c, ab, proc.State("one"))
	}
}
