package orchestrator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// The production drivers of the ports: JetStream key-value buckets, the
// command stream, the wall clock and goroutines.

// jsStore is a Store over a JetStream key-value bucket.
type jsStore struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	// stop ends the waits of PutAsync when the engine stops.
	stop <-chan struct{}
	// held is a listing that ran out of time, kept open so that the next
	// listing, which goes on from where it stopped, reads on instead of
	// setting up a new watch: on a bucket of millions setting one up takes
	// about half a second, most of what a look may spend listing, and a
	// scan that started over at every look never caught up with the writes.
	heldMu sync.Mutex
	held   *heldScan
}

// heldScan is a listing's pull consumer on the bucket's stream, and how far
// it has read.
type heldScan struct {
	js       jetstream.JetStream
	stream   string
	consumer string
	it       jetstream.MessagesContext
	// pending is how many entries the consumer had to deliver when it was
	// created, received how many it has delivered, and delivered the
	// consumer sequence of the last (each must follow the one before: a
	// gap is an entry lost on the way, and the listing fails).
	pending, received, delivered uint64
	// stalls counts the listings in a row that ran out of time through h
	// without an entry (see maxScanStalls).
	stalls int
	// mu guards next and idle: a listing holds h while the engine's stop
	// may close it.
	mu   sync.Mutex
	next uint64
	idle *time.Timer
	done chan struct{}
	once sync.Once
	// ready is closed once the consumer is created (it, pending) or its
	// creation failed (err); cancel ends the creation.
	ready  chan struct{}
	err    error
	cancel context.CancelFunc
}

// heldScanIdle is how long a held listing waits to be read on before it is
// closed.
const heldScanIdle = time.Minute

// maxScanStalls is how many listings in a row may run out of time reading
// through a consumer that delivers nothing before it is given up and the
// next listing creates another. A consumer whose server died with it (it
// has one replica, on the node that led the stream when it was made) is
// not deleted, it falls silent: held, every later listing would wait on it
// until its end (seen in TestClusterNodeLoss: every look's listing of the
// status bucket failed on one instance for the rest of the run).
const maxScanStalls = 2

// scanBatch is how many entries a listing's consumer asks for at a time,
// and so all that a listing held between two looks buffers: a push watch,
// which nats.go's key-value watch is, would buffer everything written while
// nobody read, hundreds of megabytes on a busy bucket of millions. (No
// byte limit besides: a pull request with one gets a status message when
// its count is reached first, which a buffer full of entries drops as a
// slow consumer.)
const scanBatch = 256

func (h *heldScan) close() {
	h.once.Do(func() {
		h.mu.Lock()
		h.idle.Stop()
		h.mu.Unlock()
		close(h.done)
		h.cancel()
		<-h.ready // at once: the creation's context has ended
		if h.it != nil {
			h.it.Stop()
		}
		// The consumer would go once inactive; deleting it frees the
		// server's state at once.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.js.DeleteConsumer(ctx, h.stream, h.consumer)
	})
}

func newJSStore(js jetstream.JetStream, kv jetstream.KeyValue, stop <-chan struct{}) *jsStore {
	return &jsStore{js: js, kv: kv, bucket: kv.Bucket(), stop: stop}
}

func (s *jsStore) subject(key string) string { return "$KV." + s.bucket + "." + key }

func (s *jsStore) Get(ctx context.Context, key string) (StoreEntry, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return StoreEntry{}, ErrNoEntry
	}
	if err != nil {
		return StoreEntry{}, err
	}
	return StoreEntry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}, nil
}

func (s *jsStore) Create(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	var opts []jetstream.KVCreateOpt
	if ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	rev, err := s.kv.Create(ctx, key, value, opts...)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s in %s", ErrEntryExists, key, s.bucket)
	}
	return rev, err
}

func (s *jsStore) Update(ctx context.Context, key string, value []byte, revision uint64, ttl time.Duration) (uint64, error) {
	var rev uint64
	var err error
	if ttl <= 0 {
		rev, err = s.kv.Update(ctx, key, value, revision)
	} else {
		// The key-value API has no update with a TTL: the same publish, its
		// check and its TTL in one message.
		var ack *jetstream.PubAck
		if ack, err = s.js.Publish(ctx, s.subject(key), value,
			jetstream.WithExpectLastSequencePerSubject(revision), jetstream.WithMsgTTL(ttl)); err == nil {
			rev = ack.Sequence
		}
	}
	if revisionRefused(err) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%w: %s in %s", ErrRevisionChanged, key, s.bucket)
	}
	return rev, err
}

// revisionRefused reports whether err is the server refusing a write whose
// expected revision is not the key's: code 10071, or 10164 from a
// replicated stream while another write of the key is in flight.
func revisionRefused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func (s *jsStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	if ttl <= 0 {
		return s.kv.Put(ctx, key, value)
	}
	ack, err := s.js.Publish(ctx, s.subject(key), value, jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func (s *jsStore) PutAsync(key string, value []byte, onErr func(error)) {
	paf, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.subject(key), Data: value})
	if err != nil {
		if onErr != nil {
			onErr(err)
		}
		return
	}
	if onErr == nil {
		return
	}
	// The engine's JetStream context has an async publish timeout, so one
	// of the two channels always fires.
	go func() {
		select {
		case <-paf.Ok():
		case err := <-paf.Err():
			onErr(err)
		case <-s.stop:
		}
	}()
}

func (s *jsStore) Delete(ctx context.Context, key string) error {
	return s.kv.Delete(ctx, key)
}

func (s *jsStore) Entries(ctx context.Context, after uint64, keep func(StoreEntry) bool) ([]StoreEntry, uint64, error) {
	h, err := s.scanFrom(ctx, after)
	if err != nil {
		return nil, after, err
	}
	// A key can come twice (written again while the listing ran): its last
	// write decides whether it is kept.
	kept := map[string]StoreEntry{}
	prefix := s.subject("")
	from := h.received
	for h.received < h.pending {
		m, err := h.it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				if h.received > from {
					h.stalls = 0
				} else if h.stalls++; h.stalls >= maxScanStalls {
					h.close()
					return byRevision(kept), after, fmt.Errorf("listing %s from revision %d: its consumer delivered nothing in %d listings in a row; the next listing starts another: %w", s.bucket, after, h.stalls, ctx.Err())
				}
				s.hold(h, after)
				return byRevision(kept), after, ctx.Err()
			}
			h.close()
			return byRevision(kept), after, fmt.Errorf("listing %s from revision %d: %w", s.bucket, after, err)
		}
		md, err := m.Metadata()
		if err != nil {
			h.close()
			return byRevision(kept), after, fmt.Errorf("listing %s: an entry without metadata: %w", s.bucket, err)
		}
		if md.Sequence.Consumer != h.delivered+1 {
			h.close()
			return byRevision(kept), after, fmt.Errorf("listing %s missed entries (delivery %d came after %d); the next listing goes on from revision %d", s.bucket, md.Sequence.Consumer, h.delivered, after)
		}
		h.delivered, h.received = md.Sequence.Consumer, h.received+1
		if md.NumPending == 0 {
			h.received = h.pending // caught up (some entries expired on the way)
		}
		after = max(after, md.Sequence.Stream)
		key := strings.TrimPrefix(m.Subject(), prefix)
		if removed(m.Headers()) {
			delete(kept, key)
			continue
		}
		en := StoreEntry{Key: key, Value: m.Data(), Revision: md.Sequence.Stream}
		if keep != nil && !keep(en) {
			delete(kept, en.Key)
			continue
		}
		kept[en.Key] = en
	}
	h.close()
	return byRevision(kept), after, nil
}

// removed reports whether a bucket message marks its key deleted or purged
// (by a client, or by the server when the key's TTL ran out), as nats.go's
// key-value reads tell.
func removed(h nats.Header) bool {
	return h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != ""
}

// scanFrom returns the held listing if it stopped at after, else a new
// consumer of every entry above after (after 0: every entry). A held
// listing that does not fit is closed.
func (s *jsStore) scanFrom(ctx context.Context, after uint64) (*heldScan, error) {
	s.heldMu.Lock()
	h := s.held
	s.held = nil
	s.heldMu.Unlock()
	if h != nil && !h.resumesAt(after) {
		h.close()
		h = nil
	}
	if h == nil {
		h = s.startScan(after)
	}
	select {
	case <-h.ready:
		if h.err != nil {
			h.close()
			return nil, h.err
		}
		return h, nil
	case <-ctx.Done():
		// Creating the consumer takes long on a stream of millions (more
		// than a listing's slice, at 6.5 million records in a long run):
		// it goes on, and the next listing from here picks it up.
		s.hold(h, after)
		return nil, ctx.Err()
	}
}

// resumesAt reports whether h, held, goes on from revision after; it stops
// h's idle timer.
func (h *heldScan) resumesAt(after uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.idle.Stop() && h.next == after
}

// scanSetupTimeout bounds the creation of a listing's consumer, which goes
// on beyond the listing that asked for it (see scanFrom).
const scanSetupTimeout = 30 * time.Second

// startScan starts creating a consumer of every entry above after (after
// 0: every entry); h.ready is closed once it is created or failed.
func (s *jsStore) startScan(after uint64) *heldScan {
	// The buckets keep one message per key (their History is 1), so every
	// message is a key's latest: a deleted key's latest is its marker.
	cfg := jetstream.ConsumerConfig{
		Name:              "natstx_scan_" + nuid.Next(),
		Description:       "a natstx recovery listing of " + s.bucket,
		FilterSubject:     s.subject(">"),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 2 * heldScanIdle,
		MemoryStorage:     true,
		Replicas:          1,
	}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	ctx, cancel := context.WithTimeout(context.Background(), scanSetupTimeout)
	h := &heldScan{js: s.js, stream: "KV_" + s.bucket, consumer: cfg.Name, idle: time.NewTimer(time.Hour),
		done: make(chan struct{}), ready: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(h.ready)
		cons, err := s.js.CreateConsumer(ctx, h.stream, cfg)
		if err != nil {
			h.err = err
			return
		}
		h.pending = cons.CachedInfo().NumPending
		h.it, h.err = cons.Messages(jetstream.PullMaxMessages(scanBatch))
	}()
	go func() {
		select {
		case <-s.stop: // the engine stopped: nobody reads on
			s.release(h)
			h.close()
		case <-h.done:
		}
	}()
	return h
}

// hold keeps h, which delivered up to revision next, for the next listing;
// it is closed if none comes within heldScanIdle, or when the engine
// stops (the goroutine scanFrom started).
func (s *jsStore) hold(h *heldScan, next uint64) {
	h.mu.Lock()
	h.next = next
	h.idle = time.AfterFunc(heldScanIdle, func() { s.release(h) })
	h.mu.Unlock()
	s.heldMu.Lock()
	old := s.held
	s.held = h
	s.heldMu.Unlock()
	if old != nil {
		old.close()
	}
}

// release closes h if it is still the held listing.
func (s *jsStore) release(h *heldScan) {
	s.heldMu.Lock()
	mine := s.held == h
	if mine {
		s.held = nil
	}
	s.heldMu.Unlock()
	if mine {
		h.close()
	}
}

// byRevision returns the entries in revision order.
func byRevision(kept map[string]StoreEntry) []StoreEntry {
	out := slices.Collect(maps.Values(kept))
	slices.SortFunc(out, func(a, b StoreEntry) int { return cmp.Compare(a.Revision, b.Revision) })
	return out
}

// watchAll starts a watch of every key of kv, which ends with ctx or when
// stop is called. nats.go unsubscribes a watch when its context ends; when
// that happens while the watch is being set up, before it sets its closed
// handler, the updates channel is never closed, and stopWatch's drain would
// wait for ever (a goroutine left behind, which the orchestrator's tests
// caught). So when ctx has ended by the time the watch is set up, stop
// drains only until the updates go quiet.
func watchAll(ctx context.Context, kv jetstream.KeyValue, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, func(), error) {
	w, err := kv.WatchAll(ctx, opts...)
	if err != nil {
		return nil, nil, err
	}
	if ctx.Err() == nil {
		return w, func() { stopWatch(w) }, nil
	}
	return w, func() {
		_ = w.Stop()
		go func() {
			for {
				select {
				case _, ok := <-w.Updates():
					if !ok {
						return
					}
				case <-time.After(500 * time.Millisecond):
					return
				}
			}
		}()
	}, nil
}

// stopWatch stops a key-value watcher and drains what it still delivers: a
// delivery blocked on the full updates channel would otherwise hold the
// watcher's lock for ever, and its goroutine would never end. The channel
// is closed once the subscription is, which ends the drain.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}

// jsCommands publishes commands into the command stream without waiting for
// their acknowledgement, coalescing them under load: while
// publishesPerParticipant publishes to one participant await their PubAck,
// its further commands wait, and the next publish carries all that waited
// (up to messages.MaxBatch, batchBytes) as one batch message. An idle
// participant's command goes out at once, alone, so light load pays no
// latency for it; heavy load gets fewer, larger messages, one broker write
// and one consumer acknowledgement for many commands. A command that is
// never stored (a failed publish, or the engine stopping with commands
// waiting) is re-sent by its transaction's retry timer, as before.
type jsCommands struct {
	js   jetstream.JetStream
	stop <-chan struct{}
	// stats counts the batches.
	stats *Stats
	// onError reports waiting commands whose publish failed at once (the
	// first command of a publish gets the error from Publish; a failure
	// after the publish went out goes to the JetStream context's
	// asynchronous error handler).
	onError func(cmds []messages.Command, err error)
	// log receives the failures to create a participant's consumer.
	log *zap.Logger

	// consumers holds, per participant, its *participantConsumer: whether
	// this process has created its durable consumer (or found it there).
	consumers sync.Map
	// createConsumer creates a participant's consumer; a variable for tests.
	createConsumer func(ctx context.Context, participant string) error
	// spawn runs the wait for a publish's PubAck and what follows it (the
	// engine's workers; a goroutine each by default).
	spawn func(func())

	mu     sync.Mutex
	queues map[string]*commandQueue
}

// commandQueue is what waits to be published to one participant.
type commandQueue struct {
	// waiting are the commands waiting, oldest first; buf is the largest
	// array the queue has grown, where it starts again once none waits.
	waiting  []messages.Command
	buf      []messages.Command
	inFlight int
	// held: the participant's consumer is being created for the first time
	// in this process; its commands wait for it.
	held bool
	// queued locates a waiting command by what it asks (transaction,
	// operation, step): its position counted from the first command ever
	// queued, of which taken have left. A command sent again while the
	// first is still waiting (a retry timer fired while the participant's
	// publishes were slow) takes its place instead of going out twice.
	queued map[commandKey]int
	taken  int
}

// commandKey is what a command asks of its participant.
type commandKey struct {
	txID string
	op   messages.Op
	step string
}

func keyOf(c messages.Command) commandKey { return commandKey{c.TxID, c.Op, c.Step} }

// wait queues cmd behind the others, or in place of the same request
// still waiting (it reports true then). Called with jsCommands.mu held.
func (q *commandQueue) wait(cmd messages.Command) (replaced bool) {
	k := keyOf(cmd)
	if at, ok := q.queued[k]; ok {
		if i := at - q.taken; i >= 0 && i < len(q.waiting) && keyOf(q.waiting[i]) == k {
			q.waiting[i] = cmd
			return true
		}
	}
	if q.queued == nil {
		q.queued = map[commandKey]int{}
	}
	q.queued[k] = q.taken + len(q.waiting)
	q.waiting = append(q.waiting, cmd)
	if cap(q.waiting) > cap(q.buf) {
		q.buf = q.waiting[:0]
	}
	return false
}

// pop removes the first n waiting commands and returns them in a slice of
// their own. Once none waits the queue starts again at the beginning of buf
// (a queue that let its array go grew a new one, by doublings, for each
// wave of commands). Called with jsCommands.mu held.
func (q *commandQueue) pop(n int) []messages.Command {
	cmds := make([]messages.Command, n)
	copy(cmds, q.waiting)
	for i, c := range cmds {
		if k := keyOf(c); q.queued[k] == q.taken+i {
			delete(q.queued, k)
		}
	}
	q.taken += n
	clear(q.waiting[:n]) // no payloads held past their send
	q.waiting = q.waiting[n:]
	if len(q.waiting) == 0 {
		q.waiting = q.buf[:0]
	}
	return cmds
}

// participantConsumer is what this process did about one participant's
// durable consumer. The coordinator creates it before its first command to
// the participant (participants under the permissions of `natstx auth init`
// may not create it, docs/SECURITY.md): the first command waits for the
// create request's answer, later ones only read ready. A failed create is
// logged and tried again, in the background, by a publish at least
// consumerRetryAfter later; commands go out meanwhile (the participant may
// have created the consumer itself, and a consumer created later still
// gets every command in the stream).
type participantConsumer struct {
	ready atomic.Bool
	// Under jsCommands.mu: an attempt is under way; tried: one was made;
	// retryAt: no new attempt before.
	creating, tried bool
	retryAt         time.Time
}

// The consumer of each participant, as the coordinator creates it: the
// settings of docs/PROTOCOL.md, with the Go runtime's defaults for ack_wait
// and max_ack_pending (participants.DefaultAckWait, twice
// participants.DefaultConcurrency).
const (
	consumerAckWait       = 30 * time.Second
	consumerMaxAckPending = 512
)

// ParticipantConsumerConfig is the durable consumer of participant that the
// coordinator creates before its first command to it.
func ParticipantConsumerConfig(participant string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       messages.ConsumerName(participant),
		Description:   "natstx commands for participant " + participant,
		FilterSubject: messages.ParticipantFilter(participant),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       consumerAckWait,
		MaxAckPending: consumerMaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// consumerCreateTimeout bounds one create request; consumerRetryAfter
// spaces the attempts after a failure.
const (
	consumerCreateTimeout = 5 * time.Second
	consumerRetryAfter    = 5 * time.Second
)

// publishesPerParticipant bounds the publishes to one participant awaiting
// their PubAck. Fewer make larger batches, so fewer stream messages and,
// with a server that syncs every write, fewer fsyncs: 2 instead of 4 gave
// 7% more transactions a second at 256 in flight and 17% with sync always
// (docs/BENCHMARKS.md). One would make them larger still, but then a single
// slow or lost PubAck holds every command to the participant until it comes
// or times out (10 s): under a loaded test machine every transaction of a
// demo run timed out so; with two, the other keeps the participant's
// commands going. batchBytes bounds a batch's payloads (a command with a
// larger payload goes alone), well under NATS's default 1 MiB message
// limit.
const (
	publishesPerParticipant = 2
	batchBytes              = 256 << 10
)

func newJSCommands(js jetstream.JetStream, stop <-chan struct{}, stats *Stats, onError func([]messages.Command, error)) *jsCommands {
	c := &jsCommands{js: js, stop: stop, stats: stats, onError: onError, log: zap.NewNop(), queues: map[string]*commandQueue{},
		spawn: func(f func()) { go f() }}
	c.createConsumer = c.createParticipantConsumer
	return c
}

func (c *jsCommands) Publish(cmd messages.Command) error {
	pc := c.consumerOf(cmd.Participant)
	ready := pc.ready.Load()
	c.mu.Lock()
	q := c.queues[cmd.Participant]
	if q == nil {
		q = &commandQueue{}
		c.queues[cmd.Participant] = q
	}
	if !ready {
		c.ensureConsumer(cmd.Participant, pc, q)
	}
	if q.held || q.inFlight >= publishesPerParticipant {
		if q.wait(cmd) {
			c.stats.CommandsReplaced.Add(1)
		}
		c.mu.Unlock()
		return nil
	}
	q.inFlight++
	c.mu.Unlock()
	return c.send(cmd.Participant, []messages.Command{cmd})
}

// consumerOf returns what this process did about participant's consumer.
func (c *jsCommands) consumerOf(participant string) *participantConsumer {
	if pc, ok := c.consumers.Load(participant); ok {
		return pc.(*participantConsumer)
	}
	pc, _ := c.consumers.LoadOrStore(participant, &participantConsumer{})
	return pc.(*participantConsumer)
}

// ensureConsumer starts creating participant's consumer unless an attempt
// is under way or the last failed less than consumerRetryAfter ago; the
// first attempt holds q's commands until it ends. Called with c.mu held.
func (c *jsCommands) ensureConsumer(participant string, pc *participantConsumer, q *commandQueue) {
	if pc.ready.Load() || pc.creating || (pc.tried && time.Now().Before(pc.retryAt)) {
		return
	}
	pc.creating = true
	hold := !pc.tried
	pc.tried = true
	q.held = q.held || hold
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), consumerCreateTimeout)
		defer cancel()
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := c.createConsumer(ctx, participant)
		c.mu.Lock()
		pc.creating = false
		if err == nil {
			pc.ready.Store(true)
		} else {
			pc.retryAt = time.Now().Add(consumerRetryAfter)
		}
		c.mu.Unlock()
		select {
		case <-c.stop:
			return // the held commands are dropped, as any waiting at stop
		default:
		}
		if err != nil {
			c.log.Warn("creating the consumer of a participant failed; its commands are published anyway, and the next publish to it tries again",
				zap.String("participant", participant), zap.String("consumer", messages.ConsumerName(participant)),
				zap.Duration("not_before", consumerRetryAfter), zap.Error(err))
		}
		if hold {
			c.release(participant)
		}
	}()
}

// createParticipantConsumer creates participant's consumer; one already
// there, whatever its settings, is success.
func (c *jsCommands) createParticipantConsumer(ctx context.Context, participant string) error {
	_, err := c.js.CreateConsumer(ctx, messages.CommandStream, ParticipantConsumerConfig(participant))
	if err == nil || errors.Is(err, jetstream.ErrConsumerExists) {
		return nil
	}
	return fmt.Errorf("natstx: creating consumer %s of participant %s: %w", messages.ConsumerName(participant), participant, err)
}

// release sends the commands to participant held while its consumer was
// created as they would have gone without the wait: one command a publish,
// as many publishes as a participant may have awaiting their PubAck; the
// rest wait for those, and go in batches, as usual.
func (c *jsCommands) release(participant string) {
	for {
		c.mu.Lock()
		q := c.queues[participant]
		if q == nil { // all went out, and their publishes ended, since the last turn
			c.mu.Unlock()
			return
		}
		q.held = false
		if len(q.waiting) == 0 || q.inFlight >= publishesPerParticipant {
			if len(q.waiting) == 0 && q.inFlight == 0 {
				delete(c.queues, participant)
			}
			c.mu.Unlock()
			return
		}
		cmds := q.pop(1)
		q.inFlight++
		c.mu.Unlock()
		if err := c.send(participant, cmds); err != nil {
			c.onError(cmds, err)
		}
	}
}

// take removes from q.waiting the commands of its next publish: up to
// messages.MaxBatch and batchBytes of payloads (at least one). Called with
// jsCommands.mu held.
func (q *commandQueue) take() []messages.Command {
	n, size := 0, 0
	for n < len(q.waiting) && n < messages.MaxBatch && (n == 0 || size+len(q.waiting[n].Payload) <= batchBytes) {
		size += len(q.waiting[n].Payload)
		n++
	}
	return q.pop(n)
}

// send publishes cmds (one plain command message, or one batch) and, once
// its PubAck or failure is in, what waited meanwhile.
func (c *jsCommands) send(participant string, cmds []messages.Command) error {
	msg := &nats.Msg{Subject: cmds[0].Subject(), Header: nats.Header(cmds[0].Header()), Data: cmds[0].Payload}
	if len(cmds) > 1 {
		id := nuid.Next()
		h, body, err := messages.EncodeCommandBatch(participant, cmds[0].Sender+"."+id, cmds)
		if err != nil {
			c.sent(participant)
			return err
		}
		msg = &nats.Msg{Subject: messages.BatchSubject(participant, id), Header: nats.Header(h), Data: body}
		c.stats.Batches.Add(1)
		c.stats.Batched.Add(int64(len(cmds)))
	}
	paf, err := c.js.PublishMsgAsync(msg)
	if err != nil {
		c.sent(participant)
		return err
	}
	c.spawn(func() {
		select {
		case <-paf.Ok():
		case <-paf.Err(): // reported by the JetStream context's error handler
		case <-c.stop:
			return
		}
		c.sent(participant)
	})
	return nil
}

// sent ends one publish to participant and sends what waited for it.
func (c *jsCommands) sent(participant string) {
	c.mu.Lock()
	q := c.queues[participant]
	q.inFlight--
	if len(q.waiting) == 0 {
		if q.inFlight == 0 {
			delete(c.queues, participant)
		}
		c.mu.Unlock()
		return
	}
	cmds := q.take()
	q.inFlight++
	c.mu.Unlock()
	if err := c.send(participant, cmds); err != nil {
		c.onError(cmds, err)
	}
}

// wallClock is the Driver of a running process: the wall clock, timers and
// goroutines (workers, counted in the engine's WaitGroup).
type wallClock struct{ workers *workers }

func (w wallClock) Now() time.Time { return time.Now() }

func (w wallClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

func (w wallClock) Go(f func()) { w.workers.Go(f) }

func (w wallClock) WithTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, d)
}

func (w wallClock) Sleep(d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}
