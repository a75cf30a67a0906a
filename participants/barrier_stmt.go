package participants

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// stmtID names one of a Barrier's prepared statements: the ones every
// command runs. One-off statements (the table's DDL and migration, Purge,
// PreparedTxs) are not prepared.
type stmtID int

const (
	// stmtClaim inserts a two-phase commit row (claim).
	stmtClaim stmtID = iota
	// stmtSet overwrites a row's result and reason (set).
	stmtSet
	// stmtRows reads a transaction's rows (rows: State, answers).
	stmtRows
	// stmtClaimStep inserts a saga row (claimStep).
	stmtClaimStep
	// stmtStepRows reads a saga step's rows (stepRows: StepState, answers).
	stmtStepRows
	// stmtRaiseAttempt raises a step's failed attempt (recordActionError).
	stmtRaiseAttempt
	numStmts
)

// stmtText returns the text of statement id on table, with '?' placeholders.
func stmtText(id stmtID, table string) string {
	switch id {
	case stmtClaim:
		return `INSERT INTO ` + table + ` (participant, txid, op, result, reason, at_ms, deadline_ms)
VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	case stmtSet:
		return `UPDATE ` + table + ` SET result = ?, reason = ? WHERE participant = ? AND txid = ? AND op = ?`
	case stmtRows:
		return `SELECT op, result, reason FROM ` + table + ` WHERE participant = ? AND txid = ?`
	case stmtClaimStep:
		return `INSERT INTO ` + table + ` (participant, txid, op, result, reason, at_ms, code, attempt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	case stmtStepRows:
		return `SELECT op, result, reason, code, attempt FROM ` + table + ` WHERE participant = ? AND txid = ? AND op IN (?, ?, ?)`
	case stmtRaiseAttempt:
		return `UPDATE ` + table + ` SET attempt = ?, reason = ?, at_ms = ? WHERE participant = ? AND txid = ? AND op = ? AND attempt < ?`
	}
	panic(fmt.Sprintf("participants: unknown barrier statement %d", id))
}

// prepareStmts prepares every statement of stmtText on the database, once:
// database/sql then prepares each on a connection the first time it runs
// there and reuses it afterwards, in and out of transactions (see stmt).
func (b *Barrier) prepareStmts(ctx context.Context) error {
	for id := range numStmts {
		s, err := b.db.PrepareContext(ctx, b.q(stmtText(id, b.table)))
		if err != nil {
			_ = b.closeStmts()
			return fmt.Errorf("%w: preparing the statements on table %s: %w", ErrBarrier, b.table, err)
		}
		b.stmts[id] = s
	}
	return nil
}

// stmt returns statement id for use in dbtx, or on the database when dbtx is
// nil. In a transaction, the statement already prepared on the transaction's
// connection is reused (Tx.StmtContext); the returned statement is closed
// with the transaction.
func (b *Barrier) stmt(ctx context.Context, dbtx *sql.Tx, id stmtID) *sql.Stmt {
	if dbtx == nil {
		return b.stmts[id]
	}
	return dbtx.StmtContext(ctx, b.stmts[id])
}

// errClosed is the cause of the ErrBarrier that a closed Barrier's methods
// return.
var errClosed = errors.New("the barrier is closed")

// Close releases the Barrier's prepared statements on every connection of
// its database. It does not close the database, which the caller owns;
// closing the database releases them too, so a Barrier that lives as long as
// its database needs no Close. Call it after the last use of b (stop the
// Runtime or Processor on it first): afterwards the commands it handles,
// Action, Compensate, State and StepState fail with ErrBarrier. Close is
// idempotent.
func (b *Barrier) Close() error {
	b.closed.Store(true)
	return b.closeStmts()
}

// closeStmts closes the prepared statements; a statement still in use by a
// transaction is released when the transaction ends.
func (b *Barrier) closeStmts() error {
	var errs []error
	for _, s := range b.stmts {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: closing the statements on table %s: %w", ErrBarrier, b.table, err)
	}
	return nil
}

// checkOpen returns an ErrBarrier once b is closed.
func (b *Barrier) checkOpen() error {
	if b.closed.Load() {
		return fmt.Errorf("%w: %w", ErrBarrier, errClosed)
	}
	return nil
}
