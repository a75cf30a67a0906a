package services

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// stmtCache holds a service's statements prepared on its database, by query
// text, so that a command does not parse its SQL again each time it runs it
// (with modernc.org/sqlite the parse was about 15% of a service's CPU under
// load). A statement is prepared on the database the first time prepare is
// asked for it; database/sql then prepares it on each connection the first
// time it runs there and reuses it afterwards (see in).
//
// A service prepares every statement its handlers run when it is created
// (New, through prepareAll), before any transaction: preparing on the
// database inside a handler would wait for a free connection, and an
// OpenSQLite database has only one, held by the handler's transaction.
type stmtCache struct {
	// db is the database the statements are prepared on.
	db *sql.DB
	// mu guards stmts.
	mu sync.Mutex
	// stmts maps a query's text to its statement prepared on db.
	stmts map[string]*sql.Stmt
	// unprepared counts the calls of in for a query not prepared: each ran
	// prepared in its transaction alone, parsed again. It stays 0 when a
	// service's statement list names every statement its handlers run.
	unprepared atomic.Int64
}

// newStmtCache returns an empty statement cache on db.
func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: make(map[string]*sql.Stmt)}
}

// prepare returns the statement of query q prepared on the database,
// preparing it the first time. A failed preparation returns the error and is
// not cached: the next call tries again. Do not call it inside a transaction
// of the database (see stmtCache).
func (c *stmtCache) prepare(ctx context.Context, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.stmts[q]; ok {
		return s, nil
	}
	s, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.stmts[q] = s
	return s, nil
}

// prepareAll prepares every query of qs (see prepare), stopping at the first
// that fails, whose error it returns naming the query.
func (c *stmtCache) prepareAll(ctx context.Context, qs []string) error {
	for _, q := range qs {
		if _, err := c.prepare(ctx, q); err != nil {
			return fmt.Errorf("preparing %q: %w", q, err)
		}
	}
	return nil
}

// in returns the statement of query q for use in dbtx. A prepared statement
// is bound to the transaction (Tx.StmtContext), which reuses the statement
// already prepared on the transaction's connection; the returned statement
// is closed with the transaction. A query not prepared yet is prepared in
// the transaction alone (Tx.PrepareContext) and not cached, since preparing
// it on the database would wait for the connection the transaction holds.
func (c *stmtCache) in(ctx context.Context, dbtx *sql.Tx, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	s, ok := c.stmts[q]
	c.mu.Unlock()
	if !ok {
		c.unprepared.Add(1)
		return dbtx.PrepareContext(ctx, q)
	}
	return dbtx.StmtContext(ctx, s), nil
}

// Close closes every prepared statement and empties the cache; a statement
// still in use by a transaction is released when the transaction ends.
// Closing the database releases them too, so a cache that lives as long as
// its database needs no Close.
func (c *stmtCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.Close())
		delete(c.stmts, q)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("services: closing the prepared statements: %w", err)
	}
	return nil
}
