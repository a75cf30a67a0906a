package dst

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// drain runs e's events until none is left (bounded).
func drain(t *testing.T, e *env) {
	t.Helper()
	if !e.s.runUntil(func() bool { return len(e.s.q) == 0 }, 1_000_000) {
		t.Fatal("events still queued after a million")
	}
}

func TestSchedulerTasksTakeTurnsInSimulatedTime(t *testing.T) {
	run := func() string {
		e := newEnv(1, Faults{}, nil)
		g := e.s.newGate("p")
		d := &driver{g: g}
		var log []string
		for i, sleeps := range [][]time.Duration{{30, 10}, {10, 10, 10}, {0, 25}} {
			d.Go(func() {
				for _, ms := range sleeps {
					if !d.Sleep(ms*time.Millisecond, nil) {
						log = append(log, "stopped")
						return
					}
					log = append(log, fmt.Sprintf("%v:t%d", e.s.now, i))
				}
			})
		}
		drain(t, e)
		if e.s.tasks != 0 {
			t.Fatalf("%d tasks still running", e.s.tasks)
		}
		return strings.Join(log, " ")
	}
	a, b := run(), run()
	want := "0s:t2 10ms:t1 20ms:t1 25ms:t2 30ms:t0 30ms:t1 40ms:t0"
	if a != want || b != a {
		t.Fatalf("runs:\n  %s\n  %s\nwant\n  %s", a, b, want)
	}
}

func TestSchedulerSleepZeroYieldsToWhatIsQueued(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	g := e.s.newGate("p")
	d := &driver{g: g}
	var log []string
	d.Go(func() {
		log = append(log, "a1")
		e.s.at(0, func() { log = append(log, "event") })
		d.Sleep(0, nil)
		log = append(log, "a2")
	})
	drain(t, e)
	if got := strings.Join(log, " "); got != "a1 event a2" {
		t.Fatalf("got %q", got)
	}
}

func TestSchedulerPausedGateDefersTimersAndTasks(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	g := e.s.newGate("c1")
	d := &driver{g: g}
	var log []string
	d.AfterFunc(100*time.Millisecond, func() { log = append(log, fmt.Sprintf("timer@%v", e.s.now)) })
	stopped := d.AfterFunc(150*time.Millisecond, func() { log = append(log, "stopped timer fired") })
	d.Go(func() {
		d.Sleep(50*time.Millisecond, nil)
		log = append(log, fmt.Sprintf("task@%v", e.s.now))
	})
	e.s.at(10*time.Millisecond, g.pause)
	e.s.at(120*time.Millisecond, func() {
		if !stopped.Stop() {
			t.Error("Stop of a timer not fired yet returned false")
		}
	})
	e.s.at(2*time.Second, g.resumeGate)
	drain(t, e)
	if got := strings.Join(log, " "); got != "task@2s timer@2s" {
		t.Fatalf("got %q", got)
	}
}

func TestSchedulerKilledGateReleasesItsTasks(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	g := e.s.newGate("c1")
	d := &driver{g: g}
	other := &driver{g: e.s.newGate("client")}
	var log []string
	d.AfterFunc(time.Second, func() { log = append(log, "timer of a dead process") })
	d.Go(func() {
		ok := d.Sleep(time.Hour, nil)
		log = append(log, fmt.Sprintf("sleeper ok=%v@%v", ok, e.s.now))
	})
	// A task of another party, blocked in a call into the dead process.
	other.Go(func() {
		w := e.s.newWaiter(g, "call")
		_, err := w.wait()
		log = append(log, fmt.Sprintf("caller err=%v@%v", errors.Is(err, errDead), e.s.now))
	})
	e.s.at(100*time.Millisecond, g.kill)
	drain(t, e)
	if got := strings.Join(log, " "); got != "sleeper ok=false@100ms caller err=true@100ms" {
		t.Fatalf("got %q", got)
	}
	if e.s.tasks != 0 {
		t.Fatalf("%d tasks still running", e.s.tasks)
	}
	d.Go(func() { t.Error("a task started on a dead gate") })
	drain(t, e)
}

func TestSchedulerSleepStopsWhenStopIsClosed(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	d := &driver{g: e.s.newGate("p")}
	stop := make(chan struct{})
	close(stop)
	var ok = true
	d.Go(func() { ok = d.Sleep(time.Second, stop) })
	drain(t, e)
	if ok {
		t.Fatal("Sleep with a closed stop channel returned true")
	}
}

func TestSchedulerBlockingOutsideATaskPanics(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	d := &driver{g: e.s.newGate("p")}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "outside a task") {
			t.Fatalf("recovered %v", r)
		}
	}()
	d.Sleep(time.Second, nil)
}

func TestSchedulerTaskPanicReachesTheScheduler(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	d := &driver{g: e.s.newGate("p")}
	d.Go(func() { panic("boom") })
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "boom") {
			t.Fatalf("recovered %v", r)
		}
	}()
	drain(t, e)
}

// TestWithTimeoutEndsBySimulatedTimeOnly: a context of Driver.WithTimeout
// ends when its simulated time has passed, however long the machine took in
// real time, and a paused party's deadline waits for it like its timers; a
// cancelled one is context.Canceled, and a parent's end reaches it.
func TestWithTimeoutEndsBySimulatedTimeOnly(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	g := e.s.newGate("c1")
	d := &driver{g: g}
	ctx, cancel := d.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if dl, ok := ctx.Deadline(); !ok || !dl.Equal(d.Now().Add(10*time.Millisecond)) {
		t.Fatalf("deadline %v %v, want %v", dl, ok, d.Now().Add(10*time.Millisecond))
	}
	time.Sleep(30 * time.Millisecond) // real time only
	if err := ctx.Err(); err != nil {
		t.Fatalf("after 30 ms of real time and none simulated: %v", err)
	}
	var at time.Duration
	var seen error
	d.Go(func() {
		d.Sleep(9*time.Millisecond, nil)
		if err := ctx.Err(); err != nil {
			t.Errorf("at %v: %v", e.s.now, err)
		}
		d.Sleep(2*time.Millisecond, nil)
		at, seen = e.s.now, ctx.Err()
	})
	drain(t, e)
	if seen != context.DeadlineExceeded || at != 11*time.Millisecond {
		t.Fatalf("at %v: %v, want context.DeadlineExceeded at 11ms", at, seen)
	}

	cctx, ccancel := d.WithTimeout(context.Background(), time.Hour)
	ccancel()
	if err := cctx.Err(); err != context.Canceled {
		t.Fatalf("cancelled: %v, want context.Canceled", err)
	}
	parent, end := context.WithCancel(context.Background())
	pctx, pcancel := d.WithTimeout(parent, time.Hour)
	defer pcancel()
	end()
	if err := pctx.Err(); err != context.Canceled {
		t.Fatalf("parent ended: %v, want context.Canceled", err)
	}

	g.pause()
	tctx, tcancel := d.WithTimeout(context.Background(), time.Millisecond)
	defer tcancel()
	e.s.at(50*time.Millisecond, g.resumeGate)
	e.s.at(40*time.Millisecond, func() {
		if err := tctx.Err(); err != nil {
			t.Errorf("paused at %v: %v", e.s.now, err)
		}
	})
	drain(t, e)
	if err := tctx.Err(); err != context.DeadlineExceeded {
		t.Fatalf("after the resume: %v, want context.DeadlineExceeded", err)
	}
}
