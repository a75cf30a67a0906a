package dst

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator"
)

// inTask runs fn as a task of a fresh party and runs the world to the end.
func inTask(t *testing.T, e *env, fn func(d *driver)) {
	t.Helper()
	d := &driver{g: e.s.newGate("caller")}
	d.Go(func() { fn(d) })
	drain(t, e)
}

func TestKVSemantics(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	b := newBucket(e, "records", 0)
	ctx := context.Background()
	inTask(t, e, func(d *driver) {
		v := b.view(d.g, "c1")
		must := func(what string, err error) {
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		if _, err := v.Get(ctx, "k"); !errors.Is(err, orchestrator.ErrNoEntry) {
			t.Fatalf("Get of a missing key: %v", err)
		}
		r1, err := v.Create(ctx, "k", []byte("a"), 0)
		must("create", err)
		if _, err := v.Create(ctx, "k", []byte("b"), 0); !errors.Is(err, orchestrator.ErrEntryExists) {
			t.Fatalf("second Create: %v", err)
		}
		if _, err := v.Update(ctx, "k", []byte("b"), r1+7, 0); !errors.Is(err, orchestrator.ErrRevisionChanged) {
			t.Fatalf("Update at a wrong revision: %v", err)
		}
		r2, err := v.Update(ctx, "k", []byte("b"), r1, 0)
		must("update", err)
		en, err := v.Get(ctx, "k")
		must("get", err)
		if string(en.Value) != "b" || en.Revision != r2 || r2 <= r1 {
			t.Fatalf("Get = %+v after update to rev %d", en, r2)
		}
		must("delete", v.Delete(ctx, "k"))
		if _, err := v.Get(ctx, "k"); !errors.Is(err, orchestrator.ErrNoEntry) {
			t.Fatalf("Get of a deleted key: %v", err)
		}
		if _, err := v.Update(ctx, "k", []byte("c"), r2, 0); !errors.Is(err, orchestrator.ErrRevisionChanged) {
			t.Fatalf("Update of a deleted key: %v", err)
		}
		_, err = v.Create(ctx, "k", []byte("over the marker"), 0)
		must("create over a delete marker", err)

		// Per-key TTL: gone after it, and Create succeeds over it.
		_, err = v.Create(ctx, "ttl", []byte("aborted"), time.Second)
		must("create with ttl", err)
		d.Sleep(500*time.Millisecond, nil)
		if _, err := v.Get(ctx, "ttl"); err != nil {
			t.Fatalf("Get before the TTL: %v", err)
		}
		d.Sleep(600*time.Millisecond, nil)
		if _, err := v.Get(ctx, "ttl"); !errors.Is(err, orchestrator.ErrNoEntry) {
			t.Fatalf("Get after the TTL: %v", err)
		}
		_, err = v.Create(ctx, "ttl", []byte("committing"), 0)
		must("create over an expired entry", err)

		_, err = v.Put(ctx, "p", []byte("x"), 0)
		must("put", err)
		es, _, err := v.Entries(ctx, 0, nil)
		must("entries", err)
		got := ""
		for _, en := range es {
			got += en.Key + "=" + string(en.Value) + " "
		}
		if got != "k=over the marker ttl=committing p=x " {
			t.Fatalf("Entries = %q", got)
		}
	})
	if len(b.hist) != 7 {
		t.Fatalf("history has %d writes: %+v", len(b.hist), b.hist)
	}
}

func TestKVBucketTTLIsALease(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	b := newBucket(e, "leases", 1500*time.Millisecond)
	ctx := context.Background()
	inTask(t, e, func(d *driver) {
		v := b.view(d.g, "c1")
		for range 5 { // renewed every half second: alive throughout
			if _, err := v.Put(ctx, "c1", nil, 0); err != nil {
				t.Fatal(err)
			}
			d.Sleep(500*time.Millisecond, nil)
			if _, err := v.Get(ctx, "c1"); err != nil {
				t.Fatalf("lease lost while renewed: %v", err)
			}
		}
		d.Sleep(1500*time.Millisecond, nil)
		if es, _, _ := v.Entries(ctx, 0, nil); len(es) != 0 {
			t.Fatalf("lease alive after its TTL: %+v", es)
		}
	})
}

// TestKVFaults: a failed write is either not applied, or applied with its
// answer lost, or applied after the caller gave up; each happens.
func TestKVFaults(t *testing.T) {
	e := newEnv(3, Faults{StoreError: 1}, nil)
	b := newBucket(e, "records", 0)
	ctx := context.Background()
	var unavailable, lost int
	inTask(t, e, func(d *driver) {
		v := b.view(d.g, "c1")
		for i := range 40 {
			key := fmt.Sprint("k", i)
			_, err := v.Create(ctx, key, []byte("v"), 0)
			_, applied := b.keys[key]
			switch {
			case errors.Is(err, errStoreUnavailable) && !applied:
				unavailable++
			case errors.Is(err, errStoreAnswerLost) && applied:
				lost++
			default:
				t.Fatalf("create %s: err=%v applied=%v", key, err, applied)
			}
		}
	})
	if unavailable == 0 || lost == 0 {
		t.Fatalf("unavailable=%d lost=%d", unavailable, lost)
	}

	e = newEnv(3, Faults{LateStore: 1}, nil)
	b = newBucket(e, "records", 0)
	inTask(t, e, func(d *driver) {
		v := b.view(d.g, "c1")
		start := e.s.now
		_, err := v.Create(ctx, "late", []byte("v"), 0)
		if !errors.Is(err, errStoreTimeout) || e.s.now-start != storeTimeout {
			t.Fatalf("late create: err=%v after %v", err, e.s.now-start)
		}
		if _, applied := b.keys["late"]; applied {
			t.Fatal("a late write was applied before the caller gave up")
		}
		d.Sleep(2*storeTimeout, nil)
		if _, applied := b.keys["late"]; !applied {
			t.Fatal("a late write never landed")
		}
	})
}

// TestKVPutAsyncKeepsTheWritersOrder: asynchronous puts of one writer are
// applied in the order they were made, however slow each is.
func TestKVPutAsyncKeepsTheWritersOrder(t *testing.T) {
	e := newEnv(5, Faults{SlowStore: 1}, nil)
	b := newBucket(e, "status", 0)
	g := e.s.newGate("c1")
	v := b.view(g, "c1")
	for i := range 50 {
		v.PutAsync("tx", []byte(fmt.Sprint(i)), nil)
	}
	drain(t, e)
	for i, w := range b.hist {
		if string(w.value) != fmt.Sprint(i) {
			t.Fatalf("write %d carried %q", i, w.value)
		}
	}
	if en, _ := b.get("tx"); string(en.Value) != "49" {
		t.Fatalf("final value %q", en.Value)
	}

	// A failed asynchronous put calls onErr through the writer's gate.
	e = newEnv(5, Faults{StoreError: 1}, nil)
	b = newBucket(e, "status", 0)
	g = e.s.newGate("c1")
	v = b.view(g, "c1")
	errs := 0
	for range 10 {
		v.PutAsync("tx", []byte("x"), func(error) { errs++ })
	}
	drain(t, e)
	if errs != 10 {
		t.Fatalf("onErr called %d times for 10 failed puts", errs)
	}
}

// TestKVCallerGivesUpAtItsDeadline: a call whose context's (simulated)
// deadline comes before the answer fails with context.DeadlineExceeded at
// that deadline; what it sent is applied all the same.
func TestKVCallerGivesUpAtItsDeadline(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	b := newBucket(e, "leases", 0)
	inTask(t, e, func(d *driver) {
		v := b.view(d.g, "c1")
		// Store answers take 2 to 10 ms: a 1 ms deadline is always missed.
		ctx, cancel := d.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		start := e.s.now
		_, err := v.Put(ctx, "c1", []byte("alive"), 0)
		if !errors.Is(err, context.DeadlineExceeded) || e.s.now-start != time.Millisecond {
			t.Errorf("after %v: %v, want context.DeadlineExceeded after 1ms", e.s.now-start, err)
		}
		d.Sleep(time.Second, nil)
		en, err := v.Get(context.Background(), "c1")
		if err != nil || string(en.Value) != "alive" {
			t.Errorf("the put given up on: %+v %v, want applied", en, err)
		}
		// With time to spare it succeeds.
		ctx2, cancel2 := d.WithTimeout(context.Background(), time.Second)
		defer cancel2()
		if _, err := v.Put(ctx2, "c1", []byte("again"), 0); err != nil {
			t.Errorf("within its deadline: %v", err)
		}
	})
}
