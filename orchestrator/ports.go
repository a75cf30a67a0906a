package orchestrator

import (
	"context"
	"errors"
	"time"

	"github.com/natstx/natstx/messages"
)

// The engine does all its I/O and reads all its time through the ports
// below: one kernel, two drivers. In production they are JetStream buckets,
// NATS publishes, the wall clock and goroutines (see jetstream_ports.go); in
// package orchestrator/dst they are simulated, so that the deterministic
// simulator runs the engine's own code rather than a model of it.

// Store is what the engine needs of one key-value bucket. Keys are
// transaction IDs or instance names. Every method may fail with any error
// (a write may also fail after it was applied: its answer was lost).
type Store interface {
	// Get returns the live entry of key, or ErrNoEntry if there is none (never
	// written, deleted, or expired).
	Get(ctx context.Context, key string) (StoreEntry, error)
	// Create writes key only if it has no live entry (a delete marker or an
	// expired entry counts as none); ErrEntryExists otherwise. ttl > 0 makes
	// the entry expire after ttl.
	Create(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error)
	// Update writes key only if its live entry has the given revision;
	// ErrRevisionChanged otherwise. ttl > 0 makes the new entry expire after
	// ttl.
	Update(ctx context.Context, key string, value []byte, revision uint64, ttl time.Duration) (uint64, error)
	// Put writes key unconditionally; ttl > 0 makes the entry expire after ttl.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error)
	// PutAsync writes key unconditionally without waiting; onErr, if not nil,
	// is called (on any goroutine) when the write is known to have failed or
	// its answer did not come in time. Writes of one engine are applied in
	// the order they were made.
	PutAsync(key string, value []byte, onErr func(error))
	// Delete removes key.
	Delete(ctx context.Context, key string) error
	// Entries reads the live entries whose revision is above after (with
	// after 0, every live entry), in revision order, and returns those keep
	// accepts (all, if keep is nil) and the highest revision read (after, if
	// none). Only what keep accepts is held: a bucket may hold millions.
	// When it fails partway (ctx ended), it returns with the error what it
	// read until then: every live entry up to the revision it returns, so
	// that a caller can go on from there.
	Entries(ctx context.Context, after uint64, keep func(StoreEntry) bool) ([]StoreEntry, uint64, error)
}

// StoreEntry is one entry of a Store.
type StoreEntry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// Errors a Store returns; a Store's other errors are failures to retry.
var (
	// ErrNoEntry: the key has no live entry.
	ErrNoEntry = errors.New("natstx: no such entry")
	// ErrEntryExists: Create found a live entry.
	ErrEntryExists = errors.New("natstx: entry exists")
	// ErrRevisionChanged: Update found another revision (or no entry).
	ErrRevisionChanged = errors.New("natstx: entry changed since it was read")
)

// Stores are the buckets an engine uses.
type Stores struct {
	// Records holds decisions (RecordBucket).
	Records Store
	// Leases holds one entry per live instance (LeaseBucket); entries expire
	// LeaseTTL after their last Put.
	Leases Store
	// IDs holds one entry per transaction ID begun (IDBucket), so that an ID
	// is begun once in the whole cluster.
	IDs Store
	// Status holds each transaction's latest status (messages.StatusBucket);
	// nil when Config.NoStatus is set.
	Status Store
	// Sagas holds sagas' records (SagaBucket); nil leaves the engine
	// without sagas (ErrNoSagas).
	Sagas Store
}

// Commands publishes commands into the command stream.
type Commands interface {
	// Publish stores cmd in the stream without waiting; a command that is not
	// stored is sent again by its transaction's retry timer.
	Publish(cmd messages.Command) error
}

// Driver is the engine's clock and scheduler.
type Driver interface {
	// Now is the current time.
	Now() time.Time
	// AfterFunc calls f once, after d, unless the returned Timer is stopped
	// first. f must not block.
	AfterFunc(d time.Duration, f func()) Timer
	// Go runs f as a background task of the engine.
	Go(f func())
	// Sleep waits for d, or until stop is closed; it reports whether the full
	// d passed. Sleep(0, ...) lets other work run first.
	Sleep(d time.Duration, stop <-chan struct{}) bool
	// WithTimeout is context.WithTimeout on this clock: the context ends
	// once d has passed by Now, or when parent ends or cancel is called.
	WithTimeout(parent context.Context, d time.Duration) (ctx context.Context, cancel context.CancelFunc)
}

// Timer is a timer armed by Driver.AfterFunc.
type Timer interface {
	// Stop prevents the timer from firing; false if it already fired.
	Stop() bool
}
