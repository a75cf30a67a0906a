package participants_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
)

// TestConformance runs the participant conformance suite on the native
// JetStream Runtime.
func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T, url string, cfg participants.Config) func() {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		rt, err := participants.New(nc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return func() {
			rt.Stop()
			nc.Close()
		}
	})
}
