package orchestrator

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Admission holds begins back when the coordinator falls behind.
//
// A transaction is "starting" from its begin until its first round ends: its
// decision (every vote in, a no, a timeout or an abort), or its first
// re-send, whichever comes first. At most limit transactions start at once;
// a begin beyond it waits, first come first served, until one ends its first
// round or its own timeout (or context) ends, then it is refused with
// ErrOverloaded without having sent anything. At most Config.MaxInFlight
// begins wait; more are refused at once.
//
// Why: once the answers lag behind RetryBase every command goes out again,
// the participants answer twice, and a rate the machine sustained with a
// short backlog is no longer sustained with a long one: the run stays
// behind (docs/BENCHMARKS.md, "Overload"). Holding begins back keeps the
// backlog short, so the answers stay ahead of the re-send timers, while the
// begins that wait cost no broker work.
//
// The limit adapts (additive-increase, multiplicative-decrease, as TCP's
// congestion window): every admitWindow it falls by a quarter if more than
// one transaction in ten got its first vote later than half of RetryBase
// after its begin, and grows by an eighth if it was reached and the votes
// came in time. Only the first vote of each transaction counts: a slow or
// dead participant delays its own vote, not everyone's, while a backlog in
// the coordinator or the broker delays them all. A transaction whose
// participant is silent ends its first round at its first re-send, so a dead
// participant holds no more than a RetryBase's worth of begins.
type admission struct {
	// target is the first-vote delay beyond which a transaction counts as
	// slow; floor and ceiling bound the limit.
	target         time.Duration
	floor, ceiling int

	mu       sync.Mutex
	limit    int
	starting int
	// queue holds the waiting begins, oldest first.
	queue []*admitTicket
	// win is the current window's record; winEnd when it ends (zero: not
	// begun).
	win    admitWindow
	winEnd time.Time
}

// admitWindow is what one window saw: first votes, the slow ones among
// them, and the most transactions starting at once.
type admitWindow struct {
	votes, slow, peak int
}

// admitWindowLen is how often the limit is adjusted.
const admitWindowLen = 100 * time.Millisecond

// Admission bounds: the limit starts at admitInitial and never goes below
// admitFloor (or above Config.MaxInFlight). Below 256 in flight a
// coordinator batches less and completes fewer transactions a second (on
// two cores, 4,500 at 64 against 5,900 at 256): a lower floor, cut to
// during a stall, kept the rate under what was offered once the stall was
// over (docs/BENCHMARKS.md, "Admission").
const (
	admitInitial = 1024
	admitFloor   = 256
)

// admitPoll is how often a begin waiting for room in a simulated engine
// looks whether it got some. It must be positive: a simulated sleep of 0
// runs again at the same simulated time, so a waiting begin would keep
// simulated time from advancing, and with it whatever (a vote, a re-send
// timer, its own timeout) would end the wait.
const admitPoll = time.Millisecond

// admitTicket is a begin waiting for room; granted once it has it (the
// granter counted it as starting), and ch closed then.
type admitTicket struct {
	granted bool
	ch      chan struct{}
}

// isGranted reports, without waiting, whether t got room.
func (t *admitTicket) isGranted() bool {
	select {
	case <-t.ch:
		return true
	default:
		return false
	}
}

func newAdmission(retryBase time.Duration, maxInFlight int) *admission {
	floor := min(admitFloor, maxInFlight)
	return &admission{target: retryBase / 2, floor: floor, ceiling: maxInFlight, limit: max(floor, min(admitInitial, maxInFlight))}
}

// nextLimit is the limit after a window that saw w.
func nextLimit(limit, floor, ceiling int, w admitWindow) int {
	switch {
	case w.votes > 0 && w.slow*10 > w.votes:
		return max(floor, limit-limit/4)
	case w.peak >= limit:
		return min(ceiling, limit+limit/8+1)
	}
	return limit
}

// tryEnter counts a begin as starting if there is room and no one waits
// before it (nil, true); otherwise it queues a ticket and returns it (t,
// true), unless as many begins as the ceiling wait already (nil, false).
func (a *admission) tryEnter() (*admitTicket, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queue) == 0 && a.starting < a.limit {
		a.starting++
		a.win.peak = max(a.win.peak, a.starting)
		return nil, true
	}
	if len(a.queue) >= a.ceiling {
		return nil, false
	}
	t := &admitTicket{ch: make(chan struct{})}
	a.queue = append(a.queue, t)
	a.win.peak = max(a.win.peak, a.starting+len(a.queue))
	return t, true
}

// withdraw takes a waiting ticket out of the queue; false if it was granted
// meanwhile (its begin then holds room and must use or return it).
func (a *admission) withdraw(t *admitTicket) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.granted {
		return false
	}
	for i, q := range a.queue {
		if q == t {
			a.queue = append(a.queue[:i], a.queue[i+1:]...)
			break
		}
	}
	return true
}

// leave ends a transaction's first round and hands its room on.
func (a *admission) leave() {
	a.mu.Lock()
	a.starting--
	a.grantLocked()
	a.mu.Unlock()
}

// grantLocked gives room to waiting tickets, oldest first, while the limit
// allows.
func (a *admission) grantLocked() {
	for len(a.queue) > 0 && a.starting < a.limit {
		t := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		t.granted = true
		a.starting++
		close(t.ch)
	}
}

// firstVote records how long after its begin a transaction got its first
// vote, at now; it closes the window once it is over and adjusts the limit.
func (a *admission) firstVote(delay time.Duration, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.win.votes++
	if delay > a.target {
		a.win.slow++
	}
	if a.winEnd.IsZero() {
		a.winEnd = now.Add(admitWindowLen)
		return
	}
	if now.Before(a.winEnd) {
		return
	}
	a.limit = nextLimit(a.limit, a.floor, a.ceiling, a.win)
	a.win = admitWindow{peak: a.starting + len(a.queue)}
	a.winEnd = now.Add(admitWindowLen)
	a.grantLocked()
}

// state is the limit, the transactions starting and the begins waiting.
func (a *admission) state() (limit, starting, waiting int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit, a.starting, len(a.queue)
}

// admit waits until the begin of transaction id may start, or until
// deadline (engine clock), ctx or the engine's stop; on success the caller
// holds room and must call admission.leave once its first round ends (or it
// does not start after all).
func (e *Engine) admit(ctx context.Context, id string, deadline time.Time) error {
	t, ok := e.admission.tryEnter()
	if !ok {
		e.stats.Rejected.Add(1)
		return fmt.Errorf("%w: %d begins wait for room to start already (Config.MaxInFlight)", ErrOverloaded, e.cfg.MaxInFlight)
	}
	if t == nil {
		return nil
	}
	e.stats.Waited.Add(1)
	wait, cancel := e.withTimeout(ctx, deadline.Sub(e.now()))
	defer cancel()
	if e.coop { // a simulated engine yields to the simulator meanwhile
		for !t.isGranted() && wait.Err() == nil && e.sleep(admitPoll) {
		}
	} else {
		select {
		case <-t.ch:
		case <-wait.Done():
		case <-e.stop:
		}
	}
	if !e.admission.withdraw(t) {
		return nil // granted, perhaps as it gave up: it starts
	}
	select {
	case <-e.stop:
		return ErrStopped
	default:
	}
	switch {
	case !e.running.Load():
		return ErrStopped
	case ctx.Err() != nil:
		return ctx.Err()
	}
	limit, _, _ := e.admission.state()
	e.stats.Rejected.Add(1)
	return fmt.Errorf("%w: %s found no room to start within its timeout (%d transactions may start at once; the coordinator is behind)", ErrOverloaded, id, limit)
}
