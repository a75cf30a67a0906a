package participants_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL, when NATSTX_TEST_POSTGRES is set
	"github.com/nats-io/nuid"
	_ "modernc.org/sqlite" // the default, pure-Go SQLite

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// database is one SQL database a barrier test runs against.
type database struct {
	name    string
	dialect participants.Dialect
	// open returns a new handle on the same database each call.
	open func(t *testing.T) *sql.DB
}

// databases returns SQLite, always, and PostgreSQL when NATSTX_TEST_POSTGRES
// holds its URL.
func databases(t *testing.T) []database {
	t.Helper()
	path := filepath.Join(t.TempDir(), "barrier.db")
	dbs := []database{{name: "sqlite", dialect: participants.SQLite, open: func(t *testing.T) *sql.DB {
		return openSQLite(t, path, 1, "")
	}}}
	if url := os.Getenv("NATSTX_TEST_POSTGRES"); url != "" {
		dbs = append(dbs, database{name: "postgres", dialect: participants.Postgres, open: func(t *testing.T) *sql.DB {
			db, err := sql.Open("pgx", url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			return db
		}})
	} else {
		t.Log("PostgreSQL: skipped; set NATSTX_TEST_POSTGRES to a database URL (postgres://user:pass@host/db) to run these cases against it too")
	}
	return dbs
}

// openSQLite opens the SQLite file at path as participants should (a busy
// timeout, WAL, IMMEDIATE transactions), with the DSN parameters more (each
// starting with '&') and at most conns connections, and closes it at
// cleanup.
func openSQLite(tb testing.TB, path string, conns int, more string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate"+more)
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(conns)
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// forEachDatabase runs f once per database, as subtests.
func forEachDatabase(t *testing.T, f func(t *testing.T, db database)) {
	for _, db := range databases(t) {
		t.Run(db.name, func(t *testing.T) { f(t, db) })
	}
}

// ledger is an SQLHandler over a table of effects: prepare stages a row,
// commit marks it applied, abort deletes it. It counts its successful calls
// in memory too, and can be told to fail.
type ledger struct {
	table, ph string
	mu        sync.Mutex
	calls     map[string]int
	failNext  map[messages.Op]error
}

func newLedger(t *testing.T, db *sql.DB, dialect participants.Dialect) *ledger {
	t.Helper()
	l := &ledger{table: "effects_" + nuid.Next(), ph: "?", calls: map[string]int{}, failNext: map[messages.Op]error{}}
	if dialect == participants.Postgres {
		l.ph = "$1"
	}
	if _, err := db.Exec(`CREATE TABLE ` + l.table + ` (txid TEXT PRIMARY KEY, state TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.Exec(`DROP TABLE ` + l.table) })
	return l
}

func (l *ledger) step(op messages.Op, txid string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.failNext[op]; err != nil {
		delete(l.failNext, op)
		return err
	}
	l.calls[string(op)+" "+txid]++
	return nil
}

func (l *ledger) fail(op messages.Op, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failNext[op] = err
}

func (l *ledger) n(op messages.Op, txid string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[string(op)+" "+txid]
}

func (l *ledger) Prepare(ctx context.Context, dbtx *sql.Tx, tx participants.Tx, payload []byte) error {
	if string(payload) == "no" {
		return errors.New("out of stock")
	}
	// The row is written before the failure check, so a failed prepare
	// proves the barrier rolls the staged work back.
	q := fmt.Sprintf(`INSERT INTO %s (txid, state) VALUES (%s, 'staged')`, l.table, l.ph)
	if _, err := dbtx.ExecContext(ctx, q, tx.ID); err != nil {
		return err
	}
	if err := l.step(messages.OpPrepare, tx.ID); err != nil {
		return err
	}
	if string(payload) == "read-only" {
		return participants.ReadOnly // after a write, which the barrier must undo
	}
	return nil
}

func (l *ledger) Commit(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	q := fmt.Sprintf(`UPDATE %s SET state = 'applied' WHERE txid = %s AND state = 'staged'`, l.table, l.ph)
	res, err := dbtx.ExecContext(ctx, q, tx.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("commit %s: %d staged rows, want 1", tx.ID, n)
	}
	return l.step(messages.OpCommit, tx.ID)
}

func (l *ledger) Abort(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	q := fmt.Sprintf(`DELETE FROM %s WHERE txid = %s AND state = 'staged'`, l.table, l.ph)
	res, err := dbtx.ExecContext(ctx, q, tx.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("abort %s: %d staged rows, want 1", tx.ID, n)
	}
	return l.step(messages.OpAbort, tx.ID)
}

// state returns the effect row's state, or "none".
func (l *ledger) state(t *testing.T, db *sql.DB, txid string) string {
	t.Helper()
	var s string
	err := db.QueryRow(fmt.Sprintf(`SELECT state FROM %s WHERE txid = %s`, l.table, l.ph), txid).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "none"
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// barrierRig is an env with one database, its ledger and a barrier on it.
type barrierRig struct {
	*env
	db     database
	sqldb  *sql.DB
	ledger *ledger
	table  string
}

func newBarrierRig(t *testing.T, db database) *barrierRig {
	r := &barrierRig{env: newEnv(t, true), db: db, sqldb: db.open(t), table: "natstx_barrier_" + nuid.Next()}
	r.ledger = newLedger(t, r.sqldb, db.dialect)
	t.Cleanup(func() { _, _ = r.sqldb.Exec(`DROP TABLE ` + r.table) })
	return r
}

// barrier returns a new Barrier on a new handle of the rig's database,
// closed at cleanup (after a Runtime started on it stops).
func (r *barrierRig) barrier(t *testing.T) *participants.Barrier {
	t.Helper()
	b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{
		DB: r.db.open(t), Dialect: r.db.dialect, Table: r.table, Handler: r.ledger,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing the barrier: %v", err)
		}
	})
	return b
}

func (r *barrierRig) startRuntime(t *testing.T) *participants.Runtime {
	cfg := testConfig(nil, nil)
	cfg.Barrier = r.barrier(t)
	return r.start(r.nc, cfg)
}

func TestBarrierDuplicatePrepare(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		rt := r.startRuntime(t)
		yes, no := r.cmd("yes", messages.OpPrepare, 1), r.cmd("no", messages.OpPrepare, 1)
		no.Payload = []byte("no")
		r.expect(yes, messages.VoteCommit, "")
		r.expect(no, messages.VoteAbort, "out of stock")
		yes.Attempt, no.Attempt = 2, 2
		r.expect(yes, messages.VoteCommit, "")
		r.expect(no, messages.VoteAbort, "out of stock")
		if n := r.ledger.n(messages.OpPrepare, "yes"); n != 1 {
			t.Errorf("Prepare of yes applied %d times, want 1", n)
		}
		if s := r.ledger.state(t, r.sqldb, "yes"); s != "staged" {
			t.Errorf("yes: effect %s, want staged", s)
		}
		if s := r.ledger.state(t, r.sqldb, "no"); s != "none" {
			t.Errorf("no: effect %s; a failed prepare must leave nothing", s)
		}
		if s := rt.State("no"); s != participants.StateAborted {
			t.Errorf("no: state %s", s)
		}
		// A prepare that fails once with a handler error votes abort and
		// keeps that vote.
		r.ledger.fail(messages.OpPrepare, errors.New("disk full"))
		r.expect(r.cmd("once", messages.OpPrepare, 1), messages.VoteAbort, "disk full")
		r.expect(r.cmd("once", messages.OpPrepare, 2), messages.VoteAbort, "disk full")
		if s := r.ledger.state(t, r.sqldb, "once"); s != "none" {
			t.Errorf("once: effect %s after a failed prepare", s)
		}
		if st := rt.Stats(); st.Duplicates != 3 {
			t.Errorf("stats %+v, want 3 duplicates", st)
		}
		r.settled()
	})
}

func TestBarrierDuplicateCommitAndAbort(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		rt := r.startRuntime(t)
		r.expect(r.cmd("c", messages.OpPrepare, 1), messages.VoteCommit, "")
		r.ledger.fail(messages.OpCommit, errors.New("lock timeout"))
		r.send(r.cmd("c", messages.OpCommit, 1))
		if rep := r.next(); rep.Result != messages.Failed || rep.Reason != "lock timeout" {
			t.Fatalf("failing commit: reply %+v", rep)
		}
		if rep := r.next(); rep.Result != messages.Ack { // the redelivery
			t.Fatalf("redelivered commit: reply %+v", rep)
		}
		for a := 2; a <= 3; a++ {
			r.expect(r.cmd("c", messages.OpCommit, a), messages.Ack, "")
		}
		r.expect(r.cmd("c", messages.OpPrepare, 2), messages.VoteCommit, "")
		r.expect(r.cmd("c", messages.OpAbort, 1), messages.Failed, participants.ReasonAbortAfterCommit)

		r.expect(r.cmd("a", messages.OpPrepare, 1), messages.VoteCommit, "")
		for a := 1; a <= 3; a++ {
			r.expect(r.cmd("a", messages.OpAbort, a), messages.Ack, "")
		}
		r.expect(r.cmd("a", messages.OpPrepare, 2), messages.VoteAbort, participants.ReasonAborted)
		r.expect(r.cmd("a", messages.OpCommit, 1), messages.Failed, participants.ReasonCommitAfterAbort)

		if n := r.ledger.n(messages.OpCommit, "c"); n != 1 {
			t.Errorf("commit applied %d times, want 1", n)
		}
		if n := r.ledger.n(messages.OpAbort, "a"); n != 1 {
			t.Errorf("abort applied %d times, want 1", n)
		}
		if s := r.ledger.state(t, r.sqldb, "c"); s != "applied" {
			t.Errorf("c: effect %s, want applied", s)
		}
		if s := r.ledger.state(t, r.sqldb, "a"); s != "none" {
			t.Errorf("a: effect %s, want none", s)
		}
		if rt.State("c") != participants.StateCommitted || rt.State("a") != participants.StateAborted {
			t.Errorf("states %s %s", rt.State("c"), rt.State("a"))
		}
		r.settled()
	})
}

func TestBarrierAbortBeforePrepare(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		r.startRuntime(t)
		r.expect(r.cmd("late", messages.OpAbort, 1), messages.Ack, "")
		r.expect(r.cmd("late", messages.OpPrepare, 1), messages.VoteAbort, participants.ReasonAbortedBeforePrepare)
		r.expect(r.cmd("late", messages.OpAbort, 2), messages.Ack, "")
		if n := r.ledger.n(messages.OpPrepare, "late") + r.ledger.n(messages.OpAbort, "late"); n != 0 {
			t.Errorf("handler applied %d calls for a transaction aborted before its prepare", n)
		}
		if s := r.ledger.state(t, r.sqldb, "late"); s != "none" {
			t.Errorf("hanging reservation: effect %s", s)
		}
		// Null compensation: abort after an abort vote calls nothing.
		no := r.cmd("no", messages.OpPrepare, 1)
		no.Payload = []byte("no")
		r.expect(no, messages.VoteAbort, "out of stock")
		r.expect(r.cmd("no", messages.OpAbort, 1), messages.Ack, "")
		if n := r.ledger.n(messages.OpAbort, "no"); n != 0 {
			t.Errorf("Abort applied %d times after an abort vote", n)
		}
		r.settled()
	})
}

// TestBarrierRestart: a command applied by one process whose reply never
// went out (it crashed between the local commit and the reply) is answered
// from the record by the next process, without applying it again.
func TestBarrierRestart(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		cfg := testConfig(nil, nil)
		cfg.Barrier = r.barrier(t)
		crashed, err := participants.NewProcessor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		lost := func(participants.Answer) {} // the process died before replying
		prep := r.cmd("tx1", messages.OpPrepare, 1)
		crashed.Handle(prep.Header(), nil, prep.Subject(), lost)
		commit := r.cmd("tx2", messages.OpPrepare, 1)
		crashed.Handle(commit.Header(), nil, commit.Subject(), lost)
		commit.Op = messages.OpCommit
		crashed.Handle(commit.Header(), nil, commit.Subject(), lost)

		rt := r.startRuntime(t) // the restarted process: a new barrier, nothing in memory
		r.expect(prep, messages.VoteCommit, "")
		r.expect(r.cmd("tx1", messages.OpCommit, 1), messages.Ack, "")
		r.expect(commit, messages.Ack, "")
		for _, id := range []string{"tx1", "tx2"} {
			if p, c := r.ledger.n(messages.OpPrepare, id), r.ledger.n(messages.OpCommit, id); p != 1 || c != 1 {
				t.Errorf("%s: prepare applied %d times, commit %d; want once each", id, p, c)
			}
			if s := r.ledger.state(t, r.sqldb, id); s != "applied" {
				t.Errorf("%s: effect %s", id, s)
			}
		}
		if st := rt.Stats(); st.Duplicates != 2 {
			t.Errorf("stats %+v, want 2 duplicates (tx1's prepare, tx2's commit)", st)
		}
	})
}

// TestBarrierConcurrentDuplicates: two runtimes on two database handles
// receive every command three times at once; each effect happens once.
func TestBarrierConcurrentDuplicates(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		for range 2 {
			// 240 commands queue for one connection per handle: give each
			// the default OpTimeout, so that a loaded machine (-race, other
			// suites) does not fail a command on its wait for the database.
			cfg := testConfig(nil, nil)
			cfg.Barrier = r.barrier(t)
			cfg.OpTimeout, cfg.AckWait = participants.DefaultOpTimeout, participants.DefaultAckWait
			r.start(r.nc, cfg)
		}
		const n = 40
		for _, op := range []messages.Op{messages.OpPrepare, messages.OpCommit} {
			for i := range n {
				for a := 1; a <= 3; a++ {
					o := op
					if i%4 == 3 && o == messages.OpCommit {
						o = messages.OpAbort
					}
					r.send(r.cmd(txid(i), o, a))
				}
			}
			for range 3 * n {
				if rep := r.next(); rep.Result != messages.VoteCommit && rep.Result != messages.Ack {
					t.Fatalf("reply %+v", rep)
				}
			}
		}
		r.settled()
		for i := range n {
			want, op := "applied", messages.OpCommit
			if i%4 == 3 {
				want, op = "none", messages.OpAbort
			}
			if p, c := r.ledger.n(messages.OpPrepare, txid(i)), r.ledger.n(op, txid(i)); p != 1 || c != 1 {
				t.Errorf("%s: prepare applied %d times, %s %d; want once each", txid(i), p, op, c)
			}
			if s := r.ledger.state(t, r.sqldb, txid(i)); s != want {
				t.Errorf("%s: effect %s, want %s", txid(i), s, want)
			}
		}
	})
}

// TestBarrierConcurrentUse: one Barrier on a pool of up to four connections,
// of which two stay open when idle (so connections come and go, and its
// statements are prepared on each as it is first used there), handles many
// transactions at once from several goroutines, each command three times,
// and saga steps through Action and Compensate, while State and StepState
// read outside transactions; each effect happens once.
func TestBarrierConcurrentUse(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		sqldb := db.open(t)
		sqldb.SetMaxOpenConns(4)
		sqldb.SetMaxIdleConns(2)
		b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{
			DB: sqldb, Dialect: db.dialect, Table: r.table, Handler: r.ledger,
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(nil, nil)
		cfg.Barrier = b
		cfg.OpTimeout, cfg.AckWait = participants.DefaultOpTimeout, participants.DefaultAckWait
		proc, err := participants.NewProcessor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		const n, workers = 40, 8
		var actions, compensations atomic.Int32
		// run runs the jobs on the workers, with a reader beside them.
		run := func(jobs []func() error) {
			t.Helper()
			ch := make(chan func() error)
			errs := make(chan error, len(jobs)+1)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for job := range ch {
						if err := job(); err != nil {
							errs <- err
						}
					}
				})
			}
			stop := make(chan struct{})
			var reader sync.WaitGroup
			reader.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := b.State(ctx, svc, txid(i%n)); err != nil {
						errs <- fmt.Errorf("State: %w", err)
						return
					}
					if _, err := b.StepState(ctx, svc, "saga-"+txid(i%n), "reserve"); err != nil {
						errs <- fmt.Errorf("StepState: %w", err)
						return
					}
				}
			})
			for _, job := range jobs {
				ch <- job
			}
			close(ch)
			wg.Wait()
			close(stop)
			reader.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if t.Failed() {
				t.FailNow()
			}
		}
		handle := func(id string, op messages.Op, attempt int, want messages.Result) func() error {
			return func() error {
				cmd := r.cmd(id, op, attempt)
				var got participants.Answer
				proc.Handle(cmd.Header(), nil, cmd.Subject(), func(a participants.Answer) { got = a })
				if got.Reply.Result != want {
					return fmt.Errorf("%s %s attempt %d: reply %+v, want %s", op, id, attempt, got.Reply, want)
				}
				return nil
			}
		}
		saga := func(i int, compensate bool) func() error {
			return func() error {
				id := "saga-" + txid(i)
				if compensate {
					return b.Compensate(ctx, svc, id, "reserve", func(*sql.Tx) error { compensations.Add(1); return nil })
				}
				return b.Action(ctx, svc, id, "reserve", func(*sql.Tx) error { actions.Add(1); return nil })
			}
		}
		// First every prepare and action, then every commit, abort and
		// compensation, each three times, in an order that puts copies of
		// one command on different workers.
		for _, second := range []bool{false, true} {
			var jobs []func() error
			for a := 1; a <= 3; a++ {
				for i := range n {
					switch {
					case !second:
						jobs = append(jobs, handle(txid(i), messages.OpPrepare, a, messages.VoteCommit), saga(i, false))
					case i%4 == 3:
						jobs = append(jobs, handle(txid(i), messages.OpAbort, a, messages.Ack), saga(i, true))
					default:
						jobs = append(jobs, handle(txid(i), messages.OpCommit, a, messages.Ack))
					}
				}
			}
			run(jobs)
		}
		for i := range n {
			want, op, state, step := "applied", messages.OpCommit, participants.StateCommitted, participants.StepDone
			if i%4 == 3 {
				want, op, state, step = "none", messages.OpAbort, participants.StateAborted, participants.StepCompensated
			}
			if p, c := r.ledger.n(messages.OpPrepare, txid(i)), r.ledger.n(op, txid(i)); p != 1 || c != 1 {
				t.Errorf("%s: prepare applied %d times, %s %d; want once each", txid(i), p, op, c)
			}
			if s := r.ledger.state(t, r.sqldb, txid(i)); s != want {
				t.Errorf("%s: effect %s, want %s", txid(i), s, want)
			}
			if s, err := b.State(ctx, svc, txid(i)); err != nil || s != state {
				t.Errorf("%s: state %s %v, want %s", txid(i), s, err, state)
			}
			if s, err := b.StepState(ctx, svc, "saga-"+txid(i), "reserve"); err != nil || s != step {
				t.Errorf("saga-%s: step %s %v, want %s", txid(i), s, err, step)
			}
		}
		if a, c := actions.Load(), compensations.Load(); a != n || c != n/4 {
			t.Errorf("%d actions and %d compensations ran, want %d and %d", a, c, n, n/4)
		}
	})
}

// TestBarrierClose: Close releases the statements, not the database; the
// closed Barrier fails with ErrBarrier, another Barrier on the same database
// still works, and Close again is harmless.
func TestBarrierClose(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		sqldb := db.open(t)
		ctx := context.Background()
		newBarrier := func() *participants.Barrier {
			b, err := participants.NewBarrier(ctx, participants.BarrierConfig{DB: sqldb, Dialect: db.dialect, Table: r.table, Handler: r.ledger})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		closed, open := newBarrier(), newBarrier()
		if err := closed.Action(ctx, svc, "s1", "reserve", func(*sql.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := closed.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := closed.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := closed.State(ctx, svc, "tx"); !errors.Is(err, participants.ErrBarrier) {
			t.Errorf("State after Close = %v, want ErrBarrier", err)
		}
		if _, err := closed.StepState(ctx, svc, "s1", "reserve"); !errors.Is(err, participants.ErrBarrier) {
			t.Errorf("StepState after Close = %v, want ErrBarrier", err)
		}
		ran := false
		if err := closed.Action(ctx, svc, "s2", "reserve", func(*sql.Tx) error { ran = true; return nil }); !errors.Is(err, participants.ErrBarrier) || ran {
			t.Errorf("Action after Close = %v (ran %t), want ErrBarrier", err, ran)
		}
		if err := sqldb.PingContext(ctx); err != nil {
			t.Fatalf("the database after Close: %v", err)
		}
		if s, err := open.StepState(ctx, svc, "s1", "reserve"); err != nil || s != participants.StepDone {
			t.Errorf("the other barrier: step %s %v, want done", s, err)
		}
		if err := open.Action(ctx, svc, "s2", "reserve", func(*sql.Tx) error { return nil }); err != nil {
			t.Errorf("the other barrier: Action = %v", err)
		}
	})
}

// TestSagaFailedAttemptIsRaised: a saga action that fails at two attempts
// records the higher one, so a redelivery of either stays failed without the
// handler, and the next attempt does the action.
func TestSagaFailedAttemptIsRaised(t *testing.T) {
	forEachSagaKind(t, func(t *testing.T, k sagaKind) {
		p, fx := k.newProc(t), k.effects
		const step = "reserve"
		for a := 1; a <= 2; a++ {
			fx.failNext(messages.OpAction, errors.New("provider down"))
			expectSaga(t, p, sagaCmd("s1", messages.OpAction, step, a, "go"), messages.Failed, "provider down", "")
		}
		for a := 2; a >= 1; a-- {
			expectSaga(t, p, sagaCmd("s1", messages.OpAction, step, a, "go"), messages.Failed, participants.ReasonAttemptFailed, "")
		}
		if n := fx.n(messages.OpAction, "s1", step); n != 0 {
			t.Fatalf("%d actions done after two failed attempts", n)
		}
		expectSaga(t, p, sagaCmd("s1", messages.OpAction, step, 3, "go"), messages.Ack, "", "")
		if n := fx.n(messages.OpAction, "s1", step); n != 1 {
			t.Fatalf("%d actions done, want 1", n)
		}
	})
}

func TestBarrierSagaHooks(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		b := r.barrier(t)
		ctx := context.Background()
		var ran atomic.Int32
		count := func(*sql.Tx) error { ran.Add(1); return nil }

		// Compensation first: nothing runs, and the late action is refused.
		if err := b.Compensate(ctx, svc, "s1", "reserve", count); err != nil {
			t.Fatal(err)
		}
		if err := b.Action(ctx, svc, "s1", "reserve", count); !errors.Is(err, participants.ErrCompensated) {
			t.Fatalf("action after compensation = %v, want ErrCompensated", err)
		}
		if ran.Load() != 0 {
			t.Fatalf("%d calls for a step compensated before it ran", ran.Load())
		}
		// Action, then compensation, each twice: each runs once.
		for range 2 {
			if err := b.Action(ctx, svc, "s2", "reserve", count); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 {
			if err := b.Compensate(ctx, svc, "s2", "reserve", count); err != nil {
				t.Fatal(err)
			}
		}
		if ran.Load() != 2 {
			t.Fatalf("%d calls, want 2 (one action, one compensation)", ran.Load())
		}
		// A failing action leaves no record: it can run again.
		boom := errors.New("boom")
		if err := b.Action(ctx, svc, "s3", "reserve", func(*sql.Tx) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("failing action = %v", err)
		}
		if err := b.Action(ctx, svc, "s3", "reserve", count); err != nil || ran.Load() != 3 {
			t.Fatalf("retried action = %v, calls %d", err, ran.Load())
		}
	})
}

func TestNewBarrierValidates(t *testing.T) {
	db := databases(t)[0].open(t)
	for _, cfg := range []participants.BarrierConfig{
		{Handler: &ledger{}},
		{DB: db},
		{DB: db, Handler: &ledger{}, Dialect: 7},
		{DB: db, Handler: &ledger{}, Table: "bad-name; DROP"},
	} {
		if _, err := participants.NewBarrier(context.Background(), cfg); !errors.Is(err, participants.ErrInvalidConfig) {
			t.Errorf("NewBarrier(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
	h := participants.HandlerFuncs{}
	b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{DB: db, Handler: &ledger{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := (participants.Config{Name: svc, Handler: h, Barrier: b}).Validate(); !errors.Is(err, participants.ErrInvalidConfig) {
		t.Errorf("Handler and Barrier both set: %v", err)
	}
}

func TestBarrierPurgeKeepsWhatIsStillPrepared(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		r.startRuntime(t)
		r.expect(r.cmd("done-commit", messages.OpPrepare, 1), messages.VoteCommit, "")
		r.expect(r.cmd("done-commit", messages.OpCommit, 1), messages.Ack, "")
		r.expect(r.cmd("done-abort", messages.OpPrepare, 1), messages.VoteCommit, "")
		r.expect(r.cmd("done-abort", messages.OpAbort, 1), messages.Ack, "")
		r.expect(r.cmd("tombstone", messages.OpAbort, 1), messages.Ack, "")
		r.expect(r.cmd("open", messages.OpPrepare, 1), messages.VoteCommit, "")
		b := r.barrier(t)
		ctx := context.Background()
		if n, err := b.Purge(ctx, svc, time.Now().Add(-time.Hour)); err != nil || n != 0 {
			t.Fatalf("purge of rows older than an hour: %d %v", n, err)
		}
		n, err := b.Purge(ctx, svc, time.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if n != 6 { // 2 + 2 + the tombstone: its abort row and the prepare row it claimed
			t.Fatalf("purged %d rows, want 6", n)
		}
		for _, id := range []string{"done-commit", "done-abort", "tombstone"} {
			if s, err := b.State(ctx, svc, id); err != nil || s != participants.StateNone {
				t.Errorf("%s after the purge: %s %v", id, s, err)
			}
		}
		if s, err := b.State(ctx, svc, "open"); err != nil || s != participants.StatePrepared {
			t.Fatalf("the prepared transaction was purged: %s %v", s, err)
		}
		// The prepared one still commits, exactly once.
		r.expect(r.cmd("open", messages.OpCommit, 1), messages.Ack, "")
		if n := r.ledger.n(messages.OpCommit, "open"); n != 1 {
			t.Fatalf("open committed %d times", n)
		}
		r.settled()
	})
}

func TestRestartedRuntimeKnowsWhatIsInDoubt(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		first := r.startRuntime(t)
		r.expect(r.cmd("open", messages.OpPrepare, 1), messages.VoteCommit, "")
		r.expect(r.cmd("closed", messages.OpPrepare, 1), messages.VoteCommit, "")
		r.expect(r.cmd("closed", messages.OpCommit, 1), messages.Ack, "")
		if n := first.Stats().InDoubt; n != 1 {
			t.Fatalf("before the restart: %d in doubt, want 1", n)
		}
		first.Stop()
		second := r.startRuntime(t)
		if n := second.Stats().InDoubt; n != 1 {
			t.Fatalf("after the restart: %d in doubt, want 1 (read from the barrier)", n)
		}
		r.expect(r.cmd("open", messages.OpAbort, 1), messages.Ack, "")
		if n := second.Stats().InDoubt; n != 0 {
			t.Fatalf("after the abort: %d in doubt", n)
		}
		r.settled()
	})
}

// BenchmarkBarrier measures one two-phase commit transaction through a
// Barrier: its prepare and its commit handled by a Processor, each in its own
// local transaction, with a handler that does nothing, so that the barrier's
// own statements are what is measured. On an SQLite file database with
// synchronous=FULL (what services.Open sets) every commit waits for an
// fsync; with NORMAL (in WAL mode, no fsync at commit) and in memory (as
// the deterministic simulator runs it) the CPU cost shows.
func BenchmarkBarrier(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		b.Run("file,synchronous="+sync, func(b *testing.B) {
			benchmarkBarrier(b, openSQLite(b, filepath.Join(b.TempDir(), "bench.db"), 1, "&_pragma=synchronous("+sync+")"))
		})
	}
	b.Run("memory", func(b *testing.B) {
		db, err := sql.Open("sqlite", ":memory:")
		if err != nil {
			b.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		b.Cleanup(func() { _ = db.Close() })
		benchmarkBarrier(b, db)
	})
}

// nopSQL is an SQLHandler that does nothing.
type nopSQL struct{}

func (nopSQL) Prepare(context.Context, *sql.Tx, participants.Tx, []byte) error { return nil }
func (nopSQL) Commit(context.Context, *sql.Tx, participants.Tx) error          { return nil }
func (nopSQL) Abort(context.Context, *sql.Tx, participants.Tx) error           { return nil }

func benchmarkBarrier(b *testing.B, db *sql.DB) {
	ctx := context.Background()
	bar, err := participants.NewBarrier(ctx, participants.BarrierConfig{DB: db, Handler: nopSQL{}})
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(nil, nil)
	cfg.Barrier = bar
	proc, err := participants.NewProcessor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var got participants.Answer
	keep := func(a participants.Answer) { got = a }
	for i := 0; b.Loop(); i++ {
		cmd := messages.Command{TxID: txid(i), Op: messages.OpPrepare, Participant: svc, Attempt: 1, ReplyTo: messages.ReplySubject("bench", svc)}
		proc.Handle(cmd.Header(), nil, cmd.Subject(), keep)
		if got.Reply.Result != messages.VoteCommit {
			b.Fatalf("prepare %s: %+v", cmd.TxID, got.Reply)
		}
		cmd.Op = messages.OpCommit
		proc.Handle(cmd.Header(), nil, cmd.Subject(), keep)
		if got.Reply.Result != messages.Ack || got.Reply.Reason != "" {
			b.Fatalf("commit %s: %+v", cmd.TxID, got.Reply)
		}
	}
}
