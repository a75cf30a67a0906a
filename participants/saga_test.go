package participants_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// sagaEffects is a saga handler's record of effects, in memory or in a SQL
// table: the action sets a step's effect to "done", the compensation to
// "compensated". The payload "no" refuses the action (code out-of-stock).
type sagaEffects interface {
	// n counts successful handler calls of op for step of saga.
	n(op messages.Op, saga, step string) int
	// effect is the step's effect, or "none".
	effect(t *testing.T, saga, step string) string
	// failNext makes the next call of op fail with err.
	failNext(op messages.Op, err error)
}

// counts is the call counting and failure injection both kinds share.
type counts struct {
	mu    sync.Mutex
	calls map[string]int
	fail  map[messages.Op]error
}

func newCounts() counts { return counts{calls: map[string]int{}, fail: map[messages.Op]error{}} }

// call fails if told to, or refuses a "no" action, or counts the call.
func (c *counts) call(op messages.Op, st participants.Step, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fail[op]; err != nil {
		delete(c.fail, op)
		return err
	}
	if op == messages.OpAction && string(payload) == "no" {
		return participants.Refuse("out-of-stock", "out of stock: 2 of widget")
	}
	c.calls[string(op)+" "+st.SagaID+"/"+st.Name]++
	return nil
}

func (c *counts) n(op messages.Op, saga, step string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[string(op)+" "+saga+"/"+step]
}

func (c *counts) failNext(op messages.Op, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail[op] = err
}

// memEffects is a SagaHandler with its effects in memory.
type memEffects struct {
	counts
	mu      sync.Mutex
	effects map[string]string
}

func (m *memEffects) Action(_ context.Context, st participants.Step, payload []byte) error {
	if err := m.call(messages.OpAction, st, payload); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.effects[st.SagaID+"/"+st.Name] != "" {
		return fmt.Errorf("action of %s/%s applied twice", st.SagaID, st.Name)
	}
	m.effects[st.SagaID+"/"+st.Name] = "done"
	return nil
}

func (m *memEffects) Compensate(_ context.Context, st participants.Step, payload []byte) error {
	if err := m.call(messages.OpCompensate, st, payload); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.effects[st.SagaID+"/"+st.Name] != "done" {
		return fmt.Errorf("compensation of %s/%s whose effect is %q", st.SagaID, st.Name, m.effects[st.SagaID+"/"+st.Name])
	}
	m.effects[st.SagaID+"/"+st.Name] = "compensated"
	return nil
}

func (m *memEffects) effect(_ *testing.T, saga, step string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.effects[saga+"/"+step]; e != "" {
		return e
	}
	return "none"
}

// sqlEffects is a SQLSagaHandler with its effects in a table.
type sqlEffects struct {
	counts
	db      *sql.DB
	dialect participants.Dialect
	table   string
}

func newSQLEffects(t *testing.T, db *sql.DB, dialect participants.Dialect) *sqlEffects {
	t.Helper()
	s := &sqlEffects{counts: newCounts(), db: db, dialect: dialect, table: "saga_effects_" + nuid.Next()}
	if _, err := db.Exec(`CREATE TABLE ` + s.table + ` (k TEXT PRIMARY KEY, state TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.Exec(`DROP TABLE ` + s.table) })
	return s
}

// q rewrites '?' for PostgreSQL.
func (s *sqlEffects) q(q string) string {
	if s.dialect != participants.Postgres {
		return q
	}
	for i := 1; strings.Contains(q, "?"); i++ {
		q = strings.Replace(q, "?", fmt.Sprintf("$%d", i), 1)
	}
	return q
}

func (s *sqlEffects) Action(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	// The row is written before the handler's verdict, so a refused or
	// failed action proves the barrier rolls it back.
	if _, err := dbtx.ExecContext(ctx, s.q(`INSERT INTO `+s.table+` (k, state) VALUES (?, 'done')`), st.SagaID+"/"+st.Name); err != nil {
		return err
	}
	return s.call(messages.OpAction, st, payload)
}

func (s *sqlEffects) Compensate(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	res, err := dbtx.ExecContext(ctx, s.q(`UPDATE `+s.table+` SET state = 'compensated' WHERE k = ? AND state = 'done'`), st.SagaID+"/"+st.Name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("compensation of %s/%s: %d done rows, want 1", st.SagaID, st.Name, n)
	}
	return s.call(messages.OpCompensate, st, payload)
}

func (s *sqlEffects) effect(t *testing.T, saga, step string) string {
	t.Helper()
	var e string
	err := s.db.QueryRow(s.q(`SELECT state FROM `+s.table+` WHERE k = ?`), saga+"/"+step).Scan(&e)
	if errors.Is(err, sql.ErrNoRows) {
		return "none"
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// sagaKind is one way to keep the saga record: in memory, or a barrier on a
// database. newProc returns a new Processor on the same record (for a
// barrier, a restart on a new database handle; in memory, the same one).
type sagaKind struct {
	name    string
	effects sagaEffects
	newProc func(t *testing.T) *participants.Processor
}

// sagaKinds returns the in-memory kind and one barrier kind per database.
func sagaKinds(t *testing.T) []sagaKind {
	mem := &memEffects{counts: newCounts(), effects: map[string]string{}}
	cfg := testConfig(nil, nil)
	cfg.SagaHandler = mem
	memProc, err := participants.NewProcessor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kinds := []sagaKind{{name: "memory", effects: mem, newProc: func(*testing.T) *participants.Processor { return memProc }}}
	for _, db := range databases(t) {
		sqldb := db.open(t)
		effects := newSQLEffects(t, sqldb, db.dialect)
		table := "natstx_barrier_" + nuid.Next()
		t.Cleanup(func() { _, _ = sqldb.Exec(`DROP TABLE ` + table) })
		kinds = append(kinds, sagaKind{name: db.name, effects: effects, newProc: func(t *testing.T) *participants.Processor {
			b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{
				DB: db.open(t), Dialect: db.dialect, Table: table, SagaHandler: effects,
			})
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(nil, nil)
			cfg.Barrier = b
			// The default OpTimeout: under -race on 2 shared cores, a
			// command of TestSagaBarrierConcurrentInstances may wait more
			// than a second for SQLite's one connection.
			cfg.AckWait, cfg.OpTimeout = 0, 0
			p, err := participants.NewProcessor(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}})
	}
	return kinds
}

// forEachSagaKind runs f once per kind, as subtests.
func forEachSagaKind(t *testing.T, f func(t *testing.T, k sagaKind)) {
	for _, k := range sagaKinds(t) {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

// sagaCmd is a saga command to svc.
func sagaCmd(saga string, op messages.Op, step string, attempt int, payload string) messages.Command {
	c := messages.Command{TxID: saga, Op: op, Participant: svc, Attempt: attempt, ReplyTo: messages.ReplySubject("test", svc), Step: step}
	if payload != "" {
		c.Payload = []byte(payload)
	}
	return c
}

// handle runs cmd through p and returns its answer.
func handle(t *testing.T, p *participants.Processor, cmd messages.Command) participants.Answer {
	t.Helper()
	var got *participants.Answer
	p.Handle(cmd.Header(), cmd.Payload, cmd.Subject(), func(a participants.Answer) { got = &a })
	if got == nil {
		t.Fatalf("%s %s/%s: no answer", cmd.Op, cmd.TxID, cmd.Step)
	}
	return *got
}

// expectSaga runs cmd through p and checks the reply: result, reason ("*"
// for any), code, the echoed step, and that it is settled with ack.
func expectSaga(t *testing.T, p *participants.Processor, cmd messages.Command, result messages.Result, reason, code string) {
	t.Helper()
	a := handle(t, p, cmd)
	r := a.Reply
	if a.ReplyTo != cmd.ReplyTo || r.TxID != cmd.TxID || r.Op != cmd.Op || r.Step != cmd.Step || r.Attempt != cmd.Attempt ||
		r.Result != result || reason != "*" && r.Reason != reason || r.Code != code || a.Settle != participants.SettleAck {
		t.Fatalf("%s %s/%s attempt %d: got %+v settle %s, want result %q reason %q code %q settle ack",
			cmd.Op, cmd.TxID, cmd.Step, cmd.Attempt, a, a.Settle, result, reason, code)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("%s %s/%s: invalid reply: %v", cmd.Op, cmd.TxID, cmd.Step, err)
	}
}

// TestSagaBarrierRules checks every saga rule of the barrier, in memory and
// on each database: idempotent action and compensation, refusal with its
// code, null compensation then a late action refused, a refused action's
// compensation a no-op, a failed attempt that stays failed, and no action
// after its compensation.
func TestSagaBarrierRules(t *testing.T) {
	forEachSagaKind(t, func(t *testing.T, k sagaKind) {
		p, fx := k.newProc(t), k.effects
		const step = "reserve"
		checkCalls := func(saga string, actions, compensations int) {
			t.Helper()
			if a, c := fx.n(messages.OpAction, saga, step), fx.n(messages.OpCompensate, saga, step); a != actions || c != compensations {
				t.Fatalf("%s: handler did %d actions and %d compensations, want %d and %d", saga, a, c, actions, compensations)
			}
		}
		checkState := func(saga string, want participants.StepState, effect string) {
			t.Helper()
			if s := p.StepState(saga, step); s != want {
				t.Fatalf("%s: step state %s, want %s", saga, s, want)
			}
			if e := fx.effect(t, saga, step); e != effect {
				t.Fatalf("%s: effect %s, want %s", saga, e, effect)
			}
		}

		// Action done; a duplicate answers the same without the handler.
		expectSaga(t, p, sagaCmd("s1", messages.OpAction, step, 1, "go"), messages.Ack, "", "")
		expectSaga(t, p, sagaCmd("s1", messages.OpAction, step, 2, "go"), messages.Ack, "", "")
		checkCalls("s1", 1, 0)
		checkState("s1", participants.StepDone, "done")
		// Compensation after the action, then a duplicate, then a late
		// duplicate action: the action is not done again.
		expectSaga(t, p, sagaCmd("s1", messages.OpCompensate, step, 1, "undo"), messages.Ack, "", "")
		expectSaga(t, p, sagaCmd("s1", messages.OpCompensate, step, 2, "undo"), messages.Ack, "", "")
		expectSaga(t, p, sagaCmd("s1", messages.OpAction, step, 3, "go"), messages.Ack, "", "")
		checkCalls("s1", 1, 1)
		checkState("s1", participants.StepCompensated, "compensated")

		// Refused: the reason and code, the same for a duplicate; nothing
		// of the refused action remains; its compensation is a no-op ack.
		expectSaga(t, p, sagaCmd("s2", messages.OpAction, step, 1, "no"), messages.Refused, "out of stock: 2 of widget", "out-of-stock")
		expectSaga(t, p, sagaCmd("s2", messages.OpAction, step, 2, "no"), messages.Refused, "out of stock: 2 of widget", "out-of-stock")
		expectSaga(t, p, sagaCmd("s2", messages.OpCompensate, step, 1, "undo"), messages.Ack, "*", "")
		expectSaga(t, p, sagaCmd("s2", messages.OpCompensate, step, 2, "undo"), messages.Ack, "*", "")
		checkCalls("s2", 0, 0)
		checkState("s2", participants.StepRefused, "none")

		// Null compensation: ack without the handler; the late action is
		// refused, saying it was compensated first, and never done.
		expectSaga(t, p, sagaCmd("s3", messages.OpCompensate, step, 1, "undo"), messages.Ack, "*", "")
		expectSaga(t, p, sagaCmd("s3", messages.OpAction, step, 1, "go"), messages.Refused, participants.ReasonCompensatedFirst, participants.CodeCompensatedFirst)
		expectSaga(t, p, sagaCmd("s3", messages.OpCompensate, step, 2, "undo"), messages.Ack, "", "")
		checkCalls("s3", 0, 0)
		checkState("s3", participants.StepCompensatedFirst, "none")

		// A failed action (with a code): nothing remains, a redelivery of
		// that attempt stays failed without the handler, the next attempt
		// does it.
		fx.failNext(messages.OpAction, participants.WithCode("card-declined", errors.New("provider down")))
		expectSaga(t, p, sagaCmd("s4", messages.OpAction, step, 1, "go"), messages.Failed, "provider down", "card-declined")
		checkState("s4", participants.StepNone, "none")
		redelivered := sagaCmd("s4", messages.OpAction, step, 1, "go")
		expectSaga(t, p, redelivered, messages.Failed, participants.ReasonAttemptFailed, "")
		checkCalls("s4", 0, 0)
		expectSaga(t, p, sagaCmd("s4", messages.OpAction, step, 2, "go"), messages.Ack, "", "")
		checkCalls("s4", 1, 0)
		// A failed compensation is answered failed and retried, then done
		// once; a refusal from a compensation is a failure too.
		fx.failNext(messages.OpCompensate, errors.New("ledger locked"))
		expectSaga(t, p, sagaCmd("s4", messages.OpCompensate, step, 1, ""), messages.Failed, "ledger locked", "")
		fx.failNext(messages.OpCompensate, participants.Refuse("nope", "will not"))
		expectSaga(t, p, sagaCmd("s4", messages.OpCompensate, step, 2, ""), messages.Failed, participants.ReasonCompensationRefused+"will not", "nope")
		checkState("s4", participants.StepDone, "done")
		expectSaga(t, p, sagaCmd("s4", messages.OpCompensate, step, 3, ""), messages.Ack, "", "")
		checkCalls("s4", 1, 1)
		checkState("s4", participants.StepCompensated, "compensated")

		// Compensation after failed attempts only: a null compensation.
		fx.failNext(messages.OpAction, errors.New("timeout upstream"))
		expectSaga(t, p, sagaCmd("s5", messages.OpAction, step, 1, "go"), messages.Failed, "timeout upstream", "")
		expectSaga(t, p, sagaCmd("s5", messages.OpCompensate, step, 1, ""), messages.Ack, "*", "")
		expectSaga(t, p, sagaCmd("s5", messages.OpAction, step, 2, "go"), messages.Refused, participants.ReasonCompensatedFirst, participants.CodeCompensatedFirst)
		checkCalls("s5", 0, 0)

		// Steps are separate: another step of saga s1 is untouched.
		expectSaga(t, p, sagaCmd("s1", messages.OpAction, "charge", 1, "go"), messages.Ack, "", "")
		if s := p.StepState("s1", "charge"); s != participants.StepDone {
			t.Fatalf("s1/charge: %s, want done", s)
		}
		st := p.Stats()
		if st.Actions == 0 || st.Compensations == 0 || st.Duplicates == 0 || st.InDoubt != 0 {
			t.Fatalf("stats %+v: want actions, compensations and duplicates counted, nothing in doubt", st)
		}
	})
}

// TestSagaBarrierRestart: a new Processor on a new handle of the database
// answers duplicates the way the first did (the refusal with its code
// included) and compensates what the first did, once.
func TestSagaBarrierRestart(t *testing.T) {
	for _, k := range sagaKinds(t)[1:] {
		t.Run(k.name, func(t *testing.T) {
			first := k.newProc(t)
			expectSaga(t, first, sagaCmd("r1", messages.OpAction, "book", 1, "go"), messages.Ack, "", "")
			expectSaga(t, first, sagaCmd("r2", messages.OpAction, "book", 1, "no"), messages.Refused, "out of stock: 2 of widget", "out-of-stock")
			expectSaga(t, first, sagaCmd("r3", messages.OpCompensate, "book", 1, ""), messages.Ack, "*", "")
			k.effects.failNext(messages.OpAction, errors.New("busy"))
			expectSaga(t, first, sagaCmd("r4", messages.OpAction, "book", 1, "go"), messages.Failed, "busy", "")

			second := k.newProc(t)
			expectSaga(t, second, sagaCmd("r1", messages.OpAction, "book", 2, "go"), messages.Ack, "", "")
			expectSaga(t, second, sagaCmd("r2", messages.OpAction, "book", 2, "no"), messages.Refused, "out of stock: 2 of widget", "out-of-stock")
			expectSaga(t, second, sagaCmd("r3", messages.OpAction, "book", 1, "go"), messages.Refused, participants.ReasonCompensatedFirst, participants.CodeCompensatedFirst)
			expectSaga(t, second, sagaCmd("r4", messages.OpAction, "book", 1, "go"), messages.Failed, participants.ReasonAttemptFailed, "")
			expectSaga(t, second, sagaCmd("r1", messages.OpCompensate, "book", 1, ""), messages.Ack, "", "")
			expectSaga(t, second, sagaCmd("r1", messages.OpCompensate, "book", 2, ""), messages.Ack, "", "")
			if a, c := k.effects.n(messages.OpAction, "r1", "book"), k.effects.n(messages.OpCompensate, "r1", "book"); a != 1 || c != 1 {
				t.Fatalf("r1: %d actions, %d compensations across the restart, want 1 and 1", a, c)
			}
			if e := k.effects.effect(t, "r1", "book"); e != "compensated" {
				t.Fatalf("r1: effect %s, want compensated", e)
			}
		})
	}
}

// TestSagaBarrierConcurrentInstances: two processors on two handles of one
// database receive every action and compensation of 30 steps three times
// at once, in random interleavings. Every step ends either done then
// compensated once, or compensated first with no effect, never both.
func TestSagaBarrierConcurrentInstances(t *testing.T) {
	for _, k := range sagaKinds(t)[1:] {
		t.Run(k.name, func(t *testing.T) {
			procs := []*participants.Processor{k.newProc(t), k.newProc(t)}
			const steps = 30
			var wg sync.WaitGroup
			answers := make(chan participants.Answer, steps*2*3*len(procs))
			for i := range steps {
				saga := fmt.Sprintf("c%02d", i)
				for _, op := range []messages.Op{messages.OpAction, messages.OpCompensate} {
					for attempt := 1; attempt <= 3; attempt++ {
						for _, p := range procs {
							wg.Add(1)
							go func() {
								defer wg.Done()
								cmd := sagaCmd(saga, op, "s", attempt, "go")
								p.Handle(cmd.Header(), cmd.Payload, cmd.Subject(), func(a participants.Answer) { answers <- a })
							}()
						}
					}
				}
			}
			wg.Wait()
			close(answers)
			for a := range answers {
				if a.Reply.Result == messages.Failed || a.Settle != participants.SettleAck {
					t.Errorf("answer %+v settle %s: no command may fail here", a.Reply, a.Settle)
				}
			}
			for i := range steps {
				saga := fmt.Sprintf("c%02d", i)
				acts, comps := k.effects.n(messages.OpAction, saga, "s"), k.effects.n(messages.OpCompensate, saga, "s")
				effect := k.effects.effect(t, saga, "s")
				state := procs[0].StepState(saga, "s")
				ok := acts == 1 && comps == 1 && effect == "compensated" && state == participants.StepCompensated ||
					acts == 0 && comps == 0 && effect == "none" && state == participants.StepCompensatedFirst
				if !ok {
					t.Errorf("%s: %d actions, %d compensations, effect %s, state %s", saga, acts, comps, effect, state)
				}
			}
		})
	}
}

// TestSagaCommandOfAKindNotImplemented: a participant with only a 2PC
// handler answers saga commands failed with the reason and terminates them,
// and one with only a saga handler does the same for 2PC commands.
func TestSagaCommandOfAKindNotImplemented(t *testing.T) {
	twoPC, err := participants.NewProcessor(testConfig(newRecorder(), nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []messages.Op{messages.OpAction, messages.OpCompensate} {
		a := handle(t, twoPC, sagaCmd("x1", op, "s", 1, ""))
		if a.Reply.Result != messages.Failed || a.Reply.Reason != participants.ReasonNoSagaHandler || a.Reply.Step != "s" || a.Settle != participants.SettleTerm {
			t.Errorf("%s to a 2PC-only participant: %+v settle %s", op, a.Reply, a.Settle)
		}
	}
	cfg := testConfig(nil, nil)
	cfg.SagaHandler = participants.SagaHandlerFuncs{}
	sagaOnly, err := participants.NewProcessor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []messages.Op{messages.OpPrepare, messages.OpCommit, messages.OpAbort} {
		c := messages.Command{TxID: "x2", Op: op, Participant: svc, Attempt: 1, ReplyTo: messages.ReplySubject("test", svc)}
		a := handle(t, sagaOnly, c)
		if a.Reply.Result != messages.Failed || a.Reply.Reason != participants.ReasonNoTwoPhaseHandler || a.Settle != participants.SettleTerm {
			t.Errorf("%s to a saga-only participant: %+v settle %s", op, a.Reply, a.Settle)
		}
	}
	// commit-one-phase, which only the participant decides, is refused for
	// good rather than failed (which its coordinator would re-send for ever).
	one := messages.Command{TxID: "x4", Op: messages.OpCommitOnePhase, Participant: svc, Attempt: 1, ReplyTo: messages.ReplySubject("test", svc)}
	if a := handle(t, sagaOnly, one); a.Reply.Result != messages.VoteAbort || a.Reply.Reason != participants.ReasonNoTwoPhaseHandler || a.Settle != participants.SettleTerm {
		t.Errorf("commit-one-phase to a saga-only participant: %+v settle %s, want vote-abort, terminated", a.Reply, a.Settle)
	}
	if st := twoPC.Stats().Unsupported + sagaOnly.Stats().Unsupported; st != 6 {
		t.Errorf("Unsupported counted %d, want 6", st)
	}
	// And the saga-only participant does saga steps.
	expectSaga(t, sagaOnly, sagaCmd("x3", messages.OpAction, "s", 1, ""), messages.Ack, "", "")
}

// TestSagaConfigValidate: a saga-only participant is valid in memory and
// behind a barrier; a barrier with neither handler is not.
func TestSagaConfigValidate(t *testing.T) {
	if err := (participants.Config{Name: svc, SagaHandler: participants.SagaHandlerFuncs{}}).Validate(); err != nil {
		t.Errorf("saga handler only: %v", err)
	}
	if err := (participants.Config{Name: svc, Handler: participants.HandlerFuncs{}, SagaHandler: participants.SagaHandlerFuncs{}}).Validate(); err != nil {
		t.Errorf("both handlers: %v", err)
	}
	db := databases(t)[0].open(t)
	b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{DB: db, SagaHandler: newSQLEffects(t, db, participants.SQLite)})
	if err != nil {
		t.Fatal(err)
	}
	if err := (participants.Config{Name: svc, Barrier: b}).Validate(); err != nil {
		t.Errorf("barrier with a saga handler only: %v", err)
	}
	if err := (participants.Config{Name: svc, Barrier: b, SagaHandler: participants.SagaHandlerFuncs{}}).Validate(); !errors.Is(err, participants.ErrInvalidConfig) {
		t.Errorf("barrier and an in-memory saga handler: %v, want ErrInvalidConfig", err)
	}
}

// TestBarrierMigratesATableWithoutSagaColumns: a table of the previous
// version (deadline_ms, no code or attempt) gains the columns, keeps its
// rows, and records a refusal's code.
func TestBarrierMigratesATableWithoutSagaColumns(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		sqldb := db.open(t)
		table := "natstx_barrier_" + nuid.Next()
		t.Cleanup(func() { _, _ = sqldb.Exec(`DROP TABLE ` + table) })
		old := `CREATE TABLE ` + table + ` (
	participant TEXT NOT NULL,
	txid        TEXT NOT NULL,
	op          TEXT NOT NULL,
	result      TEXT NOT NULL,
	reason      TEXT NOT NULL,
	at_ms       BIGINT NOT NULL,
	deadline_ms BIGINT,
	PRIMARY KEY (participant, txid, op))`
		if _, err := sqldb.Exec(old); err != nil {
			t.Fatal(err)
		}
		if _, err := sqldb.Exec(`INSERT INTO ` + table + ` (participant, txid, op, result, reason, at_ms) VALUES ('` + svc + `', 'old', 'action:s', 'done', '', 1)`); err != nil {
			t.Fatal(err)
		}
		effects := newSQLEffects(t, sqldb, db.dialect)
		if _, err := sqldb.Exec(`INSERT INTO ` + effects.table + ` (k, state) VALUES ('old/s', 'done')`); err != nil {
			t.Fatal(err)
		}
		b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{DB: db.open(t), Dialect: db.dialect, Table: table, SagaHandler: effects})
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(nil, nil)
		cfg.Barrier = b
		p, err := participants.NewProcessor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		expectSaga(t, p, sagaCmd("old", messages.OpAction, "s", 2, "go"), messages.Ack, "", "")
		expectSaga(t, p, sagaCmd("old", messages.OpCompensate, "s", 1, ""), messages.Ack, "", "")
		expectSaga(t, p, sagaCmd("new", messages.OpAction, "s", 1, "no"), messages.Refused, "out of stock: 2 of widget", "out-of-stock")
		expectSaga(t, p, sagaCmd("new", messages.OpAction, "s", 2, "no"), messages.Refused, "out of stock: 2 of widget", "out-of-stock")
		if e := effects.effect(t, "old", "s"); e != "compensated" {
			t.Fatalf("old step: effect %s, want compensated", e)
		}
	})
}

// TestSagaOverTheRuntime: the native runtime carries the step and the code
// and does not redeliver a failed saga command (the coordinator retries).
func TestSagaOverTheRuntime(t *testing.T) {
	e := newEnv(t, true)
	mem := &memEffects{counts: newCounts(), effects: map[string]string{}}
	cfg := testConfig(nil, nil)
	cfg.SagaHandler = mem
	e.start(e.nc, cfg)
	mem.failNext(messages.OpAction, participants.WithCode("busy", errors.New("try later")))
	c := sagaCmd("rt1", messages.OpAction, "s", 1, "go")
	e.send(c)
	if r := e.next(); r.Result != messages.Failed || r.Step != "s" || r.Code != "busy" || r.Reason != "try later" {
		t.Fatalf("failed action: %+v", r)
	}
	c.Attempt = 2
	e.send(c)
	if r := e.next(); r.Result != messages.Ack || r.Step != "s" || r.Attempt != 2 {
		t.Fatalf("second attempt: %+v (a redelivery of the first would come before it)", r)
	}
	e.settled()
	if n := mem.n(messages.OpAction, "rt1", "s"); n != 1 {
		t.Fatalf("%d actions, want 1", n)
	}
}

// TestSagaMemoryRecordSweep: in memory, refused and compensated steps are
// forgotten after Retention; a done step stays, for its compensation may
// come at any time. An invalid refusal code is dropped from the reply.
func TestSagaMemoryRecordSweep(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg := testConfig(nil, nil)
	cfg.Retention = time.Minute
	cfg.Now = func() time.Time { return now }
	cfg.SagaHandler = participants.SagaHandlerFuncs{ActionFunc: func(_ context.Context, _ participants.Step, payload []byte) error {
		if string(payload) == "bad-code" {
			return participants.Refuse("not a code!", "refused with a bad code")
		}
		return nil
	}}
	p, err := participants.NewProcessor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	expectSaga(t, p, sagaCmd("m1", messages.OpAction, "s", 1, "go"), messages.Ack, "", "")
	expectSaga(t, p, sagaCmd("m2", messages.OpAction, "s", 1, "bad-code"), messages.Refused, "refused with a bad code", "")
	expectSaga(t, p, sagaCmd("m3", messages.OpCompensate, "s", 1, ""), messages.Ack, "*", "")
	if n := p.Sweep(now.Add(2 * time.Minute)); n != 2 {
		t.Fatalf("swept %d records, want 2 (the refused and the compensated step)", n)
	}
	if s := p.StepState("m1", "s"); s != participants.StepDone {
		t.Fatalf("done step after the sweep: %s, want done", s)
	}
	if st := p.Stats(); st.Records != 1 {
		t.Fatalf("%d records in memory, want 1", st.Records)
	}
}
