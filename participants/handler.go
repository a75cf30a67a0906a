package participants

import (
	"context"
	"time"
)

// Tx identifies the transaction a command belongs to.
type Tx struct {
	// ID is the transaction ID.
	ID string
	// Participant is the name of this participant.
	Participant string
	// Deadline is when the whole transaction must have decided; zero means
	// none. The Runtime votes abort itself on a prepare that arrives after it.
	Deadline time.Time
	// Attempt counts the coordinator's re-sends of this operation, from 1.
	Attempt int
}

// Handler is a participant service's part of two-phase commit. The Runtime
// calls at most one method at a time for one transaction ID, and never calls
// Prepare twice, Commit after a successful Commit, or Abort after a successful
// Abort for the same transaction in one process. The context ends after
// Config.OpTimeout.
type Handler interface {
	// Prepare stages the transaction's work described by payload, so that a
	// later Commit cannot fail for a business reason. A nil error votes
	// commit: the participant promises to commit when told to. ReadOnly
	// (alone or wrapped) votes read-only: the participant changed nothing,
	// holds nothing, and gets neither Commit nor Abort for the transaction.
	// Any other error votes abort; err.Error() is sent to the coordinator as
	// the reason.
	Prepare(ctx context.Context, tx Tx, payload []byte) error
	// Commit makes the staged work final. An error means it could not commit
	// this time; the command is delivered again later, and the transaction
	// stays prepared until Commit succeeds.
	Commit(ctx context.Context, tx Tx) error
	// Abort discards the staged work. An error means it could not abort this
	// time; the command is delivered again later.
	Abort(ctx context.Context, tx Tx) error
}

// HandlerFuncs adapts plain functions to a Handler, for tests and small
// services. A nil function succeeds.
type HandlerFuncs struct {
	PrepareFunc func(ctx context.Context, tx Tx, payload []byte) error
	CommitFunc  func(ctx context.Context, tx Tx) error
	AbortFunc   func(ctx context.Context, tx Tx) error
}

// Prepare calls PrepareFunc, or votes commit if it is nil.
func (h HandlerFuncs) Prepare(ctx context.Context, tx Tx, payload []byte) error {
	if h.PrepareFunc == nil {
		return nil
	}
	return h.PrepareFunc(ctx, tx, payload)
}

// Commit calls CommitFunc, or succeeds if it is nil.
func (h HandlerFuncs) Commit(ctx context.Context, tx Tx) error {
	if h.CommitFunc == nil {
		return nil
	}
	return h.CommitFunc(ctx, tx)
}

// Abort calls AbortFunc, or succeeds if it is nil.
func (h HandlerFuncs) Abort(ctx context.Context, tx Tx) error {
	if h.AbortFunc == nil {
		return nil
	}
	return h.AbortFunc(ctx, tx)
}

var _ Handler = HandlerFuncs{}
