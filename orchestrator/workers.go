package orchestrator

import (
	"sync"
	"sync/atomic"
)

// workers runs functions on goroutines that stay for the next function
// once theirs returns, instead of a new goroutine for each. The engine runs
// one function per durable write and per command publish awaiting its
// PubAck, thousands a second: a new goroutine starts with a small stack and
// grew it again for each (runtime.newstack and copystack were 7% of all CPU
// in a profile of natstx bench at 256 in flight), where a goroutine that
// stays keeps the stack it grew.
//
// At most maxIdle goroutines wait for work; one that finds that many
// waiting ends. All of them end once stop is closed, so that an engine's
// Stop, which waits for wg, leaves none behind.
type workers struct {
	work    chan func()
	stop    <-chan struct{}
	wg      *sync.WaitGroup
	idle    atomic.Int32
	maxIdle int32
}

// maxIdleWorkers bounds the goroutines that wait for work: about what a
// coordinator runs at once at 256 transactions in flight, a few MB of
// stacks.
const maxIdleWorkers = 512

func newWorkers(stop <-chan struct{}, wg *sync.WaitGroup, maxIdle int) *workers {
	return &workers{work: make(chan func()), stop: stop, wg: wg, maxIdle: int32(maxIdle)}
}

// Go runs f on a waiting goroutine, or on a new one if none waits.
func (w *workers) Go(f func()) {
	select {
	case w.work <- f:
		return
	default:
	}
	w.wg.Add(1)
	go w.run(f)
}

// run runs f, then the functions handed to it while it waits, until stop
// or until enough others wait.
func (w *workers) run(f func()) {
	defer w.wg.Done()
	for {
		f()
		if w.idle.Add(1) > w.maxIdle {
			w.idle.Add(-1)
			return
		}
		select {
		case f = <-w.work:
			w.idle.Add(-1)
		case <-w.stop:
			w.idle.Add(-1)
			return
		}
	}
}
