package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Group commit (Config.GroupCommit): on a server that fsyncs every write
// (sync always), each key-value write costs an fsync, and the coordinator's
// four writes a transaction bound it to a few hundred transactions a
// second. groupStore coalesces the writes to one bucket that wait while
// the previous ones are out into one JetStream atomic batch: the server
// stores it with a few fsyncs whatever its size, and stores all of it or
// none. Each write keeps its own check (a create expects no entry, an
// update the revision it read), so the semantics of Store are unchanged.
// A batch the server refuses (a check failed, or atomic publish is off on
// the stream) stored nothing: its writes are then made again, each getting
// its own answer (retryRefused). A batch whose answer does not come is a lost
// answer for each of its writes, as for a single write.
//
// Small groups go out as separate writes: an atomic batch costs the server
// about as much as fifteen single fsynced writes (it stages the batch in a
// store of its own), so batching pays from minBatch writes on. Without
// sync always an atomic batch is slower than separate writes, so group
// commit is off by default.

const (
	// minBatch is the smallest group sent as an atomic batch.
	minBatch = 16
	// maxBatch is the server's limit of messages in one atomic batch.
	maxBatch = 1000
	// maxBatchBytes bounds a batch's payloads.
	maxBatchBytes = 4 << 20
	// batchAnswerTimeout bounds the wait for a batch's acknowledgement.
	batchAnswerTimeout = 10 * time.Second
)

// groupOp is the kind of a write.
type groupOp int

const (
	opPut groupOp = iota
	opCreate
	opUpdate
)

// groupWrite is one write waiting in a groupStore.
type groupWrite struct {
	ctx   context.Context // nil for PutAsync
	op    groupOp
	key   string
	value []byte
	ttl   time.Duration
	rev   uint64 // opUpdate: the revision expected
	// done gets the answer of a synchronous write; onErr the failure of
	// an asynchronous one (PutAsync).
	done  chan groupResult
	onErr func(error)
}

type groupResult struct {
	rev uint64
	err error
}

// groupStore is a Store over a JetStream key-value bucket that commits its
// writes in groups; reads, deletes and listings go to the bucket directly.
type groupStore struct {
	*jsStore
	nc *nats.Conn
	// base ends when the engine stops: a send under way then ends at once.
	base context.Context
	// stats counts the batches (WriteBatches, WritesBatched,
	// BatchesRefused).
	stats *Stats

	mu      sync.Mutex
	waiting []*groupWrite
	sending bool
	// wg counts the sending goroutine.
	wg sync.WaitGroup
}

func newGroupStore(base context.Context, nc *nats.Conn, js jetstream.JetStream, kv jetstream.KeyValue, stop <-chan struct{}, stats *Stats) *groupStore {
	return &groupStore{jsStore: newJSStore(js, kv, stop), nc: nc, base: base, stats: stats}
}

func (g *groupStore) Create(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	return g.await(ctx, &groupWrite{ctx: ctx, op: opCreate, key: key, value: value, ttl: ttl})
}

func (g *groupStore) Update(ctx context.Context, key string, value []byte, revision uint64, ttl time.Duration) (uint64, error) {
	return g.await(ctx, &groupWrite{ctx: ctx, op: opUpdate, key: key, value: value, rev: revision, ttl: ttl})
}

func (g *groupStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	return g.await(ctx, &groupWrite{ctx: ctx, op: opPut, key: key, value: value, ttl: ttl})
}

func (g *groupStore) PutAsync(key string, value []byte, onErr func(error)) {
	g.enqueue(&groupWrite{op: opPut, key: key, value: value, onErr: onErr})
}

// await queues w and waits for its answer, or for ctx to end (the write
// may still be made: a lost answer).
func (g *groupStore) await(ctx context.Context, w *groupWrite) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	w.done = make(chan groupResult, 1)
	g.enqueue(w)
	select {
	case r := <-w.done:
		return r.rev, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// enqueue adds w behind the writes waiting and starts sending unless a
// send is under way (it takes w in its next group).
func (g *groupStore) enqueue(w *groupWrite) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting = append(g.waiting, w)
	if !g.sending {
		g.sending = true
		g.wg.Add(1)
		go g.send()
	}
}

// send sends groups until none waits: one group at a time, so that two
// writes to one key are stored in the order they were made.
func (g *groupStore) send() {
	defer g.wg.Done()
	for {
		g.mu.Lock()
		group := g.take()
		if len(group) == 0 {
			g.sending = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		if len(group) < minBatch {
			g.eachAlone(group)
		} else {
			g.batch(group)
		}
	}
}

// take removes the next group from the writes waiting: in order, at most
// one write per key (a later write to a key already in the group waits for
// the next, behind it), up to maxBatch and maxBatchBytes. Called with mu
// held.
func (g *groupStore) take() []*groupWrite {
	var group, rest []*groupWrite
	keys := map[string]bool{}
	size := 0
	for _, w := range g.waiting {
		full := len(group) == maxBatch || (len(group) > 0 && size+len(w.value) > maxBatchBytes)
		if full || keys[w.key] {
			rest = append(rest, w)
			continue
		}
		keys[w.key] = true
		size += len(w.value)
		group = append(group, w)
	}
	g.waiting = rest
	return group
}

// eachAlone makes each write of group on its own, all at once, and
// answers each.
func (g *groupStore) eachAlone(group []*groupWrite) {
	var wg sync.WaitGroup
	for _, w := range group {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.alone(w)
		}()
	}
	wg.Wait()
}

// alone makes one write as a single key-value operation and answers it.
func (g *groupStore) alone(w *groupWrite) {
	ctx := w.ctx
	if ctx == nil { // PutAsync: bounded as the engine's asynchronous publishes are
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(g.base, publishAckTimeout)
		defer cancel()
	}
	var rev uint64
	var err error
	switch w.op {
	case opCreate:
		rev, err = g.jsStore.Create(ctx, w.key, w.value, w.ttl)
	case opUpdate:
		rev, err = g.jsStore.Update(ctx, w.key, w.value, w.rev, w.ttl)
	default:
		rev, err = g.jsStore.Put(ctx, w.key, w.value, w.ttl)
	}
	g.answer(w, rev, err)
}

// answer gives w its outcome; an asynchronous write's failure is not
// reported once the engine stopped (as jsStore.PutAsync).
func (g *groupStore) answer(w *groupWrite, rev uint64, err error) {
	switch {
	case w.done != nil:
		w.done <- groupResult{rev: rev, err: err}
	case err != nil && w.onErr != nil && g.base.Err() == nil:
		w.onErr(err)
	}
}

// batchAck is the server's answer to the commit of an atomic batch.
type batchAck struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Batch  string `json:"batch"`
	Count  int    `json:"count"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// batch sends group as one atomic batch and answers each write: its
// revision is its message's sequence, the batch's messages being stored
// one after the other.
func (g *groupStore) batch(group []*groupWrite) {
	id := nuid.Next()
	n := len(group)
	ctx, cancel := context.WithTimeout(g.base, batchAnswerTimeout)
	defer cancel()
	var reply *nats.Msg
	var err error
	for i, w := range group {
		m := g.message(w)
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < n-1 {
			if err = g.nc.PublishMsg(m); err != nil {
				break
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		reply, err = g.nc.RequestMsgWithContext(ctx, m)
	}
	if err != nil {
		// Not sent whole, or its answer lost: it may be stored or not,
		// as a single write whose answer is lost.
		g.failAll(group, fmt.Errorf("natstx: atomic batch of %d writes to bucket %s: %w", n, g.bucket, err))
		return
	}
	var ack batchAck
	if jerr := json.Unmarshal(reply.Data, &ack); jerr != nil || (ack.Error == nil && (ack.Count != n || ack.Seq < uint64(n))) {
		g.failAll(group, fmt.Errorf("natstx: atomic batch of %d writes to bucket %s: unexpected answer %q", n, g.bucket, reply.Data))
		return
	}
	if ack.Error != nil {
		// Refused whole, nothing stored (a check failed, or the stream
		// does not allow atomic batches).
		g.stats.BatchesRefused.Add(1)
		g.retryRefused(group)
		return
	}
	g.stats.WriteBatches.Add(1)
	g.stats.WritesBatched.Add(int64(n))
	first := ack.Seq - uint64(n) + 1
	for i, w := range group {
		g.answer(w, first+uint64(i), nil)
	}
}

// retryRefused makes the writes of a refused batch again, each getting its
// own answer: the checked ones (creates and updates) alone, since any of
// them may be the one whose check failed, and the unchecked ones (puts),
// which no check can refuse, as a batch again if there are enough of them.
// A check fails when the engine wrote the key after reading it: a status
// refresh (on a re-send) that loses to the status the transaction moved on
// to, as it should. Without the split one such loser would turn a batch of
// hundreds into hundreds of single fsynced writes under the very load that
// causes re-sends. The keys of a group are distinct, so their order does not
// matter.
func (g *groupStore) retryRefused(group []*groupWrite) {
	var checked, unchecked []*groupWrite
	for _, w := range group {
		if w.op == opPut {
			unchecked = append(unchecked, w)
		} else {
			checked = append(checked, w)
		}
	}
	if len(checked) > 0 && len(unchecked) >= minBatch {
		g.batch(unchecked) // refused again only if the stream refuses batches: then alone
	} else {
		g.eachAlone(unchecked)
	}
	g.eachAlone(checked)
}

// failAll answers every write of group with err.
func (g *groupStore) failAll(group []*groupWrite, err error) {
	for _, w := range group {
		g.answer(w, 0, err)
	}
}

// message is w as the key-value message it writes, with its check.
func (g *groupStore) message(w *groupWrite) *nats.Msg {
	m := nats.NewMsg(g.subject(w.key))
	m.Data = w.value
	switch w.op {
	case opCreate:
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	case opUpdate:
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.rev, 10))
	}
	if w.ttl > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, w.ttl.String())
	}
	return m
}

// wait waits for the sending goroutine to end (the engine's stop).
func (g *groupStore) wait() { g.wg.Wait() }

// allowAtomicBatches turns on atomic batch publishes on the stream of
// bucket (servers 2.12 and later).
func allowAtomicBatches(ctx context.Context, js jetstream.JetStream, bucket string) error {
	return updateBucketStream(ctx, js, bucket, "allowing atomic batches (group commit needs NATS server 2.12 or later)",
		func(cfg *jetstream.StreamConfig) bool {
			if cfg.AllowAtomicPublish {
				return false
			}
			cfg.AllowAtomicPublish = true
			return true
		})
}
