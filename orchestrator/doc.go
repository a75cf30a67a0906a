// Package orchestrator is natstx's coordinator: an Engine that drives
// two-phase-commit transactions over NATS JetStream, and the client API to
// run them (Begin, Wait, Execute, Status).
//
// The protocol itself lives in the pure state machine of package
// orchestrator/txn; the Engine is its only driver that does I/O. It publishes
// commands into the work-queue stream NATSTX_CMD on subjects keyed by
// participant and transaction (see package messages), receives votes and
// acknowledgements on its own reply subject, arms timers, and persists each
// commit decision to the JetStream key-value bucket natstx_tx before any
// participant is told to commit. A transaction with one participant is sent
// commit-one-phase instead, which that participant decides alone, and a
// participant that votes read-only is sent no second phase
// (docs/PROTOCOL.md, protocol 6).
//
// There is no global lock: transactions are spread over shards by ID, each
// shard an event loop that owns its transactions outright.
package orchestrator
