package participants

import "sync"

// workers runs a Runtime's commands on at most max long-lived goroutines,
// one command at a time each, so that at most max commands are handled at
// once (Config.Concurrency). A goroutine started for every command starts
// with a small stack and grows it again, in every command, on its way into
// the Processor; a worker keeps its grown stack from one command to the
// next (unless the GC shrinks it while the worker waits).
// Workers start as work arrives and no worker is free, up to max; trim,
// which the Runtime's janitor calls now and then, makes the workers free at
// that moment exit, so that a quiet Runtime holds none; close makes all of
// them exit.
type workers struct {
	max int
	// work hands a function to a free worker: unbuffered, a send succeeds
	// only when a worker waits for it. A nil function makes it exit.
	work chan func()
	// exited holds a token when a worker exited, for a run waiting for a
	// free worker while max were running: it may start one now.
	exited chan struct{}
	quit   chan struct{} // closed by close
	wg     sync.WaitGroup

	mu   sync.Mutex
	live int // workers running; guarded by mu
}

// newWorkers returns workers for at most limit commands at once.
func newWorkers(limit int) *workers {
	return &workers{max: limit, work: make(chan func()), exited: make(chan struct{}, 1), quit: make(chan struct{})}
}

// run has f run by a worker, started if none is free and fewer than max
// run, or else as soon as one is free, and returns true; it returns false,
// without running f, once stopping is closed. f must not be nil. Nothing may
// call run after (or while) close is called.
func (w *workers) run(f func(), stopping <-chan struct{}) bool {
	for {
		select {
		case <-stopping:
			return false
		default:
		}
		select {
		case w.work <- f: // a free worker took it
			return true
		default:
		}
		if w.start(f) {
			return true
		}
		select {
		case <-stopping:
			return false
		case w.work <- f:
			return true
		case <-w.exited: // a worker left room for one: try again
		}
	}
}

// start starts a worker with f as its first function, unless max run.
func (w *workers) start(f func()) bool {
	w.mu.Lock()
	if w.live == w.max {
		w.mu.Unlock()
		return false
	}
	w.live++
	w.wg.Add(1)
	w.mu.Unlock()
	go w.loop(f)
	return true
}

// loop is a worker: it runs f, then each function handed to it, until it
// is handed nil (trim) or close is called.
func (w *workers) loop(f func()) {
	defer w.wg.Done()
	for f != nil {
		f()
		select {
		case f = <-w.work:
		case <-w.quit:
			f = nil
		}
	}
	w.mu.Lock()
	w.live--
	w.mu.Unlock()
	select {
	case w.exited <- struct{}{}:
	default: // a token is already there
	}
}

// trim makes the workers that wait for work now exit; busy ones stay.
func (w *workers) trim() {
	for {
		select {
		case w.work <- nil:
		default:
			return
		}
	}
}

// close makes every worker exit once its function returns, and waits for
// them.
func (w *workers) close() {
	close(w.quit)
	w.wg.Wait()
}
