// Package wmparticipant mounts a natstx participant on a watermill Router: a
// service already built on watermill becomes a natstx participant in a few
// lines. Commands arrive through watermill-nats' JetStream subscriber, bound to
// the participant's durable consumer (the same one the native Runtime uses,
// so both kinds of instances can share the work), go through a
// participants.Processor (the same idempotency rules, in memory or with a
// Barrier), and the vote or acknowledgement goes back through any watermill
// Publisher that publishes a message's metadata as NATS headers, such as
// watermill-nats' core NATS publisher (see NewReplyPublisher).
//
//	proc, _ := participants.NewProcessor(participants.Config{Name: "inventory", Barrier: b})
//	sub, _ := wmparticipant.NewSubscriber(nc, "inventory", logger)
//	pub, _ := wmparticipant.NewReplyPublisher(nc, logger)
//	wmparticipant.Mount(router, proc, sub, pub)
package wmparticipant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// ErrRetry is the error the handler returns for a command to be delivered
// again (a failed commit or abort, or a reply that could not be published):
// watermill nacks the message.
var ErrRetry = errors.New("natstx: command to be delivered again")

// Options tune the subscriber; zero values take the participants package's
// defaults.
type Options struct {
	// AckWait is how long JetStream waits for a command's acknowledgement
	// before delivering it again.
	AckWait time.Duration
	// RetryDelay is how long a nacked command waits before redelivery.
	RetryDelay time.Duration
	// Concurrency bounds the commands fetched at once.
	Concurrency int
}

// NewSubscriber returns a watermill-nats JetStream subscriber on the durable
// consumer of participant name (natstx-<name> on the NATSTX_CMD stream, which
// the coordinator declares). Subscribe to it with the participant's name as
// the topic. Its Close drains nc.
func NewSubscriber(nc *nats.Conn, name string, opts Options, logger watermill.LoggerAdapter) (*wmjs.Subscriber, error) {
	if err := messages.ValidateName("participant name", name); err != nil {
		return nil, fmt.Errorf("wmparticipant: %w", err)
	}
	if opts.AckWait <= 0 {
		opts.AckWait = participants.DefaultAckWait
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = participants.DefaultRetryDelay
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = participants.DefaultConcurrency
	}
	return wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:           nc,
		Logger:         logger,
		AckWaitTimeout: opts.AckWait,
		NakDelay:       wmjs.NewStaticDelay(opts.RetryDelay),
		ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(opts.Concurrency)},
		Unmarshaler:    unmarshaler{},
		ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			if topic != name {
				return nil, nil, fmt.Errorf("wmparticipant: subscriber of participant %q subscribed to topic %q; use the participant name", name, topic)
			}
			stream, err := js.Stream(ctx, messages.CommandStream)
			if err != nil {
				return nil, nil, fmt.Errorf("wmparticipant: stream %s (the coordinator declares it): %w", messages.CommandStream, err)
			}
			cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
				Durable:       messages.ConsumerName(name),
				Description:   "natstx commands for participant " + name,
				FilterSubject: messages.ParticipantFilter(name),
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       opts.AckWait,
				MaxAckPending: 2 * opts.Concurrency,
				DeliverPolicy: jetstream.DeliverAllPolicy,
			})
			return cons, nil, err
		},
	})
}

// NewReplyPublisher returns a watermill publisher of replies on core NATS
// (replies are plain NATS messages, not stream messages) over nc.
func NewReplyPublisher(nc *nats.Conn, logger watermill.LoggerAdapter) (message.Publisher, error) {
	return wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler: &wmnats.NATSMarshaler{},
		JetStream: wmnats.JetStreamConfig{Disabled: true},
	}, logger)
}

// subjectKey carries a command's subject in the watermill metadata.
const subjectKey = "natstx-subject"

// unmarshaler turns a command into a watermill message with every header in
// the metadata. Unlike watermill-nats' default it never fails: a repeated
// header keeps its first value plus a marker, so the Processor rejects the
// command as malformed instead of the subscriber dropping it.
type unmarshaler struct{}

func (unmarshaler) Unmarshal(msg jetstream.Msg) (*message.Message, error) {
	m := message.NewMessage(watermill.NewUUID(), msg.Data())
	for k, v := range msg.Headers() {
		if len(v) > 0 {
			m.Metadata.Set(k, v[0])
		}
		if len(v) > 1 {
			m.Metadata.Set(k+"-repeated", "true")
		}
	}
	m.Metadata.Set(subjectKey, msg.Subject())
	return m, nil
}

// Handler returns a watermill handler that runs each command through p and
// publishes its reply with pub. It returns nil to acknowledge and ErrRetry
// to have the command delivered again; a command never to be delivered again
// (malformed, contradicting the record) is acknowledged after its Failed
// reply.
func Handler(p *participants.Processor, pub message.Publisher) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		h := make(map[string][]string, len(msg.Metadata))
		subject := ""
		for k, v := range msg.Metadata {
			switch {
			case k == subjectKey:
				subject = v
			case len(k) > len("-repeated") && k[len(k)-len("-repeated"):] == "-repeated":
				name := k[:len(k)-len("-repeated")]
				h[name] = append(h[name], msg.Metadata.Get(name))
			default:
				h[k] = append([]string{v}, h[k]...)
			}
		}
		var settle participants.Settle
		p.Handle(h, msg.Payload, subject, func(a participants.Answer) {
			settle = a.Settle
			if a.ReplyTo == "" {
				return
			}
			out := message.NewMessage(watermill.NewUUID(), a.Reply.Body())
			for k, v := range a.Reply.Header() {
				out.Metadata.Set(k, v[0])
			}
			if err := pub.Publish(a.ReplyTo, out); err != nil && settle == participants.SettleAck {
				settle = participants.SettleNak
			}
		})
		if settle == participants.SettleNak {
			return ErrRetry
		}
		return nil
	}
}

// Mount adds p's handler to router, reading the participant's commands from
// sub (see NewSubscriber) and publishing replies with pub.
func Mount(router *message.Router, p *participants.Processor, sub message.Subscriber, pub message.Publisher) {
	router.AddConsumerHandler("natstx-"+p.Name(), p.Name(), sub, Handler(p, pub))
}
