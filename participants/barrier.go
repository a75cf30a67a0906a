package participants

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/natstx/natstx/messages"
)

// SQLHandler is a participant service whose business data lives in a SQL
// database behind a Barrier. Each method runs inside the local database
// transaction dbtx that the Barrier opened: the service makes its change with
// dbtx (never with its *sql.DB), and the Barrier records the command in the
// same transaction, so the change and the record commit together or not at
// all. A method must not commit or roll back dbtx.
//
// The Barrier calls Prepare at most once per transaction (unless it failed),
// Commit only after a successful Prepare and at most once successfully, and
// Abort only after a successful Prepare and at most once successfully, across
// every process that shares the database.
type SQLHandler interface {
	// Prepare stages the work described by payload. A nil error votes
	// commit; ReadOnly (alone or wrapped) votes read-only and the Barrier
	// rolls dbtx back, so the participant holds nothing; any other error
	// votes abort (err.Error() is the reason) and the Barrier rolls dbtx
	// back, so nothing of the failed prepare remains.
	Prepare(ctx context.Context, dbtx *sql.Tx, tx Tx, payload []byte) error
	// Commit makes the staged work final. An error rolls dbtx back; the
	// command is delivered again later.
	Commit(ctx context.Context, dbtx *sql.Tx, tx Tx) error
	// Abort discards the staged work. An error rolls dbtx back; the command is
	// delivered again later.
	Abort(ctx context.Context, dbtx *sql.Tx, tx Tx) error
}

// Dialect is the SQL flavour of a Barrier's database.
type Dialect int

// The supported dialects. Both use INSERT ... ON CONFLICT DO NOTHING.
const (
	// SQLite: '?' placeholders. Open the database with a busy timeout and
	// IMMEDIATE transactions (see docs/PARTICIPANTS.md).
	SQLite Dialect = iota
	// Postgres: '$1' placeholders (pgx's database/sql driver, or any other).
	Postgres
)

// String names d.
func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return "dialect(" + strconv.Itoa(int(d)) + ")"
}

// DefaultBarrierTable is BarrierConfig.Table when empty.
const DefaultBarrierTable = "natstx_barrier"

// BarrierConfig configures a Barrier.
type BarrierConfig struct {
	// DB is the participant's own database; required.
	DB *sql.DB
	// Dialect is DB's SQL flavour; default SQLite.
	Dialect Dialect
	// Table is the barrier table's name; default natstx_barrier. NewBarrier
	// creates it if it does not exist.
	Table string
	// Handler does the two-phase commit work inside the Barrier's
	// transactions. Set Handler, SagaHandler or both; a participant without
	// one answers that kind's commands failed and terminates them.
	Handler SQLHandler
	// SagaHandler does the saga steps' work inside the Barrier's
	// transactions.
	SagaHandler SQLSagaHandler
	// GroupCommit: whether the local transactions of commands that wait
	// for one another commit as one (see GroupCommit); default
	// GroupCommitAuto, on for SQLite.
	GroupCommit GroupCommit
	// Before, if set, runs before each command's local transaction opens,
	// duplicates included; an error fails the command as a handler error
	// would. For work that must not hold the database, e.g. simulated latency.
	Before func(ctx context.Context, op messages.Op, tx Tx) error
}

// Barrier makes a participant's effects happen exactly once. For every
// command it writes a row (participant, transaction ID, operation, result) in
// the participant's own database, in the same local transaction as the
// business change, and answers duplicates, late and out-of-order commands from
// those rows. The primary key on the row is the only lock: two instances that
// handle the same command at once cannot both apply it. A unique index on
// (participant, transaction ID) over the commit and abort rows makes the two
// outcomes of one transaction exclude each other in the database, whatever
// the coordinators send. The prepare row keeps the transaction's deadline,
// so a participant that restarts asks about what it prepared with it.
//
// Set Config.Barrier to run a Runtime on it. A Barrier is safe for concurrent
// use. It prepares the statements every command runs once, on its database,
// and reuses them on each connection; they are released by Close, or when
// the database is closed.
type Barrier struct {
	db      *sql.DB
	dialect Dialect
	table   string
	h       SQLHandler
	sh      SQLSagaHandler
	before  func(ctx context.Context, op messages.Op, tx Tx) error
	// stmts are the prepared statements, by stmtID; closed once Close ran.
	stmts  [numStmts]*sql.Stmt
	closed atomic.Bool
	groupState
}

// ErrBarrier wraps a database error of a Barrier: the command could not be
// recorded and is delivered again later.
var ErrBarrier = errors.New("natstx: barrier")

// NewBarrier returns a Barrier for cfg, creates its table if needed and
// prepares its statements on cfg.DB (see Close).
func NewBarrier(ctx context.Context, cfg BarrierConfig) (*Barrier, error) {
	if cfg.DB == nil {
		return nil, fmt.Errorf("%w: BarrierConfig.DB is nil", ErrInvalidConfig)
	}
	if cfg.Handler == nil && cfg.SagaHandler == nil {
		return nil, fmt.Errorf("%w: BarrierConfig.Handler and BarrierConfig.SagaHandler are both nil; set one or both", ErrInvalidConfig)
	}
	if cfg.Dialect != SQLite && cfg.Dialect != Postgres {
		return nil, fmt.Errorf("%w: BarrierConfig.Dialect %s is not SQLite or Postgres", ErrInvalidConfig, cfg.Dialect)
	}
	if cfg.Table == "" {
		cfg.Table = DefaultBarrierTable
	}
	if err := messages.ValidateName("BarrierConfig.Table", cfg.Table); err != nil || strings.Contains(cfg.Table, "-") {
		return nil, fmt.Errorf("%w: BarrierConfig.Table %q must be letters, digits and '_'", ErrInvalidConfig, cfg.Table)
	}
	switch cfg.GroupCommit {
	case GroupCommitAuto, GroupCommitOn, GroupCommitOff:
	default:
		return nil, fmt.Errorf("%w: BarrierConfig.GroupCommit %s is not auto, on or off", ErrInvalidConfig, cfg.GroupCommit)
	}
	b := &Barrier{db: cfg.DB, dialect: cfg.Dialect, table: cfg.Table, h: cfg.Handler, sh: cfg.SagaHandler, before: cfg.Before}
	b.group = cfg.GroupCommit == GroupCommitOn || cfg.GroupCommit == GroupCommitAuto && cfg.Dialect == SQLite
	ddl := `CREATE TABLE IF NOT EXISTS ` + b.table + ` (
	participant TEXT NOT NULL,
	txid        TEXT NOT NULL,
	op          TEXT NOT NULL,
	result      TEXT NOT NULL,
	reason      TEXT NOT NULL,
	at_ms       BIGINT NOT NULL,
	deadline_ms BIGINT,
	code        TEXT,
	attempt     BIGINT,
	PRIMARY KEY (participant, txid, op))`
	if _, err := b.db.ExecContext(ctx, ddl); err != nil {
		return nil, fmt.Errorf("%w: creating table %s: %w", ErrBarrier, b.table, err)
	}
	if err := b.migrate(ctx); err != nil {
		return nil, err
	}
	if err := b.prepareStmts(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// migrate brings a table created by an earlier version up to date: it adds
// the nullable columns deadline_ms (rows written before it have no known
// deadline), code and attempt (saga steps' refusal codes and failed
// attempts), and the unique index that lets one transaction have a commit
// row or an abort row, never both. Safe to run from several processes at
// once.
func (b *Barrier) migrate(ctx context.Context) error {
	for _, col := range []struct{ name, typ string }{{"deadline_ms", "BIGINT"}, {"code", "TEXT"}, {"attempt", "BIGINT"}} {
		has := func() bool {
			rs, err := b.db.QueryContext(ctx, `SELECT `+col.name+` FROM `+b.table+` WHERE 1 = 0`)
			if err != nil {
				return false
			}
			_ = rs.Close()
			return true
		}
		if has() {
			continue
		}
		add := `ALTER TABLE ` + b.table + ` ADD COLUMN ` + col.name + ` ` + col.typ
		if b.dialect == Postgres {
			add = `ALTER TABLE ` + b.table + ` ADD COLUMN IF NOT EXISTS ` + col.name + ` ` + col.typ
		}
		// Another process may add it at the same time: what counts is that
		// the column exists afterwards.
		if _, err := b.db.ExecContext(ctx, add); err != nil && !has() {
			return fmt.Errorf("%w: adding column %s to table %s: %w", ErrBarrier, col.name, b.table, err)
		}
	}
	idx := `CREATE UNIQUE INDEX IF NOT EXISTS ` + b.table + `_outcome ON ` + b.table + ` (participant, txid) WHERE op IN ('commit', 'abort')`
	if _, err := b.db.ExecContext(ctx, idx); err != nil {
		return fmt.Errorf("%w: creating the unique index %s_outcome on table %s (one outcome per transaction; "+
			"it cannot be created while a transaction has both a commit row and an abort row: find them with "+
			"SELECT participant, txid FROM %s WHERE op IN ('commit', 'abort') GROUP BY participant, txid HAVING COUNT(*) > 1): %w",
			ErrBarrier, b.table, b.table, b.table, err)
	}
	return nil
}

// Table is the name of the barrier table.
func (b *Barrier) Table() string { return b.table }

// Row results that are not protocol results.
const (
	// resultNullAbort marks a prepare row claimed by an abort that came first.
	resultNullAbort = "aborted-first"
	// resultDone marks a saga action that ran.
	resultDone = "done"
	// resultCompensatedFirst marks a saga action row claimed by a
	// compensation that came first.
	resultCompensatedFirst = "compensated-first"
)

// row is one barrier row.
type row struct{ result, reason string }

// q rewrites '?' placeholders for the dialect.
func (b *Barrier) q(s string) string {
	if b.dialect != Postgres {
		return s
	}
	var sb strings.Builder
	n := 0
	for _, c := range s {
		if c == '?' {
			n++
			sb.WriteString("$" + strconv.Itoa(n))
			continue
		}
		sb.WriteRune(c)
	}
	return sb.String()
}

// claim inserts the row (participant, txid, op) unless it, or a row it
// excludes (the other outcome of the transaction), exists, and reports
// whether it did. On PostgreSQL a concurrent claim of the same row, or of the
// other outcome, waits for the first to commit or roll back; on SQLite
// transactions are serialised. deadline is kept on the row when not zero.
func (b *Barrier) claim(ctx context.Context, dbtx *sql.Tx, participant, txid, op, result, reason string, now, deadline time.Time) (bool, error) {
	var dl sql.NullInt64
	if !deadline.IsZero() {
		dl = sql.NullInt64{Int64: deadline.UnixMilli(), Valid: true}
	}
	res, err := b.stmt(ctx, dbtx, stmtClaim).ExecContext(ctx, participant, txid, op, result, reason, now.UnixMilli(), dl)
	if err != nil {
		return false, fmt.Errorf("%w: recording %s %s: %w", ErrBarrier, op, txid, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("%w: recording %s %s: %w", ErrBarrier, op, txid, err)
	}
	return n == 1, nil
}

// set overwrites the result of an existing row.
func (b *Barrier) set(ctx context.Context, dbtx *sql.Tx, participant, txid, op, result, reason string) error {
	_, err := b.stmt(ctx, dbtx, stmtSet).ExecContext(ctx, result, reason, participant, txid, op)
	if err != nil {
		return fmt.Errorf("%w: recording %s %s: %w", ErrBarrier, op, txid, err)
	}
	return nil
}

// rows reads every row of one transaction, keyed by operation, in dbtx, or
// outside a transaction when dbtx is nil.
func (b *Barrier) rows(ctx context.Context, dbtx *sql.Tx, participant, txid string) (map[string]row, error) {
	rs, err := b.stmt(ctx, dbtx, stmtRows).QueryContext(ctx, participant, txid)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBarrier, txid, err)
	}
	defer rs.Close()
	m := make(map[string]row)
	for rs.Next() {
		var op string
		var r row
		if err := rs.Scan(&op, &r.result, &r.reason); err != nil {
			return nil, fmt.Errorf("%w: reading %s: %w", ErrBarrier, txid, err)
		}
		m[op] = r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBarrier, txid, err)
	}
	return m, nil
}

// stateOf derives a State from a transaction's rows.
func stateOf(rows map[string]row) (State, string) {
	p, prepared := rows[string(messages.OpPrepare)]
	_, aborted := rows[string(messages.OpAbort)]
	_, committed := rows[string(messages.OpCommit)]
	switch {
	case prepared && p.result == string(messages.VoteReadOnly):
		return StateReadOnly, ""
	case committed:
		return StateCommitted, ""
	case aborted && prepared && p.result == string(messages.VoteCommit):
		return StateAborted, ReasonAborted
	case aborted || prepared && p.result != string(messages.VoteCommit):
		reason := p.reason
		if reason == "" {
			reason = ReasonAbortedBeforePrepare
		}
		return StateAborted, reason
	case prepared:
		return StatePrepared, ""
	}
	return StateNone, ""
}

// State returns what the barrier records about participant's transaction
// txid.
func (b *Barrier) State(ctx context.Context, participant, txid string) (State, error) {
	if err := b.checkOpen(); err != nil {
		return StateNone, err
	}
	rows, err := b.rows(ctx, nil, participant, txid)
	if err != nil {
		return StateNone, err
	}
	s, _ := stateOf(rows)
	return s, nil
}

// verdict is the Barrier's answer to one command, before it becomes a reply.
type verdict struct {
	result messages.Result
	reason string
	// duplicate: answered from the record, no handler call.
	duplicate bool
	// rejected: the command contradicts the record.
	rejected bool
	// applied: the handler ran and its change committed.
	applied bool
	// handlerErr: the handler (or Before) failed; the command is retried.
	handlerErr error
	// state is what the record says after the command, when stateKnown.
	state      State
	stateKnown bool
	// code is a saga reply's code; step the saga step's state after the
	// command.
	code string
	step StepState
}

// in returns v with the record's state after the command.
func (v verdict) in(s State) verdict {
	v.state, v.stateKnown = s, true
	return v
}

// prepare handles a prepare command at now. A non-nil error is a database
// failure.
func (b *Barrier) prepare(ctx context.Context, tx Tx, payload []byte, now time.Time, call func(func(context.Context) error) error) (verdict, error) {
	if b.before != nil {
		if err := call(func(ctx context.Context) error { return b.before(ctx, messages.OpPrepare, tx) }); err != nil {
			return b.recordNo(ctx, tx, now, err)
		}
	}
	var v verdict
	var prepareErr error
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		staged, err := b.stage(ctx, dbtx, tx, payload, now, call, &v, &prepareErr)
		if staged {
			v = verdict{result: messages.VoteCommit, applied: true}.in(StatePrepared)
		}
		return err
	})
	if prepareErr != nil {
		return b.recordRefusal(ctx, tx, now, prepareErr)
	}
	return v, err
}

// stage runs in dbtx what a prepare of either protocol begins with: it
// claims the prepare row (voted commit) and, having won it, applies the
// deadline rule and calls the handler's Prepare. staged is true when
// Prepare succeeded; else *v is the answer (from the record, or the vote
// abort of a passed deadline, recorded), or *prepareErr is Prepare's error,
// which stage also returns so that the caller's local transaction rolls
// back (the staged work and the claim).
func (b *Barrier) stage(ctx context.Context, dbtx *sql.Tx, tx Tx, payload []byte, now time.Time, call func(func(context.Context) error) error,
	v *verdict, prepareErr *error) (staged bool, err error) {
	won, err := b.claim(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpPrepare), string(messages.VoteCommit), "", now, tx.Deadline)
	switch {
	case err != nil:
		return false, err
	case !won:
		*v, err = b.answerPrepare(ctx, dbtx, tx)
		return false, err
	case !tx.Deadline.IsZero() && !now.Before(tx.Deadline):
		*v = verdict{result: messages.VoteAbort, reason: ReasonDeadlinePassed}.in(StateAborted)
		return false, b.set(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpPrepare), string(messages.VoteAbort), ReasonDeadlinePassed)
	}
	*prepareErr = call(func(ctx context.Context) error { return b.h.Prepare(ctx, dbtx, tx, payload) })
	return *prepareErr == nil, *prepareErr
}

// recordRefusal records what a prepare whose local transaction rolled back
// on the handler's error votes: read-only for ReadOnly, else abort.
func (b *Barrier) recordRefusal(ctx context.Context, tx Tx, now time.Time, handlerErr error) (verdict, error) {
	if errors.Is(handlerErr, ReadOnly) {
		return b.recordVote(ctx, tx, now, verdict{result: messages.VoteReadOnly, applied: true}.in(StateReadOnly))
	}
	return b.recordNo(ctx, tx, now, handlerErr)
}

// onePhase handles a commit-one-phase command at now: the prepare and the
// commit in one local transaction, so that the participant, which decides
// the outcome alone, is never left prepared. A non-nil error is a database
// failure.
func (b *Barrier) onePhase(ctx context.Context, tx Tx, payload []byte, now time.Time, call func(func(context.Context) error) error) (verdict, error) {
	if b.before != nil {
		if err := call(func(ctx context.Context) error { return b.before(ctx, messages.OpCommitOnePhase, tx) }); err != nil {
			v, err := b.recordNo(ctx, tx, now, err)
			return asOnePhase(v), err
		}
	}
	var v verdict
	var prepareErr, commitErr error
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		if staged, err := b.stage(ctx, dbtx, tx, payload, now, call, &v, &prepareErr); !staged {
			v = asOnePhase(v)
			return err
		}
		if won, err := b.claim(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpCommit), string(messages.Ack), "", now, time.Time{}); err != nil || !won {
			// The prepare row was new: a commit row can only be a stray one.
			return cmp.Or(err, fmt.Errorf("%w: %s has a commit row but no prepare", ErrBarrier, tx.ID))
		}
		if commitErr = call(func(ctx context.Context) error { return b.h.Commit(ctx, dbtx, tx) }); commitErr != nil {
			return commitErr // roll back both: the command comes again
		}
		v = verdict{result: messages.Ack, applied: true}.in(StateCommitted)
		return nil
	})
	switch {
	case prepareErr != nil:
		v, err = b.recordRefusal(ctx, tx, now, prepareErr)
		return asOnePhase(v), err
	case commitErr != nil:
		return verdict{result: messages.Failed, reason: commitErr.Error(), handlerErr: commitErr}, nil
	}
	return v, err
}

// asOnePhase turns the answer to a prepare into the answer to
// commit-one-phase: committed or read-only is ack, abort stays vote-abort,
// and a transaction prepared (by a prepare of two-phase commit) is a
// contradiction.
func asOnePhase(v verdict) verdict {
	switch {
	case v.result == messages.VoteReadOnly, v.result == messages.VoteCommit && v.state == StateCommitted:
		v.result = messages.Ack
	case v.result == messages.VoteCommit:
		return verdict{result: messages.Failed, reason: ReasonOnePhaseOfPrepared, rejected: true}.in(v.state)
	}
	return v
}

// recordNo records an abort vote for a prepare whose handler failed, in a
// new local transaction; if another command recorded the prepare meanwhile,
// that record is the answer.
func (b *Barrier) recordNo(ctx context.Context, tx Tx, now time.Time, cause error) (verdict, error) {
	reason := cause.Error()
	if reason == "" {
		reason = ReasonPrepareFailed
	}
	return b.recordVote(ctx, tx, now, verdict{result: messages.VoteAbort, reason: reason, handlerErr: cause}.in(StateAborted))
}

// recordVote records v, a vote abort or read-only whose prepare's local
// transaction was rolled back, in a new local transaction; if another
// command recorded the prepare meanwhile, that record is the answer.
func (b *Barrier) recordVote(ctx context.Context, tx Tx, now time.Time, v verdict) (verdict, error) {
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		won, err := b.claim(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpPrepare), string(v.result), messages.Truncate(v.reason, messages.MaxReasonLen), now, tx.Deadline)
		if err != nil || won {
			return err
		}
		v, err = b.answerPrepare(ctx, dbtx, tx)
		return err
	})
	return v, err
}

// answerPrepare answers a prepare from the record.
func (b *Barrier) answerPrepare(ctx context.Context, dbtx *sql.Tx, tx Tx) (verdict, error) {
	rows, err := b.rows(ctx, dbtx, tx.Participant, tx.ID)
	if err != nil {
		return verdict{}, err
	}
	switch s, reason := stateOf(rows); s {
	case StatePrepared, StateCommitted:
		return verdict{result: messages.VoteCommit, duplicate: true}.in(s), nil
	case StateReadOnly:
		return verdict{result: messages.VoteReadOnly, duplicate: true}.in(s), nil
	default:
		return verdict{result: messages.VoteAbort, reason: reason, duplicate: true}.in(StateAborted), nil
	}
}

// outcomeClash answers a commit or abort whose claim found its row taken:
// by a duplicate of itself, or by the other outcome, which the unique index
// lets in first (on PostgreSQL, committed by another instance after this
// command read the rows).
func (b *Barrier) outcomeClash(ctx context.Context, dbtx *sql.Tx, tx Tx, op messages.Op) (verdict, error) {
	rows, err := b.rows(ctx, dbtx, tx.Participant, tx.ID)
	if err != nil {
		return verdict{}, err
	}
	_, mine := rows[string(op)]
	switch {
	case mine && op == messages.OpCommit:
		return verdict{result: messages.Ack, duplicate: true}.in(StateCommitted), nil
	case mine:
		return verdict{result: messages.Ack, duplicate: true}.in(StateAborted), nil
	case op == messages.OpCommit:
		return verdict{result: messages.Failed, reason: ReasonCommitAfterAbort, rejected: true}.in(StateAborted), nil
	default:
		return verdict{result: messages.Failed, reason: ReasonAbortAfterCommit, rejected: true}.in(StateCommitted), nil
	}
}

// commit handles a commit command at now.
func (b *Barrier) commit(ctx context.Context, tx Tx, now time.Time, call func(func(context.Context) error) error) (verdict, error) {
	if b.before != nil {
		if err := call(func(ctx context.Context) error { return b.before(ctx, messages.OpCommit, tx) }); err != nil {
			return verdict{result: messages.Failed, reason: err.Error(), handlerErr: err}, nil
		}
	}
	var v verdict
	var handlerErr error
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		rows, err := b.rows(ctx, dbtx, tx.Participant, tx.ID)
		if err != nil {
			return err
		}
		switch s, _ := stateOf(rows); s {
		case StateNone:
			v = verdict{result: messages.Failed, reason: ReasonNoRecord, rejected: true}.in(StateNone)
			return nil
		case StateAborted:
			v = verdict{result: messages.Failed, reason: ReasonCommitAfterAbort, rejected: true}.in(StateAborted)
			return nil
		case StateCommitted:
			v = verdict{result: messages.Ack, duplicate: true}.in(StateCommitted)
			return nil
		case StateReadOnly:
			// Nothing to commit; a coordinator recovering its decision may
			// send commit all the same.
			v = verdict{result: messages.Ack, duplicate: true}.in(StateReadOnly)
			return nil
		}
		won, err := b.claim(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpCommit), string(messages.Ack), "", now, time.Time{})
		if err != nil {
			return err
		}
		if !won {
			v, err = b.outcomeClash(ctx, dbtx, tx, messages.OpCommit)
			return err
		}
		if handlerErr = call(func(ctx context.Context) error { return b.h.Commit(ctx, dbtx, tx) }); handlerErr != nil {
			return handlerErr
		}
		v = verdict{result: messages.Ack, applied: true}.in(StateCommitted)
		return nil
	})
	if handlerErr != nil {
		return verdict{result: messages.Failed, reason: handlerErr.Error(), handlerErr: handlerErr}, nil
	}
	return v, err
}

// abort handles an abort command at now.
func (b *Barrier) abort(ctx context.Context, tx Tx, now time.Time, call func(func(context.Context) error) error) (verdict, error) {
	if b.before != nil {
		if err := call(func(ctx context.Context) error { return b.before(ctx, messages.OpAbort, tx) }); err != nil {
			return verdict{result: messages.Failed, reason: err.Error(), handlerErr: err}, nil
		}
	}
	var v verdict
	var handlerErr error
	err := b.inTx(ctx, func(dbtx *sql.Tx) error {
		// Claim the prepare row first: if it is free, the prepare has not run
		// and never will (it finds the row taken and votes abort).
		won, err := b.claim(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpPrepare), resultNullAbort, ReasonAbortedBeforePrepare, now, tx.Deadline)
		if err != nil {
			return err
		}
		if won {
			if _, err := b.claim(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpAbort), string(messages.Ack), ReasonAbortedBeforePrepare, now, time.Time{}); err != nil {
				return err
			}
			v = verdict{result: messages.Ack}.in(StateAborted)
			return nil
		}
		rows, err := b.rows(ctx, dbtx, tx.Participant, tx.ID)
		if err != nil {
			return err
		}
		if rows[string(messages.OpPrepare)].result == string(messages.VoteReadOnly) {
			v = verdict{result: messages.Ack, duplicate: true}.in(StateReadOnly) // nothing to abort
			return nil
		}
		if _, ok := rows[string(messages.OpCommit)]; ok {
			v = verdict{result: messages.Failed, reason: ReasonAbortAfterCommit, rejected: true}.in(StateCommitted)
			return nil
		}
		if _, ok := rows[string(messages.OpAbort)]; ok {
			v = verdict{result: messages.Ack, duplicate: true}.in(StateAborted)
			return nil
		}
		won, err = b.claim(ctx, dbtx, tx.Participant, tx.ID, string(messages.OpAbort), string(messages.Ack), "", now, time.Time{})
		if err != nil {
			return err
		}
		if !won {
			v, err = b.outcomeClash(ctx, dbtx, tx, messages.OpAbort)
			return err
		}
		if rows[string(messages.OpPrepare)].result != string(messages.VoteCommit) {
			// The prepare voted abort: nothing is staged ("null compensation").
			v = verdict{result: messages.Ack}.in(StateAborted)
			return nil
		}
		if handlerErr = call(func(ctx context.Context) error { return b.h.Abort(ctx, dbtx, tx) }); handlerErr != nil {
			return handlerErr
		}
		v = verdict{result: messages.Ack, applied: true}.in(StateAborted)
		return nil
	})
	if handlerErr != nil {
		return verdict{result: messages.Failed, reason: handlerErr.Error(), handlerErr: handlerErr}, nil
	}
	return v, err
}

// ErrCompensated is returned by Barrier.Action when the step's compensation
// ran first: the action must not run any more.
var ErrCompensated = errors.New("natstx: step already compensated")

// Action runs a saga step's action fn once for (participant, txid, step), in
// one local transaction with its record. A repeated call does nothing and
// returns nil; a call after the step's compensation does nothing and returns
// ErrCompensated, and one after a refusal recorded by the Processor returns
// a RefusedError. An error from fn rolls everything back and is returned.
// The Processor's saga path (Config.Barrier with BarrierConfig.SagaHandler)
// uses the same rows.
func (b *Barrier) Action(ctx context.Context, participant, txid, step string, fn func(*sql.Tx) error) error {
	op := "action:" + step
	return b.inTx(ctx, func(dbtx *sql.Tx) error {
		won, err := b.claim(ctx, dbtx, participant, txid, op, resultDone, "", time.Now(), time.Time{})
		if err != nil || !won {
			if err == nil {
				rows, rerr := b.rows(ctx, dbtx, participant, txid)
				if rerr != nil {
					return rerr
				}
				switch r := rows[op]; r.result {
				case resultCompensatedFirst:
					return ErrCompensated
				case resultRefused:
					return &RefusedError{Reason: r.reason}
				}
			}
			return err
		}
		return fn(dbtx)
	})
}

// Compensate runs a saga step's compensation fn once for (participant, txid,
// step). If the action never ran, fn is not called, and the record makes a
// late action do nothing ("null compensation", no hanging action). A repeated
// call does nothing.
func (b *Barrier) Compensate(ctx context.Context, participant, txid, step string, fn func(*sql.Tx) error) error {
	action, op := "action:"+step, "compensate:"+step
	return b.inTx(ctx, func(dbtx *sql.Tx) error {
		actionFirst, err := b.claim(ctx, dbtx, participant, txid, action, resultCompensatedFirst, "", time.Now(), time.Time{})
		if err != nil {
			return err
		}
		won, err := b.claim(ctx, dbtx, participant, txid, op, resultDone, "", time.Now(), time.Time{})
		if err != nil || !won || actionFirst {
			return err
		}
		rows, err := b.rows(ctx, dbtx, participant, txid)
		if err != nil {
			return err
		}
		if rows[action].result != resultDone { // compensated first, or refused
			return nil
		}
		return fn(dbtx)
	})
}

// Purge deletes participant's two-phase-commit rows of transactions that
// finished (committed, aborted, voted abort or read-only) with no row newer than
// before, and returns how many rows it deleted. Rows of transactions still
// prepared are never deleted, nor saga rows. Safe once before is older than
// any command that can still arrive: a prepare after its deadline votes
// abort whatever the barrier holds, and the coordinator stops re-sending a
// commit or abort once it was acknowledged.
func (b *Barrier) Purge(ctx context.Context, participant string, before time.Time) (int64, error) {
	const twoPC = `op IN ('prepare', 'commit', 'abort')`
	res, err := b.db.ExecContext(ctx, b.q(`DELETE FROM `+b.table+` WHERE participant = ? AND `+twoPC+` AND txid IN (
	SELECT txid FROM `+b.table+` WHERE participant = ? AND `+twoPC+` GROUP BY txid
	HAVING MAX(at_ms) < ? AND (
		SUM(CASE WHEN op IN ('commit', 'abort') THEN 1 ELSE 0 END) > 0 OR
		SUM(CASE WHEN op = 'prepare' AND result <> ? THEN 1 ELSE 0 END) > 0))`),
		participant, participant, before.UnixMilli(), string(messages.VoteCommit))
	if err != nil {
		return 0, fmt.Errorf("%w: purging finished rows: %w", ErrBarrier, err)
	}
	return res.RowsAffected()
}
