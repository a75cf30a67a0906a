package wmparticipant_test

import (
	"context"
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

// TestSubscriberWaitsForTheCoordinatorsConsumer: under the participant
// permissions, the router runs although the participant's consumer is not
// there (its create is refused), and the participant handles commands once
// the coordinator has created it; closing the router while it waits, or
// after, leaves nothing running (goleak).
func TestSubscriberWaitsForTheCoordinatorsConsumer(t *testing.T) {
	for _, create := range []bool{true, false} {
		t.Run(map[bool]string{true: "created", false: "never created"}[create], func(t *testing.T) {
			s := securetest.Start(t, "inventory")
			subConn, _ := s.Participant(t)
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
			if create {
				replies, err := s.Coordinator.SubscribeSync(messages.ReplyFilter("c1"))
				if err != nil {
					t.Fatal(err)
				}
				s.CreateConsumer(t)
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
		})
	}
}
