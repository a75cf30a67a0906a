package dst

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/natstx/natstx/orchestrator"
)

// The simulated key-value buckets do what a JetStream key-value bucket does,
// as far as the engine can tell: one revision sequence per bucket; a
// per-key TTL (a message TTL) and a bucket-wide one (MaxAge), after which an
// entry is gone; Delete writes a delete marker; Create succeeds over a
// marker or an expired entry; Update compares the live entry's revision.
// Each operation travels to the server and back: it is applied at the
// server at one instant, and its answer may be slow, lost (applied, but the
// caller gets an error), or come after the caller gave up (applied late);
// or the operation fails before it is applied.

// Store errors of the simulation (orchestrator.ErrNoEntry and its siblings
// are the store's answers; these are failures).
var (
	errStoreUnavailable = errors.New("dst: key-value store unavailable (not applied)")
	errStoreAnswerLost  = errors.New("dst: key-value answer lost (the operation may have been applied)")
	errStoreTimeout     = errors.New("dst: key-value operation timed out (it may be applied later)")
)

// storeTimeout is how long a caller waits for a store answer.
const storeTimeout = 5 * time.Second

// kvBucket is one bucket's state at the server.
type kvBucket struct {
	e    *env
	name string
	// ttl is the bucket-wide MaxAge; 0: none.
	ttl  time.Duration
	rev  uint64
	keys map[string]*kvEntry
	// hist is every write applied, in order, for the checker.
	hist []kvWrite
	// watch, if set, sees every write as it is applied.
	watch func(kvWrite)
	// blindCreate: Create ignores a live entry (a planted bug).
	blindCreate bool
}

type kvEntry struct {
	value   []byte
	rev     uint64
	deleted bool
	// expires is when the entry is gone; 0: never.
	expires time.Duration
}

// kvWrite is one applied write.
type kvWrite struct {
	at     time.Duration
	key    string
	op     string // create, update, put, delete
	value  []byte
	rev    uint64
	writer string
}

func newBucket(e *env, name string, ttl time.Duration) *kvBucket {
	return &kvBucket{e: e, name: name, ttl: ttl, keys: map[string]*kvEntry{}}
}

// live returns key's live entry, or nil.
func (b *kvBucket) live(key string) *kvEntry {
	en := b.keys[key]
	if en == nil || en.deleted || en.expires != 0 && b.e.s.now >= en.expires {
		return nil
	}
	return en
}

func (b *kvBucket) write(writer, op, key string, value []byte, ttl time.Duration, deleted bool) uint64 {
	b.rev++
	en := &kvEntry{value: slices.Clone(value), rev: b.rev, deleted: deleted}
	now := b.e.s.now
	for _, d := range []time.Duration{ttl, b.ttl} {
		if d > 0 && (en.expires == 0 || now+d < en.expires) {
			en.expires = now + d
		}
	}
	b.keys[key] = en
	w := kvWrite{at: now, key: key, op: op, value: en.value, rev: b.rev, writer: writer}
	b.hist = append(b.hist, w)
	if b.watch != nil {
		b.watch(w)
	}
	return b.rev
}

func (b *kvBucket) get(key string) (orchestrator.StoreEntry, error) {
	en := b.live(key)
	if en == nil {
		return orchestrator.StoreEntry{}, orchestrator.ErrNoEntry
	}
	return orchestrator.StoreEntry{Key: key, Value: slices.Clone(en.value), Revision: en.rev}, nil
}

func (b *kvBucket) create(writer, key string, value []byte, ttl time.Duration) (uint64, error) {
	if b.live(key) != nil && !b.blindCreate {
		return 0, orchestrator.ErrEntryExists
	}
	return b.write(writer, "create", key, value, ttl, false), nil
}

func (b *kvBucket) update(writer, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	en := b.live(key)
	if en == nil || en.rev != rev {
		return 0, orchestrator.ErrRevisionChanged
	}
	return b.write(writer, "update", key, value, ttl, false), nil
}

// entries returns the live entries whose revision is above after, in
// revision order, as a watch delivers them.
func (b *kvBucket) entries(after uint64) []orchestrator.StoreEntry {
	var out []orchestrator.StoreEntry
	for key := range b.keys {
		if en := b.live(key); en != nil && en.rev > after {
			out = append(out, orchestrator.StoreEntry{Key: key, Value: slices.Clone(en.value), Revision: en.rev})
		}
	}
	slices.SortFunc(out, func(a, b orchestrator.StoreEntry) int { return cmp.Compare(a.Revision, b.Revision) })
	return out
}

// kvView is one party's connection to a bucket: orchestrator.Store.
type kvView struct {
	b      *kvBucket
	g      *gate
	writer string
	// lastAsync is when this writer's last PutAsync is applied: they are
	// applied in the order they were made.
	lastAsync time.Duration
}

var _ orchestrator.Store = (*kvView)(nil)

func (b *kvBucket) view(g *gate, writer string) *kvView {
	return &kvView{b: b, g: g, writer: writer}
}

// call carries one operation to the server and its answer back, parking the
// calling task meanwhile. The caller gives up at its context's deadline
// (simulated time: Driver.WithTimeout), or after storeTimeout without one,
// as a NATS request does; what it sent may still be applied after.
func (v *kvView) call(ctx context.Context, what, key string, apply func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if v.g.state == gateDead {
		return errDead
	}
	e := v.b.e
	e.n.StoreOps++
	w := e.s.newWaiter(v.g, "store "+what)
	limit, limitErr := storeTimeout, errStoreTimeout
	if dl, ok := ctx.Deadline(); ok {
		if d := dl.Sub(e.s.time()); d < limit {
			limit, limitErr = max(d, 0), context.DeadlineExceeded
		}
	}
	// answer fires the caller's wait at at with ok and the error err()
	// gives then, or at limit with limitErr if that comes first.
	answer := func(at time.Duration, ok bool, err func() error) {
		if at > limit {
			e.s.at(limit, func() { w.fire(false, limitErr) })
			return
		}
		e.s.at(at, func() { w.fire(ok && err() == nil, err()) })
	}
	out, back := e.storeLatency(), e.storeLatency()
	name := v.b.name
	if e.fault(e.f.StoreError) && e.rng.IntN(2) == 0 {
		e.n.StoreErrors++
		e.tracef("%s %s %s %s: fails before it is applied", v.writer, name, what, key)
		answer(out+back, false, func() error { return errStoreUnavailable })
		_, err := w.wait()
		return err
	}
	lost := e.fault(e.f.StoreError)
	late := !lost && e.fault(e.f.LateStore)
	if late {
		out += e.between(storeTimeout, 2*storeTimeout)
	}
	var res error
	e.s.at(out, func() {
		res = apply()
		switch {
		case late:
			e.tracef("%s %s %s %s: applied late (%v), after the caller gave up", v.writer, name, what, key, res)
		case lost:
			e.tracef("%s %s %s %s: applied (%v), its answer lost", v.writer, name, what, key, res)
		case out > limit:
			e.tracef("%s %s %s %s: applied (%v) after the caller's deadline", v.writer, name, what, key, res)
		}
	})
	switch {
	case late:
		e.n.StoreLate++
		answer(limit, false, func() error { return limitErr })
	case lost:
		e.n.StoreLostAnswers++
		answer(out+back, false, func() error { return errStoreAnswerLost })
	default:
		answer(out+back, true, func() error { return res })
	}
	_, err := w.wait()
	return err
}

func (v *kvView) Get(ctx context.Context, key string) (orchestrator.StoreEntry, error) {
	var en orchestrator.StoreEntry
	err := v.call(ctx, "get", key, func() error {
		var err error
		en, err = v.b.get(key)
		return err
	})
	if err != nil {
		return orchestrator.StoreEntry{}, err
	}
	return en, nil
}

func (v *kvView) Create(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	var rev uint64
	value = slices.Clone(value)
	err := v.call(ctx, "create", key, func() error {
		var err error
		rev, err = v.b.create(v.writer, key, value, ttl)
		return err
	})
	return rev, err
}

func (v *kvView) Update(ctx context.Context, key string, value []byte, revision uint64, ttl time.Duration) (uint64, error) {
	var rev uint64
	value = slices.Clone(value)
	err := v.call(ctx, "update", key, func() error {
		var err error
		rev, err = v.b.update(v.writer, key, value, revision, ttl)
		return err
	})
	return rev, err
}

func (v *kvView) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	var rev uint64
	value = slices.Clone(value)
	err := v.call(ctx, "put", key, func() error {
		rev = v.b.write(v.writer, "put", key, value, ttl, false)
		return nil
	})
	return rev, err
}

func (v *kvView) Delete(ctx context.Context, key string) error {
	return v.call(ctx, "delete", key, func() error {
		v.b.write(v.writer, "delete", key, nil, 0, true)
		return nil
	})
}

func (v *kvView) Entries(ctx context.Context, after uint64, keep func(orchestrator.StoreEntry) bool) ([]orchestrator.StoreEntry, uint64, error) {
	var all []orchestrator.StoreEntry
	err := v.call(ctx, "entries", "*", func() error {
		all = v.b.entries(after)
		return nil
	})
	if err != nil {
		return nil, after, err
	}
	var cut error
	if e := v.b.e; e.fault(e.f.ScanCut) {
		n := e.rng.IntN(len(all) + 1)
		e.n.ScansCut++
		e.tracef("%s %s entries after %d: runs out of time after %d of %d", v.writer, v.b.name, after, n, len(all))
		all, cut = all[:n], context.DeadlineExceeded
	}
	var out []orchestrator.StoreEntry
	for _, en := range all {
		after = max(after, en.Revision)
		if keep == nil || keep(en) {
			out = append(out, en)
		}
	}
	return out, after, cut
}

// PutAsync applies the write later, after this writer's earlier ones; onErr
// runs through the writer's gate if it fails or its answer is lost.
func (v *kvView) PutAsync(key string, value []byte, onErr func(error)) {
	if v.g.state == gateDead {
		return
	}
	e := v.b.e
	e.n.StoreOps++
	s := e.s
	at := s.now + e.storeLatency()
	if at <= v.lastAsync {
		at = v.lastAsync + time.Microsecond
	}
	v.lastAsync = at
	back := e.storeLatency()
	failed := func(err error) {
		if onErr != nil {
			s.at(at+back-s.now, func() { v.g.run(func() { onErr(err) }) })
		}
	}
	if e.fault(e.f.StoreError) && e.rng.IntN(2) == 0 {
		e.n.StoreErrors++
		e.tracef("%s %s put-async %s: fails before it is applied", v.writer, v.b.name, key)
		failed(errStoreUnavailable)
		return
	}
	value = slices.Clone(value)
	s.at(at-s.now, func() { v.b.write(v.writer, "put", key, value, 0, false) })
	if e.fault(e.f.StoreError) {
		e.n.StoreLostAnswers++
		failed(errStoreAnswerLost)
	}
}
