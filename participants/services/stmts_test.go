package services

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	sqlite "modernc.org/sqlite"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// sqlLog records the SQL text a database's connections were asked to parse:
// every statement prepared on a connection, and every statement run as text
// (database/sql's ExecContext and QueryContext with a query string).
type sqlLog struct {
	mu       sync.Mutex
	prepared []string
	asText   []string
}

// add appends q to *to.
func (l *sqlLog) add(to *[]string, q string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*to = append(*to, q)
}

// take returns what was recorded since the last take and forgets it.
func (l *sqlLog) take() (prepared, asText []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prepared, asText = l.prepared, l.asText
	l.prepared, l.asText = nil, nil
	return prepared, asText
}

// loggingConnector opens real modernc.org/sqlite connections whose SQL text
// the log records; nothing else about them changes.
type loggingConnector struct {
	dsn string
	drv *sqlite.Driver
	log *sqlLog
}

// Connect opens one connection.
func (c loggingConnector) Connect(context.Context) (driver.Conn, error) {
	cn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return loggingConn{cn, c.log}, nil
}

// Driver is the SQLite driver.
func (c loggingConnector) Driver() driver.Driver { return c.drv }

// loggingConn is a SQLite connection that records the SQL text it parses.
// It forwards the interfaces database/sql uses on a modernc.org/sqlite
// connection.
type loggingConn struct {
	driver.Conn
	log *sqlLog
}

func (c loggingConn) Prepare(q string) (driver.Stmt, error) {
	c.log.add(&c.log.prepared, q)
	return c.Conn.Prepare(q)
}

func (c loggingConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	c.log.add(&c.log.prepared, q)
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
}

func (c loggingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c loggingConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	c.log.add(&c.log.asText, q)
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

func (c loggingConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	c.log.add(&c.log.asText, q)
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

func (c loggingConn) Ping(ctx context.Context) error {
	return c.Conn.(driver.Pinger).Ping(ctx)
}

func (c loggingConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c loggingConn) IsValid() bool { return c.Conn.(driver.Validator).IsValid() }

// openLogged opens a SQLite database in a temporary directory set up as
// OpenSQLite does, with its parsed SQL recorded in the returned log.
func openLogged(t *testing.T) (*sql.DB, *sqlLog) {
	t.Helper()
	log := &sqlLog{}
	db := sql.OpenDB(loggingConnector{dsn: sqliteDSN(filepath.Join(t.TempDir(), "svc.db")), drv: &sqlite.Driver{}, log: log})
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	return db, log
}

// cached returns the texts of the statements c holds, sorted.
func (c *stmtCache) cached() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.stmts))
}

// cacheOf returns svc's statement cache.
func cacheOf(svc Service) *stmtCache {
	switch s := svc.(type) {
	case *Inventory:
		return s.stmts
	case *Payment:
		return s.stmts
	case *Shipping:
		return s.stmts
	}
	panic(fmt.Sprintf("no statement cache in %T", svc))
}

// stmtPayloads are, per kind, a payload too big to serve and one naming a
// key the service does not have.
var stmtPayloads = map[string][2]string{
	"inventory": {`{"item": "widget", "qty": 1000000000}`, `{"item": "wodget", "qty": 1}`},
	"payment":   {`{"account": "alice", "amount": 1000000000}`, `{"account": "zed", "amount": 1}`},
	"shipping":  {`{"slot": "full"}`, `{"slot": "sun"}`}, // see addFullSlot
}

// TestEveryCommandRunsPreparedStatements: each service prepares its listed
// statements once, at New; then rounds of every kind of command (two-phase
// prepare, commit, abort, refusals for want and for an unknown key; saga
// action, compensation, refusals) run on a real SQLite database without
// the connection parsing any SQL again, prepared or as text, without a
// statement missing from the list, and without adding to the cache.
func TestEveryCommandRunsPreparedStatements(t *testing.T) {
	ctx := context.Background()
	want := map[string]int{"inventory": 12, "payment": 11, "shipping": 12}
	for _, kind := range Kinds {
		t.Run(kind, func(t *testing.T) {
			db, log := openLogged(t)
			svc, err := New(ctx, kind, db)
			if err != nil {
				t.Fatal(err)
			}
			c := cacheOf(svc)
			listed := slices.Clone(map[string][]string{"inventory": inventoryStmts, "payment": paymentStmts, "shipping": shippingStmts}[kind])
			slices.Sort(listed)
			listed = slices.Compact(listed)
			if got := c.cached(); !slices.Equal(got, listed) || len(got) != want[kind] {
				t.Fatalf("after New the cache holds %d statements %q; want the %d listed %q", len(got), got, want[kind], listed)
			}
			if kind == "shipping" {
				addFullSlot(t, db)
			}
			b, err := NewBarrier(ctx, svc, nil)
			if err != nil {
				t.Fatal(err)
			}
			p, err := participants.NewProcessor(participants.Config{Name: kind, Barrier: b})
			if err != nil {
				t.Fatal(err)
			}
			send := func(id string, op messages.Op, step, payload string) messages.Reply {
				t.Helper()
				cmd := messages.Command{TxID: id, Op: op, Participant: kind, Attempt: 1, ReplyTo: messages.ReplySubject("t", kind), Step: step}
				if payload != "" {
					cmd.Payload = []byte(payload)
				}
				var rep messages.Reply
				p.Handle(cmd.Header(), cmd.Payload, cmd.Subject(), func(a participants.Answer) { rep = a.Reply })
				return rep
			}
			expect := func(what string, rep messages.Reply, result messages.Result) {
				t.Helper()
				if rep.Result != result {
					t.Fatalf("%s: %s %q, want %s", what, rep.Result, rep.Reason, result)
				}
			}
			log.take() // the schema, the barrier's table and statements
			for round := range 3 {
				ok := string(svc.Payload(round + 1))
				tooMuch, unknown := stmtPayloads[kind][0], stmtPayloads[kind][1]
				id := func(s string) string { return fmt.Sprintf("%s-%d", s, round) }
				expect("prepare", send(id("commit"), messages.OpPrepare, "", ok), messages.VoteCommit)
				expect("commit", send(id("commit"), messages.OpCommit, "", ""), messages.Ack)
				expect("prepare", send(id("abort"), messages.OpPrepare, "", ok), messages.VoteCommit)
				expect("abort", send(id("abort"), messages.OpAbort, "", ""), messages.Ack)
				expect("prepare too much", send(id("much"), messages.OpPrepare, "", tooMuch), messages.VoteAbort)
				expect("prepare unknown", send(id("unknown"), messages.OpPrepare, "", unknown), messages.VoteAbort)
				expect("action", send(id("saga"), messages.OpAction, "a", ok), messages.Ack)
				expect("action", send(id("saga"), messages.OpAction, "b", ok), messages.Ack)
				expect("compensation", send(id("saga"), messages.OpCompensate, "b", ""), messages.Ack)
				expect("action too much", send(id("saga-much"), messages.OpAction, "a", tooMuch), messages.Refused)
				expect("action unknown", send(id("saga-unknown"), messages.OpAction, "a", unknown), messages.Refused)
				prepared, asText := log.take()
				if len(prepared) != 0 || len(asText) != 0 {
					t.Fatalf("round %d parsed SQL again: prepared %q, run as text %q", round, prepared, asText)
				}
				if n := c.unprepared.Load(); n != 0 {
					t.Fatalf("round %d: %d statements ran without being prepared", round, n)
				}
				if got := c.cached(); !slices.Equal(got, listed) {
					t.Fatalf("round %d: the cache holds %q; want %q", round, got, listed)
				}
			}
			if line, err := svc.Check(ctx); err != nil {
				t.Fatalf("%v (%s)", err, line)
			}
			for s, want := range map[string]TxState{"commit-2": TxApplied, "abort-2": TxReleased, "much-2": TxNone, StepKey("saga-2", "a"): TxApplied, StepKey("saga-2", "b"): TxReleased} {
				if got, err := svc.TxState(ctx, s); err != nil || got != want {
					t.Errorf("TxState(%s) = %s, %v; want %s", s, got, err, want)
				}
			}
		})
	}
}

// addFullSlot adds a shipping slot "full" of no capacity, which shipping
// refuses.
func addFullSlot(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec(`INSERT INTO slots (slot, capacity, held, booked) VALUES ('full', 0, 0, 0)`); err != nil {
		t.Fatal(err)
	}
}

// TestStmtCachePrepareErrorsAreNotCached: a statement that fails to prepare
// (bad SQL, a table not there yet) returns the driver's error and is not
// cached, so that it is prepared again on the next use (and succeeds once
// the table exists); a statement prepared once is reused; in a transaction
// a bad statement's error is returned too; Close closes and forgets them.
func TestStmtCachePrepareErrorsAreNotCached(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := newStmtCache(db)

	if _, err := c.prepare(ctx, `SELEC 1`); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("preparing bad SQL: %v, want a syntax error", err)
	}
	const q = `SELECT n FROM later WHERE n = ?`
	if _, err := c.prepare(ctx, q); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Fatalf("preparing on a missing table: %v, want no such table", err)
	}
	if got := c.cached(); len(got) != 0 {
		t.Fatalf("failed statements were cached: %q", got)
	}
	err = c.prepareAll(ctx, []string{`SELECT 1`, `SELEC 2`, `SELECT 3`})
	if err == nil || !strings.Contains(err.Error(), `preparing "SELEC 2"`) || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("prepareAll with bad SQL: %v", err)
	}
	if got := c.cached(); !slices.Equal(got, []string{`SELECT 1`}) {
		t.Fatalf("after prepareAll stopped at its bad statement the cache holds %q, want only SELECT 1", got)
	}

	if _, err := db.Exec(`CREATE TABLE later (n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	s1, err := c.prepare(ctx, q)
	if err != nil {
		t.Fatalf("preparing again once the table exists: %v", err)
	}
	s2, err := c.prepare(ctx, q)
	if err != nil || s2 != s1 {
		t.Fatalf("second prepare: %p, %v; want the cached %p", s2, err, s1)
	}
	if got := c.cached(); !slices.Equal(got, []string{`SELECT 1`, q}) {
		t.Fatalf("cache holds %q", got)
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec(ctx, c, tx, `INSERT INTO later (n) VALUES (?)`, 7); err != nil {
		t.Fatalf("an unlisted statement in a transaction: %v", err)
	}
	if n := c.unprepared.Load(); n != 1 {
		t.Fatalf("unprepared = %d, want 1", n)
	}
	var n int
	if err := scanRow(ctx, c, tx, q, []any{7}, &n); err != nil || n != 7 {
		t.Fatalf("the cached statement in a transaction: %d, %v", n, err)
	}
	if _, err := exec(ctx, c, tx, `INSERT INTO nowhere VALUES (1)`); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Fatalf("bad SQL in a transaction: %v, want no such table", err)
	}
	if err := one(ctx, c, tx, "what", `UPDAT later SET n = 1`); err == nil || !strings.HasPrefix(err.Error(), "what: ") || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("bad SQL in one: %v, want what: ...syntax error", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := c.cached(); !slices.Equal(got, []string{`SELECT 1`, q}) {
		t.Fatalf("statements run in a transaction were cached: %q", got)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.cached(); len(got) != 0 {
		t.Fatalf("after Close the cache holds %q", got)
	}
	if err := s1.QueryRowContext(ctx, 7).Scan(&n); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("a statement after Close: %v, want closed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestNewReturnsStatementErrors: New fails, naming the statement, when one
// of the service's statements does not prepare (here its table is gone).
func TestNewReturnsStatementErrors(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(filepath.Join(t.TempDir(), "n.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE VIEW holds AS SELECT 1 AS x`); err != nil {
		t.Fatal(err)
	}
	_, err = New(ctx, "payment", db)
	if err == nil || !strings.HasPrefix(err.Error(), "services: payment: preparing ") {
		t.Fatalf("New over a broken schema: %v", err)
	}
	t.Log(err)
}
