package dst

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // the participants' databases

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// part is one participant service: the participant SDK's own code
// (participants.Processor over a participants.Barrier) on an in-memory
// SQLite database, its disk: the database lives as long as the run, across
// the participant's restarts; a restart is a new process (a new Processor,
// nothing kept in memory) that loads what it prepared from the database.
type part struct {
	s    *sim
	name string
	db   *sql.DB
	// check reads the database for the checker.
	check *participants.Barrier
	g     *gate
	drv   *driver
	proc  *participants.Processor
	inc   int
}

var errNoResponders = errors.New("dst: no coordinator is running")
var errAskTimeout = errors.New("dst: no answer to the in-doubt question in time")

func (s *sim) newPart(name string) *part {
	p := &part{s: s, name: name}
	p.openDB()
	s.stream.consume(name, p)
	p.start()
	return p
}

// openDB opens the participant's database: in memory, one connection (an
// in-memory database lives as long as its connection).
func (p *part) openDB() {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		panic(fmt.Sprintf("dst: opening %s's database: %v", p.name, err))
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	for _, ddl := range []string{`CREATE TABLE ledger (txid TEXT PRIMARY KEY, state TEXT NOT NULL)`, sagaLedgerTable} {
		if _, err := db.Exec(ddl); err != nil {
			panic(fmt.Sprintf("dst: creating %s's ledgers: %v", p.name, err))
		}
	}
	p.db = db
	if p.check, err = participants.NewBarrier(p.s.ctx, participants.BarrierConfig{DB: db, Handler: ledger{p}, SagaHandler: sagaLedger{p}}); err != nil {
		panic(fmt.Sprintf("dst: %s's barrier: %v", p.name, err))
	}
}

// start starts a new process: a new Processor over the database, which
// loads what it prepared, and its in-doubt loop.
func (p *part) start() {
	s := p.s
	p.inc++
	p.g = s.s.newGate(p.name)
	p.drv = &driver{g: p.g}
	b, err := participants.NewBarrier(s.ctx, participants.BarrierConfig{DB: p.db, Handler: ledger{p}, SagaHandler: sagaLedger{p}})
	if err == nil {
		p.proc, err = participants.NewProcessor(participants.Config{
			Name: p.name, Barrier: b, Now: p.drv.Now, InDoubtAfter: inDoubtAfter,
			OpTimeout: time.Hour, AckWait: 2 * time.Hour,
		})
	}
	if err == nil {
		err = p.proc.LoadPrepared(s.ctx)
	}
	if err != nil {
		panic(fmt.Sprintf("dst: starting participant %s: %v", p.name, err))
	}
	if p.inc > 1 {
		s.tracef("%s restart with %d prepared in its database", p.name, len(p.proc.InDoubt()))
	}
	g, proc := p.g, p.proc
	ask := func(ctx context.Context, req messages.OutcomeRequest) (messages.OutcomeResponse, error) {
		return p.ask(g, req)
	}
	p.drv.Go(func() {
		for g.state != gateDead {
			if !p.drv.Sleep(inDoubtEvery+s.between(0, 100*time.Millisecond), nil) {
				return
			}
			proc.ResolveInDoubt(s.ctx, ask)
		}
	})
}

func (p *part) up() bool { return p.g.state != gateDead }

// crash kills the process: what it held in memory is gone; it restarts 50
// ms to 3 s later.
func (p *part) crash(why string) {
	s := p.s
	if !p.up() {
		return
	}
	s.st.PartCrashes++
	s.tracef("%s CRASH %s", p.name, why)
	p.g.kill()
	p.proc = nil
	d := s.between(50*time.Millisecond, 3*time.Second)
	if s.healed {
		d = 50 * time.Millisecond
	}
	inc := p.inc
	s.s.at(d, func() {
		if p.inc == inc && !p.up() {
			p.restart()
		}
	})
}

func (p *part) restart() {
	if p.s.cfg.plant == plantVolatileDisk {
		_ = p.db.Close()
		p.openDB()
	}
	p.start()
}

// deliver is the participant's work-queue consumer: the command goes through
// Processor.Handle; the reply goes to the coordinator that sent it; the
// message is settled as the answer says. The process may die before
// handling the command or after handling it and before settling it.
func (p *part) deliver(m *streamMsg) (participants.Settle, bool) {
	s := p.s
	if !p.up() {
		return 0, false
	}
	if p.g.state == gatePaused {
		// The stopped process holds the message: it handles it when it goes
		// on (its late ack is not counted), and the stream redelivers it
		// after AckWait meanwhile.
		p.g.run(func() {
			if p.up() {
				s.tracef("%s goes on with %s", p.name, m)
				p.handle(m)
			}
		})
		return 0, false
	}
	if s.fault(s.f.CrashParticipant) {
		p.crash("before handling " + m.String())
		return 0, false
	}
	a, ok := p.handle(m)
	if !ok {
		return participants.SettleNak, true
	}
	if s.fault(s.f.CrashParticipant) {
		p.crash("after handling " + m.String() + ", before settling it")
		return 0, false
	}
	return a.Settle, true
}

// handle runs one command through the Processor and sends its reply.
func (p *part) handle(m *streamMsg) (participants.Answer, bool) {
	s := p.s
	var a participants.Answer
	answered := false
	if s.cfg.plant == plantBlindCompensation && m.cmd.Op == messages.OpCompensate {
		a, answered = p.blindCompensation(m), true
	} else {
		p.proc.Handle(m.header, m.cmd.Payload, m.cmd.Subject(), func(ans participants.Answer) { a, answered = ans, true })
	}
	if !answered {
		s.violate("%s: Handle did not answer %s", p.name, m)
		return a, false
	}
	if key := sagaKey(m.cmd.TxID, m.cmd.Step); m.cmd.Op == messages.OpCompensate && a.Reply.Result == messages.Ack {
		if _, ok := s.compAcked[key]; !ok {
			s.compAcked[key] = s.s.now
		}
	}
	s.tracef("deliver %s -> %s %s settle=%s", m, a.Reply.Result, a.Reply.Reason, a.Settle)
	if a.Reply.Result == messages.Failed && a.Settle == participants.SettleTerm {
		s.st.Rejected++
	}
	if a.ReplyTo != "" {
		s.reply(a.Reply, a.ReplyTo)
	}
	return a, true
}

// pause stops the process (SIGSTOP) for up to five seconds: the commands
// delivered meanwhile wait in it (and are redelivered after AckWait), its
// in-doubt loop waits.
func (p *part) pause() {
	s := p.s
	s.st.PartPauses++
	d := s.between(50*time.Millisecond, 5*time.Second)
	s.tracef("%s PAUSE for %v", p.name, d)
	g := p.g
	g.pause()
	s.s.at(d, func() {
		if p.g == g && g.state == gatePaused {
			s.tracef("%s resumes", p.name)
			g.resumeGate()
		}
	})
}

// ask sends one in-doubt question to the coordinators' queue group and waits
// for the answer, at most askTimeout. The process may die before asking or
// before applying the answer.
func (p *part) ask(g *gate, req messages.OutcomeRequest) (messages.OutcomeResponse, error) {
	s := p.s
	var none messages.OutcomeResponse
	if g.state == gateDead {
		return none, errDead
	}
	if s.fault(s.f.CrashParticipant) {
		p.crash("before asking about " + req.ID)
		return none, errDead
	}
	w := s.s.newWaiter(g, "in-doubt question")
	c := s.pickCoord()
	var resp messages.OutcomeResponse
	if c == nil {
		s.s.at(time.Millisecond, func() { w.fire(false, errNoResponders) })
	} else {
		s.st.InDoubtQueries++
		s.tracef("%s %s in doubt: asks %s (deadline_ms=%d)", p.name, req.ID, c.name, req.DeadlineMs)
		settled := false
		s.send("outcome question "+req.ID+" "+p.name+" -> "+c.name, func() {
			c.onOutcome(req, func(r messages.OutcomeResponse) {
				s.send("outcome answer "+req.ID+" "+r.Outcome+" -> "+p.name, func() {
					if !settled {
						settled, resp = true, r
						w.fire(true, nil)
					}
				})
			})
		})
		s.s.at(askTimeout, func() {
			if !settled {
				settled = true
				w.fire(false, errAskTimeout)
			}
		})
	}
	if _, err := w.wait(); err != nil {
		return none, err
	}
	if g.state == gateDead {
		return none, errDead
	}
	if s.fault(s.f.CrashParticipant) {
		p.crash("before applying the outcome of " + req.ID)
		return none, errDead
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	if resp.Outcome == messages.OutcomeCommit || resp.Outcome == messages.OutcomeAbort {
		s.st.InDoubtResolved++
		s.tracef("%s %s in doubt: answered %s (%s)", p.name, req.ID, resp.Outcome, resp.Reason)
	}
	return resp, nil
}

// prepared lists what the participant's database holds prepared.
func (p *part) prepared() []string {
	ids, err := p.check.Prepared(p.s.ctx, p.name)
	if err != nil {
		panic(fmt.Sprintf("dst: reading %s's database: %v", p.name, err))
	}
	return ids
}

// ledger is the participant's business: one row per transaction, staged at
// prepare, committed at commit, deleted at abort. A payload "no" votes
// abort; "read-only" votes read-only after staging the row, which the
// barrier must roll back. It checks, as it happens, that no participant commits before a
// commit decision is durable, and none aborts after one is.
type ledger struct{ p *part }

func (l ledger) Prepare(ctx context.Context, dbtx *sql.Tx, tx participants.Tx, payload []byte) error {
	if string(payload) == "no" {
		return errors.New("voted no")
	}
	_, err := dbtx.ExecContext(ctx, `INSERT INTO ledger (txid, state) VALUES (?, 'staged')`, tx.ID)
	if err == nil && string(payload) == "read-only" {
		l.p.s.st.ReadOnlyVotes++
		return participants.ReadOnly // after a write, which the barrier must undo
	}
	return err
}

func (l ledger) Commit(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	s := l.p.s
	if s.fault(s.f.HandlerError) {
		s.st.HandlerErrors++
		return errors.New("commit failed this time")
	}
	if w := s.workBy[tx.ID]; !s.everCommit[tx.ID] && (w == nil || !w.onePhase()) {
		s.violate("%s: %s commits before any commit decision was durable", tx.ID, l.p.name)
	}
	_, err := dbtx.ExecContext(ctx, `UPDATE ledger SET state = 'committed' WHERE txid = ?`, tx.ID)
	return err
}

func (l ledger) Abort(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	s := l.p.s
	if s.fault(s.f.HandlerError) {
		s.st.HandlerErrors++
		return errors.New("abort failed this time")
	}
	if s.everCommit[tx.ID] {
		s.violate("%s: %s aborts although a commit decision is durable", tx.ID, l.p.name)
	}
	_, err := dbtx.ExecContext(ctx, `DELETE FROM ledger WHERE txid = ?`, tx.ID)
	return err
}

// ledgerState is the ledger row of txid: "", "staged" or "committed".
func (p *part) ledgerState(txid string) string {
	var st string
	err := p.db.QueryRow(`SELECT state FROM ledger WHERE txid = ?`, txid).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return ""
	}
	if err != nil {
		panic(fmt.Sprintf("dst: reading %s's ledger: %v", p.name, err))
	}
	return st
}
