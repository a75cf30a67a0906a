// Package saga is the pure state machine of one saga: steps with
// compensations, run forward in dependency order and, when a step fails for
// good, undone in reverse dependency order. It is to sagas what package txn
// is to two-phase commit: it does no I/O, reads no clock and starts no
// goroutine. Inputs are events (a participant's reply, a timer that fired,
// an operator's action), each carrying the time it happened; each Step
// returns a Ready: the record to persist, the commands to send, the timers
// to arm, the steps that became stuck, whether the saga is done.
//
// The effects contract, which every driver must keep:
//
//  1. Persist Ready.Persist durably, compare-and-set on the revision before
//     it (Record.Revision-1; a new saga creates its key), and only then
//  2. send Ready.Send, then
//  3. arm Ready.Timers (a superseded timer need not be cancelled: it is
//     ignored when it fires), and
//  4. log Ready.Stuck at error level and count it.
//
// Every Ready that is not ignored carries a Persist, and the record it
// carries already counts the attempts it sends; so a coordinator that dies
// between the write and the sends re-sends the same attempts after Recover.
// When the compare-and-set fails, another instance owns the saga: the driver
// sends nothing and drops it.
//
// Step results are four (see Result): done; failed for good (compensate
// now); failed for now (retry after back-off, until the attempts run out);
// unknown (the attempt timed out or was lost: the action may have run, so
// the step is retried and, if the saga compensates, compensated too).
// Compensations are retried with back-off without limit; past a threshold
// the saga is visibly stuck (StateCompensationStuck) until they succeed or
// an operator resolves them by hand. The rules are in docs/SAGA.md.
package saga
