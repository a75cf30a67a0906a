package dst

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"time"

	"github.com/natstx/natstx/orchestrator"
)

// This file is the cooperative scheduler: simulated time is a heap of
// events, and the code under test (the engine's tasks, the participants'
// in-doubt loops, the clients) runs in tasks. A task is a goroutine, but
// exactly one goroutine runs at any moment: the scheduler hands a baton to a
// task and waits until the task parks (waits for simulated time, a store
// answer, a reply) or ends, then runs the next event. So a run is a
// function of its seed, although the code it drives is written with
// goroutines and blocking calls. This is the only file of the package with a
// go statement (TestPure checks it).
//
// Every party (a coordinator instance, a participant) has a gate: its
// timers fire, its tasks start and resume through it. A paused gate (a
// process stopped with SIGSTOP) defers all of that until it is resumed; a
// killed gate (a process that died) drops its timers and releases its parked
// tasks with a failure, so that their goroutines end.

// simEvent is one entry of the heap: fn runs at simulated time at; seq
// breaks ties in the order events were scheduled.
type simEvent struct {
	at  time.Duration
	seq uint64
	fn  func()
}

// eventHeap is a binary min-heap of events by (at, seq).
type eventHeap []simEvent

func (q eventHeap) less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}

func (q *eventHeap) push(e simEvent) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *eventHeap) pop() simEvent {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = simEvent{}
	h = h[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && h.less(l, m) {
			m = l
		}
		if r < n && h.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}

// epoch is simulated time zero as a wall-clock time (Driver.Now).
var epoch = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

// sched runs events and tasks in simulated time.
type sched struct {
	rng *rand.Rand
	now time.Duration
	seq uint64
	q   eventHeap
	// back is where a running task hands the baton back.
	back chan struct{}
	// cur is the task that holds the baton; nil while the scheduler runs an
	// event itself.
	cur *task
	// tasks counts the task goroutines not yet ended.
	tasks int
	// taskSeq numbers tasks, for their names.
	taskSeq int
	// events counts the events run.
	events int
	// panicked holds a task's panic, re-raised by the scheduler.
	panicked string
	// afterEvent runs after every event (the simulator pumps the engines'
	// shards there).
	afterEvent func()
}

func newSched(seed uint64) *sched {
	return &sched{rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)), back: make(chan struct{})}
}

// at schedules fn d from now.
func (s *sched) at(d time.Duration, fn func()) {
	if d < 0 {
		d = 0
	}
	s.seq++
	s.q.push(simEvent{at: s.now + d, seq: s.seq, fn: fn})
}

// time returns simulated time as a time.Time.
func (s *sched) time() time.Time { return epoch.Add(s.now) }

// step runs the next event; false when there is none.
func (s *sched) step() bool {
	if len(s.q) == 0 {
		return false
	}
	e := s.q.pop()
	s.now = e.at
	s.events++
	e.fn()
	if s.afterEvent != nil {
		s.afterEvent()
	}
	return true
}

// runUntil runs events until done reports true, the heap is empty, or
// maxEvents ran; it reports whether done was reached.
func (s *sched) runUntil(done func() bool, maxEvents int) bool {
	for n := 0; n < maxEvents; n++ {
		if done() {
			return true
		}
		if !s.step() {
			return done()
		}
	}
	return done()
}

// task is one goroutine that runs under the baton.
type task struct {
	name string
	wake chan struct{}
	done bool
}

// spawn starts fn as a task through gate g: it first runs when g lets it
// (at once, or when a paused g resumes; never if g is dead by then).
func (s *sched) spawn(g *gate, name string, fn func()) {
	s.taskSeq++
	t := &task{name: fmt.Sprintf("%s#%d", name, s.taskSeq), wake: make(chan struct{})}
	s.at(0, func() {
		g.run(func() {
			s.tasks++
			go func() {
				<-t.wake
				defer func() {
					if r := recover(); r != nil {
						s.panicked = fmt.Sprintf("task %s panicked: %v\n%s", t.name, r, debug.Stack())
					}
					t.done = true
					s.tasks--
					s.back <- struct{}{}
				}()
				fn()
			}()
			s.resume(t)
		})
	})
}

// resume hands the baton to t until it parks or ends.
func (s *sched) resume(t *task) {
	if t.done {
		return
	}
	prev := s.cur
	s.cur = t
	t.wake <- struct{}{}
	<-s.back
	s.cur = prev
	if s.panicked != "" {
		panic(s.panicked)
	}
}

// waiter is a parked task waiting for one thing: simulated time, an answer.
// The first fire wins; later ones do nothing.
type waiter struct {
	s      *sched
	t      *task
	g      *gate
	fired  bool
	parked bool
	ok     bool
	err    error
	// id orders waiters, for a deterministic release.
	id uint64
}

// newWaiter returns a waiter for the running task, resumed through g. It
// panics outside a task: a blocking call from an event (a timer callback, a
// shard being pumped) would stall the simulation.
func (s *sched) newWaiter(g *gate, what string) *waiter {
	if s.cur == nil {
		panic("dst: blocking call (" + what + ") outside a task: timer callbacks and shard work must not block")
	}
	s.seq++
	return &waiter{s: s, t: s.cur, g: g, id: s.seq}
}

// wait parks the running task until w fires, and returns w's result.
func (w *waiter) wait() (bool, error) {
	s := w.s
	if s.cur != w.t {
		panic("dst: wait from another task than the waiter's")
	}
	if !w.fired && w.g.state == gateDead {
		w.fired, w.ok, w.err = true, false, errDead
	}
	if !w.fired {
		w.parked = true
		w.g.park(w)
		s.back <- struct{}{}
		<-w.t.wake
		w.parked = false
	}
	return w.ok, w.err
}

// fire resumes w's task through its gate with a result (a dead gate has
// released it already).
func (w *waiter) fire(ok bool, err error) {
	if w.fired {
		return
	}
	w.g.run(func() { w.release(ok, err) })
}

// release gives w its result and resumes its task, whatever its gate's
// state: now when the scheduler holds the baton, else from an event (a task
// cannot hand the baton to another). A waiter released before its task
// waits makes wait return at once.
func (w *waiter) release(ok bool, err error) {
	if w.fired {
		return
	}
	w.fired, w.ok, w.err = true, ok, err
	w.g.unpark(w)
	if !w.parked {
		return
	}
	if w.s.cur != nil {
		w.s.at(0, func() { w.s.resume(w.t) })
		return
	}
	w.s.resume(w.t)
}

// gateState is the state of a party's process.
type gateState uint8

const (
	gateRunning gateState = iota
	gatePaused
	gateDead
)

// gate is a party's process as the scheduler sees it.
type gate struct {
	s     *sched
	name  string
	state gateState
	// deferred holds what arrived while paused, run in order on resume.
	deferred []func()
	// parked are the waiters of this gate's tasks, released when it dies.
	parked map[uint64]*waiter
}

func (s *sched) newGate(name string) *gate {
	return &gate{s: s, name: name, parked: map[uint64]*waiter{}}
}

// run runs fn now if the gate runs, later if it is paused, never if it is
// dead.
func (g *gate) run(fn func()) {
	switch g.state {
	case gateRunning:
		fn()
	case gatePaused:
		g.deferred = append(g.deferred, fn)
	}
}

func (g *gate) park(w *waiter)   { g.parked[w.id] = w }
func (g *gate) unpark(w *waiter) { delete(g.parked, w.id) }

// pause stops the process: nothing of it runs until resume.
func (g *gate) pause() {
	if g.state == gateRunning {
		g.state = gatePaused
	}
}

// resumeGate lets a paused process run again: what it missed runs now, in
// the order it arrived.
func (g *gate) resumeGate() {
	if g.state != gatePaused {
		return
	}
	g.state = gateRunning
	d := g.deferred
	g.deferred = nil
	for _, fn := range d {
		g.s.at(0, func() { g.run(fn) })
	}
}

// errDead is what a dead process's pending calls return.
var errDead = fmt.Errorf("dst: the process died")

// kill ends the process: its timers and deferred work are dropped and its
// parked tasks are released with errDead (their goroutines must then end).
func (g *gate) kill() {
	if g.state == gateDead {
		return
	}
	g.state = gateDead
	g.deferred = nil
	ids := make([]uint64, 0, len(g.parked))
	for id := range g.parked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		w := g.parked[id]
		w.fired, w.ok, w.err = true, false, errDead
		delete(g.parked, id)
		g.s.at(0, func() { g.s.resume(w.t) })
	}
}

// driver is orchestrator.Driver for one party, through its gate. jitter, if
// set, draws how late a timer fires (a busy loop, a slow process).
type driver struct {
	g      *gate
	jitter func() time.Duration
}

var _ orchestrator.Driver = (*driver)(nil)

func (d *driver) Now() time.Time { return d.g.s.time() }

// simTimer is a timer armed by AfterFunc.
type simTimer struct{ stopped, fired bool }

func (t *simTimer) Stop() bool {
	if t.fired || t.stopped {
		return false
	}
	t.stopped = true
	return true
}

func (d *driver) AfterFunc(after time.Duration, f func()) orchestrator.Timer {
	t := &simTimer{}
	if d.jitter != nil {
		after += d.jitter()
	}
	g := d.g
	g.s.at(after, func() {
		if t.stopped {
			return
		}
		g.run(func() {
			if t.stopped || t.fired {
				return
			}
			t.fired = true
			f()
		})
	})
	return t
}

func (d *driver) Go(f func()) {
	if d.g.state == gateDead {
		return
	}
	d.g.s.spawn(d.g, d.g.name, f)
}

func (d *driver) Sleep(after time.Duration, stop <-chan struct{}) bool {
	if closed(stop) || d.g.state == gateDead {
		return false
	}
	w := d.g.s.newWaiter(d.g, "Sleep")
	d.g.s.at(after, func() { w.fire(true, nil) })
	ok, _ := w.wait()
	return ok && !closed(stop)
}

// WithTimeout is a context whose deadline is in simulated time: a timer of
// this party ends it, so that whether a call is made in time is a function
// of the seed, never of how fast the machine ran the simulation.
func (d *driver) WithTimeout(parent context.Context, after time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	at := d.Now().Add(after)
	if pat, ok := parent.Deadline(); ok && pat.Before(at) {
		at = pat
	}
	onTime := &driver{g: d.g} // a deadline is kept to the tick, whatever the party's jitter
	t := onTime.AfterFunc(after, func() { cancel(context.DeadlineExceeded) })
	return simDeadline{Context: ctx, at: at}, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// simDeadline is a context ended by a simulated timer: its Err is
// context.DeadlineExceeded once that timer fired, as a context of
// context.WithTimeout.
type simDeadline struct {
	context.Context
	at time.Time
}

func (c simDeadline) Deadline() (time.Time, bool) { return c.at, true }

func (c simDeadline) Err() error {
	err := c.Context.Err()
	if err != nil && context.Cause(c.Context) == context.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return err
}

// closed reports whether ch is closed (nil is never closed).
func closed(ch <-chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
