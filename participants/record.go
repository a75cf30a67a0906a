package participants

import (
	"sync"
	"time"
)

// State is what this process knows about one transaction.
type State int

// The states of a transaction record.
const (
	// StateNone: no command of the transaction has been handled.
	StateNone State = iota
	// StatePrepared: Prepare succeeded and the participant voted commit.
	StatePrepared
	// StateCommitted: Commit succeeded.
	StateCommitted
	// StateAborted: the participant voted abort, Abort succeeded, or an abort
	// arrived before any prepare.
	StateAborted
	// StateReadOnly: Prepare voted read-only (ReadOnly); the participant holds
	// nothing and commit or abort, if they come, change nothing.
	StateReadOnly
)

// String names s.
func (s State) String() string {
	switch s {
	case StateNone:
		return "none"
	case StatePrepared:
		return "prepared"
	case StateCommitted:
		return "committed"
	case StateAborted:
		return "aborted"
	case StateReadOnly:
		return "read-only"
	}
	return "unknown"
}

// finished reports whether s is a final state.
func (s State) finished() bool {
	return s == StateCommitted || s == StateAborted || s == StateReadOnly
}

// record is the in-memory record of one transaction, or of one saga step
// (under the key sagaKey).
type record struct {
	state State
	// onePhase marks a prepared record of commit-one-phase whose Commit has
	// not succeeded yet: the participant decided to commit, and is not in
	// doubt.
	onePhase bool
	// reason is the abort reason a duplicate prepare is answered with, or
	// the refusal reason a duplicate saga action is answered with.
	reason string
	// finishedAt is when the record reached a final state.
	finishedAt time.Time

	// step is a saga step's state; code the refusal's code.
	step StepState
	code string
	// failedAttempt is the highest attempt of the step's action answered
	// failed; a repeated delivery of it (or of an older one) is answered
	// failed again without the handler.
	failedAttempt int
}

// empty reports whether r records nothing.
func (r record) empty() bool {
	return r.state == StateNone && r.step == StepNone && r.failedAttempt == 0
}

// sweepable reports whether r may be forgotten once it is Retention old: a
// finished transaction, or a saga step that is refused, compensated or only
// failed. A done step stays: its compensation may come at any time.
func (r record) sweepable() bool {
	if r.step == StepDone {
		return false
	}
	return r.state.finished() || r.step != StepNone || r.failedAttempt > 0
}

// sagaKey is the table key of a saga step's record; '/' is in no name, so it
// never equals a transaction ID.
func sagaKey(sagaID, step string) string { return sagaID + "/" + step }

// entry is one transaction's lock and record.
type entry struct {
	// mu is held while a command of the transaction is processed.
	mu sync.Mutex
	// refs counts goroutines holding or waiting for mu; guarded by table.mu.
	refs int
	// rec is guarded by mu. table reads it under table.mu when refs is 0:
	// every writer released mu and then took table.mu to drop its ref.
	rec record
}

// finish moves the record to a final state.
func (e *entry) finish(s State, reason string, now time.Time) {
	e.rec = record{state: s, reason: reason, finishedAt: now}
}

// table holds the records and per-transaction locks. Its own mutex guards
// only the map and the reference counts; it is never held during a handler
// call.
type table struct {
	mu      sync.Mutex
	entries map[string]*entry
}

func newTable() *table { return &table{entries: make(map[string]*entry)} }

// lock returns txid's entry with its mutex held, creating the entry if needed.
func (t *table) lock(txid string) *entry {
	t.mu.Lock()
	e := t.entries[txid]
	if e == nil {
		e = &entry{}
		t.entries[txid] = e
	}
	e.refs++
	t.mu.Unlock()
	e.mu.Lock()
	return e
}

// unlock releases an entry returned by lock, and forgets it if nobody else
// wants it and it records nothing.
func (t *table) unlock(txid string, e *entry) {
	e.mu.Unlock()
	t.mu.Lock()
	e.refs--
	if e.refs == 0 && e.rec.empty() {
		delete(t.entries, txid)
	}
	t.mu.Unlock()
}

// sweep removes finished records that finished at least retention before
// now, and returns how many it removed. Prepared records and done saga steps
// stay.
func (t *table) sweep(now time.Time, retention time.Duration) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for txid, e := range t.entries {
		if e.refs == 0 && e.rec.sweepable() && now.Sub(e.rec.finishedAt) >= retention {
			delete(t.entries, txid)
			n++
		}
	}
	return n
}

// len is the number of records in memory.
func (t *table) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// state returns txid's recorded state, for tests and diagnostics.
func (t *table) state(txid string) State {
	e := t.lock(txid)
	s := e.rec.state
	t.unlock(txid, e)
	return s
}

// stepState returns the recorded state of the saga step under key.
func (t *table) stepState(key string) StepState {
	e := t.lock(key)
	s := e.rec.step
	t.unlock(key, e)
	return s
}
