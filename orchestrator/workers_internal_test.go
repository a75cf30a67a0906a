package orchestrator

import (
	"bytes"
	"runtime"
	"sync"
	"testing"
	"time"
)

// goroutineID reads the running goroutine's number from its stack header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := bytes.Cut(bytes.TrimPrefix(buf, []byte("goroutine ")), []byte(" "))
	return string(id)
}

// TestWorkersReuseGoroutinesKeepAFewAndEndAtStop: functions run one after
// another run on one goroutine; of many that ran at once no more than
// maxIdle goroutines stay waiting; all end when stop closes.
func TestWorkersReuseGoroutinesKeepAFewAndEndAtStop(t *testing.T) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	w := newWorkers(stop, &wg, 4)

	ids := map[string]bool{}
	for range 100 {
		ran := make(chan string)
		w.Go(func() { ran <- goroutineID() })
		ids[<-ran] = true
		// Let the goroutine get back to waiting before the next one.
		deadline := time.Now().Add(5 * time.Second)
		for w.idle.Load() != 1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("100 functions one after another ran on %d goroutines, want 1", len(ids))
	}

	release := make(chan struct{})
	var running sync.WaitGroup
	for range 20 {
		running.Add(1)
		w.Go(func() {
			running.Done()
			<-release
		})
	}
	running.Wait() // 20 at once: the waiting one and 19 new
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for w.idle.Load() != 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // any goroutine still to decide does so
	if n := w.idle.Load(); n != 4 {
		t.Fatalf("%d goroutines wait for work after 20 ran at once, want maxIdle, 4", n)
	}

	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the workers did not end after stop")
	}
	// A function handed over after stop still runs, and its goroutine ends.
	ran := make(chan struct{})
	w.Go(func() { close(ran) })
	<-ran
	wg.Wait()
}
