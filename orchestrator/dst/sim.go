package dst

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// Config configures one simulated run. Zero fields take defaults; fields
// left to the seed are drawn from it.
type Config struct {
	// Seed drives the whole run.
	Seed uint64
	// Transactions is how many transactions the workload begins. Default 200.
	Transactions int
	// Coordinators is the number of coordinator instances. Default: 1 to 3,
	// from the seed.
	Coordinators int
	// Participants is the number of participant services transactions draw
	// from (2 to 5 each). Default: 5 to 8, from the seed.
	Participants int
	// Faults are the fault probabilities. Default: drawn from the seed.
	Faults *Faults
	// HealLimit bounds the simulated time the run may take to reach
	// quiescence once faults stop; a run still busy then is a violation.
	// Default 10 minutes.
	HealLimit time.Duration
	// Trace, when set, receives the trace: one line per event.
	Trace io.Writer

	// EarlyCommitAnswer answers participants in doubt as the engine's
	// resolve did before it was fixed: commit from memory as soon as the
	// state machine decided commit, before the commit record is durable (so
	// before it can be refused). A known bug the simulator must keep
	// catching; see docs/SIMULATION.md, "Findings".
	EarlyCommitAnswer bool

	// bug plants a deliberate protocol bug, for the tests that prove the
	// checker catches one.
	bug bug
}

// bug names a deliberately broken model, planted by tests.
type bug uint8

const (
	_ bug = iota // no bug
	// bugCommitOnPrepare: a participant applies its change for good when it
	// prepares, as if prepare were commit.
	bugCommitOnPrepare
	// bugSendBeforePersist: the driver sends commit before the commit
	// decision is durable, and sometimes crashes before writing it.
	bugSendBeforePersist
	// bugVolatileParticipant: a participant keeps its records in memory only
	// and loses them when it crashes.
	bugVolatileParticipant
	// bugAnswerAbortWhenUnknown: a coordinator answers abort to a participant
	// in doubt without recording it, when it has no record.
	bugAnswerAbortWhenUnknown
)

// Faults are the probabilities of each fault, each in [0, 1].
type Faults struct {
	// Drop: a reply, in-doubt question or answer is lost (plain NATS).
	Drop float64
	// Duplicate: a reply, question or answer is delivered twice.
	Duplicate float64
	// Delay: a message is held for up to four seconds instead of a few
	// milliseconds, so it arrives late and out of order; a timer fires up to
	// half a second late (a busy shard, a paused process).
	Delay float64
	// SlowStore: a record operation takes up to two seconds (a stream leader
	// election, a slow disk).
	SlowStore float64
	// PublishLost: a command is not stored by the stream (its publish failed).
	PublishLost float64
	// AckLost: a participant's acknowledgement of a command message is lost,
	// so the stream redelivers it after AckWait.
	AckLost float64
	// CrashCoordinator: a coordinator crashes at an event it handles (before
	// or after handling it) or between two sends of one Ready.
	CrashCoordinator float64
	// CrashParticipant: a participant crashes at an event it handles, before
	// or after handling it (after: its record is written, its ack is not).
	CrashParticipant float64
	// StoreError: a write to the record bucket fails; half the time the write
	// was applied and only its answer was lost.
	StoreError float64
	// LateStore: a key-value operation is applied after its caller gave up
	// waiting (a timeout), so the caller does not know it happened.
	LateStore float64
	// HandlerError: a participant's commit or abort fails this time (it is
	// answered "failed" and redelivered).
	HandlerError float64
	// VoteNo: a participant votes abort (workload, not a fault).
	VoteNo float64
	// ClientAbort: the client asks to abort a transaction at a random moment
	// (workload, not a fault).
	ClientAbort float64
}

func (f Faults) String() string {
	return fmt.Sprintf("drop=%.3f dup=%.3f delay=%.3f slowstore=%.3f publost=%.3f acklost=%.3f crashc=%.4f crashp=%.4f storeerr=%.3f handlererr=%.3f voteno=%.3f clientabort=%.3f",
		f.Drop, f.Duplicate, f.Delay, f.SlowStore, f.PublishLost, f.AckLost, f.CrashCoordinator, f.CrashParticipant, f.StoreError, f.HandlerError, f.VoteNo, f.ClientAbort)
}

// drawFaults picks fault probabilities from the seed: each fault is off in
// one run out of five, else uniform up to its maximum.
func drawFaults(rng *rand.Rand) Faults {
	p := func(max float64) float64 {
		if rng.IntN(5) == 0 {
			return 0
		}
		return rng.Float64() * max
	}
	return Faults{
		Drop: p(0.2), Duplicate: p(0.1), Delay: p(0.1), SlowStore: p(0.2), PublishLost: p(0.05), AckLost: p(0.1),
		CrashCoordinator: p(0.01), CrashParticipant: p(0.01), StoreError: p(0.2), HandlerError: p(0.1),
		VoteNo: p(0.15), ClientAbort: p(0.1),
	}
}

// Timing of the simulated world.
const (
	minPrepareTimeout = 300 * time.Millisecond
	maxPrepareTimeout = 2 * time.Second
	retryBase         = 100 * time.Millisecond
	retryMax          = 800 * time.Millisecond
	abortSends        = 3
	leaseTTL          = 1500 * time.Millisecond
	scanEvery         = leaseTTL / 2 // recovery scan, as the engine's
	inDoubtEvery      = 500 * time.Millisecond
	persistFirstWait  = 50 * time.Millisecond // the engine's persist retry backoff
	persistMaxWait    = 2 * time.Second
	healAfter         = 2 * time.Second // after the last begin, faults stop
	meanArrival       = 20 * time.Millisecond
)

// Stats count what happened in a run.
type Stats struct {
	Events           int
	Delivered        int // command deliveries to a participant
	Redelivered      int
	PublishesLost    int
	Dropped          int
	Duplicated       int
	Delayed          int
	CoordCrashes     int
	PartCrashes      int
	StoreErrors      int
	InDoubtQueries   int
	InDoubtResolved  int
	RecordedAborts   int
	LateAbortRecords int // aborts recorded after the commit record was purged
	CommitsRefused   int
	Recovered        int
	Rejected         int // commands a participant rejected as contradicting its record
	ClientAborts     int
}

func (s *Stats) add(o Stats) {
	s.Events += o.Events
	s.Delivered += o.Delivered
	s.Redelivered += o.Redelivered
	s.PublishesLost += o.PublishesLost
	s.Dropped += o.Dropped
	s.Duplicated += o.Duplicated
	s.Delayed += o.Delayed
	s.CoordCrashes += o.CoordCrashes
	s.PartCrashes += o.PartCrashes
	s.StoreErrors += o.StoreErrors
	s.InDoubtQueries += o.InDoubtQueries
	s.InDoubtResolved += o.InDoubtResolved
	s.RecordedAborts += o.RecordedAborts
	s.LateAbortRecords += o.LateAbortRecords
	s.CommitsRefused += o.CommitsRefused
	s.Recovered += o.Recovered
	s.Rejected += o.Rejected
	s.ClientAborts += o.ClientAborts
}

// Result is what a run found.
type Result struct {
	Seed         uint64
	Coordinators int
	Participants int
	Faults       Faults
	// Transactions begun by the workload; Committed ended committed at every
	// participant, Aborted at none.
	Transactions, Committed, Aborted int
	// Violations describe each broken guarantee; empty when the run passed.
	Violations []string
	// SimTime is the simulated time the run took, HealedAt when its faults
	// stopped.
	SimTime, HealedAt time.Duration
	// TraceHash is the FNV-64a hash of the whole trace: equal for equal
	// seeds.
	TraceHash  uint64
	TraceLines int
	Stats      Stats
}

// Failed reports whether the run found a violation.
func (r Result) Failed() bool { return len(r.Violations) > 0 }

// ReplayCommand is the command that replays seed, writing its trace.
func ReplayCommand(seed uint64, transactions int) string {
	return fmt.Sprintf("go test ./orchestrator/dst -run 'TestSimulation$' -count=1 -v -dst.seed=%d -dst.tx=%d -dst.trace=dst-%d.trace", seed, transactions, seed)
}

// Summary is one line with the run's figures.
func (r Result) Summary() string {
	return fmt.Sprintf("seed=%d coordinators=%d participants=%d transactions=%d committed=%d aborted=%d violations=%d simtime=%v events=%d [%s]",
		r.Seed, r.Coordinators, r.Participants, r.Transactions, r.Committed, r.Aborted, len(r.Violations), r.SimTime, r.Stats.Events, r.Faults)
}

// event is one entry of the queue: fn runs at simulated time at; seq breaks
// ties in the order events were scheduled.
type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

// queue is a binary min-heap of events by (at, seq).
type queue []event

func (q queue) less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}

func (q *queue) push(e event) {
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

func (q *queue) pop() event {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = event{}
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

// sim is one run's world.
type sim struct {
	cfg      Config
	f        Faults
	rng      *rand.Rand
	now      time.Duration
	seq      uint64
	q        queue
	healed   bool
	healTime time.Duration

	coords  []*coordinator
	parts   []*participant
	partBy  map[string]*participant
	coordBy map[string]*coordinator
	store   *store
	work    []*workTx
	workBy  map[string]*workTx

	// busy counters: the run is quiescent when all are zero after healing.
	pendingBegins, pendingStore, unacked, prepared int
	seqMsg                                         int

	traceBuf   bytes.Buffer
	traceHash  uint64
	traceLines int

	res        Result
	violations []string
}

// Run simulates one seed and checks the guarantees.
func Run(cfg Config) Result {
	s := newSim(cfg)
	s.run()
	return s.result()
}

func newSim(cfg Config) *sim {
	if cfg.Transactions <= 0 {
		cfg.Transactions = 200
	}
	if cfg.HealLimit <= 0 {
		cfg.HealLimit = 10 * time.Minute
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	if cfg.Coordinators <= 0 {
		cfg.Coordinators = 1 + rng.IntN(3)
	}
	if cfg.Participants <= 0 {
		cfg.Participants = 5 + rng.IntN(4)
	}
	cfg.Participants = max(cfg.Participants, 5) // a transaction has up to 5
	f := drawFaults(rng)
	if cfg.Faults != nil {
		f = *cfg.Faults
	}
	s := &sim{
		cfg: cfg, f: f, rng: rng,
		partBy: map[string]*participant{}, coordBy: map[string]*coordinator{},
		store: newStore(), workBy: map[string]*workTx{}, traceHash: fnvOffset,
	}
	for i := range cfg.Coordinators {
		c := &coordinator{s: s, name: "c" + strconv.Itoa(i+1), up: true, active: map[string]*centry{}, finished: map[string]bool{}}
		s.coords = append(s.coords, c)
		s.coordBy[c.name] = c
	}
	for i := range cfg.Participants {
		p := &participant{s: s, name: "p" + strconv.Itoa(i+1), up: true, recs: map[string]*precord{}}
		s.parts = append(s.parts, p)
		s.partBy[p.name] = p
	}
	s.res = Result{Seed: cfg.Seed, Coordinators: cfg.Coordinators, Participants: cfg.Participants, Faults: f}
	return s
}

const fnvOffset = 14695981039346656037

// run plays the workload, stops the faults, and runs to quiescence.
func (s *sim) run() {
	s.tracef("run seed=%d coordinators=%d participants=%d transactions=%d faults=[%s]",
		s.cfg.Seed, s.cfg.Coordinators, s.cfg.Participants, s.cfg.Transactions, s.f)
	s.plan()
	for _, c := range s.coords {
		s.after(time.Duration(s.rng.Int64N(int64(scanEvery))), c.scanLoop)
	}
	for len(s.q) > 0 {
		e := s.q.pop()
		s.now = e.at
		s.res.Stats.Events++
		e.fn()
		if s.healed && !s.busy() {
			break
		}
		if s.healed && s.now > s.healTime+s.cfg.HealLimit {
			s.violate("not quiescent %v after the faults stopped: %s", s.cfg.HealLimit, s.busyReport())
			break
		}
	}
	s.res.SimTime = s.now
	s.tracef("end busy=%v", s.busy())
	s.check()
}

// heal stops every fault and restarts every party that is down.
func (s *sim) heal() {
	s.healed = true
	s.healTime = s.now
	s.tracef("heal: faults off, every party restarts")
	for _, c := range s.coords {
		if !c.up {
			c.restart()
		}
	}
	for _, p := range s.parts {
		if !p.up {
			p.restart()
		}
	}
}

func (s *sim) busy() bool {
	if s.pendingBegins > 0 || s.pendingStore > 0 || s.unacked > 0 || s.prepared > 0 {
		return true
	}
	for _, c := range s.coords {
		if len(c.active) > 0 {
			return true
		}
	}
	return false
}

func (s *sim) busyReport() string {
	n := 0
	for _, c := range s.coords {
		n += len(c.active)
	}
	return fmt.Sprintf("begins=%d store_ops=%d unacked_commands=%d prepared=%d active=%d",
		s.pendingBegins, s.pendingStore, s.unacked, s.prepared, n)
}

// after schedules fn d from now.
func (s *sim) after(d time.Duration, fn func()) {
	s.seq++
	s.q.push(event{at: s.now + d, seq: s.seq, fn: fn})
}

// fault draws a fault of probability p; none once the run is healed.
func (s *sim) fault(p float64) bool {
	if s.healed || p <= 0 {
		return false
	}
	return s.rng.Float64() < p
}

// between draws a duration in [lo, hi).
func (s *sim) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// latency is a message's time in flight: a few milliseconds, or with
// probability Delay up to four seconds.
func (s *sim) latency() time.Duration {
	d := s.between(time.Millisecond, 20*time.Millisecond)
	if s.fault(s.f.Delay) {
		s.res.Stats.Delayed++
		d += s.between(0, 4*time.Second)
	}
	return d
}

// storeLatency is the time a key-value operation takes one way: a few
// milliseconds, or with probability SlowStore up to two seconds.
func (s *sim) storeLatency() time.Duration {
	d := s.between(time.Millisecond, 5*time.Millisecond)
	if s.fault(s.f.SlowStore) {
		s.res.Stats.Delayed++
		d += s.between(0, 2*time.Second)
	}
	return d
}

// timerLate is how late a timer fires: it posts into the shard's inbox, so a
// few milliseconds, or with probability Delay up to half a second (a busy
// shard, a paused process).
func (s *sim) timerLate() time.Duration {
	d := s.between(0, 3*time.Millisecond)
	if s.fault(s.f.Delay) {
		s.res.Stats.Delayed++
		d += s.between(0, 500*time.Millisecond)
	}
	return d
}

func (s *sim) violate(format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	s.violations = append(s.violations, v)
	s.tracef("VIOLATION %s", v)
}

// tracef writes one trace line, prefixed with the simulated time, into the
// hash and to Config.Trace.
func (s *sim) tracef(format string, args ...any) {
	b := &s.traceBuf
	b.Reset()
	us := s.now / time.Microsecond
	fmt.Fprintf(b, "%d.%06d ", us/1e6, us%1e6)
	fmt.Fprintf(b, format, args...)
	b.WriteByte('\n')
	for _, c := range b.Bytes() {
		s.traceHash ^= uint64(c)
		s.traceHash *= 1099511628211
	}
	s.traceLines++
	if s.cfg.Trace != nil {
		_, _ = s.cfg.Trace.Write(b.Bytes())
	}
}

func (s *sim) result() Result {
	r := s.res
	r.Violations = s.violations
	r.HealedAt = s.healTime
	r.TraceHash = s.traceHash
	r.TraceLines = s.traceLines
	return r
}

// upCoordinator picks a running coordinator at random, as a queue group
// does; nil when none runs.
func (s *sim) upCoordinator() *coordinator {
	var up []*coordinator
	for _, c := range s.coords {
		if c.up {
			up = append(up, c)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[s.rng.IntN(len(up))]
}

// sortedKeys returns m's keys in order, so that iteration is deterministic.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
