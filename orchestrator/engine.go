package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/txn"
)

// Participant is one participant of a transaction and the payload it
// receives with prepare.
type Participant = txn.Participant

// Outcome is a snapshot of a transaction: state, reason and each
// participant's result.
type Outcome = txn.Outcome

// State is a transaction's state.
type State = txn.State

// The states of a transaction, as in package txn.
const (
	Preparing  = txn.Preparing
	Committing = txn.Committing
	Aborting   = txn.Aborting
	Committed  = txn.Committed
	Aborted    = txn.Aborted
)

// Request is a transaction to run.
type Request struct {
	// ID is the transaction ID; empty means the engine assigns one (NewID).
	ID string
	// Participants receive prepare in parallel; every one must vote commit.
	Participants []Participant
	// Timeout overrides Config.PrepareTimeout for this transaction. The
	// caller's context deadline, when sooner, wins.
	Timeout time.Duration
}

// NewID returns a new unique transaction ID.
func NewID() string { return nuid.Next() }

// Engine drives transactions over JetStream. Create it with New, then Start
// it; it is safe for concurrent use.
type Engine struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	records *recordStore
	leases  *leases
	status  jetstream.KeyValue
	log     *zap.Logger
	reply   string
	shards  []*shard
	sub     *nats.Subscription
	apiSubs []*nats.Subscription

	inFlight atomic.Int64
	stats    Stats

	stop     chan struct{}
	stopOnce sync.Once
	// base is the parent of every context the engine's own goroutines use;
	// Stop cancels it, so that nothing waits on NATS after Stop.
	base       context.Context
	cancelBase context.CancelFunc
	wg         sync.WaitGroup
	running    atomic.Bool
	halted     atomic.Bool
	draining   atomic.Bool

	// lastAlive is the set of live instances at the last orphan sweep; only
	// the recovery loop touches it.
	lastAlive map[string]bool
}

// New returns an engine that will use nc. Start must be called before use.
func New(nc *nats.Conn, cfg Config) (*Engine, error) {
	if nc == nil {
		return nil, errors.New("natstx: New needs a NATS connection")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if limit := int(nc.MaxPayload()) - 4096; limit > 0 && cfg.MaxPayload > limit {
		return nil, fmt.Errorf("natstx: Config.MaxPayload %d is over what the NATS server accepts (%d bytes, less 4 KiB for headers)", cfg.MaxPayload, nc.MaxPayload())
	}
	e := &Engine{cfg: cfg, nc: nc, log: cfg.Logger, reply: messages.ReplySubject(cfg.Instance), stop: make(chan struct{})}
	e.base, e.cancelBase = context.WithCancel(context.Background())
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(16384),
		jetstream.WithPublishAsyncErrHandler(e.onPublishError))
	if err != nil {
		return nil, err
	}
	e.js = js
	e.stats.InFlight = &e.inFlight
	for i := 0; i < cfg.Shards; i++ {
		e.shards = append(e.shards, &shard{
			e:        e,
			in:       make(chan any, 1024),
			active:   make(map[string]*entry),
			finished: make(map[string]finishedTx),
		})
	}
	return e, nil
}

// Start declares the stream and bucket, subscribes to the reply subject and
// starts the shards.
func (e *Engine) Start(ctx context.Context) error {
	if err := EnsureStreams(ctx, e.js, e.cfg.Streams); err != nil {
		return err
	}
	rs, err := openRecords(ctx, e.js, e.cfg.Streams, e.cfg.Instance, e.cfg.Retention)
	if err != nil {
		return err
	}
	e.records = rs
	if !e.cfg.NoStatus {
		if e.status, err = openStatusBucket(ctx, e.js, e.cfg.Streams, e.cfg.Retention); err != nil {
			return err
		}
	}
	if e.leases, err = openLeases(ctx, e.js, e.cfg.Streams, e.cfg.LeaseTTL); err != nil {
		return err
	}
	if err := e.awaitOwnLease(ctx); err != nil {
		return err
	}
	e.sub, err = e.nc.Subscribe(e.reply, e.onReply)
	if err != nil {
		return fmt.Errorf("natstx: subscribing to %s: %w", e.reply, err)
	}
	_ = e.sub.SetPendingLimits(-1, 256<<20)
	for _, s := range e.shards {
		e.wg.Add(1)
		go s.loop()
	}
	e.running.Store(true)
	if !e.cfg.NoAPI {
		if err := e.serveAPI(); err != nil {
			e.Stop()
			return err
		}
	}
	e.renewLease()
	e.wg.Add(1)
	go e.recoveryLoop()
	e.log.Info("coordinator started", zap.String("instance", e.cfg.Instance), zap.String("reply_subject", e.reply), zap.Int("shards", len(e.shards)))
	return nil
}

// awaitOwnLease waits until no live lease holds this instance's name: after
// a crash the old lease runs out within LeaseTTL; a lease that is still
// renewed means the name is taken.
func (e *Engine) awaitOwnLease(ctx context.Context) error {
	deadline := time.Now().Add(e.cfg.LeaseTTL + e.cfg.LeaseTTL/2)
	for {
		alive, err := e.leases.alive(ctx, e.cfg.Instance)
		if err != nil {
			return fmt.Errorf("natstx: reading the lease of %q: %w", e.cfg.Instance, err)
		}
		if !alive {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natstx: coordinator instance %q is already running on this NATS (its lease is renewed); give each instance its own name", e.cfg.Instance)
		}
		e.log.Info("waiting for the previous lease of this instance to expire", zap.String("instance", e.cfg.Instance))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(e.cfg.LeaseTTL / 10):
		}
	}
}

// Stop stops the engine: no new transactions, timers stopped, waiters told
// ErrStopped. Transactions still running stay as they are in the stream and
// the record bucket. Safe to call more than once.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		e.running.Store(false)
		for _, sub := range append(e.apiSubs, e.sub) {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
		}
		e.cancelBase()
		close(e.stop)
		e.wg.Wait()
		if e.leases != nil && !e.halted.Load() {
			// Hand over at once: others take over what is still committing.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = e.leases.kv.Delete(ctx, e.cfg.Instance)
			cancel()
		}
		e.log.Info("coordinator stopped", zap.String("instance", e.cfg.Instance))
	})
}

// Drain stops taking new transactions (Begin returns ErrDraining and this
// instance leaves the begin API's queue group; it still answers status,
// abort and in-doubt questions) and waits until none is in flight, or ctx
// ends. Call Stop after it.
func (e *Engine) Drain(ctx context.Context) error {
	if e.draining.Swap(true) {
		return nil
	}
	if len(e.apiSubs) > 0 {
		_ = e.apiSubs[0].Unsubscribe() // the begin subscription
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for e.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// Instance is the engine's instance name.
func (e *Engine) Instance() string { return e.cfg.Instance }

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() StatsSnapshot { return e.stats.snapshot() }

// Execute runs a transaction to its outcome: Begin, then Wait. If ctx ends
// while the transaction is still preparing, it is aborted.
func (e *Engine) Execute(ctx context.Context, req Request) (Outcome, error) {
	b, err := e.begin(ctx, req, true)
	if err != nil {
		return Outcome{ID: req.ID}, err
	}
	return e.await(ctx, b.id, b.waiter, true)
}

// Begin starts a transaction and returns its ID at once; Wait or Status tell
// how it ends.
func (e *Engine) Begin(ctx context.Context, req Request) (string, error) {
	b, err := e.begin(ctx, req, false)
	if err != nil {
		return req.ID, err
	}
	return b.id, nil
}

// Wait returns the outcome of transaction id once it is known: when it has
// committed on every participant, or as soon as it decided to abort. If ctx
// ends first, Wait returns the current snapshot and ctx's error; a
// transaction in Committing will still commit.
func (e *Engine) Wait(ctx context.Context, id string) (Outcome, error) {
	w := make(chan result, 1)
	if !e.shardOf(id).post(waitReq{id: id, ch: w}) {
		return Outcome{ID: id}, ErrStopped
	}
	return e.await(ctx, id, w, false)
}

// Abort asks to abort transaction id; it has an effect only while the
// transaction is preparing, and reports whether the transaction is now
// aborting or aborted (by this call or an earlier decision).
func (e *Engine) Abort(id, reason string) (bool, error) {
	ch := make(chan result, 1)
	r := e.call(id, abortReq{id: id, reason: reason, ch: ch}, ch)
	if r.err != nil {
		return false, r.err
	}
	return r.out.State == Aborting || r.out.State == Aborted, nil
}

// Status returns a snapshot of transaction id, running or finished within the
// retention.
func (e *Engine) Status(id string) (Outcome, error) {
	ch := make(chan result, 1)
	r := e.call(id, statusReq{id: id, ch: ch}, ch)
	return r.out, r.err
}

// statusDoc returns the status document of transaction id, running or
// remembered.
func (e *Engine) statusDoc(id string) (messages.TxStatus, error) {
	ch := make(chan result, 1)
	r := e.call(id, statusReq{id: id, ch: ch}, ch)
	return statusOf(r.out, e.cfg.Instance, r.started, r.decided, time.Now()), r.err
}

// call hands req to id's shard and waits for its answer on ch, or for the
// engine to stop.
func (e *Engine) call(id string, req any, ch chan result) result {
	if !e.shardOf(id).post(req) {
		return result{out: Outcome{ID: id}, err: ErrStopped}
	}
	select {
	case r := <-ch:
		return r
	case <-e.stop:
		return result{out: Outcome{ID: id}, err: ErrStopped}
	}
}

func (e *Engine) await(ctx context.Context, id string, w chan result, abortOnCancel bool) (Outcome, error) {
	select {
	case r := <-w:
		return r.out, r.err
	case <-e.stop:
		return Outcome{ID: id}, ErrStopped
	case <-ctx.Done():
	}
	if abortOnCancel {
		_, _ = e.Abort(id, "client gave up: "+ctx.Err().Error())
		select { // an abort decision is announced at once
		case r := <-w:
			return r.out, r.err
		default:
		}
	}
	out, err := e.Status(id)
	if err == nil {
		err = ctx.Err()
	}
	return out, err
}

type begun struct {
	id     string
	waiter chan result
}

func (e *Engine) begin(ctx context.Context, req Request, wait bool) (begun, error) {
	if !e.running.Load() {
		return begun{}, ErrStopped
	}
	if e.draining.Load() {
		return begun{}, ErrDraining
	}
	if req.ID == "" {
		req.ID = NewID()
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = e.cfg.PrepareTimeout
	}
	now := time.Now()
	if dl, ok := ctx.Deadline(); ok {
		left := dl.Sub(now)
		if left <= 0 || ctx.Err() != nil {
			return begun{}, fmt.Errorf("%w: %s", ErrDeadlineExpired, req.ID)
		}
		timeout = min(timeout, left)
	}
	for _, p := range req.Participants {
		if len(p.Payload) > e.cfg.MaxPayload {
			return begun{}, fmt.Errorf("%w: %d bytes for participant %s, the limit is %d", ErrPayloadTooLarge, len(p.Payload), p.Name, e.cfg.MaxPayload)
		}
	}
	tx, err := txn.New(txn.Spec{
		ID: req.ID, Participants: req.Participants, PrepareTimeout: timeout,
		RetryBase: e.cfg.RetryBase, RetryMax: e.cfg.RetryMax, AbortSends: e.cfg.AbortSends,
	})
	if err != nil {
		return begun{}, err
	}
	if n := e.inFlight.Add(1); n > int64(e.cfg.MaxInFlight) {
		e.inFlight.Add(-1)
		e.stats.Rejected.Add(1)
		return begun{}, fmt.Errorf("%w: the limit is %d", ErrOverloaded, e.cfg.MaxInFlight)
	}
	b := begun{id: req.ID}
	r := beginReq{en: &entry{tx: tx, deadline: now.Add(timeout), started: now}, ch: make(chan result, 1)}
	if wait {
		b.waiter = make(chan result, 1)
		r.en.waiters = append(r.en.waiters, b.waiter)
	}
	if res := e.call(req.ID, r, r.ch); res.err != nil {
		if errors.Is(res.err, ErrStopped) {
			e.inFlight.Add(-1)
		}
		return begun{}, res.err
	}
	return b, nil
}

// onReply decodes a reply and routes it to its transaction's shard.
func (e *Engine) onReply(m *nats.Msg) {
	if e.halted.Load() {
		return
	}
	r, err := messages.DecodeReply(m.Header, m.Data)
	if err != nil {
		e.stats.MalformedReplies.Add(1)
		e.log.Warn("malformed reply dropped", zap.String("subject", m.Subject), zap.Error(err))
		return
	}
	e.shardOf(r.TxID).post(replyEvent{r})
}

func (e *Engine) shardOf(id string) *shard {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return e.shards[h.Sum32()%uint32(len(e.shards))]
}

// publish sends one command into the stream without waiting for its PubAck;
// a command that is not stored is re-sent by the transaction's retry timer.
func (e *Engine) publish(id string, deadline time.Time, s txn.Send) {
	if e.halted.Load() {
		return
	}
	cmd := messages.Command{
		TxID: id, Op: s.Op, Participant: s.Participant, Attempt: s.Attempt,
		ReplyTo: e.reply, Payload: s.Payload,
	}
	if s.Op == messages.OpPrepare {
		cmd.Deadline = deadline
	}
	if s.Attempt > 1 {
		e.stats.Resends.Add(1)
	}
	msg := &nats.Msg{Subject: cmd.Subject(), Header: nats.Header(cmd.Header()), Data: cmd.Payload}
	if _, err := e.js.PublishMsgAsync(msg); err != nil {
		e.stats.PublishErrors.Add(1)
		e.log.Warn("publishing a command failed; the retry timer re-sends it", zap.String("txid", id),
			zap.String("participant", s.Participant), zap.String("op", string(s.Op)), zap.Error(err))
	}
}
