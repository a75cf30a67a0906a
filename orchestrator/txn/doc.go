// Package txn is the pure two-phase-commit state machine of one transaction:
// the protocol core of natstx. It does no I/O and reads no clock. Inputs are
// events (a vote, an acknowledgement, a timer that fired, an abort request);
// each step returns a Ready: what to persist, what to send, which timers to
// arm, whether the transaction decided or finished. Time is data: a timer is
// requested with a duration and comes back as an event.
//
// The effects contract, which every driver must keep (the engine in package
// orchestrator over JetStream, the simulator in tests):
//
//  1. Persist Ready.Persist durably, and only then
//  2. send Ready.Send, then
//  3. arm Ready.Timers.
//
// Persist is set only when the transaction decides commit: under presumed
// abort, a missing record means "not committed", so the commit decision is
// the one write that must be durable before any participant hears of it.
//
// After a commit decision the transaction can no longer abort: commit is
// re-sent with backoff, without limit, until every participant acknowledged.
// A timeout in the commit phase delays completion; it never aborts.
package txn
