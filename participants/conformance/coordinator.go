package conformance

import (
	"context"
	"testing"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

// StartEngine starts a coordinator's engine with cfg on n's connection, as
// natstx server runs one, for the tests of what runs beside a coordinator
// (the suite itself runs none). It stops when t ends.
func (n *NATS) StartEngine(t testing.TB, cfg orchestrator.Config) *orchestrator.Engine {
	t.Helper()
	eng, err := orchestrator.New(n.Conn, cfg)
	return started(t, eng, err)
}

// StartRuntime starts the native JetStream participant Runtime for cfg on
// n's connection. It stops when t ends.
func (n *NATS) StartRuntime(t testing.TB, cfg participants.Config) *participants.Runtime {
	t.Helper()
	rt, err := participants.New(n.Conn, cfg)
	return started(t, rt, err)
}

// started starts s, which its constructor returned with err, and stops it
// when t ends; t fails on either error.
func started[S interface {
	Start(context.Context) error
	Stop()
}](t testing.TB, s S, err error) S {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}
