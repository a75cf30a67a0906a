// Package wmparticipant mounts a natstx participant on a watermill Router: a
// service already built on watermill becomes a natstx participant in a few
// lines. Commands arrive through watermill-nats' JetStream subscriber, bound to
// the participant's durable consumer (the same one the native Runtime uses,
// so both kinds of instances can share the work), go through a
// participants.Processor (the same idempotency rules, in memory or with a
// Barrier, for two-phase commit and saga steps alike), and the vote,
// acknowledgement or refusal goes back through any watermill
// Publisher that publishes a message's metadata as NATS headers, such as
// watermill-nats' core NATS publisher (see NewReplyPublisher).
//
// While the router runs, Mount also gives the participant the same recovery
// guarantee as the native Runtime: at start it loads what the Barrier holds
// prepared (Processor.LoadPrepared), and it asks the coordinators about
// every transaction in doubt (Processor.ResolveInDoubt), over the NATS
// connection of a publisher from NewReplyPublisher, or the one given with
// WithConn, or with the function given with WithAsk.
//
// Tracing is the Processor's: with participants.Config.TracerProvider set,
// each command runs in a span that continues the W3C trace context the
// command carries (the coordinator's span), and the participant's handler
// gets that span in its context, exactly as on the native Runtime.
//
//	proc, _ := participants.NewProcessor(participants.Config{Name: "inventory", Barrier: b})
//	sub, _ := wmparticipant.NewSubscriber(nc, "inventory", wmparticipant.Options{}, logger)
//	pub, _ := wmparticipant.NewReplyPublisher(nc, logger)
//	wmparticipant.Mount(router, proc, sub, pub)
package wmparticipant

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/internal/consumer"
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
// the topic. Its Close drains nc. It reaches JetStream as the native Runtime
// does (messages/jsconnect): through the account's own API, or, for a
// participant in the participants' account of `natstx auth init`, through
// the one that account imports under messages.JetStreamAPIPrefix.
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
		// The runtime's pulls: a pull lost with a node that died is
		// replaced in seconds, not after nats.go's default of 30s.
		ConsumeOptions: []jetstream.PullConsumeOpt{
			jetstream.PullMaxMessages(opts.Concurrency),
			jetstream.PullExpiry(participants.PullExpiry),
			jetstream.PullHeartbeat(participants.PullHeartbeat),
		},
		Unmarshaler: unmarshaler{},
		// watermill-nats passes the JetStream API of jetstream.New(nc),
		// which is not natstx's in an account that imports it: use
		// jsconnect's instead.
		ResourceInitializer: func(ctx context.Context, _ jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			if topic != name {
				return nil, nil, fmt.Errorf("wmparticipant: subscriber of participant %q subscribed to topic %q; use the participant name", name, topic)
			}
			js, err := connectJS(ctx, nc)
			if err != nil {
				return nil, nil, fmt.Errorf("wmparticipant: natstx's JetStream API: %w", err)
			}
			if _, err := js.Stream(ctx, messages.CommandStream); err != nil {
				return nil, nil, fmt.Errorf("wmparticipant: stream %s (the coordinator declares it): %w", messages.CommandStream, err)
			}
			want := consumer.Config(name, opts.AckWait, opts.Concurrency)
			opened, err := consumer.Open(ctx, nc, js, want)
			fields := watermill.LogFields{"participant": name, "consumer": want.Durable}
			switch {
			case errors.Is(err, consumer.ErrRefused):
				logger.Info("consumer not there and not created here; consuming once the coordinator creates it (before its first command to this participant)",
					fields.Add(watermill.LogFields{"reason": err.Error()}))
				return &awaitedConsumer{js: js, want: want, logger: logger, fields: fields}, nil, nil
			case err != nil:
				return nil, nil, fmt.Errorf("wmparticipant: setting up consumer %s: %w", want.Durable, err)
			case len(opened.Differs) > 0:
				logger.Error("consumer used with settings other than this participant's; its creator (the coordinator, under secure permissions) chose them",
					opened.UpdateErr, fields.Add(watermill.LogFields{"differs": strings.Join(opened.Differs, "; ")}))
			}
			return opened.Consumer, nil, nil
		},
	})
}

// probeTimeout bounds the request that tells where natstx's JetStream API
// is (jsconnect.New).
const probeTimeout = 10 * time.Second

// connectJS returns natstx's JetStream API on nc: the account's own, or the
// one under messages.JetStreamAPIPrefix in an account that imports it (the
// participants' account of `natstx auth init`).
func connectJS(ctx context.Context, nc *nats.Conn) (jetstream.JetStream, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	return jsconnect.New(ctx, nc)
}

// awaitedConsumer is the consumer of a participant that may not create it,
// before the coordinator has: Consume returns at once and starts consuming
// once the consumer exists (so that the router runs, and the participant
// answers audits, meanwhile). Fetch, Next and Messages use the consumer if
// it exists by then.
type awaitedConsumer struct {
	js     jetstream.JetStream
	want   jetstream.ConsumerConfig
	logger watermill.LoggerAdapter
	fields watermill.LogFields
}

// now returns the consumer if it exists.
func (c *awaitedConsumer) now(ctx context.Context) (jetstream.Consumer, error) {
	return c.js.Consumer(ctx, messages.CommandStream, c.want.Durable)
}

func (c *awaitedConsumer) nowOrErr() (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.now(ctx)
}

func (c *awaitedConsumer) Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	cons, err := c.nowOrErr()
	if err != nil {
		return nil, err
	}
	return cons.Fetch(batch, opts...)
}

func (c *awaitedConsumer) FetchBytes(maxBytes int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	cons, err := c.nowOrErr()
	if err != nil {
		return nil, err
	}
	return cons.FetchBytes(maxBytes, opts...)
}

func (c *awaitedConsumer) FetchNoWait(batch int) (jetstream.MessageBatch, error) {
	cons, err := c.nowOrErr()
	if err != nil {
		return nil, err
	}
	return cons.FetchNoWait(batch)
}

func (c *awaitedConsumer) Messages(opts ...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	cons, err := c.nowOrErr()
	if err != nil {
		return nil, err
	}
	return cons.Messages(opts...)
}

func (c *awaitedConsumer) Next(opts ...jetstream.FetchOpt) (jetstream.Msg, error) {
	cons, err := c.nowOrErr()
	if err != nil {
		return nil, err
	}
	return cons.Next(opts...)
}

func (c *awaitedConsumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	cons, err := c.now(ctx)
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

// CachedInfo is the consumer's if it exists, else its names and the wanted
// settings.
func (c *awaitedConsumer) CachedInfo() *jetstream.ConsumerInfo {
	if cons, err := c.nowOrErr(); err == nil {
		return cons.CachedInfo()
	}
	return &jetstream.ConsumerInfo{Stream: messages.CommandStream, Name: c.want.Durable, Config: c.want}
}

// Consume waits for the consumer in a goroutine and consumes it with
// handler and opts, until the returned context is stopped or drained.
func (c *awaitedConsumer) Consume(handler jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ac := &awaitedConsume{cancel: cancel, closed: make(chan struct{})}
	go ac.run(ctx, c, handler, opts)
	return ac, nil
}

// awaitedConsume is the ConsumeContext of awaitedConsumer.Consume.
type awaitedConsume struct {
	cancel context.CancelFunc
	closed chan struct{}

	mu    sync.Mutex
	done  bool                     // stopped or drained
	inner jetstream.ConsumeContext // once consuming
}

func (ac *awaitedConsume) run(ctx context.Context, c *awaitedConsumer, handler jetstream.MessageHandler, opts []jetstream.PullConsumeOpt) {
	defer close(ac.closed)
	var inner jetstream.ConsumeContext
	err := consumer.AwaitThenStart(ctx, c.js, c.want, consumer.Hooks{
		LookupFailed: func(err error) { c.logger.Error("looking up the consumer", err, c.fields) },
		Differs: func(d []string) {
			c.logger.Info("consumer found with settings other than this participant's; its creator (the coordinator) chose them",
				c.fields.Add(watermill.LogFields{"differs": strings.Join(d, "; ")}))
		},
		StartFailed: func(err error) { c.logger.Error("consuming commands; trying again", err, c.fields) },
	}, func(cons jetstream.Consumer) error {
		ac.mu.Lock()
		defer ac.mu.Unlock()
		if ac.done {
			return ctx.Err() // stopped or drained: ctx is cancelled
		}
		var err error
		if inner, err = cons.Consume(handler, opts...); err == nil {
			ac.inner = inner
		}
		return err
	})
	if err != nil {
		return // stopped or drained
	}
	c.logger.Info("consumer found; consuming commands", c.fields)
	<-inner.Closed()
}

// end stops waiting, and stops or drains (f) the consuming if it started.
func (ac *awaitedConsume) end(f func(jetstream.ConsumeContext)) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	ac.done = true
	ac.cancel()
	if ac.inner != nil {
		f(ac.inner)
	}
}

func (ac *awaitedConsume) Stop()                   { ac.end(jetstream.ConsumeContext.Stop) }
func (ac *awaitedConsume) Drain()                  { ac.end(jetstream.ConsumeContext.Drain) }
func (ac *awaitedConsume) Closed() <-chan struct{} { return ac.closed }

// NewReplyPublisher returns a watermill publisher of replies on core NATS
// (replies are plain NATS messages, not stream messages) over nc. Mount
// asks the coordinators about transactions in doubt over nc too.
func NewReplyPublisher(nc *nats.Conn, logger watermill.LoggerAdapter) (message.Publisher, error) {
	pub, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler: &wmnats.NATSMarshaler{},
		JetStream: wmnats.JetStreamConfig{Disabled: true},
	}, logger)
	if err != nil {
		return nil, err
	}
	return replyPublisher{Publisher: pub, nc: nc}, nil
}

// replyPublisher is a reply publisher that remembers its connection, for
// Mount to ask the coordinators over it.
type replyPublisher struct {
	message.Publisher
	nc *nats.Conn
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
// (malformed, contradicting the record, of a kind the participant does not
// implement) is acknowledged after its Failed reply, and so is a saga
// command answered failed (the coordinator, not the transport, retries it).
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
		if messages.IsBatch(h) {
			return handleBatch(p, pub, h, msg.Payload, subject)
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

// handleBatch handles a batch of commands (Processor.HandleBatch, each
// command in a goroutine of its own), publishes the replies and returns what
// settles the message, as Handler does for one command.
func handleBatch(p *participants.Processor, pub message.Publisher, h map[string][]string, body []byte, subject string) error {
	ba := p.HandleBatch(h, body, subject, func(f func()) bool {
		go f()
		return true
	})
	settle := ba.Settle
	for _, m := range ba.Replies {
		out := message.NewMessage(watermill.NewUUID(), m.Body)
		for k, v := range m.Header {
			out.Metadata.Set(k, v[0])
		}
		if err := pub.Publish(m.Subject, out); err != nil && settle == participants.SettleAck {
			settle = participants.SettleNak
		}
	}
	if settle == participants.SettleNak {
		return ErrRetry
	}
	return nil
}

// MountOption configures Mount.
type MountOption func(*mountConfig)

type mountConfig struct {
	ask participants.AskFunc
	nc  *nats.Conn // answers audits, when known
}

// WithAsk makes Mount ask about transactions in doubt with ask.
func WithAsk(ask participants.AskFunc) MountOption {
	return func(c *mountConfig) { c.ask = ask }
}

// WithConn makes Mount ask about transactions in doubt over nc (the
// coordinators' queue group, participants.AskNATS) and answer audits
// (participants.ServeAudit) on it.
func WithConn(nc *nats.Conn) MountOption {
	return func(c *mountConfig) { c.ask, c.nc = participants.AskNATS(nc), nc }
}

// loadTimeout bounds LoadPrepared when the router starts.
const loadTimeout = 30 * time.Second

// Mount adds p's handler to router, reading the participant's commands from
// sub (see NewSubscriber) and publishing replies with pub, and p's recovery:
// when the router runs, p.LoadPrepared (an error fails Run), then, until the
// handler stops, p.ResolveInDoubt every half of p.InDoubtAfter. It asks with
// the function of WithAsk or over the connection of WithConn; by default
// over the connection of pub when pub came from NewReplyPublisher. With none
// of them it cannot ask: transactions left in doubt wait for the
// coordinator's commands. On the same connection (WithConn's, or pub's) it
// answers audits (natstx audit) while the handler runs.
func Mount(router *message.Router, p *participants.Processor, sub message.Subscriber, pub message.Publisher, opts ...MountOption) {
	var c mountConfig
	if rp, ok := pub.(replyPublisher); ok {
		c.ask, c.nc = participants.AskNATS(rp.nc), rp.nc
	}
	for _, o := range opts {
		o(&c)
	}
	h := router.AddConsumerHandler("natstx-"+p.Name(), p.Name(), sub, Handler(p, pub))
	router.AddPlugin(func(r *message.Router) error {
		ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
		defer cancel()
		if err := p.LoadPrepared(ctx); err != nil {
			return fmt.Errorf("wmparticipant: participant %s: %w", p.Name(), err)
		}
		if c.ask != nil && p.InDoubtAfter() > 0 {
			go resolveWhileRunning(r, h, p, c.ask)
		}
		if c.nc != nil {
			audit, err := participants.ServeAudit(c.nc, p)
			if err != nil {
				return fmt.Errorf("wmparticipant: participant %s: serving audits: %w", p.Name(), err)
			}
			go func() {
				// Once the router runs, the handler's Stopped channel
				// exists: answer audits until it closes, or the router does.
				select {
				case <-r.Running():
					<-h.Stopped()
				case <-closed(r):
				}
				_ = audit.Unsubscribe()
			}()
		}
		return nil
	})
}

// closed returns a channel closed once r is closed (polled: a router that
// never runs has no other signal).
func closed(r *message.Router) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for range t.C {
			if r.IsClosed() {
				close(ch)
				return
			}
		}
	}()
	return ch
}

// resolveWhileRunning asks about the transactions in doubt every half of
// InDoubtAfter, once the router runs, until the handler stops or the router
// closes (if Run fails before the router runs, until Close).
func resolveWhileRunning(r *message.Router, h *message.Handler, p *participants.Processor, ask participants.AskFunc) {
	t := time.NewTicker(max(p.InDoubtAfter()/2, 10*time.Millisecond))
	defer t.Stop()
	// The handler's Stopped channel exists once the router runs.
	for running := false; !running; {
		select {
		case <-r.Running():
			running = true
		case <-t.C:
			if r.IsClosed() {
				return
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := h.Stopped()
	go func() { // stop asking as soon as the handler stops
		select {
		case <-stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if r.IsClosed() {
				return
			}
			p.ResolveInDoubt(ctx, ask)
		}
	}
}
