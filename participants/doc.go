// Package participants is the participant side of natstx: a Runtime that reads
// the commands a coordinator sends to one participant (prepare, commit, abort;
// a saga step's action and compensate) from the JetStream stream NATSTX_CMD,
// calls the service's Handler (two-phase commit) or SagaHandler (sagas), and
// publishes the vote, acknowledgement or refusal back to the coordinator.
//
// The Runtime makes every command idempotent, as two-phase commit needs: a
// command may arrive more than once, late, or out of order. It keeps a small
// in-memory record per transaction (none, prepared, committed or aborted) and
// answers duplicates from it without calling the Handler again:
//
//   - a duplicate prepare gets the recorded vote;
//   - a commit or abort of a finished transaction is re-acknowledged;
//   - an abort that arrives before its prepare is remembered, so the late
//     prepare votes abort and reserves nothing ("no hanging reservation");
//   - an abort of a transaction never prepared does not call the Handler
//     ("null compensation").
//
// Commands of one transaction are handled one at a time in a process;
// different transactions run in parallel, up to Config.Concurrency handler
// calls at once. Several processes started with the same Config.Name share one
// durable consumer, so JetStream spreads the commands among them.
//
// The record lives in memory (Config.Handler) or, for effects that must
// happen exactly once across restarts and instances, in the participant's own
// SQL database (Config.Barrier): a Barrier writes (participant, transaction,
// operation, result) rows in the same local transaction as the SQLHandler's
// business change, and answers every duplicate from them. See
// docs/PARTICIPANTS.md.
//
// Saga steps follow the same barrier, per (participant, saga ID, step): a
// duplicate action or compensation is answered from the record; a
// compensation that arrives before its action is acknowledged without the
// handler and the late action is refused, never done; no action runs after
// its compensation; a refused action (Refuse, ErrRefused) needs no
// compensation; an attempt answered failed is never done later. Sagas have
// no in-doubt phase on the participant side: the coordinator drives every
// step to an answer.
//
// A participant that voted commit and hears no outcome is in doubt: it asks
// the coordinators how the transaction ended, with the transaction's deadline
// (kept in the barrier, so also after a restart), and applies the answer like
// a command (Processor.LoadPrepared, Processor.ResolveInDoubt).
//
// With Config.TracerProvider set (OpenTelemetry), each command runs in a
// span that continues the coordinator's W3C trace context, carried by the
// command's traceparent and tracestate headers; the handler's context
// carries that span. Stats adds command latency by operation and counts by
// what the record made of each command (the Outcome* names).
//
// Processor is the transport-free core (decode, record, handler, answer, the
// transactions in doubt); Runtime feeds it from JetStream and package
// wmparticipant from a watermill Router, and both run its in-doubt recovery.
// Package conformance is the suite every such transport passes.
package participants
