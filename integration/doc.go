// Package integration holds natstx's end-to-end tests: real embedded NATS
// servers, the real coordinator engine and real participant runtimes, with
// random failures and latencies, and the atomicity invariant checked after
// every run.
package integration
