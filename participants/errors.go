package participants

import "errors"

var (
	// ErrInvalidConfig is returned by Config.Validate and New for a bad
	// Config; the message names the field.
	ErrInvalidConfig = errors.New("natstx: invalid participant config")
	// ErrStreamMissing is returned by Start when the command stream does not
	// appear within Config.StreamWait.
	ErrStreamMissing = errors.New("natstx: command stream missing")
	// ErrStarted is returned by Start on a Runtime already started; a
	// Runtime runs once.
	ErrStarted = errors.New("natstx: participant runtime already started")
	// ErrStopped is returned by Start when Stop was called before or during
	// it.
	ErrStopped = errors.New("natstx: participant runtime stopped")
	// ReadOnly is what Handler.Prepare (or BarrierHandler.Prepare) returns,
	// alone or wrapped, to vote read-only: its part of the transaction
	// changed nothing and holds nothing (nothing staged, no lock kept), so it
	// needs neither commit nor abort. The coordinator counts the vote as a
	// commit vote and sends this participant no second phase: neither Commit
	// nor Abort is called for the transaction. A Barrier rolls back the
	// local transaction the handler ran in, so whatever it wrote is undone,
	// and records the vote.
	//
	//lint:ignore ST1012 a vote, not a failure: it is returned as fs.SkipDir is
	ReadOnly = errors.New("natstx: read-only: nothing to commit or abort")
)

// Reasons the Runtime sends with a VoteAbort or Failed reply it decides by
// itself, without the Handler.
const (
	// ReasonDeadlinePassed answers a prepare that arrives after the
	// transaction's deadline.
	ReasonDeadlinePassed = "deadline passed"
	// ReasonAbortedBeforePrepare answers a prepare that arrives after the
	// transaction's abort.
	ReasonAbortedBeforePrepare = "aborted before prepare arrived"
	// ReasonAborted answers a duplicate prepare of a transaction that was
	// prepared and then aborted.
	ReasonAborted = "aborted by the coordinator"
	// ReasonPrepareFailed replaces an empty error text from Handler.Prepare.
	ReasonPrepareFailed = "prepare failed"
	// ReasonNoRecord answers a commit for a transaction never prepared here.
	ReasonNoRecord = "commit for a transaction this participant has no record of"
	// ReasonCommitAfterAbort answers a commit of an aborted transaction.
	ReasonCommitAfterAbort = "commit after abort"
	// ReasonAbortAfterCommit answers an abort of a committed transaction.
	ReasonAbortAfterCommit = "abort after commit"
	// ReasonCommitOfOnePhase and ReasonAbortOfOnePhase answer a commit or
	// an abort of a transaction under way in one phase, which its
	// participant decides alone.
	ReasonCommitOfOnePhase = "commit of a one-phase transaction"
	ReasonAbortOfOnePhase  = "abort of a one-phase transaction"
	// ReasonPrepareOfOnePhase answers a prepare of a transaction under way
	// in one phase.
	ReasonPrepareOfOnePhase = "prepare of a one-phase transaction"
	// ReasonOnePhaseOfPrepared answers commit-one-phase for a transaction
	// prepared for two-phase commit.
	ReasonOnePhaseOfPrepared = "one-phase commit of a transaction prepared for two-phase commit"
)
