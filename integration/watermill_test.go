package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
	"github.com/natstx/natstx/participants/wmparticipant"
)

// TestWatermillParticipant runs the inventory service mounted on a watermill
// Router (watermill-nats JetStream subscriber) next to a native payment
// runtime, under the real coordinator, and checks atomicity and conservation
// on both databases.
func TestWatermillParticipant(t *testing.T) {
	r := newRig(t)
	dir := t.TempDir()
	ctx := context.Background()
	inv, err := services.Open(ctx, "inventory", filepath.Join(dir, "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.DB().Close()
	b, err := services.NewBarrier(ctx, inv, &services.Faults{SuccessRate: 0.9, MaxLatency: 5 * time.Millisecond, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	proc, err := participants.NewProcessor(participants.Config{Name: "inventory", Barrier: b, OpTimeout: time.Second, AckWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	subConn, err := nats.Connect(r.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer subConn.Close()
	sub, err := wmparticipant.NewSubscriber(subConn, "inventory", wmparticipant.Options{AckWait: 2 * time.Second, RetryDelay: 20 * time.Millisecond}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := wmparticipant.NewReplyPublisher(r.nc, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	wmparticipant.Mount(router, proc, sub, pub)
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	defer func() {
		if err := router.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-router.Running()

	svcs := map[string]services.Service{
		"inventory": inv,
		"payment":   r.inProcess("payment", filepath.Join(dir, "payment.db"), &services.Faults{SuccessRate: 0.9, MaxLatency: 5 * time.Millisecond, Seed: 6}),
	}
	orders := r.run(200, 20, "inventory", "payment")
	r.verify(orders, svcs)
	if st := proc.Stats(); st.Prepares < 200 {
		t.Errorf("the watermill participant handled %d prepares, want at least 200", st.Prepares)
	}
}
