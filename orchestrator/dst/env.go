package dst

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// env is what every simulated piece shares: the scheduler, the seed's
// random source, the fault probabilities, the counters and the trace.
type env struct {
	s      *sched
	rng    *rand.Rand
	f      Faults
	healed bool
	n      counters

	trace      io.Writer
	traceBuf   bytes.Buffer
	traceHash  uint64
	traceLines int
	violations []string
}

func newEnv(seed uint64, f Faults, trace io.Writer) *env {
	s := newSched(seed)
	return &env{s: s, rng: s.rng, f: f, trace: trace, traceHash: fnvOffset64}
}

const fnvOffset64 = 14695981039346656037

// counters count the faults and deliveries of the simulated infrastructure.
type counters struct {
	StoreOps, StoreErrors, StoreLostAnswers, StoreLate int
	PublishesLost, DuplicateMsgIDs, Delivered          int
	Redelivered, ExpiredCommands                       int
	Dropped, Duplicated, Delayed                       int
	ScansCut                                           int
}

func (c *counters) add(o counters) {
	c.StoreOps += o.StoreOps
	c.StoreErrors += o.StoreErrors
	c.StoreLostAnswers += o.StoreLostAnswers
	c.StoreLate += o.StoreLate
	c.PublishesLost += o.PublishesLost
	c.DuplicateMsgIDs += o.DuplicateMsgIDs
	c.Delivered += o.Delivered
	c.Redelivered += o.Redelivered
	c.ExpiredCommands += o.ExpiredCommands
	c.Dropped += o.Dropped
	c.Duplicated += o.Duplicated
	c.Delayed += o.Delayed
	c.ScansCut += o.ScansCut
}

// fault draws a fault of probability p; none once the run is healed.
func (e *env) fault(p float64) bool {
	if e.healed || p <= 0 {
		return false
	}
	return e.rng.Float64() < p
}

// between draws a duration in [lo, hi).
func (e *env) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(e.rng.Int64N(int64(hi-lo)))
}

// latency is a plain-NATS or stream message's time in flight: a few
// milliseconds, or with probability Delay up to four seconds.
func (e *env) latency() time.Duration {
	d := e.between(time.Millisecond, 20*time.Millisecond)
	if e.fault(e.f.Delay) {
		e.n.Delayed++
		d += e.between(0, 4*time.Second)
	}
	return d
}

// storeLatency is one way of a key-value operation: a few milliseconds, or
// with probability SlowStore up to two seconds.
func (e *env) storeLatency() time.Duration {
	d := e.between(time.Millisecond, 5*time.Millisecond)
	if e.fault(e.f.SlowStore) {
		e.n.Delayed++
		d += e.between(0, 2*time.Second)
	}
	return d
}

// timerLate is how late a timer fires: a few milliseconds, or with
// probability Delay up to half a second (a busy loop, a slow process).
func (e *env) timerLate() time.Duration {
	d := e.between(0, 3*time.Millisecond)
	if e.fault(e.f.Delay) {
		e.n.Delayed++
		d += e.between(0, 500*time.Millisecond)
	}
	return d
}

// send carries one plain-NATS message: dropped, or delivered once or twice,
// each after its own latency (so out of order).
func (e *env) send(what string, deliver func()) {
	if e.fault(e.f.Drop) {
		e.n.Dropped++
		e.tracef("drop %s", what)
		return
	}
	n := 1
	if e.fault(e.f.Duplicate) {
		e.n.Duplicated++
		n = 2
	}
	for range n {
		e.s.at(e.latency(), deliver)
	}
}

func (e *env) violate(format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	e.violations = append(e.violations, v)
	e.tracef("VIOLATION %s", v)
}

// tracef writes one trace line, prefixed with the simulated time, into the
// hash and to the trace writer.
func (e *env) tracef(format string, args ...any) {
	b := &e.traceBuf
	b.Reset()
	us := e.s.now / time.Microsecond
	fmt.Fprintf(b, "%d.%06d ", us/1e6, us%1e6)
	fmt.Fprintf(b, format, args...)
	b.WriteByte('\n')
	for _, c := range b.Bytes() {
		e.traceHash ^= uint64(c)
		e.traceHash *= 1099511628211
	}
	e.traceLines++
	if e.trace != nil {
		_, _ = e.trace.Write(b.Bytes())
	}
}
