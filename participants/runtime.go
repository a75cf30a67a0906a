package participants

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/participants/internal/consumer"
)

// Defaults of Config.
const (
	DefaultConcurrency = 256
	DefaultAckWait     = 30 * time.Second
	DefaultOpTimeout   = 10 * time.Second
	DefaultRetention   = 10 * time.Minute
	DefaultRetryDelay  = 200 * time.Millisecond
	DefaultStreamWait  = 30 * time.Second
	// DefaultBarrierRetention is Config.BarrierRetention when zero.
	DefaultBarrierRetention = 24 * time.Hour
)

// How a participant instance pulls its commands (the Runtime, and the
// watermill adapter's subscriber): each pull request waits up to PullExpiry,
// and the server must show every PullHeartbeat that it still holds it. Two
// missed heartbeats make the instance pull again. A pull held by a consumer
// leader whose node died is lost with it, and the new leader, elected 4-9s
// later, does not always say so; pulling again every 2s until one is
// answered resumes consuming within about 2s of that election
// (TestClusterNodeLoss logs how long), where nats.go's defaults would wait
// 30s.
const (
	// PullExpiry is how long one pull request waits for commands.
	PullExpiry = 3 * time.Second
	// PullHeartbeat is the idle heartbeat asked for with each pull request.
	PullHeartbeat = 1 * time.Second
)

// Config configures a Runtime. Zero durations and counts take the defaults.
type Config struct {
	// Name is the participant's name, as coordinators address it. Runtimes
	// with the same Name share one durable consumer and split the work.
	Name string
	// Handler does the participant's two-phase commit work, with the record
	// of each transaction kept in memory (lost on restart). Set Barrier, or
	// Handler and/or SagaHandler.
	Handler Handler
	// SagaHandler does the participant's saga steps (action, compensate),
	// with the record of each step kept in memory (lost on restart). A
	// participant with only one of Handler and SagaHandler answers the other
	// kind's commands failed, with the reason, and terminates them.
	SagaHandler SagaHandler
	// Barrier does the participant's work through its SQLHandler and
	// SQLSagaHandler, with the record of each transaction and saga step kept
	// in the participant's database in the same local transaction as the
	// business change: effects happen exactly once, across restarts and
	// across instances sharing the database.
	Barrier *Barrier
	// AfterApply, if set, is called after a command's effects are applied
	// (durably, with a Barrier) and before its reply is published; never for
	// a duplicate. For fault injection: a test crashes the process here.
	AfterApply func(cmd messages.Command)
	// Concurrency is the most handler calls in flight at once; default 256.
	Concurrency int
	// AckWait is how long JetStream waits for a command's acknowledgement
	// before delivering it again; default 30s. It must exceed OpTimeout.
	AckWait time.Duration
	// OpTimeout bounds one handler call: its context ends after it; default
	// 10s.
	OpTimeout time.Duration
	// Retention is how long committed and aborted records stay in memory to
	// answer duplicates; default 10m. Prepared records are never removed.
	Retention time.Duration
	// RetryDelay is how long a command waits before redelivery after Commit
	// or Abort failed; default 200ms.
	RetryDelay time.Duration
	// StreamWait is how long Start waits for the command stream to exist;
	// default 30s.
	StreamWait time.Duration
	// BarrierRetention is how long a Barrier keeps the rows of finished
	// transactions before the Runtime purges them; default 24h, the command
	// stream's default MaxAge. Negative never purges.
	BarrierRetention time.Duration
	// InDoubtAfter is how long after voting commit, with neither commit nor
	// abort arriving, the participant asks the coordinators for the outcome
	// and applies it (checked every half of it); default 10s, negative never.
	// A transaction found prepared at start is asked about InDoubtAfter after
	// the start, with the deadline its prepare carried.
	InDoubtAfter time.Duration
	// Now is the clock every decision of the Processor reads: deadline
	// checks, doubt tracking, record sweeps and the barrier's row times; nil
	// means time.Now. A deterministic simulator sets it; the timers that
	// pace the Runtime's own rounds stay on the wall clock.
	Now func() time.Time
	// Logger receives the Runtime's log lines; default none.
	Logger *zap.Logger
	// TracerProvider, if set, traces every well-formed command: a span
	// (SpanKindConsumer, named SpanPrefix and the operation, with the Attr*
	// attributes) around the record's decision and the handler call, whose
	// parent is the trace context the command carries (a new trace when it
	// carries none), and whose context is the handler's. A duplicate
	// answered from the record gets one too, marked AttrDuplicate. Nil:
	// no tracing, at no cost.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = DefaultOpTimeout
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.StreamWait == 0 {
		c.StreamWait = DefaultStreamWait
	}
	if c.InDoubtAfter == 0 {
		c.InDoubtAfter = DefaultInDoubtAfter
	}
	if c.BarrierRetention == 0 {
		c.BarrierRetention = DefaultBarrierRetention
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate checks c, with defaults applied to zero fields; errors wrap
// ErrInvalidConfig and name the field.
func (c Config) Validate() error {
	c.setDefaults()
	if err := messages.ValidateName("participant name", c.Name); err != nil {
		return fmt.Errorf("%w: Name: %w", ErrInvalidConfig, err)
	}
	if (c.Handler == nil && c.SagaHandler == nil) == (c.Barrier == nil) {
		return fmt.Errorf("%w: set Barrier (durable record), or Handler and/or SagaHandler (in-memory record), not both kinds", ErrInvalidConfig)
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("%w: Concurrency is %d, it must be positive", ErrInvalidConfig, c.Concurrency)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"AckWait", c.AckWait}, {"OpTimeout", c.OpTimeout}, {"Retention", c.Retention},
		{"RetryDelay", c.RetryDelay}, {"StreamWait", c.StreamWait},
	} {
		if d.v < 0 {
			return fmt.Errorf("%w: %s is %s, it must be positive", ErrInvalidConfig, d.name, d.v)
		}
	}
	if c.OpTimeout >= c.AckWait {
		return fmt.Errorf("%w: OpTimeout (%s) must be shorter than AckWait (%s), or commands are redelivered while their handler still runs",
			ErrInvalidConfig, c.OpTimeout, c.AckWait)
	}
	return nil
}

// Stats counts what a Runtime did since New.
type Stats struct {
	// Prepares, Commits, Aborts and OnePhases (commit-one-phase) count
	// well-formed commands handled, by operation, duplicates included.
	Prepares, Commits, Aborts, OnePhases uint64
	// Duplicates counts commands answered from the record without calling
	// the Handler.
	Duplicates uint64
	// Rejected counts commands that contradict the record (commit without
	// prepare, commit after abort, abort after commit); they are terminated.
	Rejected uint64
	// Actions and Compensations count well-formed saga commands handled, by
	// operation, duplicates included.
	Actions, Compensations uint64
	// Unsupported counts commands of a kind this participant does not
	// implement (saga commands without a saga handler, two-phase commit
	// commands without a two-phase handler); they are terminated.
	Unsupported uint64
	// Malformed counts commands dropped because they did not decode or were
	// addressed to another participant.
	Malformed uint64
	// HandlerErrors counts handler calls that returned an error (an abort
	// vote from Prepare included) or panicked.
	HandlerErrors uint64
	// Records is the number of transaction records in memory now.
	Records int
	// InDoubt is the number of transactions voted commit on whose outcome has
	// not arrived; InDoubtQueries counts questions to the coordinators about
	// them and InDoubtResolved the outcomes applied from the answers.
	InDoubt                         int
	InDoubtQueries, InDoubtResolved uint64
	// InDoubtContradicted counts answers that contradicted the record (abort
	// for a transaction recorded committed, commit after abort): each one
	// took its transaction out of the doubt set and was logged once.
	InDoubtContradicted uint64
	// Latency is, by operation (prepare, commit, abort, action,
	// compensate: every one is present), the time from a well-formed
	// command's decoding to its answer, the record and the handler
	// included, duplicates included; the buckets are LatencyBuckets.
	Latency map[messages.Op]Histogram
	// Outcomes counts the well-formed commands by what the record made of
	// them, keyed by the Outcome* names (every one is present): prepared,
	// voted no, committed, aborted, done, refused, compensated, failed (to
	// be retried), duplicate (answered from the record) and rejected.
	// Commands of a kind the participant does not implement are not
	// counted here (Unsupported), nor in-doubt answers that contradict the
	// record (InDoubtContradicted).
	Outcomes map[string]uint64
}

// Runtime consumes one participant's commands and calls its Handler. Create it
// with New, then Start; Stop ends it. A Runtime runs once.
type Runtime struct {
	nc  *nats.Conn
	cfg Config
	log *zap.Logger

	proc *Processor
	// workers handle the commands, at most Concurrency at once.
	workers *workers
	wg      sync.WaitGroup // in-flight batches (each waits for its commands)

	stopping chan struct{} // closed by Stop
	stopOnce sync.Once
	janitor  chan struct{} // closed when the janitor goroutine returns
	// ctx ends at Stop; it bounds the in-doubt questions.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // guards the fields below; held by Start and Stop
	started bool
	stopped bool
	cc      jetstream.ConsumeContext // nil while the consumer is awaited
	audit   *nats.Subscription
	// binding, when the consumer is awaited, is closed once
	// consumeOnceCreated returns; it sets lateCC before, if it started
	// consuming.
	binding chan struct{}
	lateCC  jetstream.ConsumeContext
}

// New returns a Runtime for cfg that uses nc; call Start to begin consuming.
func New(nc *nats.Conn, cfg Config) (*Runtime, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	proc, err := NewProcessor(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runtime{
		ctx:      ctx,
		cancel:   cancel,
		nc:       nc,
		cfg:      cfg,
		log:      cfg.Logger.With(zap.String("participant", cfg.Name)),
		proc:     proc,
		workers:  newWorkers(cfg.Concurrency),
		stopping: make(chan struct{}),
		janitor:  make(chan struct{}),
	}, nil
}

// Name is the participant name the Runtime serves.
func (r *Runtime) Name() string { return r.cfg.Name }

// Start waits up to Config.StreamWait for natstx's JetStream API and the
// command stream there (the coordinator declares it), sets up the
// participant's durable consumer and starts consuming. The JetStream API is
// the connection account's own, or, in an account without JetStream that
// imports natstx's (the participants' account of `natstx auth init`), the
// one under messages.JetStreamAPIPrefix: see messages/jsconnect. The
// consumer is looked up first: if it is there it is used,
// updated first if its settings differ from Config's and this identity may
// update it; if it is not there it is created. An identity that may not
// create it (the permissions of `natstx auth init`) starts without it and
// consumes once the coordinator has created it, which it does before its
// first command to the participant. ctx bounds only this start-up; Stop
// ends consuming, and a Stop called while Start waits makes it return
// ErrStopped.
func (r *Runtime) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.stopped || r.isStopping():
		return ErrStopped
	case r.started:
		return ErrStarted
	}
	js, err := r.waitStream(ctx)
	if err != nil {
		return err
	}
	want := consumer.Config(r.cfg.Name, r.cfg.AckWait, r.cfg.Concurrency)
	opened, err := consumer.Open(ctx, r.nc, js, want)
	var cc jetstream.ConsumeContext
	switch {
	case err == nil:
		r.noteConsumer(opened)
		if cc, err = r.consume(opened.Consumer); err != nil {
			return fmt.Errorf("natstx: participant %s: consuming: %w", r.cfg.Name, err)
		}
	case errors.Is(err, consumer.ErrRefused):
		r.log.Info("consumer not there and not created here; consuming once the coordinator creates it (before its first command to this participant)",
			zap.String("consumer", want.Durable), zap.Error(err))
	default:
		return fmt.Errorf("natstx: participant %s: setting up consumer %s: %w", r.cfg.Name, want.Durable, err)
	}
	stopCC := func() {
		if cc != nil {
			cc.Stop()
			<-cc.Closed()
		}
	}
	if err := r.proc.LoadPrepared(ctx); err != nil {
		stopCC()
		return fmt.Errorf("natstx: participant %s: %w", r.cfg.Name, err)
	}
	audit, err := r.serveAudit()
	if err != nil {
		stopCC()
		return fmt.Errorf("natstx: participant %s: serving audits: %w", r.cfg.Name, err)
	}
	r.cc, r.audit, r.started = cc, audit, true
	if cc == nil {
		r.binding = make(chan struct{})
		go r.consumeOnceCreated(js, want)
	}
	go r.runJanitor()
	r.log.Info("participant started", zap.Int("concurrency", r.cfg.Concurrency))
	return nil
}

// consume starts consuming cons.
func (r *Runtime) consume(cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
	return cons.Consume(r.onMessage,
		jetstream.PullMaxMessages(r.cfg.Concurrency),
		// Short pulls with frequent heartbeats: a pull lost with a stream
		// leader that died is noticed in seconds, not the default 30s.
		jetstream.PullExpiry(PullExpiry),
		jetstream.PullHeartbeat(PullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// A server that shuts down (a restart) ends the pull; the
			// connection reconnects and the pulls resume on their own: not
			// a warning. Any other error is.
			if errors.Is(err, jetstream.ErrServerShutdown) || r.nc.IsReconnecting() {
				r.log.Info("consuming commands paused while the connection reconnects", zap.Error(err))
				return
			}
			r.log.Warn("consuming commands", zap.Error(err))
		}))
}

// noteConsumer logs the settings of the consumer that differ from Config's
// and that Open could not change.
func (r *Runtime) noteConsumer(o consumer.Opened) {
	if len(o.Differs) > 0 {
		r.log.Warn("consumer used with settings other than this participant's; its creator (the coordinator, under secure permissions) chose them",
			zap.String("consumer", messages.ConsumerName(r.cfg.Name)), zap.Strings("differs", o.Differs), zap.NamedError("update", o.UpdateErr))
	}
}

// consumeOnceCreated waits for the consumer the coordinator creates and
// consumes it, until Stop. It closes r.binding when it returns, after
// setting r.lateCC if it started consuming.
func (r *Runtime) consumeOnceCreated(js jetstream.JetStream, want jetstream.ConsumerConfig) {
	defer close(r.binding)
	_ = consumer.AwaitThenStart(r.ctx, js, want, consumer.Hooks{
		LookupFailed: func(err error) {
			r.log.Warn("looking up the consumer", zap.String("consumer", want.Durable), zap.Error(err))
		},
		Differs: func(d []string) { r.noteConsumer(consumer.Opened{Differs: d}) },
		StartFailed: func(err error) {
			r.log.Warn("consuming commands; trying again", zap.String("consumer", want.Durable), zap.Error(err))
		},
	}, func(cons jetstream.Consumer) error {
		cc, err := r.consume(cons)
		if err == nil {
			r.lateCC = cc
			r.log.Info("consumer found; consuming commands", zap.String("consumer", want.Durable))
		}
		return err
	}) // an error: stopping
}

// waitStream polls for natstx's JetStream API on r.nc (jsconnect.New, which
// tells whether it is under messages.JetStreamAPIPrefix) and then for the
// command stream there, until the stream exists, StreamWait passes, ctx ends
// or Stop is called; it returns that JetStream API.
func (r *Runtime) waitStream(ctx context.Context) (jetstream.JetStream, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.StreamWait)
	defer cancel()
	// Stop ends a request in flight too.
	stop := context.AfterFunc(r.ctx, cancel)
	defer stop()
	poll := min(250*time.Millisecond, r.cfg.StreamWait)
	var js jetstream.JetStream
	var lastErr error
	for {
		var err error
		if js == nil {
			js, err = jsconnect.New(ctx, r.nc)
		}
		if js != nil {
			if _, err = js.Stream(ctx, messages.CommandStream); err == nil {
				return js, nil
			}
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			lastErr = err
		}
		select {
		case <-r.stopping:
			return nil, ErrStopped
		case <-ctx.Done():
			if r.isStopping() {
				return nil, ErrStopped
			}
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return nil, fmt.Errorf("%w: participant %s: stream %s did not appear within %s; start the natstx coordinator, which declares it (last error: %v)",
				ErrStreamMissing, r.cfg.Name, messages.CommandStream, r.cfg.StreamWait, lastErr)
		case <-time.After(poll):
		}
	}
}

// Stop stops consuming, waits for every in-flight handler call to finish and
// reply, and stops the janitor. Commands received but not yet started are
// handed back to JetStream for another instance. Stop is safe to call more
// than once, and before Start.
func (r *Runtime) Stop() {
	r.stopOnce.Do(func() {
		close(r.stopping)
		r.cancel()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.stopped = true
	if !r.started {
		// A Start that failed may have consumed commands before it stopped
		// consuming: wait for them, and for the workers to exit.
		r.wg.Wait()
		r.workers.close()
		return
	}
	_ = r.audit.Unsubscribe()
	cc := r.cc
	if r.binding != nil {
		<-r.binding // prompt: r.ctx is cancelled
		cc = r.lateCC
	}
	if cc != nil {
		cc.Drain()
		<-cc.Closed()
	}
	r.wg.Wait()
	r.workers.close()
	<-r.janitor
	r.log.Info("participant stopped")
}

// isStopping reports whether Stop has been called.
func (r *Runtime) isStopping() bool {
	select {
	case <-r.stopping:
		return true
	default:
		return false
	}
}

// Stats returns the Runtime's counters.
func (r *Runtime) Stats() Stats { return r.proc.Stats() }

// State returns what the Runtime records about transaction txid: with a
// Barrier, what its database says; else StateNone if it has no record (never
// seen, or finished longer than Retention ago).
func (r *Runtime) State(txid string) State { return r.proc.State(txid) }

// StepState returns what the Runtime records about step of saga sagaID:
// with a Barrier, what its database says; else what memory holds.
func (r *Runtime) StepState(sagaID, step string) StepState { return r.proc.StepState(sagaID, step) }

// purgeBarrier deletes the barrier rows of transactions finished longer than
// BarrierRetention ago.
func (r *Runtime) purgeBarrier(now time.Time) {
	if r.cfg.Barrier == nil || r.cfg.BarrierRetention < 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
	defer cancel()
	n, err := r.cfg.Barrier.Purge(ctx, r.cfg.Name, now.Add(-r.cfg.BarrierRetention))
	switch {
	case err != nil:
		r.log.Warn("purging finished barrier rows failed; trying again later", zap.Error(err))
	case n > 0:
		r.log.Debug("purged finished barrier rows", zap.Int64("rows", n))
	}
}

// runJanitor removes old finished records, and lets the workers that wait
// for work go (workers.trim), until Stop.
func (r *Runtime) runJanitor() {
	defer close(r.janitor)
	every := min(max(r.cfg.Retention/2, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	var doubts <-chan time.Time
	if r.cfg.InDoubtAfter > 0 {
		d := time.NewTicker(max(r.cfg.InDoubtAfter/2, 10*time.Millisecond))
		defer d.Stop()
		doubts = d.C
	}
	ask := AskNATS(r.nc)
	for {
		select {
		case <-r.stopping:
			return
		case <-t.C:
			now := r.proc.now()
			if n := r.proc.Sweep(now); n > 0 {
				r.log.Debug("removed finished transaction records", zap.Int("count", n))
			}
			r.purgeBarrier(now)
			r.workers.trim()
		case <-doubts:
			r.proc.ResolveInDoubt(r.ctx, ask)
		}
	}
}

// onMessage is the Consume callback. It never runs handler work itself: it
// hands the command to a worker, waiting while Concurrency of them are busy.
func (r *Runtime) onMessage(msg jetstream.Msg) {
	if r.isStopping() {
		r.handBack(msg)
		return
	}
	if messages.IsBatch(msg.Headers()) {
		// Its commands go to the workers one by one. The batch waits for
		// them in a goroutine of its own, not a worker's: a worker waiting
		// for other workers would take a command's place, and with every
		// worker waiting nothing would run.
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.processBatch(msg)
		}()
		return
	}
	if !r.runCommand(func() { r.process(msg) }) {
		r.handBack(msg)
	}
}

// runCommand has f, the handling of one command, run by a worker, once one is
// free, and returns true; it returns false without running f once Stop is
// called.
func (r *Runtime) runCommand(f func()) bool { return r.workers.run(f, r.stopping) }

// handBack returns a message received during Stop to JetStream, for another
// instance to handle now rather than after AckWait.
func (r *Runtime) handBack(msg jetstream.Msg) {
	if err := msg.Nak(); err != nil {
		r.log.Debug("handing a command back", zap.String("subject", msg.Subject()), zap.Error(err))
	}
}

// process handles one command message end to end.
func (r *Runtime) process(msg jetstream.Msg) {
	r.proc.Handle(map[string][]string(msg.Headers()), msg.Data(), msg.Subject(), func(a Answer) {
		log := r.log
		if a.Reply.TxID != "" {
			log = log.WithLazy(zap.String("txid", a.Reply.TxID), zap.String("op", string(a.Reply.Op)))
		}
		if a.ReplyTo != "" {
			err := r.nc.PublishMsg(&nats.Msg{Subject: a.ReplyTo, Header: nats.Header(a.Reply.Header()), Data: a.Reply.Body()})
			if err != nil {
				log.Warn("publishing reply; the command will be delivered again", zap.String("reply_to", a.ReplyTo), zap.Error(err))
				if a.Settle == SettleAck {
					a.Settle = SettleNak
				}
			}
		}
		r.dispose(msg, a.Settle, log)
	})
}

// processBatch handles a batch message with Processor.HandleBatch, each
// command run by a worker, publishes the replies and settles the message
// once; a Stop midway hands the whole batch back.
func (r *Runtime) processBatch(msg jetstream.Msg) {
	ba := r.proc.HandleBatch(map[string][]string(msg.Headers()), msg.Data(), msg.Subject(), r.runCommand)
	if ba.Stopped {
		r.handBack(msg)
		return
	}
	settle := ba.Settle
	for _, m := range ba.Replies {
		if err := r.nc.PublishMsg(&nats.Msg{Subject: m.Subject, Header: nats.Header(m.Header), Data: m.Body}); err != nil {
			r.log.Warn("publishing replies; the command batch will be delivered again", zap.String("reply_to", m.Subject), zap.Error(err))
			if settle == SettleAck {
				settle = SettleNak
			}
		}
	}
	r.dispose(msg, settle, r.log)
}

// dispose acknowledges, naks or terminates a command message.
func (r *Runtime) dispose(msg jetstream.Msg, s Settle, log *zap.Logger) {
	var err error
	switch s {
	case SettleAck:
		err = msg.Ack()
	case SettleNak:
		err = msg.NakWithDelay(r.cfg.RetryDelay)
	case SettleTerm:
		err = msg.Term()
	}
	if err != nil {
		log.Warn("settling the command message", zap.Error(err))
	}
}
