package wmparticipant_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/internal/securetest"
	"github.com/natstx/natstx/participants/wmparticipant"
)

// TestSubscriberWaitsForTheCoordinatorsConsumer: with its generated
// credentials, in the participants' account (natstx's JetStream API
// imported under messages.JetStreamAPIPrefix), a participant whose consumer
// the coordinator created beforehand consumes it at once, without a
// violation of its permissions; one whose consumer is not there runs its
// router all the same (its create, under the prefix, is refused: its one
// violation), and handles commands once the coordinator has created it.
// Closing the router while it waits, or after, leaves nothing running
// (goleak).
func TestSubscriberWaitsForTheCoordinatorsConsumer(t *testing.T) {
	for _, c := range []struct {
		name           string
		before, create bool
	}{
		{"created before", true, true},
		{"created after", false, true},
		{"never created", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := securetest.Start(t, "inventory")
			if c.before {
				s.CreateConsumer(t)
			}
			subConn, violations := s.Participant(t)
			pubConn, _ := s.Participant(t)
			proc, err := participants.NewProcessor(participants.Config{Name: "inventory", Handler: participants.HandlerFuncs{}})
			if err != nil {
				t.Fatal(err)
			}
			logger := watermill.NopLogger{}
			sub, err := wmparticipant.NewSubscriber(subConn, "inventory", wmparticipant.Options{}, logger)
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
			case err := <-done:
				t.Fatalf("the router did not run: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("the router is not running after 30s: its subscriber waits for the consumer")
			}
			if c.create {
				replies, err := s.Coordinator.SubscribeSync(messages.ReplyFilter("c1"))
				if err != nil {
					t.Fatal(err)
				}
				if !c.before {
					s.CreateConsumer(t)
				}
				cmd := messages.Command{TxID: "tx1", Op: messages.OpPrepare, Participant: "inventory", Attempt: 1, ReplyTo: messages.ReplySubject("c1", "inventory")}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := s.JS.PublishMsg(ctx, &nats.Msg{Subject: cmd.Subject(), Header: nats.Header(cmd.Header())}); err != nil {
					t.Fatal(err)
				}
				m, err := replies.NextMsgWithContext(ctx)
				if err != nil {
					t.Fatalf("no reply to the prepare: %v", err)
				}
				r, err := messages.DecodeReply(m.Header, m.Data)
				if err != nil || r.TxID != "tx1" || r.Result != messages.VoteCommit {
					t.Errorf("reply %+v, %v; want tx1 voted commit", r, err)
				}
			}
			if err := router.Close(); err != nil {
				t.Errorf("closing the router: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("router: %v", err)
			}
			_ = pub.Close()
			create := `"` + messages.JetStreamAPIPrefix + ".CONSUMER.CREATE." + messages.CommandStream + ".natstx-inventory.natstx.cmd.inventory.>" + `"`
			// The connection's error handler hears of a violation
			// asynchronously.
			for i := 0; !c.before && len(violations.Seen()) == 0 && i < 1000; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			seen := violations.Seen()
			switch {
			case c.before && len(seen) > 0:
				t.Errorf("violations %v, want none: the consumer was there", seen)
			case !c.before && (len(seen) != 1 || !strings.Contains(seen[0], create)):
				t.Errorf("violations %v, want only the create %s", seen, create)
			}
		})
	}
}
