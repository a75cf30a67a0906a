package conformance

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
)

// NATS is what the suite runs a transport against, for a transport's own
// tests too: an embedded NATS server with natstx's streams (the command
// stream a coordinator publishes into) and a connection to it. No
// coordinator runs.
type NATS struct {
	// URL is the server's client URL, as Start gets it.
	URL string
	// Conn is a connection to the server, JS its JetStream context.
	Conn *nats.Conn
	JS   jetstream.JetStream
}

// StartNATS starts NATS for t: the server on 127.0.0.1 with its JetStream
// files in a temporary directory, the streams orchestrator.EnsureStreams
// creates, and the connection. The connection closes and the server stops
// when t ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	n := &NATS{URL: srv.URL()}
	n.Conn = n.Connect(t)
	if n.JS, err = jetstream.New(n.Conn); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := orchestrator.EnsureStreams(ctx, n.JS, orchestrator.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return n
}

// Connect makes another connection to the server for t; it closes when t
// ends.
func (n *NATS) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
