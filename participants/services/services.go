// Package services holds natstx's example participant services, each with
// its own embedded SQLite database: inventory (reserve stock at prepare, take
// it at commit, release it at abort), payment (hold funds, capture, release)
// and shipping (book a delivery slot). Each is a participants.SQLHandler and
// a participants.SQLSagaHandler (a saga step's action takes the stock,
// charges or books at once, its compensation releases, refunds or cancels),
// so a participants.Barrier records every command in the same local
// transaction as the service's change, and each checks its conservation
// invariants.
//
// Faults wraps a service with simulated failures and latency for demos and
// tests.
package services

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"github.com/natstx/natstx/participants"
)

// Kinds are the example services' names, in the order the demo uses them.
var Kinds = []string{"inventory", "payment", "shipping"}

// ErrUnknownKind is returned by New for a name not in Kinds.
var ErrUnknownKind = errors.New("services: unknown service kind")

// ErrRefused wraps a business refusal at prepare (out of stock, insufficient
// funds, no free slot): the participant votes abort with its text.
var ErrRefused = errors.New("refused")

// ErrInvariant is returned by Service.Check when a conservation invariant
// does not hold; the message says which and with what numbers.
var ErrInvariant = errors.New("services: invariant violated")

// TxState is what a service's own tables say about one transaction.
type TxState string

// The states of a transaction in a service's tables.
const (
	// TxNone: the service has no row for it (never prepared, or its prepare
	// voted abort).
	TxNone TxState = "none"
	// TxStaged: prepared (stock reserved, funds held, slot held).
	TxStaged TxState = "staged"
	// TxApplied: committed (stock sold, funds captured, slot booked), or a
	// saga step's action done.
	TxApplied TxState = "applied"
	// TxReleased: aborted after a prepare; what was staged was given back.
	// For a saga step: compensated; what the action took was given back.
	TxReleased TxState = "released"
)

// Service is one example service: a participants.SQLHandler over its own
// database, with its invariants.
type Service interface {
	participants.SQLHandler
	participants.SQLSagaHandler
	// Kind is the service's kind, one of Kinds.
	Kind() string
	// DB is the service's database.
	DB() *sql.DB
	// TxState reads what the service's tables say about txid (for a saga
	// step, StepKey; see StepState).
	TxState(ctx context.Context, txid string) (TxState, error)
	// Check verifies the conservation invariants and returns a one-line
	// summary with counts; an ErrInvariant error says what is broken.
	Check(ctx context.Context) (string, error)
	// Payload returns an example prepare payload for order number i.
	Payload(i int) []byte
}

// OpenSQLite opens (creating if needed) the SQLite database at path, set up
// for the barrier: WAL journal, a 10s busy timeout, IMMEDIATE transactions
// (so a transaction takes the write lock when it begins, never failing to
// upgrade later), and one connection per process.
func OpenSQLite(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("services: opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("services: opening %s: %w", path, err)
	}
	return db, nil
}

// sqliteDSN is the data source name OpenSQLite opens the database at path
// with.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"
}

// New returns the service of kind on db, creating and seeding its tables if
// they do not exist, and prepares the statements its handlers run (see
// stmtCache). The statements are released when db is closed.
func New(ctx context.Context, kind string, db *sql.DB) (Service, error) {
	var s Service
	var schema, queries []string
	stmts := newStmtCache(db)
	switch kind {
	case "inventory":
		s, schema, queries = &Inventory{db: db, stmts: stmts}, inventorySchema, inventoryStmts
	case "payment":
		s, schema, queries = &Payment{db: db, stmts: stmts}, paymentSchema, paymentStmts
	case "shipping":
		s, schema, queries = &Shipping{db: db, stmts: stmts}, shippingSchema, shippingStmts
	default:
		return nil, fmt.Errorf("%w %q; want one of %s", ErrUnknownKind, kind, strings.Join(Kinds, ", "))
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("services: %s: %w", kind, err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, stmt := range schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("services: %s: creating tables: %w", kind, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("services: %s: %w", kind, err)
	}
	// After the tables exist, and outside any transaction: see stmtCache.
	if err := stmts.prepareAll(ctx, queries); err != nil {
		_ = stmts.Close()
		return nil, fmt.Errorf("services: %s: %w", kind, err)
	}
	return s, nil
}

// Open opens the SQLite database at path and returns the service of kind on
// it; Close the service's DB when done.
func Open(ctx context.Context, kind, path string) (Service, error) {
	db, err := OpenSQLite(path)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, kind, db)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// exec runs the statement of query q in dbtx, prepared once (stmts), and
// returns the rows it affected.
func exec(ctx context.Context, stmts *stmtCache, dbtx *sql.Tx, q string, args ...any) (int64, error) {
	st, err := stmts.in(ctx, dbtx, q)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// one runs a statement that must affect exactly one row (see exec).
func one(ctx context.Context, stmts *stmtCache, dbtx *sql.Tx, what, q string, args ...any) error {
	n, err := exec(ctx, stmts, dbtx, q, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n != 1 {
		return fmt.Errorf("%s: %d rows changed, want 1", what, n)
	}
	return nil
}

// scanRow runs the query q in dbtx, prepared once (stmts), and scans its
// first row into dest: sql.ErrNoRows when there is none.
func scanRow(ctx context.Context, stmts *stmtCache, dbtx *sql.Tx, q string, args []any, dest ...any) error {
	st, err := stmts.in(ctx, dbtx, q)
	if err != nil {
		return err
	}
	return st.QueryRowContext(ctx, args...).Scan(dest...)
}

// txState reads the state column of table's row for txid.
func txState(ctx context.Context, db *sql.DB, table, txid string) (TxState, error) {
	var s string
	err := db.QueryRowContext(ctx, `SELECT state FROM `+table+` WHERE txid = ?`, txid).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return TxNone, nil
	}
	if err != nil {
		return TxNone, err
	}
	return TxState(s), nil
}

// Result is what the coordinator said of one transaction, for
// CheckAtomicity.
type Result struct {
	ID           string
	Participants []string
	Committed    bool
}

// CheckAtomicity checks, after quiescence, that every committed transaction
// is applied by every one of its services and every aborted one by none
// (nothing left staged). It returns the number of violations and what each
// one was (at most 50).
func CheckAtomicity(ctx context.Context, results []Result, svcs map[string]Service) (int, []string, error) {
	violations := 0
	var problems []string
	for _, r := range results {
		for _, name := range r.Participants {
			svc := svcs[name]
			if svc == nil {
				return 0, nil, fmt.Errorf("services: no service %q to check", name)
			}
			s, err := svc.TxState(ctx, r.ID)
			if err != nil {
				return 0, nil, err
			}
			bad := r.Committed && s != TxApplied || !r.Committed && (s == TxApplied || s == TxStaged)
			if bad {
				violations++
				if len(problems) < 50 {
					problems = append(problems, fmt.Sprintf("%s committed=%v but %s has it %s", r.ID, r.Committed, name, s))
				}
			}
		}
	}
	return violations, problems, nil
}

// CheckAll runs Check on every service, in name order, and returns their
// summaries and the first error.
func CheckAll(ctx context.Context, svcs map[string]Service) ([]string, error) {
	names := make([]string, 0, len(svcs))
	for n := range svcs {
		names = append(names, n)
	}
	sort.Strings(names)
	var lines []string
	var firstErr error
	for _, n := range names {
		line, err := svcs[n].Check(ctx)
		lines = append(lines, line)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return lines, firstErr
}

// Payload returns the example prepare payload of order number i for the
// service of kind, or nil for an unknown kind.
func Payload(kind string, i int) []byte {
	switch kind {
	case "inventory":
		return (*Inventory)(nil).Payload(i)
	case "payment":
		return (*Payment)(nil).Payload(i)
	case "shipping":
		return (*Shipping)(nil).Payload(i)
	}
	return nil
}
