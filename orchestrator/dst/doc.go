// Package dst is the deterministic simulator of natstx: it runs the engine's
// own code (orchestrator.NewSimulated: the shards, records, leases,
// recovery, the orphan sweep, in-doubt answers) and the participant SDK's
// own code (participants.Processor over a participants.Barrier on an
// in-memory SQLite database per participant) against simulated JetStream
// key-value buckets, a simulated command stream and a lossy plain-NATS
// network, in simulated time. One kernel, two drivers: the engine does all
// its I/O and reads all its time through the ports of orchestrator/ports.go,
// which this package implements.
//
// One seed drives a whole run: the workload (transactions, their
// participants, votes, timeouts and client aborts), the fault probabilities,
// and every fault and delay. Time is a heap of events; the code under test
// runs in tasks, goroutines of which exactly one runs at a time, handing a
// baton to the scheduler and back (sched.go). Nothing in the package reads
// the wall clock or a global random source, so a seed always gives the same
// run and the same trace (Result.TraceHash, Config.Trace).
//
// What is simulated (see docs/SIMULATION.md):
//
//   - Key-value buckets as JetStream has them: revisions, per-key and
//     bucket-wide TTLs (leases expire), delete markers, Create over a marker
//     or an expired entry, compare-and-set Update; operations that fail
//     before they are applied, are applied with their answer lost, or are
//     applied after the caller gave up; asynchronous puts applied in order.
//   - The command stream: a work queue with one durable consumer per
//     participant (AckWait redelivery, nak delay, term, MaxAge) that drops a
//     publish whose Nats-Msg-Id it stored within its Duplicates window.
//   - Plain NATS for replies and in-doubt questions: dropped, duplicated,
//     delayed and reordered; a question to a paused coordinator is answered
//     when it goes on.
//   - Coordinator processes that die (at the engine's fault points or at any
//     moment) and restart with only the buckets, or are paused (SIGSTOP)
//     for shorter than their lease, longer than it, or longer than the
//     retention, and go on with stale memory.
//   - Participant processes that die and restart with their database and
//     nothing else.
//   - Sagas among the transactions (saga_work.go): the engine's saga code
//     over a simulated saga bucket, the participants' saga path on their
//     barriers, steps refused, failing for now, compensations failing or
//     stuck, a simulated operator (Engine.ActOnSaga); after the run each
//     saga must have ended completed, compensated or visibly stuck, and no
//     compensation may have taken effect before its action was answered or
//     timed out (saga_check.go).
//
// After the workload, faults stop, every process runs again, and the run
// goes on to quiescence; then Run checks the guarantees on what the
// participants' databases, the decision records and the statuses hold, and
// reports the violations it found.
package dst
