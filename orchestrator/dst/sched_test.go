package dst

import (
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
