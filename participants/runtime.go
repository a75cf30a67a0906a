package participants

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// Defaults of Config.
const (
	DefaultConcurrency = 256
	DefaultAckWait     = 30 * time.Second
	DefaultOpTimeout   = 10 * time.Second
	DefaultRetention   = 10 * time.Minute
	DefaultRetryDelay  = 200 * time.Millisecond
	DefaultStreamWait  = 30 * time.Second
)

// Config configures a Runtime. Zero durations and counts take the defaults.
type Config struct {
	// Name is the participant's name, as coordinators address it. Runtimes
	// with the same Name share one durable consumer and split the work.
	Name string
	// Handler does the participant's work. Required.
	Handler Handler
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
	// Logger receives the Runtime's log lines; default none.
	Logger *zap.Logger
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
	if c.Handler == nil {
		return fmt.Errorf("%w: Handler is nil", ErrInvalidConfig)
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
	// Prepares, Commits and Aborts count well-formed commands handled, by
	// operation, duplicates included.
	Prepares, Commits, Aborts uint64
	// Duplicates counts commands answered from the record without calling
	// the Handler.
	Duplicates uint64
	// Rejected counts commands that contradict the record (commit without
	// prepare, commit after abort, abort after commit); they are terminated.
	Rejected uint64
	// Malformed counts commands dropped because they did not decode or were
	// addressed to another participant.
	Malformed uint64
	// HandlerErrors counts handler calls that returned an error (an abort
	// vote from Prepare included) or panicked.
	HandlerErrors uint64
	// Records is the number of transaction records in memory now.
	Records int
}

// Runtime consumes one participant's commands and calls its Handler. Create it
// with New, then Start; Stop ends it. A Runtime runs once.
type Runtime struct {
	nc  *nats.Conn
	cfg Config
	log *zap.Logger

	records *table
	sem     chan struct{}
	wg      sync.WaitGroup // in-flight command goroutines

	stopping chan struct{} // closed by Stop
	stopOnce sync.Once
	janitor  chan struct{} // closed when the janitor goroutine returns

	mu      sync.Mutex // guards the fields below; held by Start and Stop
	started bool
	stopped bool
	cc      jetstream.ConsumeContext

	prepares, commits, aborts atomic.Uint64
	duplicates, rejected      atomic.Uint64
	malformed, handlerErrors  atomic.Uint64
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
	return &Runtime{
		nc:       nc,
		cfg:      cfg,
		log:      cfg.Logger.With(zap.String("participant", cfg.Name)),
		records:  newTable(),
		sem:      make(chan struct{}, cfg.Concurrency),
		stopping: make(chan struct{}),
		janitor:  make(chan struct{}),
	}, nil
}

// Name is the participant name the Runtime serves.
func (r *Runtime) Name() string { return r.cfg.Name }

// Start waits up to Config.StreamWait for the command stream (the coordinator
// declares it), creates or updates the participant's durable consumer, and
// starts consuming. ctx bounds only this start-up; Stop ends consuming, and
// a Stop called while Start waits makes it return ErrStopped.
func (r *Runtime) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.stopped || r.isStopping():
		return ErrStopped
	case r.started:
		return ErrStarted
	}
	js, err := jetstream.New(r.nc)
	if err != nil {
		return fmt.Errorf("natstx: participant %s: %w", r.cfg.Name, err)
	}
	stream, err := r.waitStream(ctx, js)
	if err != nil {
		return err
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       messages.ConsumerName(r.cfg.Name),
		Description:   "natstx commands for participant " + r.cfg.Name,
		FilterSubject: messages.ParticipantFilter(r.cfg.Name),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.cfg.AckWait,
		MaxAckPending: 2 * r.cfg.Concurrency,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("natstx: participant %s: creating consumer %s: %w", r.cfg.Name, messages.ConsumerName(r.cfg.Name), err)
	}
	cc, err := cons.Consume(r.onMessage,
		jetstream.PullMaxMessages(r.cfg.Concurrency),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			r.log.Warn("consuming commands", zap.Error(err))
		}))
	if err != nil {
		return fmt.Errorf("natstx: participant %s: consuming: %w", r.cfg.Name, err)
	}
	r.cc, r.started = cc, true
	go r.runJanitor()
	r.log.Info("participant started", zap.Int("concurrency", r.cfg.Concurrency))
	return nil
}

// waitStream polls for the command stream until it exists, StreamWait passes
// or ctx ends.
func (r *Runtime) waitStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.StreamWait)
	defer cancel()
	poll := min(250*time.Millisecond, r.cfg.StreamWait)
	var lastErr error
	for {
		stream, err := js.Stream(ctx, messages.CommandStream)
		if err == nil {
			return stream, nil
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			lastErr = err
		}
		select {
		case <-r.stopping:
			return nil, ErrStopped
		case <-ctx.Done():
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
	r.stopOnce.Do(func() { close(r.stopping) })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.stopped = true
	if !r.started {
		return
	}
	r.cc.Drain()
	<-r.cc.Closed()
	r.wg.Wait()
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
func (r *Runtime) Stats() Stats {
	return Stats{
		Prepares:      r.prepares.Load(),
		Commits:       r.commits.Load(),
		Aborts:        r.aborts.Load(),
		Duplicates:    r.duplicates.Load(),
		Rejected:      r.rejected.Load(),
		Malformed:     r.malformed.Load(),
		HandlerErrors: r.handlerErrors.Load(),
		Records:       r.records.len(),
	}
}

// State returns what the Runtime records about transaction txid: StateNone
// if it has no record (never seen, or finished longer than Retention ago).
func (r *Runtime) State(txid string) State { return r.records.state(txid) }

// runJanitor removes old finished records until Stop.
func (r *Runtime) runJanitor() {
	defer close(r.janitor)
	every := min(max(r.cfg.Retention/2, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stopping:
			return
		case now := <-t.C:
			if n := r.records.sweep(now, r.cfg.Retention); n > 0 {
				r.log.Debug("removed finished transaction records", zap.Int("count", n))
			}
		}
	}
}

// onMessage is the Consume callback. It never runs handler work itself: it
// takes a concurrency slot and hands the command to a goroutine.
func (r *Runtime) onMessage(msg jetstream.Msg) {
	if r.isStopping() {
		r.handBack(msg)
		return
	}
	select {
	case <-r.stopping:
		r.handBack(msg)
		return
	case r.sem <- struct{}{}:
	}
	r.wg.Add(1)
	go func() {
		defer func() {
			<-r.sem
			r.wg.Done()
		}()
		r.process(msg)
	}()
}

// handBack returns a message received during Stop to JetStream, for another
// instance to handle now rather than after AckWait.
func (r *Runtime) handBack(msg jetstream.Msg) {
	if err := msg.Nak(); err != nil {
		r.log.Debug("handing a command back", zap.String("subject", msg.Subject()), zap.Error(err))
	}
}

// disposition is what happens to a command message after the reply.
type disposition int

const (
	ack  disposition = iota // done
	nak                     // deliver again after RetryDelay
	term                    // never deliver again
)

// outcome is the answer to one command.
type outcome struct {
	result messages.Result
	reason string
	then   disposition
}

// process handles one command message end to end.
func (r *Runtime) process(msg jetstream.Msg) {
	h := map[string][]string(msg.Headers())
	cmd, err := messages.DecodeCommand(h, msg.Data())
	if err == nil && cmd.Participant != r.cfg.Name {
		err = fmt.Errorf("%w: command for participant %q reached participant %q", messages.ErrMalformed, cmd.Participant, r.cfg.Name)
	}
	if err == nil && msg.Subject() != cmd.Subject() {
		err = fmt.Errorf("%w: command for %s arrived on subject %q", messages.ErrMalformed, cmd.Subject(), msg.Subject())
	}
	if err != nil {
		r.dropMalformed(msg, h, err)
		return
	}
	switch cmd.Op {
	case messages.OpPrepare:
		r.prepares.Add(1)
	case messages.OpCommit:
		r.commits.Add(1)
	case messages.OpAbort:
		r.aborts.Add(1)
	}
	log := r.log.With(zap.String("txid", cmd.TxID), zap.String("op", string(cmd.Op)), zap.Int("attempt", cmd.Attempt))
	tx := Tx{ID: cmd.TxID, Participant: cmd.Participant, Deadline: cmd.Deadline, Attempt: cmd.Attempt}

	// The transaction's lock is held through the reply and the ack, so that a
	// redelivery of the same command sees the final record.
	e := r.records.lock(cmd.TxID)
	defer r.records.unlock(cmd.TxID, e)
	out := r.decide(e, cmd, tx, log)
	if err := r.reply(cmd, out); err != nil {
		log.Warn("publishing reply; the command will be delivered again", zap.String("reply_to", cmd.ReplyTo), zap.Error(err))
		if out.then == ack {
			out.then = nak
		}
	}
	r.dispose(msg, out.then, log)
}

// decide applies the idempotency rules to one command, calling the Handler
// when they say so, and updates the record. The caller holds e's lock.
func (r *Runtime) decide(e *entry, cmd messages.Command, tx Tx, log *zap.Logger) outcome {
	state := e.rec.state
	switch cmd.Op {
	case messages.OpPrepare:
		switch state {
		case StateNone:
			if !tx.Deadline.IsZero() && !time.Now().Before(tx.Deadline) {
				e.finish(StateAborted, ReasonDeadlinePassed, time.Now())
				log.Info("voted abort: deadline passed", zap.Time("deadline", tx.Deadline))
				return outcome{messages.VoteAbort, ReasonDeadlinePassed, ack}
			}
			if err := r.call(log, func(ctx context.Context) error { return r.cfg.Handler.Prepare(ctx, tx, cmd.Payload) }); err != nil {
				reason := err.Error()
				if reason == "" {
					reason = ReasonPrepareFailed
				}
				e.finish(StateAborted, reason, time.Now())
				log.Info("voted abort", zap.String("reason", reason))
				return outcome{messages.VoteAbort, reason, ack}
			}
			e.rec = record{state: StatePrepared}
			log.Debug("voted commit")
			return outcome{messages.VoteCommit, "", ack}
		case StatePrepared, StateCommitted:
			return r.duplicate(log, state, outcome{messages.VoteCommit, "", ack})
		case StateAborted:
			reason := e.rec.reason
			if reason == "" {
				reason = ReasonAborted
			}
			return r.duplicate(log, state, outcome{messages.VoteAbort, reason, ack})
		}
	case messages.OpCommit:
		switch state {
		case StatePrepared:
			if err := r.call(log, func(ctx context.Context) error { return r.cfg.Handler.Commit(ctx, tx) }); err != nil {
				log.Warn("commit failed; it will be retried", zap.Error(err))
				return outcome{messages.Failed, err.Error(), nak}
			}
			e.finish(StateCommitted, "", time.Now())
			log.Debug("committed")
			return outcome{messages.Ack, "", ack}
		case StateCommitted:
			return r.duplicate(log, state, outcome{messages.Ack, "", ack})
		case StateNone:
			return r.reject(log, state, ReasonNoRecord)
		case StateAborted:
			return r.reject(log, state, ReasonCommitAfterAbort)
		}
	case messages.OpAbort:
		switch state {
		case StateNone:
			e.finish(StateAborted, ReasonAbortedBeforePrepare, time.Now())
			log.Info("abort before prepare: recorded, so a late prepare votes abort")
			return outcome{messages.Ack, "", ack}
		case StatePrepared:
			if err := r.call(log, func(ctx context.Context) error { return r.cfg.Handler.Abort(ctx, tx) }); err != nil {
				log.Warn("abort failed; it will be retried", zap.Error(err))
				return outcome{messages.Failed, err.Error(), nak}
			}
			e.finish(StateAborted, ReasonAborted, time.Now())
			log.Debug("aborted")
			return outcome{messages.Ack, "", ack}
		case StateAborted:
			return r.duplicate(log, state, outcome{messages.Ack, "", ack})
		case StateCommitted:
			return r.reject(log, state, ReasonAbortAfterCommit)
		}
	}
	// Unreachable: DecodeCommand accepts only the three operations.
	return outcome{messages.Failed, "unknown operation " + string(cmd.Op), term}
}

// duplicate counts and logs a command answered from the record.
func (r *Runtime) duplicate(log *zap.Logger, state State, out outcome) outcome {
	r.duplicates.Add(1)
	log.Debug("duplicate answered from the record", zap.Stringer("state", state), zap.String("result", string(out.result)))
	return out
}

// reject answers a command that contradicts the record: the coordinator and
// this participant disagree about the transaction, which needs a human.
func (r *Runtime) reject(log *zap.Logger, state State, reason string) outcome {
	r.rejected.Add(1)
	log.Error("rejected command that contradicts the record", zap.Stringer("state", state), zap.String("reason", reason))
	return outcome{messages.Failed, reason, term}
}

// call runs one handler call with a context bounded by OpTimeout, turning a
// panic into an error.
func (r *Runtime) call(log *zap.Logger, f func(context.Context) error) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OpTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			log.Error("handler panicked", zap.Any("panic", p), zap.StackSkip("stack", 1))
			err = fmt.Errorf("handler panicked: %v", p)
		}
		if err != nil {
			r.handlerErrors.Add(1)
		}
	}()
	return f(ctx)
}

// reply publishes out as the answer to cmd.
func (r *Runtime) reply(cmd messages.Command, out outcome) error {
	rep := messages.Reply{
		TxID:        cmd.TxID,
		Op:          cmd.Op,
		Participant: r.cfg.Name,
		Result:      out.result,
		Attempt:     cmd.Attempt,
		Reason:      messages.Truncate(out.reason, messages.MaxReasonLen),
	}
	return r.nc.PublishMsg(&nats.Msg{Subject: cmd.ReplyTo, Header: nats.Header(rep.Header()), Data: rep.Body()})
}

// dispose acknowledges, naks or terminates a command message.
func (r *Runtime) dispose(msg jetstream.Msg, d disposition, log *zap.Logger) {
	var err error
	switch d {
	case ack:
		err = msg.Ack()
	case nak:
		err = msg.NakWithDelay(r.cfg.RetryDelay)
	case term:
		err = msg.Term()
	}
	if err != nil {
		log.Warn("settling the command message", zap.Error(err))
	}
}

// dropMalformed logs, counts and terminates a command that did not decode,
// replying Failed when the headers say where and about what.
func (r *Runtime) dropMalformed(msg jetstream.Msg, h map[string][]string, cause error) {
	r.malformed.Add(1)
	txid := first(h, messages.HeaderTxID)
	fields := []zap.Field{zap.String("subject", msg.Subject()), zap.Error(cause)}
	if txid != "" {
		fields = append(fields, zap.String("txid", txid))
	}
	r.log.Warn("dropping malformed command", fields...)

	attempt, err := strconv.Atoi(first(h, messages.HeaderAttempt))
	if err != nil || attempt < 1 {
		attempt = 1
	}
	cmd := messages.Command{
		TxID:        txid,
		Op:          messages.Op(first(h, messages.HeaderOp)),
		Participant: r.cfg.Name,
		Attempt:     attempt,
		ReplyTo:     first(h, messages.HeaderReplyTo),
	}
	if cmd.Validate() == nil { // a valid reply-to, txid and op
		if err := r.reply(cmd, outcome{result: messages.Failed, reason: cause.Error()}); err != nil {
			r.log.Warn("replying to a malformed command", append(fields, zap.NamedError("reply_error", err))...)
		}
	}
	if err := msg.Term(); err != nil {
		r.log.Warn("terminating a malformed command", append(fields, zap.NamedError("term_error", err))...)
	}
}

// first returns the first value of header name, or "".
func first(h map[string][]string, name string) string {
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
