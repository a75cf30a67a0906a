// Package dst is the deterministic simulator of natstx's protocol core: the
// transaction state machines of package txn, driven by simulated coordinators
// exactly as the engine drives them (persist before send, timers from
// Ready.Timers, the commit decision written with a create that an abort
// recorded first refuses), talking to model participants over a simulated
// network, with a simulated key-value bucket for the decision records.
//
// One seed drives a whole run: the workload (transactions, their
// participants, votes and client aborts), the fault probabilities, and every
// fault and delay. Time is simulated: an event queue ordered by simulated
// time, ties broken by the order events were scheduled. Nothing in the
// package reads a clock, starts a goroutine or does I/O, so a seed always
// gives the same run and the same trace (Result.TraceHash, Config.Trace).
//
// What is modelled (see docs/SIMULATION.md):
//
//   - The command stream (JetStream, work queue) is durable: a command that
//     was stored is delivered, redelivered after AckWait while it is not
//     acknowledged, and may be delivered late and out of order; a publish may
//     fail (not stored). Replies, in-doubt questions and answers travel on
//     plain NATS: they are dropped, duplicated, delayed and reordered.
//   - Coordinators crash before or after handling an event, or between the
//     sends of one Ready, and restart with only the durable records; they
//     recover commit records (their own, and a dead instance's once its lease
//     expired) and answer participants in doubt as the engine does.
//   - Participants keep a durable record per transaction and apply the
//     runtime's idempotency rules; a participant that voted commit and heard
//     nothing asks a coordinator for the outcome.
//
// After the workload, faults stop, every party restarts, and the run goes on
// to quiescence; then Run checks the guarantees (atomicity, no decision
// reversed, nothing left prepared, every transaction decided) and reports the
// violations it found.
package dst
