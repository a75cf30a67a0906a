package participants

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
)

// GroupCommit says whether a Barrier commits the local transactions of
// commands that wait for one another as one database transaction.
type GroupCommit int

const (
	// GroupCommitAuto is on for SQLite, whose writers take turns anyway, and
	// off for PostgreSQL, whose transactions run side by side and whose
	// commits already share WAL flushes.
	GroupCommitAuto GroupCommit = iota
	// GroupCommitOn groups on every dialect.
	GroupCommitOn
	// GroupCommitOff gives every command its own database transaction.
	GroupCommitOff
)

// String names g.
func (g GroupCommit) String() string {
	switch g {
	case GroupCommitAuto:
		return "auto"
	case GroupCommitOn:
		return "on"
	case GroupCommitOff:
		return "off"
	}
	return "group-commit(" + strconv.Itoa(int(g)) + ")"
}

// maxGroup bounds how many commands one database transaction carries.
const maxGroup = 256

// groupSavepoint is the savepoint each command of a group runs inside.
const groupSavepoint = "natstx_command"

// BarrierStats counts a Barrier's database commits.
type BarrierStats struct {
	// Commits is how many local transactions the Barrier committed.
	Commits int64
	// Grouped is how many commands shared their local transaction with at
	// least one other (group commit).
	Grouped int64
	// Waiting is how many commands wait now for a group commit in progress.
	Waiting int
}

// Stats returns b's counters.
func (b *Barrier) Stats() BarrierStats {
	b.gmu.Lock()
	waiting := len(b.waiting)
	b.gmu.Unlock()
	return BarrierStats{Commits: b.commits.Load(), Grouped: b.grouped.Load(), Waiting: waiting}
}

// groupState is a Barrier's group commit: the commands waiting while
// another group is being written, and whether one leads.
type groupState struct {
	group   bool // group commit is on
	gmu     sync.Mutex
	leading bool
	waiting []*groupCall
	commits atomic.Int64
	grouped atomic.Int64
}

// groupCall is one command's local transaction, waiting to run.
type groupCall struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	err  error
	done chan struct{}
	// lead: woken to lead the next group rather than with its result.
	lead bool
}

// inTx runs fn in a local transaction and commits it if fn returns nil.
//
// With group commit, a command that comes while another group is being
// written waits; the next group takes every command waiting (up to
// maxGroup) and runs them in order in one transaction, each inside a
// savepoint: a command whose fn fails is rolled back to its savepoint alone,
// and one commit (one fsync) makes the others durable together. None is
// answered before that commit. A command that comes while none is being
// written runs alone, at once. Leadership passes from group to group, so no
// caller serves others for longer than one group.
func (b *Barrier) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := b.checkOpen(); err != nil {
		return err
	}
	if !b.group {
		return b.alone(ctx, fn)
	}
	c := &groupCall{ctx: ctx, fn: fn, done: make(chan struct{})}
	b.gmu.Lock()
	b.waiting = append(b.waiting, c)
	if b.leading {
		b.gmu.Unlock()
		<-c.done
		if !c.lead {
			return c.err
		}
		b.gmu.Lock()
	}
	b.leading = true
	n := min(len(b.waiting), maxGroup)
	group := b.waiting[:n:n]
	b.waiting = b.waiting[n:]
	b.gmu.Unlock()

	b.commitGroup(group)

	b.gmu.Lock()
	if len(b.waiting) > 0 {
		next := b.waiting[0]
		next.lead = true
		close(next.done)
	} else {
		b.leading = false
		b.waiting = nil
	}
	b.gmu.Unlock()
	for _, g := range group {
		if g != c {
			close(g.done)
		}
	}
	return c.err
}

// alone runs fn in a local transaction of its own.
func (b *Barrier) alone(ctx context.Context, fn func(*sql.Tx) error) error {
	dbtx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: beginning a transaction: %w", ErrBarrier, err)
	}
	if err := fn(dbtx); err != nil {
		_ = dbtx.Rollback()
		return err
	}
	if err := dbtx.Commit(); err != nil {
		return fmt.Errorf("%w: committing: %w", ErrBarrier, err)
	}
	b.commits.Add(1)
	return nil
}

// commitGroup runs the calls of group in one local transaction, a savepoint
// each, and sets each call's err. A call alone runs as alone does.
func (b *Barrier) commitGroup(group []*groupCall) {
	if len(group) == 1 {
		group[0].err = b.alone(group[0].ctx, group[0].fn)
		return
	}
	// The transaction is the group's, not one caller's: a caller whose
	// context ends fails only its own statements.
	dbtx, err := b.db.BeginTx(context.Background(), nil)
	if err != nil {
		for _, c := range group {
			c.err = fmt.Errorf("%w: beginning a transaction: %w", ErrBarrier, err)
		}
		return
	}
	ctl := func(stmt string) error {
		_, err := dbtx.ExecContext(context.Background(), stmt)
		return err
	}
	var kept []*groupCall // ran, to be committed
	for _, c := range group {
		if err := c.ctx.Err(); err != nil {
			c.err = fmt.Errorf("%w: beginning a transaction: %w", ErrBarrier, err)
			continue
		}
		if err := ctl("SAVEPOINT " + groupSavepoint); err != nil {
			b.failGroup(dbtx, group, fmt.Errorf("%w: opening a savepoint: %w", ErrBarrier, err))
			return
		}
		if c.err = c.fn(dbtx); c.err != nil {
			if err := ctl("ROLLBACK TO SAVEPOINT " + groupSavepoint); err != nil {
				// The database gave up the whole transaction (SQLite rolls
				// it back on some errors): nothing of the group is kept.
				b.failGroup(dbtx, group, fmt.Errorf("%w: rolling back to a savepoint after %w: %w", ErrBarrier, c.err, err))
				return
			}
		}
		if err := ctl("RELEASE SAVEPOINT " + groupSavepoint); err != nil {
			b.failGroup(dbtx, group, fmt.Errorf("%w: releasing a savepoint: %w", ErrBarrier, err))
			return
		}
		if c.err == nil {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		_ = dbtx.Rollback()
		return
	}
	if err := dbtx.Commit(); err != nil {
		for _, c := range kept {
			c.err = fmt.Errorf("%w: committing: %w", ErrBarrier, err)
		}
		return
	}
	b.commits.Add(1)
	b.grouped.Add(int64(len(kept)))
}

// failGroup rolls the group's transaction back after a failure err of the
// transaction itself: nothing of the group is kept, so every call fails with
// err, but for one whose own fn failed, which keeps its own error.
func (b *Barrier) failGroup(dbtx *sql.Tx, group []*groupCall, err error) {
	_ = dbtx.Rollback()
	for _, c := range group {
		if c.err == nil {
			c.err = err
		}
	}
}
