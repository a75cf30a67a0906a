package participants_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// coordinatorStub answers the participants' in-doubt questions on
// messages.APIOutcome the way the test says, and keeps every question. It
// stands in for the coordinators, which these tests do not run.
type coordinatorStub struct {
	mu     sync.Mutex
	asked  []messages.OutcomeRequest
	answer func(messages.OutcomeRequest) messages.OutcomeResponse
}

func (e *env) coordinatorStub(answer func(messages.OutcomeRequest) messages.OutcomeResponse) *coordinatorStub {
	e.t.Helper()
	c := &coordinatorStub{answer: answer}
	sub, err := e.nc.Subscribe(messages.APIOutcome, func(m *nats.Msg) {
		var req messages.OutcomeRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			e.t.Errorf("undecodable outcome request %q: %v", m.Data, err)
			return
		}
		c.mu.Lock()
		c.asked = append(c.asked, req)
		answer := c.answer
		c.mu.Unlock()
		data, _ := json.Marshal(answer(req))
		_ = m.Respond(data)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// questions returns the questions received about txid so far.
func (c *coordinatorStub) questions(txid string) []messages.OutcomeRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []messages.OutcomeRequest
	for _, q := range c.asked {
		if q.ID == txid {
			out = append(out, q)
		}
	}
	return out
}

func pending(messages.OutcomeRequest) messages.OutcomeResponse {
	return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "still collecting votes"}
}

func answerAbort(messages.OutcomeRequest) messages.OutcomeResponse {
	return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "abort recorded"}
}

// TestRestartedParticipantAsksWithTheDeadline (issue 9, finding 2): a
// participant that voted commit and restarted must ask about the
// transaction with its deadline, which the barrier keeps with the prepare;
// without it, a coordinator that is not the owner may record abort while the
// owner still collects votes.
func TestRestartedParticipantAsksWithTheDeadline(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		stub := r.coordinatorStub(pending)
		deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)

		cfg := testConfig(nil, nil)
		cfg.Barrier = r.barrier(t)
		cfg.InDoubtAfter = -1 // the first process never asks: only the restarted one's questions count
		first := r.start(r.nc, cfg)
		prep := r.cmd("tx1", messages.OpPrepare, 1)
		prep.Deadline = deadline
		r.expect(prep, messages.VoteCommit, "")
		first.Stop()

		cfg.Barrier = r.barrier(t) // the restarted process: a new barrier, nothing in memory
		cfg.InDoubtAfter = 50 * time.Millisecond
		second := r.start(r.nc, cfg)
		eventually(t, "the restarted participant to ask about tx1", func() bool { return len(stub.questions("tx1")) > 0 })
		for _, q := range stub.questions("tx1") {
			if q.DeadlineMs != deadline.UnixMilli() || q.Participant != svc {
				t.Fatalf("question %+v, want participant %s and deadline_ms %d (%s)", q, svc, deadline.UnixMilli(), deadline)
			}
		}
		if n := second.Stats().InDoubt; n != 1 {
			t.Fatalf("%d in doubt after pending answers, want 1", n)
		}
	})
}

// TestBarrierMigratesATableWithoutDeadlines: a barrier table created before
// deadlines were kept gets the column; the rows it held still load (their
// deadline unknown), and new prepares keep theirs across a restart.
func TestBarrierMigratesATableWithoutDeadlines(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		old := `CREATE TABLE ` + r.table + ` (
	participant TEXT NOT NULL,
	txid        TEXT NOT NULL,
	op          TEXT NOT NULL,
	result      TEXT NOT NULL,
	reason      TEXT NOT NULL,
	at_ms       BIGINT NOT NULL,
	PRIMARY KEY (participant, txid, op))`
		if _, err := r.sqldb.Exec(old); err != nil {
			t.Fatal(err)
		}
		ins := `INSERT INTO ` + r.table + ` (participant, txid, op, result, reason, at_ms) VALUES ('` + svc + `', 'old', 'prepare', 'vote-commit', '', 1)`
		if _, err := r.sqldb.Exec(ins); err != nil {
			t.Fatal(err)
		}
		// Its staged effect, as the ledger's prepare would have left it.
		if _, err := r.sqldb.Exec(`INSERT INTO ` + r.ledger.table + ` (txid, state) VALUES ('old', 'staged')`); err != nil {
			t.Fatal(err)
		}
		stub := r.coordinatorStub(pending)
		deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
		cfg := testConfig(nil, nil)
		cfg.Barrier = r.barrier(t)
		cfg.InDoubtAfter = -1
		first := r.start(r.nc, cfg)
		prep := r.cmd("new", messages.OpPrepare, 1)
		prep.Deadline = deadline
		r.expect(prep, messages.VoteCommit, "")
		first.Stop()

		cfg.Barrier = r.barrier(t)
		cfg.InDoubtAfter = 50 * time.Millisecond
		r.start(r.nc, cfg)
		eventually(t, "questions about both transactions", func() bool {
			return len(stub.questions("old")) > 0 && len(stub.questions("new")) > 0
		})
		if q := stub.questions("new")[0]; q.DeadlineMs != deadline.UnixMilli() {
			t.Fatalf("question about the new transaction %+v, want deadline_ms %d", q, deadline.UnixMilli())
		}
		if q := stub.questions("old")[0]; q.DeadlineMs != 0 {
			t.Fatalf("question about the old row %+v: its deadline is unknown, want 0", q)
		}
		// The old row still commits.
		r.expect(r.cmd("old", messages.OpCommit, 1), messages.Ack, "")
		if s := r.ledger.state(t, r.sqldb, "old"); s != "applied" {
			t.Fatalf("old: effect %s, want applied", s)
		}
	})
}

// TestDuplicatePrepareAfterTheOutcomeIsNotInDoubt (issue 9, finding 6): a
// late duplicate prepare of a transaction that committed or aborted is
// answered from the record and does not put the transaction back in doubt,
// in memory and with a barrier.
func TestDuplicatePrepareAfterTheOutcomeIsNotInDoubt(t *testing.T) {
	check := func(t *testing.T, e *env, rt *participants.Runtime) {
		t.Helper()
		e.expect(e.cmd("c", messages.OpPrepare, 1), messages.VoteCommit, "")
		e.expect(e.cmd("c", messages.OpCommit, 1), messages.Ack, "")
		e.expect(e.cmd("c", messages.OpPrepare, 2), messages.VoteCommit, "")
		e.expect(e.cmd("a", messages.OpPrepare, 1), messages.VoteCommit, "")
		e.expect(e.cmd("a", messages.OpAbort, 1), messages.Ack, "")
		e.expect(e.cmd("a", messages.OpPrepare, 2), messages.VoteAbort, participants.ReasonAborted)
		e.expect(e.cmd("open", messages.OpPrepare, 1), messages.VoteCommit, "")
		e.expect(e.cmd("open", messages.OpPrepare, 2), messages.VoteCommit, "")
		if n := rt.Stats().InDoubt; n != 1 {
			t.Fatalf("%d in doubt, want 1 (only the transaction still prepared)", n)
		}
	}
	t.Run("memory", func(t *testing.T) {
		e := newEnv(t, true)
		cfg := testConfig(newRecorder(), nil)
		cfg.InDoubtAfter = -1
		check(t, e, e.start(e.nc, cfg))
	})
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		cfg := testConfig(nil, nil)
		cfg.Barrier = r.barrier(t)
		cfg.InDoubtAfter = -1
		check(t, r.env, r.start(r.nc, cfg))
	})
}

// TestInDoubtAnswerThatContradictsTheRecord (issue 9, findings 6 and 7): two
// instances share one database; the one that prepared holds the transaction
// in doubt and asks, and while the question is out the other instance
// commits it. The (wrong) abort answer contradicts the barrier: the
// transaction leaves the doubt set, one error line says so, and nothing
// keeps asking.
func TestInDoubtAnswerThatContradictsTheRecord(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		log, logs := observed()
		cfg := testConfig(nil, log)
		cfg.Barrier = r.barrier(t)
		cfg.InDoubtAfter = 50 * time.Millisecond
		other := r.otherInstance(t)
		var once sync.Once
		stub := r.coordinatorStub(func(req messages.OutcomeRequest) messages.OutcomeResponse {
			once.Do(func() { other.commit(t, req.ID) }) // while the question is out
			return answerAbort(req)
		})
		rt := r.start(r.nc, cfg)
		r.expect(r.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
		eventually(t, "tx1 to leave the doubt set", func() bool { return rt.Stats().InDoubt == 0 })
		asked := len(stub.questions("tx1"))
		// Twenty more in-doubt periods: nothing asks about tx1 again.
		time.Sleep(20 * cfg.InDoubtAfter)
		if n := len(stub.questions("tx1")); n != asked {
			t.Fatalf("asked about tx1 %d more times after it left the doubt set", n-asked)
		}
		if lines := errorLines(logs); len(lines) != 1 || !strings.Contains(lines[0], "contradicts") {
			t.Fatalf("error lines %q, want exactly one about the contradiction", lines)
		}
		if st := rt.Stats(); st.InDoubtContradicted != 1 {
			t.Fatalf("stats %+v, want InDoubtContradicted 1", st)
		}
		if s := rt.State("tx1"); s != participants.StateCommitted {
			t.Fatalf("tx1 %s, want committed", s)
		}
	})
}

// TestInDoubtNotAskedWhenAnotherInstanceDecided (issue 9, findings 6 and 7):
// the instance that prepared holds the transaction in doubt while another
// instance sharing the database commits it; when its in-doubt time comes
// (on its own clock, Config.Now), it finds the outcome in the barrier and
// asks nothing, so no coordinator can be led to record abort for a
// committed transaction.
func TestInDoubtNotAskedWhenAnotherInstanceDecided(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		stub := r.coordinatorStub(answerAbort) // a wrong answer, never to be asked for
		log, logs := observed()
		var mu sync.Mutex
		now := time.Now()
		cfg := testConfig(nil, log)
		cfg.Barrier = r.barrier(t)
		cfg.InDoubtAfter = 50 * time.Millisecond
		cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		rt := r.start(r.nc, cfg)
		r.expect(r.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
		r.otherInstance(t).commit(t, "tx1")
		if n := rt.Stats().InDoubt; n != 1 {
			t.Fatalf("%d in doubt before the in-doubt time, want 1", n)
		}
		mu.Lock()
		now = now.Add(time.Minute) // the in-doubt time has come
		mu.Unlock()
		eventually(t, "tx1 to leave the doubt set", func() bool { return rt.Stats().InDoubt == 0 })
		time.Sleep(20 * cfg.InDoubtAfter)
		if n := len(stub.questions("tx1")); n != 0 {
			t.Fatalf("asked %d questions about a transaction the barrier holds committed", n)
		}
		if lines := errorLines(logs); len(lines) != 0 {
			t.Fatalf("error lines %q", lines)
		}
		if s := rt.State("tx1"); s != participants.StateCommitted {
			t.Fatalf("tx1 %s, want committed", s)
		}
	})
}

// instance is a second participant instance on the rig's database, driven
// directly through its Processor.
type instance struct {
	r    *barrierRig
	proc *participants.Processor
}

func (r *barrierRig) otherInstance(t *testing.T) *instance {
	t.Helper()
	cfg := testConfig(nil, nil)
	cfg.Barrier = r.barrier(t)
	cfg.InDoubtAfter = -1
	proc, err := participants.NewProcessor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &instance{r: r, proc: proc}
}

// commit handles a commit of txid on the instance and checks it is
// acknowledged.
func (i *instance) commit(t *testing.T, txid string) {
	c := i.r.cmd(txid, messages.OpCommit, 1)
	var got participants.Answer
	i.proc.Handle(c.Header(), nil, c.Subject(), func(a participants.Answer) { got = a })
	if got.Reply.Result != messages.Ack {
		t.Errorf("commit of %s on the other instance: %+v", txid, got.Reply)
	}
}

// errorLines returns the log lines at error level or above.
func errorLines(logs *observer.ObservedLogs) []string {
	var lines []string
	for _, l := range logs.All() {
		if l.Level >= zapcore.ErrorLevel {
			lines = append(lines, fmt.Sprintf("%s %v", l.Message, l.ContextMap()))
		}
	}
	return lines
}

// TestProcessorResolvesInDoubtOnItsOwnClock: the in-doubt contract without
// a transport, as a simulator drives it: Config.Now is the only clock,
// LoadPrepared fills the doubt set from the barrier with deadlines, and
// ResolveInDoubt asks only about what has been in doubt for InDoubtAfter,
// in the order of the IDs, and applies commit and abort answers.
func TestProcessorResolvesInDoubtOnItsOwnClock(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		var mu sync.Mutex
		now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
		newProc := func() *participants.Processor {
			cfg := testConfig(nil, nil)
			cfg.Barrier = r.barrier(t)
			cfg.InDoubtAfter = time.Minute
			cfg.Now = clock
			p, err := participants.NewProcessor(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		p := newProc()
		deadline := now.Add(time.Hour)
		for _, id := range []string{"b", "a", "c"} {
			c := r.cmd(id, messages.OpPrepare, 1)
			c.Deadline = deadline
			p.Handle(c.Header(), nil, c.Subject(), func(a participants.Answer) {
				if a.Reply.Result != messages.VoteCommit {
					t.Fatalf("prepare %s: %+v", id, a.Reply)
				}
			})
		}
		// A restart: a new Processor, nothing in memory.
		p = newProc()
		if err := p.LoadPrepared(context.Background()); err != nil {
			t.Fatal(err)
		}
		var asked []messages.OutcomeRequest
		answers := map[string]string{"a": messages.OutcomeCommit, "b": messages.OutcomeAbort, "c": messages.OutcomePending}
		ask := func(_ context.Context, req messages.OutcomeRequest) (messages.OutcomeResponse, error) {
			asked = append(asked, req)
			return messages.OutcomeResponse{Outcome: answers[req.ID]}, nil
		}
		if n, _ := p.ResolveInDoubt(context.Background(), ask); n != 0 {
			t.Fatalf("asked %d questions before InDoubtAfter passed on the Processor's clock", n)
		}
		advance(time.Minute)
		n, resolved := p.ResolveInDoubt(context.Background(), ask)
		if n != 3 || resolved != 2 {
			t.Fatalf("asked %d, resolved %d; want 3 and 2", n, resolved)
		}
		for i, id := range []string{"a", "b", "c"} {
			if q := asked[i]; q.ID != id || q.DeadlineMs != deadline.UnixMilli() || q.Participant != svc {
				t.Fatalf("question %d: %+v, want %s with deadline_ms %d", i, q, id, deadline.UnixMilli())
			}
		}
		if sa, sb, sc := p.State("a"), p.State("b"), p.State("c"); sa != participants.StateCommitted || sb != participants.StateAborted || sc != participants.StatePrepared {
			t.Fatalf("states a %s, b %s, c %s; want committed, aborted, prepared", sa, sb, sc)
		}
		if ids := p.InDoubt(); len(ids) != 1 || ids[0] != "c" {
			t.Fatalf("in doubt %v, want [c]", ids)
		}
		if st := p.Stats(); st.InDoubtQueries != 3 || st.InDoubtResolved != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestInDoubtNotAskedOnceTheOutcomeArrived: ResolveInDoubt lists what is in
// doubt once, then asks one question at a time, each waiting up to its
// timeout. A commit that arrives for a listed transaction while an earlier
// question waits must take it off the list: asked later, after the
// coordinators' records of the commit expired, the question would lead one
// of them to presume and record abort for a transaction committed
// everywhere (seen in the paused-coordinator process test). This
// participant keeps no barrier, so only its memory knows.
func TestInDoubtNotAskedOnceTheOutcomeArrived(t *testing.T) {
	rec := newRecorder()
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := testConfig(rec, nil)
	cfg.InDoubtAfter = time.Minute
	cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	p, err := participants.NewProcessor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	handle := func(id string, op messages.Op, want messages.Result) {
		t.Helper()
		c := messages.Command{TxID: id, Op: op, Participant: svc, Attempt: 1, ReplyTo: messages.ReplySubject("test", svc), Deadline: now.Add(time.Hour)}
		p.Handle(c.Header(), nil, c.Subject(), func(a participants.Answer) {
			if a.Reply.Result != want {
				t.Errorf("%s of %s: %+v, want %s", op, id, a.Reply, want)
			}
		})
	}
	handle("a", messages.OpPrepare, messages.VoteCommit)
	handle("b", messages.OpPrepare, messages.VoteCommit)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	var asked []string
	ask := func(_ context.Context, req messages.OutcomeRequest) (messages.OutcomeResponse, error) {
		asked = append(asked, req.ID)
		if req.ID == "a" {
			// While this question waits, b's commit arrives.
			handle("b", messages.OpCommit, messages.Ack)
		}
		return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "no commit decision by the deadline (presumed abort, now recorded)"}, nil
	}
	n, resolved := p.ResolveInDoubt(context.Background(), ask)
	if n != 1 || resolved != 1 || len(asked) != 1 || asked[0] != "a" {
		t.Fatalf("asked %v (%d questions, %d resolved); want only a: b's commit arrived before its question", asked, n, resolved)
	}
	if sa, sb := p.State("a"), p.State("b"); sa != participants.StateAborted || sb != participants.StateCommitted {
		t.Fatalf("states a %s, b %s; want aborted, committed", sa, sb)
	}
	if st := p.Stats(); st.InDoubtContradicted != 0 || st.InDoubt != 0 {
		t.Fatalf("stats %+v: want nothing contradicted, nothing in doubt", st)
	}
}
