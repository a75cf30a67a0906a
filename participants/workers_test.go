package participants

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// liveWorkers is how many workers w runs now.
func liveWorkers(w *workers) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.live
}

// TestWorkersRunAtMostMaxAtOnce: no worker runs before there is work; with
// more work than max, exactly max functions run at once, on max workers, and
// every function runs; close leaves none (TestMain checks for leaks).
func TestWorkersRunAtMostMaxAtOnce(t *testing.T) {
	const max, n = 4, 40
	w := newWorkers(max)
	if got := liveWorkers(w); got != 0 {
		t.Fatalf("%d workers before any work", got)
	}
	stopping := make(chan struct{})
	var running, most, done atomic.Int32
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := w.run(func() {
				r := running.Add(1)
				for {
					m := most.Load()
					if r <= m || most.CompareAndSwap(m, r) {
						break
					}
				}
				<-gate
				running.Add(-1)
				done.Add(1)
			}, stopping)
			if !ok {
				t.Error("run refused work while not stopping")
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < max && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // room for a wrong fifth to start
	if got := running.Load(); got != max {
		t.Errorf("%d running while %d wait, want %d", got, n, max)
	}
	close(gate)
	wg.Wait()
	for done.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := done.Load(); got != n {
		t.Errorf("%d of %d functions ran", got, n)
	}
	if got := most.Load(); got > max {
		t.Errorf("%d ran at once, want at most %d", got, max)
	}
	if got := liveWorkers(w); got > max {
		t.Errorf("%d workers, want at most %d", got, max)
	}
	w.close()
	if got := liveWorkers(w); got != 0 {
		t.Errorf("%d workers after close", got)
	}
}

// TestWorkersRefuseOnceStopping: run refuses, without running it, a
// function given once stopping is closed, and a run waiting for a free
// worker returns false when stopping closes.
func TestWorkersRefuseOnceStopping(t *testing.T) {
	w := newWorkers(1)
	defer w.close()
	stopping := make(chan struct{})
	gate := make(chan struct{})
	if !w.run(func() { <-gate }, stopping) {
		t.Fatal("first run refused")
	}
	var ran atomic.Bool
	refused := make(chan bool)
	go func() { refused <- !w.run(func() { ran.Store(true) }, stopping) }()
	select {
	case <-refused:
		t.Fatal("run returned while the only worker was busy")
	case <-time.After(20 * time.Millisecond):
	}
	close(stopping)
	select {
	case ok := <-refused:
		if !ok {
			t.Error("the waiting run was not refused")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting run did not return at stopping")
	}
	close(gate)
	for range 100 {
		if w.run(func() { ran.Store(true) }, stopping) {
			t.Fatal("run accepted work once stopping")
		}
	}
	if ran.Load() {
		t.Error("a refused function ran")
	}
}

// TestWorkersTrimLetsTheFreeOnesGo: trim makes the workers that wait for
// work exit and leaves the busy ones, and a later run starts one again.
func TestWorkersTrimLetsTheFreeOnesGo(t *testing.T) {
	w := newWorkers(4)
	defer w.close()
	stopping := make(chan struct{})
	gate := make(chan struct{})
	ran := make(chan struct{}, 3)
	for range 2 {
		w.run(func() { <-gate; ran <- struct{}{} }, stopping)
	}
	w.run(func() { ran <- struct{}{} }, stopping)
	<-ran
	if got := liveWorkers(w); got != 3 {
		t.Fatalf("%d workers, want 3", got)
	}
	// The free one waits for work once its function returned.
	deadline := time.Now().Add(5 * time.Second)
	for liveWorkers(w) > 2 && time.Now().Before(deadline) {
		w.trim()
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // room for a wrong exit
	if got := liveWorkers(w); got != 2 {
		t.Fatalf("%d workers after trim, want the 2 busy ones", got)
	}
	close(gate)
	<-ran
	<-ran
	for liveWorkers(w) > 0 && time.Now().Before(deadline) {
		w.trim()
		time.Sleep(time.Millisecond)
	}
	if got := liveWorkers(w); got != 0 {
		t.Fatalf("%d workers after trim with nothing to do", got)
	}
	w.run(func() { ran <- struct{}{} }, stopping)
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("no worker after the free ones exited")
	}
}

// TestWorkersWaitingRunStartsAWorkerWhenOneExits: a run waiting while max
// workers run starts a worker of its own when one of them exits instead of
// taking its function (trim handed it nil first).
func TestWorkersWaitingRunStartsAWorkerWhenOneExits(t *testing.T) {
	w := newWorkers(1)
	defer w.close()
	// A worker that will exit without taking more work: counted, as the
	// real one is until it leaves.
	w.mu.Lock()
	w.live = 1
	w.mu.Unlock()
	ran := make(chan struct{})
	go w.run(func() { close(ran) }, make(chan struct{}))
	select {
	case <-ran:
		t.Fatal("ran while the only worker was busy")
	case <-time.After(20 * time.Millisecond):
	}
	// It exits, as loop does.
	w.mu.Lock()
	w.live--
	w.mu.Unlock()
	w.exited <- struct{}{}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting run did not start a worker when one exited")
	}
}
