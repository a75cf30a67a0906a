package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// groupFixture is a key-value bucket on an embedded server and a
// groupStore writing to it.
type groupFixture struct {
	kv    jetstream.KeyValue
	g     *groupStore
	stats *Stats
	ctx   context.Context
}

func newGroupFixture(t *testing.T, atomicBatches bool) *groupFixture {
	t.Helper()
	js := startJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{Bucket: "group_test", History: 1, Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if atomicBatches {
		if err := allowAtomicBatches(ctx, js, "group_test"); err != nil {
			t.Fatal(err)
		}
	}
	base, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	f := &groupFixture{kv: kv, stats: &Stats{}, ctx: ctx}
	f.g = newGroupStore(base, js.Conn(), js, kv, stopped, f.stats)
	t.Cleanup(func() {
		stop()
		close(stopped)
		f.g.wait()
	})
	return f
}

// counts returns the batches stored, the writes they carried and the
// batches refused.
func (f *groupFixture) counts() (batches, writes, refused int64) {
	return f.stats.WriteBatches.Load(), f.stats.WritesBatched.Load(), f.stats.BatchesRefused.Load()
}

// burst runs n writes at once, each in its own goroutine, and returns
// their revisions and errors by index.
func (f *groupFixture) burst(n int, write func(i int) (uint64, error)) ([]uint64, []error) {
	revs, errs := make([]uint64, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			revs[i], errs[i] = write(i)
		}()
	}
	wg.Wait()
	return revs, errs
}

// TestGroupCommitKeepsEachWritesCheckAndRevision: a burst of creates,
// updates and puts goes out in atomic batches; each write gets the
// revision it was stored at, a create of a key already there
// ErrEntryExists and an update at a stale revision ErrRevisionChanged
// (its batch is refused whole, and its writes are made one by one), as
// from the store that writes one by one.
func TestGroupCommitKeepsEachWritesCheckAndRevision(t *testing.T) {
	f := newGroupFixture(t, true)
	const n = 200
	revs, errs := f.burst(n, func(i int) (uint64, error) {
		ttl := time.Duration(0)
		if i%2 == 1 {
			ttl = time.Hour // as abort records and ID claims have
		}
		return f.g.Create(f.ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprintf("v%d", i)), ttl)
	})
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("create k%d: %v", i, errs[i])
		}
		e, err := f.kv.Get(f.ctx, fmt.Sprintf("k%d", i))
		if err != nil || e.Revision() != revs[i] || string(e.Value()) != fmt.Sprintf("v%d", i) {
			t.Fatalf("k%d: stored %v %v, the create answered revision %d", i, e, err, revs[i])
		}
	}
	// The TTL went with its write into the batch.
	m, err := f.g.js.Conn().Request("$JS.API.DIRECT.GET.KV_group_test.$KV.group_test.k1", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ttl := m.Header.Get(jetstream.MsgTTLHeader); ttl != "1h0m0s" {
		t.Fatalf("k1's stored message has %s=%q, want 1h0m0s", jetstream.MsgTTLHeader, ttl)
	}
	if b, w, r := f.counts(); b == 0 || w == 0 || r != 0 {
		t.Fatalf("%d batches carrying %d writes, %d refused: want batches, none refused", b, w, r)
	}

	// Every other write fails its check: creates of keys that exist,
	// updates at a revision that is not the key's.
	_, errs = f.burst(n, func(i int) (uint64, error) {
		key := fmt.Sprintf("k%d", i)
		switch i % 4 {
		case 0:
			return f.g.Create(f.ctx, key, []byte("again"), 0)
		case 1:
			return f.g.Update(f.ctx, key, []byte("stale"), revs[i]+100000, 0)
		case 2:
			return f.g.Update(f.ctx, key, []byte("updated"), revs[i], 0)
		default:
			return f.g.Put(f.ctx, key, []byte("put"), 0)
		}
	})
	for i := range n {
		var want error
		switch i % 4 {
		case 0:
			want = ErrEntryExists
		case 1:
			want = ErrRevisionChanged
		}
		if (want == nil && errs[i] != nil) || (want != nil && !errors.Is(errs[i], want)) {
			t.Fatalf("write %d (kind %d): %v, want %v", i, i%4, errs[i], want)
		}
		e, err := f.kv.Get(f.ctx, fmt.Sprintf("k%d", i))
		if err != nil {
			t.Fatal(err)
		}
		want2 := map[int]string{0: fmt.Sprintf("v%d", i), 1: fmt.Sprintf("v%d", i), 2: "updated", 3: "put"}[i%4]
		if string(e.Value()) != want2 {
			t.Fatalf("k%d = %q, want %q", i, e.Value(), want2)
		}
	}
	if _, _, r := f.counts(); r == 0 {
		t.Fatal("no batch was refused, though half the writes failed their check")
	}
}

// TestARefusedBatchStoresItsPutsInABatchAgain: a batch refused for one
// stale update (as a status refresh that lost to a newer status) is made
// again split: its puts, which no check can refuse, as one batch, its
// checked writes alone; each write gets its own answer.
func TestARefusedBatchStoresItsPutsInABatchAgain(t *testing.T) {
	f := newGroupFixture(t, true)
	rev, err := f.g.Put(f.ctx, "refreshed", []byte("newer"), 0)
	if err != nil {
		t.Fatal(err)
	}
	const puts = 2 * minBatch
	var group []*groupWrite
	for i := range puts {
		group = append(group, &groupWrite{ctx: f.ctx, op: opPut, key: fmt.Sprintf("p%d", i), value: []byte("put"), done: make(chan groupResult, 1)})
	}
	stale := &groupWrite{ctx: f.ctx, op: opUpdate, key: "refreshed", value: []byte("older"), rev: rev - 1, done: make(chan groupResult, 1)}
	created := &groupWrite{ctx: f.ctx, op: opCreate, key: "created", value: []byte("c"), done: make(chan groupResult, 1)}
	group = append(group[:puts/2], append([]*groupWrite{stale, created}, group[puts/2:]...)...)
	f.g.batch(group)
	for _, w := range group {
		r := <-w.done
		if w == stale {
			if !errors.Is(r.err, ErrRevisionChanged) {
				t.Fatalf("the stale update: %v, want ErrRevisionChanged", r.err)
			}
			continue
		}
		if r.err != nil {
			t.Fatalf("%s: %v", w.key, r.err)
		}
		if e, err := f.kv.Get(f.ctx, w.key); err != nil || e.Revision() != r.rev || string(e.Value()) != string(w.value) {
			t.Fatalf("%s: stored %v %v, answered revision %d", w.key, e, err, r.rev)
		}
	}
	if e, err := f.kv.Get(f.ctx, "refreshed"); err != nil || string(e.Value()) != "newer" {
		t.Fatalf("refreshed = %v %v, want the newer value kept", e, err)
	}
	if b, w, r := f.counts(); b != 1 || w != puts || r != 1 {
		t.Fatalf("%d batches carrying %d writes, %d refused: want the %d puts in one batch after one refusal", b, w, r, puts)
	}
}

// TestGroupCommitKeepsTheOrderOfWritesToOneKey: asynchronous puts to one
// key, made in order while batches go out, leave the last one stored.
func TestGroupCommitKeepsTheOrderOfWritesToOneKey(t *testing.T) {
	f := newGroupFixture(t, true)
	failed := make(chan error, 1000)
	for i := range 300 {
		f.g.PutAsync(fmt.Sprintf("other%d", i%50), []byte("x"), func(err error) { failed <- err })
		f.g.PutAsync("same", []byte(fmt.Sprintf("%d", i)), func(err error) { failed <- err })
	}
	if _, err := f.g.Put(f.ctx, "marker", []byte("last"), 0); err != nil {
		t.Fatal(err)
	}
	f.g.wait()
	select {
	case err := <-failed:
		t.Fatalf("a put failed: %v", err)
	default:
	}
	e, err := f.kv.Get(f.ctx, "same")
	if err != nil || string(e.Value()) != "299" {
		t.Fatalf("same = %v %v, want the last put, 299", e, err)
	}
	if b, _, _ := f.counts(); b == 0 {
		t.Fatal("no atomic batch went out")
	}
}

// TestGroupCommitWritesOneByOneWhereAtomicBatchesAreOff: on a bucket that
// does not allow atomic batches every batch is refused whole, and every
// write is made on its own, with its own answer.
func TestGroupCommitWritesOneByOneWhereAtomicBatchesAreOff(t *testing.T) {
	f := newGroupFixture(t, false)
	const n = 100
	revs, errs := f.burst(n, func(i int) (uint64, error) {
		return f.g.Create(f.ctx, fmt.Sprintf("k%d", i), []byte("v"), time.Hour)
	})
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("create k%d: %v", i, errs[i])
		}
		if e, err := f.kv.Get(f.ctx, fmt.Sprintf("k%d", i)); err != nil || e.Revision() != revs[i] {
			t.Fatalf("k%d: %v %v, answered revision %d", i, e, err, revs[i])
		}
	}
	if b, _, r := f.counts(); b != 0 || r == 0 {
		t.Fatalf("%d batches stored, %d refused: want none stored, some refused", b, r)
	}
}

// TestOpenBucketKeepsAtomicBatchesOn: declaring a bucket again (another
// coordinator starting) keeps atomic batches on where they were.
func TestOpenBucketKeepsAtomicBatchesOn(t *testing.T) {
	f := newGroupFixture(t, true)
	js := f.g.js
	if _, err := openBucket(f.ctx, js, jetstream.KeyValueConfig{Bucket: "group_test", History: 1, Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(f.ctx, "KV_group_test")
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowAtomicPublish {
		t.Fatal("atomic batches turned off by declaring the bucket again")
	}
}
