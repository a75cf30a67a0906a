package wmparticipant_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
	"github.com/natstx/natstx/participants/wmparticipant"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start mounts a participant for cfg on a watermill Router, with the
// watermill-nats JetStream subscriber, and runs the router.
func start(t *testing.T, url string, cfg participants.Config) func() {
	proc, err := participants.NewProcessor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	subConn, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	pubConn, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	logger := watermill.NopLogger{}
	sub, err := wmparticipant.NewSubscriber(subConn, cfg.Name, wmparticipant.Options{AckWait: cfg.AckWait, RetryDelay: cfg.RetryDelay}, logger)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := wmparticipant.NewReplyPublisher(pubConn, logger)
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	wmparticipant.Mount(router, proc, sub, pub)
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	select {
	case <-router.Running():
	case <-time.After(15 * time.Second):
		t.Fatal("router not running after 15s")
	}
	return func() {
		if err := router.Close(); err != nil {
			t.Errorf("closing the router: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
		_ = pub.Close()
		subConn.Close()
		pubConn.Close()
	}
}

// TestConformance runs the participant conformance suite on the watermill
// adapter.
func TestConformance(t *testing.T) { conformance.Run(t, start) }
