package orchestrator

import (
	"errors"

	"github.com/natstx/natstx/orchestrator/txn"
)

var (
	// ErrNoParticipants is returned by Begin for a request without
	// participants.
	ErrNoParticipants = txn.ErrNoParticipants
	// ErrDuplicateParticipant is returned by Begin when a participant is named
	// twice in one request.
	ErrDuplicateParticipant = txn.ErrDuplicateParticipant
	// ErrDuplicateTx is returned by Begin when the transaction ID is in flight
	// or finished within the retention window.
	ErrDuplicateTx = errors.New("natstx: duplicate transaction ID")
	// ErrPayloadTooLarge is returned by Begin when a participant's payload is
	// over Config.MaxPayload.
	ErrPayloadTooLarge = errors.New("natstx: payload too large")
	// ErrDeadlineExpired is returned by Begin when the caller's context has no
	// time left to run a transaction.
	ErrDeadlineExpired = errors.New("natstx: deadline expired before the transaction began")
	// ErrOverloaded is returned by Begin when Config.MaxInFlight transactions
	// are already running, or when it found no room to start within its
	// timeout (see Config.MaxInFlight); such a transaction sent nothing.
	ErrOverloaded = errors.New("natstx: too many transactions in flight")
	// ErrRateLimited answers a begin through the coordinator API beyond
	// Config.MaxBeginRate.
	ErrRateLimited = errors.New("natstx: begin rate limit reached")
	// ErrOnePhaseAbort is returned by Abort for a one-phase commit under way:
	// its participant decides it alone (docs/PROTOCOL.md), and no one can
	// abort it for it.
	ErrOnePhaseAbort = errors.New("natstx: a one-phase commit is decided by its participant and cannot be aborted")
	// ErrUnknownTx is returned by Wait and Status for an ID this engine neither
	// runs nor remembers.
	ErrUnknownTx = errors.New("natstx: unknown transaction")
	// ErrDraining is returned by Begin and Execute on an engine that is
	// draining before it stops: begin on another instance.
	ErrDraining = errors.New("natstx: coordinator is draining; begin the transaction on another instance")
	// ErrFenced is returned to callers waiting on a transaction or saga that
	// the engine dropped because its lease lapsed (it was paused or cut off
	// for longer than Config.LeaseTTL): another instance, or this one's
	// recovery, finishes it; Status tells how.
	ErrFenced = errors.New("natstx: the coordinator's lease lapsed; the transaction is finished by recovery")
	// ErrStopped is returned by calls on an engine that is not running.
	ErrStopped = errors.New("natstx: engine stopped")
)
