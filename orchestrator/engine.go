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
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/orchestrator/txn"
)

// IDBucket holds one key per transaction ID a caller chose, for
// Config.abortRetention, so that an ID is begun once in the whole cluster.
const IDBucket = "natstx_ids"

// openIDs declares IDBucket; its entries expire with the bucket's MaxAge.
func openIDs(ctx context.Context, js jetstream.JetStream, o StreamOptions, ttl time.Duration) (jetstream.KeyValue, error) {
	o = o.withDefaults()
	return openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      IDBucket,
		Description: "natstx transaction IDs chosen by callers, begun once",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
}

// newSender starts a new incarnation name for the commands' Nats-Msg-Id.
func (e *Engine) newSender() {
	s := fmt.Sprintf("%s-%x", e.cfg.Instance, e.now().UnixNano())
	e.sender.Store(&s)
}

// claimID records that transaction id is begun, by a create: ErrDuplicateTx
// if it was begun before (on any instance, within Config.abortRetention).
// The entry names this claim, so that a create whose answer was lost and is
// retried finds its own claim rather than a duplicate.
func (e *Engine) claimID(ctx context.Context, id string) error {
	ctx, cancel := e.withTimeout(ctx, 5*time.Second)
	defer cancel()
	claim := []byte(fmt.Sprintf("%s/%d", *e.sender.Load(), e.claims.Add(1)))
	var err error
	for try := 0; try < 3; try++ {
		if _, err = e.stores.IDs.Create(ctx, id, claim, 0); err == nil || errors.Is(err, ErrEntryExists) {
			break
		}
		if have, gerr := e.stores.IDs.Get(ctx, id); gerr == nil && string(have.Value) == string(claim) {
			return nil // applied; only its answer was lost
		}
	}
	if errors.Is(err, ErrEntryExists) {
		// Ours (an earlier try applied, its answer lost) or another begin's:
		// only the entry tells, so an unreadable one is a failure to retry,
		// not a duplicate.
		have, gerr := e.stores.IDs.Get(ctx, id)
		switch {
		case gerr != nil:
			return fmt.Errorf("natstx: transaction ID %s is claimed, and the claim cannot be read to tell whose it is: %w; try again", id, gerr)
		case string(have.Value) == string(claim):
			return nil
		}
	}
	switch {
	case errors.Is(err, ErrEntryExists):
		ch := make(chan result, 1)
		if r := e.call(id, statusReq{id: id, ch: ch}, ch); r.err == nil && r.out.State.Final() {
			return fmt.Errorf("%w: %s has already run", ErrDuplicateTx, id)
		} else if r.err == nil {
			return fmt.Errorf("%w: %s is in flight", ErrDuplicateTx, id)
		}
		return fmt.Errorf("%w: %s was begun before (on this or another instance)", ErrDuplicateTx, id)
	case err != nil:
		return fmt.Errorf("natstx: recording transaction ID %s as begun: %w", id, err)
	}
	return nil
}

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
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	// heard holds, by participant name, when this instance last had a
	// reply from it (*atomic.Int64, Unix nanoseconds): one-phase commit
	// goes only to a participant heard from lately (onePhaseHeardWithin).
	heard sync.Map
	// The ports (ports.go): JetStream and the wall clock, or simulated ones.
	stores Stores
	cmds   Commands
	drv    Driver
	// coop: a simulated engine (NewSimulated); its shards run when the
	// simulator pumps them, and its waits yield to the simulator.
	coop bool
	// sender goes into every command's Nats-Msg-Id: this incarnation (a new
	// one after each fence, whose re-sends count attempts from 1 again).
	sender atomic.Pointer[string]
	// claims numbers the IDs this engine claims (claimID).
	claims atomic.Uint64

	records *recordStore
	leases  *leases
	status  Store // nil with Config.NoStatus
	log     *zap.Logger
	tracer  trace.Tracer // nil: tracing is off
	replies string       // the subject filter of this instance's replies
	// beginLimit enforces Config.MaxBeginRate on API begins, per identity; nil: none.
	beginLimit *beginLimits
	shards     []*shard
	sub        *nats.Subscription
	apiSubs    []*nats.Subscription

	inFlight atomic.Int64
	// admission holds begins back while the coordinator is behind.
	admission *admission
	stats     Stats

	stop      chan struct{}
	stopOnce  sync.Once
	closeOnce sync.Once
	// base is the parent of every context the engine's own goroutines use;
	// Stop cancels it, so that nothing waits on NATS after Stop.
	base       context.Context
	cancelBase context.CancelFunc
	// groups are the stores that commit in groups (Config.GroupCommit),
	// whose sends Stop waits for.
	groups []*groupStore

	wg      sync.WaitGroup
	running atomic.Bool
	halted  atomic.Bool
	// leaseAt is when the lease was last written (Unix nanoseconds, engine
	// clock); fencing is set while the engine drops what it held after its
	// lease lapsed (see fence), and fenced tells the recovery loop to sweep.
	leaseAt atomic.Int64
	fencing atomic.Bool
	fenced  atomic.Bool
	// publishTrouble: an asynchronous publish failed since the last sweep.
	publishTrouble atomic.Bool
	draining       atomic.Bool

	// lastAlive is the set of live instances at the last look at the
	// leases, and lastLook when that look began; recoverDue says the last
	// recovery scan could not finish, recoverUntil scan at every look until
	// then, nextScan when to scan what was written since anyway
	// (recoverTick); sweepDue says a sweep could not finish. Only the
	// recovery loop touches them.
	lastAlive    map[string]bool
	lastLook     time.Time
	recoverDue   bool
	recoverUntil time.Time
	nextScan     time.Time
	sweepDue     bool
	// recordsScan, sagasScan and statusScan are where the scans of the
	// records, sagas and status buckets stand.
	recordsScan, sagasScan, statusScan scanCursor
	// sweepUntil: sweep at every scan until then (sweepWindow).
	sweepUntil time.Time
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
	e := newEngine(cfg)
	e.nc = nc
	e.drv = wallClock{workers: newWorkers(e.stop, &e.wg, maxIdleWorkers)}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(16384),
		// A PubAck that never comes (a stream leader lost with the write)
		// counts as a failure, so that a final status is written again.
		jetstream.WithPublishAsyncTimeout(publishAckTimeout),
		jetstream.WithPublishAsyncErrHandler(e.onPublishError))
	if err != nil {
		return nil, err
	}
	e.js = js
	cmds := newJSCommands(js, e.stop, &e.stats, e.onCommandsLost)
	cmds.log = e.log
	cmds.spawn = e.spawn
	e.cmds = cmds
	return e, nil
}

// publishAckTimeout is how long an asynchronous publish waits for its PubAck
// before it counts as failed.
const publishAckTimeout = 10 * time.Second

// Ports are what a simulated engine does its I/O and reads its time with.
type Ports struct {
	Stores   Stores
	Commands Commands
	Driver   Driver
}

// NewSimulated returns an engine that uses no NATS at all: its buckets,
// command stream, clock and tasks are p's, for the deterministic simulator
// (package orchestrator/dst). Its shards are not goroutines: queued work runs
// when the simulator calls Pump, and its blocking waits yield through
// p.Driver.Sleep(0, ...). Config.Instance must be set; Requests must carry
// their ID. Start it from a task of p.Driver.
func NewSimulated(cfg Config, p Ports) (*Engine, error) {
	if p.Driver == nil || p.Commands == nil || p.Stores.Records == nil || p.Stores.Leases == nil || p.Stores.IDs == nil {
		return nil, errors.New("natstx: NewSimulated needs a driver, a command stream and the record, lease and ID stores")
	}
	if cfg.Instance == "" {
		return nil, errors.New("natstx: NewSimulated needs Config.Instance")
	}
	cfg.NoAPI = true
	cfg.NoStatus = p.Stores.Status == nil
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := newEngine(cfg)
	e.drv, e.cmds, e.stores, e.coop = p.Driver, p.Commands, p.Stores, true
	return e, nil
}

func newEngine(cfg Config) *Engine {
	e := &Engine{cfg: cfg, log: cfg.Logger, replies: messages.ReplyFilter(cfg.Instance), stop: make(chan struct{})}
	e.base, e.cancelBase = context.WithCancel(context.Background())
	if cfg.MaxBeginRate > 0 {
		e.beginLimit = newBeginLimits(cfg.MaxBeginRate)
	}
	e.stats.InFlight = &e.inFlight
	e.admission = newAdmission(cfg.RetryBase, cfg.MaxInFlight)
	e.stats.admission = e.admission
	if cfg.TracerProvider != nil {
		e.tracer = cfg.TracerProvider.Tracer(TracerName)
	}
	for i := 0; i < cfg.Shards; i++ {
		e.shards = append(e.shards, &shard{
			e:             e,
			in:            make(chan any, 1024),
			active:        make(map[string]*entry),
			finished:      make(map[string]finishedTx),
			sagas:         make(map[string]*sagaEntry),
			finishedSagas: make(map[string]saga.Record),
		})
	}
	return e
}

// Pump runs the queued work of a simulated engine's shards until none is
// left, and returns how many items it handled. Only for NewSimulated
// engines.
func (e *Engine) Pump() int {
	n := 0
	for more := true; more; {
		more = false
		for _, s := range e.shards {
			for _, v := range s.take() {
				s.handle(v)
				n++
				more = true
			}
		}
	}
	return n
}

// DeliverReply hands the engine a reply as if it arrived on its reply
// subject. For simulated engines; it does not block.
func (e *Engine) DeliverReply(r messages.Reply) {
	if e.halted.Load() {
		return
	}
	e.shardOf(r.TxID).post(replyEvent{r})
}

// Halt makes the engine behave as a process that died now: it sends,
// writes and renews nothing more, and its tasks end. For simulated engines
// (and fault tests); a halted engine is not restarted, a new one is made.
func (e *Engine) Halt() {
	e.halted.Store(true)
	e.running.Store(false)
	e.cancelBase()
	e.closeStop()
}

func (e *Engine) closeStop() { e.closeOnce.Do(func() { close(e.stop) }) }

// now reads the engine's clock.
func (e *Engine) now() time.Time { return e.drv.Now() }

// withTimeout is context.WithTimeout on the engine's clock (Driver): in a
// simulation, store calls end by simulated time, never by the wall clock.
func (e *Engine) withTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return e.drv.WithTimeout(parent, d)
}

// spawn runs f as a background task.
func (e *Engine) spawn(f func()) { e.drv.Go(f) }

// sleep waits d, or until the engine stops; false if it stopped.
func (e *Engine) sleep(d time.Duration) bool { return e.drv.Sleep(d, e.stop) }

// Start declares the stream and buckets, subscribes to the reply subject and
// starts the shards.
func (e *Engine) Start(ctx context.Context) error {
	if !e.coop {
		if err := e.openStores(ctx); err != nil {
			return err
		}
	}
	e.status = e.stores.Status
	e.records = &recordStore{kv: e.stores.Records, instance: e.cfg.Instance, now: e.now,
		retention: e.cfg.Retention, abortTTL: e.cfg.abortRetention()}
	e.leases = &leases{kv: e.stores.Leases}
	e.newSender()
	if err := e.awaitOwnLease(ctx); err != nil {
		return err
	}
	// Run only with a lease: without one, others would take this instance
	// for dead and abort what it begins.
	for e.renewLease() != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("natstx: writing the lease of %q: %w", e.cfg.Instance, ctx.Err())
		}
		if !e.sleep(e.cfg.LeaseTTL / 10) {
			return ErrStopped
		}
	}
	if !e.coop {
		var err error
		e.sub, err = e.nc.Subscribe(e.replies, e.onReply)
		if err != nil {
			return fmt.Errorf("natstx: subscribing to %s: %w", e.replies, err)
		}
		_ = e.sub.SetPendingLimits(-1, 256<<20)
		for _, s := range e.shards {
			e.wg.Add(1)
			go s.loop()
		}
	}
	e.running.Store(true)
	if !e.cfg.NoAPI {
		if err := e.serveAPI(); err != nil {
			e.Stop()
			return err
		}
	}
	if !e.coop {
		// Once Start returns, the server has the reply and API
		// subscriptions: a request right after it finds a responder.
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := e.nc.FlushWithContext(fctx)
		cancel()
		if err != nil {
			e.Stop()
			return fmt.Errorf("natstx: registering the coordinator's subscriptions with NATS: %w", err)
		}
	}
	e.spawn(e.recoveryLoop)
	e.spawn(e.leaseLoop)
	e.log.Info("coordinator started", zap.String("instance", e.cfg.Instance), zap.String("reply_subject", e.replies), zap.Int("shards", len(e.shards)))
	return nil
}

// openStores declares the command stream and the buckets on JetStream.
func (e *Engine) openStores(ctx context.Context) error {
	if err := EnsureStreams(ctx, e.js, e.cfg.Streams); err != nil {
		return err
	}
	rs, err := openRecords(ctx, e.js, e.cfg.Streams, e.cfg.Retention)
	if err != nil {
		return err
	}
	if e.stores.Records, err = e.writesTo(ctx, rs); err != nil {
		return err
	}
	ids, err := openIDs(ctx, e.js, e.cfg.Streams, e.cfg.abortRetention())
	if err != nil {
		return err
	}
	if e.stores.IDs, err = e.writesTo(ctx, ids); err != nil {
		return err
	}
	if !e.cfg.NoStatus {
		st, err := openStatusBucket(ctx, e.js, e.cfg.Streams, e.cfg.Retention, e.cfg.MaxStatusBytes)
		if err != nil {
			return err
		}
		if e.stores.Status, err = e.writesTo(ctx, st); err != nil {
			return err
		}
	}
	ls, err := openLeases(ctx, e.js, e.cfg.Streams, e.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	e.stores.Leases = newJSStore(e.js, ls, e.stop) // rare writes, each awaited at once
	sg, err := openSagas(ctx, e.js, e.cfg.Streams, e.cfg.Retention)
	if err != nil {
		return err
	}
	e.stores.Sagas, err = e.writesTo(ctx, sg)
	return err
}

// writesTo is the Store of bucket kv: its writes committed in groups
// with Config.GroupCommit, one by one otherwise.
func (e *Engine) writesTo(ctx context.Context, kv jetstream.KeyValue) (Store, error) {
	if !e.cfg.GroupCommit {
		return newJSStore(e.js, kv, e.stop), nil
	}
	if err := allowAtomicBatches(ctx, e.js, kv.Bucket()); err != nil {
		return nil, err
	}
	g := newGroupStore(e.base, e.nc, e.js, kv, e.stop, &e.stats)
	e.groups = append(e.groups, g)
	return g, nil
}

// awaitOwnLease waits until no live lease holds this instance's name: after
// a crash the old lease runs out within LeaseTTL; a lease that is still
// renewed means the name is taken.
func (e *Engine) awaitOwnLease(ctx context.Context) error {
	deadline := e.now().Add(e.cfg.LeaseTTL + e.cfg.LeaseTTL/2)
	for {
		alive, err := e.leases.alive(ctx, e.cfg.Instance)
		if err != nil {
			return fmt.Errorf("natstx: reading the lease of %q: %w", e.cfg.Instance, err)
		}
		if !alive {
			return nil
		}
		if e.now().After(deadline) {
			return fmt.Errorf("natstx: coordinator instance %q is already running on this NATS (its lease is renewed); give each instance its own name", e.cfg.Instance)
		}
		e.log.Info("waiting for the previous lease of this instance to expire", zap.String("instance", e.cfg.Instance))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !e.sleep(e.cfg.LeaseTTL / 10) {
			return ErrStopped
		}
	}
}

// Stop stops the engine: no new transactions, timers stopped, waiters told
// ErrStopped. Transactions still running stay as they are in the stream and
// the record bucket. Safe to call more than once.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		e.running.Store(false)
		for _, sub := range append([]*nats.Subscription{e.sub}, e.apiSubs...) {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
		}
		e.cancelBase()
		e.closeStop()
		e.wg.Wait()
		for _, g := range e.groups {
			g.wait()
		}
		if e.leases != nil && !e.halted.Load() {
			// Hand over at once: others take over what is still committing.
			ctx, cancel := e.withTimeout(context.Background(), 2*time.Second)
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
	for e.inFlight.Load() > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !e.sleep(20 * time.Millisecond) {
			return ErrStopped
		}
	}
	return nil
}

// OldestInFlight is how long the oldest transaction or saga this instance
// runs has been running; 0 when none runs (or the engine does not). It asks
// every shard, each within a second (a shard that does not answer in time
// is left out): the stall alarm natstx_oldest_in_flight_seconds reads it.
func (e *Engine) OldestInFlight() time.Duration {
	if e.coop || !e.running.Load() {
		return 0
	}
	var oldest time.Time
	for _, s := range e.shards {
		ch := make(chan time.Time, 1)
		if !s.post(oldestReq{ch: ch}) {
			return 0
		}
		t := time.NewTimer(time.Second)
		select {
		case at := <-ch:
			if !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
				oldest = at
			}
		case <-t.C:
		case <-e.stop:
			t.Stop()
			return 0
		}
		t.Stop()
	}
	if oldest.IsZero() {
		return 0
	}
	return e.now().Sub(oldest)
}

// Ready reports whether the engine takes transactions now: started and not
// stopped, not draining, connected to NATS, and its lease renewed within
// Config.LeaseTTL. Start declared the stream and buckets, but Ready does not
// look at them again; ReadyCheck, which natstx server's /readyz uses, adds
// that look.
func (e *Engine) Ready() error {
	switch {
	case !e.running.Load() || e.halted.Load():
		return errors.New("natstx: the coordinator is not running")
	case e.draining.Load():
		return errors.New("natstx: the coordinator is draining before it stops")
	case e.nc != nil && !e.nc.IsConnected():
		return errors.New("natstx: the coordinator is not connected to NATS")
	}
	if at := e.leaseAt.Load(); at == 0 || e.now().Sub(time.Unix(0, at)) > e.cfg.LeaseTTL {
		return errors.New("natstx: the coordinator's lease has not been renewed within its TTL")
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
func (e *Engine) Abort(id, reason string) (bool, error) { return e.AbortAs(id, "", reason) }

// AbortAs is Abort asked by an operator, who, whose action and reason the
// transaction's history records.
func (e *Engine) AbortAs(id, who, reason string) (bool, error) {
	ch := make(chan result, 1)
	r := e.call(id, abortReq{id: id, reason: reason, who: who, ch: ch}, ch)
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
	return statusOf(r.out, e.cfg.Instance, r.started, r.decided, e.now()), r.err
}

// call hands req to id's shard and waits for its answer on ch, or for the
// engine to stop.
func (e *Engine) call(id string, req any, ch chan result) result {
	return callShard(e, id, req, ch, result{out: Outcome{ID: id}, err: ErrStopped})
}

// callShard hands req to id's shard and waits for its answer on ch; if the
// engine stops first, it returns stopped. A simulated engine yields to the
// simulator, which runs the shards.
func callShard[T any](e *Engine, id string, req any, ch chan T, stopped T) T {
	if !e.shardOf(id).post(req) {
		return stopped
	}
	for e.coop {
		select {
		case r := <-ch:
			return r
		default:
		}
		if !e.sleep(0) {
			return stopped
		}
	}
	select {
	case r := <-ch:
		return r
	case <-e.stop:
		return stopped
	}
}

func (e *Engine) await(ctx context.Context, id string, w chan result, abortOnCancel bool) (Outcome, error) {
	for e.coop && ctx.Err() == nil {
		select {
		case r := <-w:
			return r.out, r.err
		default:
		}
		if !e.sleep(0) {
			return Outcome{ID: id}, ErrStopped
		}
	}
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
	callerID := req.ID != ""
	if !callerID {
		req.ID = NewID()
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = e.cfg.PrepareTimeout
	}
	now := e.now()
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
	spec := txn.Spec{
		ID: req.ID, Participants: req.Participants, PrepareTimeout: timeout,
		RetryBase: e.cfg.RetryBase, RetryMax: e.cfg.RetryMax, AbortSends: e.cfg.AbortSends,
		OnePhase: len(req.Participants) == 1 && !e.cfg.NoOnePhase && e.heardLately(req.Participants[0].Name, now),
	}
	tx, err := txn.New(spec)
	if err != nil {
		return begun{}, err
	}
	deadline := now.Add(timeout)
	if err := e.admit(ctx, req.ID, deadline); err != nil {
		return begun{}, err
	}
	if waited := e.now(); waited.After(now) {
		// It waited for room: the wait came out of its timeout.
		now, timeout = waited, deadline.Sub(waited)
		if e.draining.Load() {
			e.admission.leave()
			return begun{}, ErrDraining
		}
		spec.PrepareTimeout = timeout
		if tx, err = txn.New(spec); err != nil {
			e.admission.leave()
			e.stats.Rejected.Add(1)
			return begun{}, fmt.Errorf("%w: %s found room to start too late (%v)", ErrOverloaded, req.ID, err)
		}
	}
	if n := e.inFlight.Add(1); n > int64(e.cfg.MaxInFlight) {
		e.inFlight.Add(-1)
		e.admission.leave()
		e.stats.Rejected.Add(1)
		return begun{}, fmt.Errorf("%w: the limit is %d", ErrOverloaded, e.cfg.MaxInFlight)
	}
	if callerID {
		// An ID the caller chose may be begun again, on any instance: claim it
		// in the whole cluster first. IDs the engine makes are unique.
		if err := e.claimID(ctx, req.ID); err != nil {
			e.admission.leave()
			e.inFlight.Add(-1)
			return begun{}, err
		}
	}
	b := begun{id: req.ID}
	r := beginReq{en: &entry{tx: tx, deadline: deadline, started: now, abortCause: -1, starting: true}, ch: make(chan result, 1)}
	names := make([]string, len(req.Participants))
	for i, p := range req.Participants {
		names[i] = p.Name
	}
	e.noteBegun(&r.en.hist, names)
	r.en.trace = e.startTrace(ctx, "natstx.transaction", req.ID, messages.Protocol2PC, false, attribute.StringSlice("natstx.participants", names))
	r.en.trace.enterPhase(firstPhase(spec))
	if wait {
		b.waiter = make(chan result, 1)
		r.en.waiters = append(r.en.waiters, b.waiter)
	}
	if res := e.call(req.ID, r, r.ch); res.err != nil {
		if errors.Is(res.err, ErrStopped) {
			e.inFlight.Add(-1) // (its room is not handed on: the engine stops)
		}
		r.en.trace.end("not begun", res.err.Error())
		return begun{}, res.err
	}
	return b, nil
}

// onCommandsLost counts and logs commands that waited for a batch whose
// publish failed at once; their transactions' retry timers send them again.
func (e *Engine) onCommandsLost(cmds []messages.Command, err error) {
	e.stats.PublishErrors.Add(int64(len(cmds)))
	e.log.Warn("publishing a batch of commands failed; the retry timers re-send them", zap.String("participant", cmds[0].Participant),
		zap.Int("commands", len(cmds)), zap.String("first_txid", cmds[0].TxID), zap.Error(err))
}

// onReply decodes a reply, or each reply of a batch, and routes it to its
// transaction's shard.
func (e *Engine) onReply(m *nats.Msg) {
	if e.halted.Load() {
		return
	}
	if !messages.IsBatch(m.Header) {
		e.routeReply(m.Subject, m.Header, m.Data)
		return
	}
	items, err := messages.DecodeBatch(m.Header, m.Data)
	if err != nil {
		e.rejectReply(m.Subject, nil, err)
		return
	}
	for _, it := range items {
		e.routeReply(m.Subject, it.Header, it.Body)
	}
}

// routeReply decodes one reply that came on subject and routes it to its
// transaction's shard, or counts and logs it as malformed.
func (e *Engine) routeReply(subject string, h map[string][]string, body []byte) {
	r, err := messages.DecodeReply(h, body)
	if err == nil {
		err = messages.CheckReplySubject(subject, r)
	}
	if err != nil {
		e.rejectReply(subject, h, err)
		return
	}
	e.shardOf(r.TxID).post(replyEvent{r})
}

// rejectReply counts and logs a reply that could not be read, per
// participant its subject names, and tells the transaction its headers name
// (if any), so that a missing vote's timeout says the participant answered
// but was not understood.
func (e *Engine) rejectReply(subject string, h map[string][]string, err error) {
	e.stats.MalformedReplies.Add(1)
	_, participant, ok := messages.ParseReplySubject(subject)
	if !ok {
		e.log.Warn("malformed reply dropped", zap.String("subject", subject), zap.Error(err))
		return
	}
	e.stats.rejected(participant)
	txid := messages.RejectedTxID(h)
	e.log.Warn("malformed reply dropped", zap.String("subject", subject), zap.String("participant", participant), zap.String("txid", txid), zap.Error(err))
	if txid != "" {
		e.shardOf(txid).post(rejectedEvent{id: txid, participant: participant, err: err})
	}
}

func (e *Engine) shardOf(id string) *shard {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return e.shards[h.Sum32()%uint32(len(e.shards))]
}

// publish sends one command into the stream without waiting for its PubAck;
// a command that is not stored is re-sent by the transaction's retry timer.
func (e *Engine) publish(id string, deadline time.Time, s txn.Send, traceparent, tracestate string) {
	if e.halted.Load() {
		return
	}
	cmd := messages.Command{
		TxID: id, Op: s.Op, Participant: s.Participant, Attempt: s.Attempt,
		ReplyTo: messages.ReplySubject(e.cfg.Instance, s.Participant), Payload: s.Payload,
		TraceParent: traceparent, TraceState: tracestate,
	}
	if s.Op.Votes() {
		cmd.Deadline = deadline
	}
	if s.Attempt > 1 {
		e.stats.Resends.Add(1)
	}
	cmd.Sender = *e.sender.Load()
	if err := e.cmds.Publish(cmd); err != nil {
		e.stats.PublishErrors.Add(1)
		e.log.Warn("publishing a command failed; the retry timer re-sends it", zap.String("txid", id),
			zap.String("participant", s.Participant), zap.String("op", string(s.Op)), zap.Error(err))
	}
}

// onePhaseHeardWithin is how lately a participant must have answered this
// instance for a transaction with it alone to be sent commit-one-phase.
// One-phase commit cannot abort at the deadline (only the participant
// decides), so a participant that is not running, or a name with a typo,
// would leave such a transaction waiting for good; prepare to one not heard
// from lately aborts at the timeout instead, saying that no vote came.
const onePhaseHeardWithin = 30 * time.Second

// noteHeard records that participant answered at now.
func (e *Engine) noteHeard(participant string, now time.Time) {
	v, ok := e.heard.Load(participant)
	if !ok {
		v, _ = e.heard.LoadOrStore(participant, new(atomic.Int64))
	}
	v.(*atomic.Int64).Store(now.UnixNano())
}

// heardLately reports whether participant answered within
// onePhaseHeardWithin before now.
func (e *Engine) heardLately(participant string, now time.Time) bool {
	v, ok := e.heard.Load(participant)
	return ok && now.Sub(time.Unix(0, v.(*atomic.Int64).Load())) < onePhaseHeardWithin
}
