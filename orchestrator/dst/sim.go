package dst

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
)

// Config configures one simulated run. Zero fields take defaults; fields
// left to the seed are drawn from it.
type Config struct {
	// Seed drives the whole run.
	Seed uint64
	// Transactions is how many transactions the workload begins. Default 200.
	Transactions int
	// Sagas is how many sagas the workload begins among the transactions.
	// Default: a quarter of Transactions; negative: none.
	Sagas int
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
	// EngineLog adds the engines' own log lines (debug level) to the trace.
	EngineLog bool
	// MaxInFlight is the engines' Config.MaxInFlight; 0 = the engine's
	// default. A small one makes admission bind: begins wait for room to
	// start, or are refused with ErrOverloaded.
	MaxInFlight int

	// plant breaks the simulated infrastructure on purpose, for the tests
	// that prove the checker catches what follows.
	plant plant
}

// plant names a deliberate break of a guarantee the engine relies on.
type plant uint8

const (
	_ plant = iota // none
	// plantVolatileDisk: a participant that restarts finds its database
	// empty (its disk was lost), so it forgets what it prepared.
	plantVolatileDisk
	// plantBlindCreate: the decision bucket's Create writes even over a live
	// entry (no compare-and-set), so a commit can be recorded over an abort.
	plantBlindCreate
	// plantBlindCompensation: a participant runs a saga compensation itself,
	// without its barrier, and answers it done, so a late action is still
	// done after it.
	plantBlindCompensation
)

// Faults are the probabilities of each fault, each in [0, 1].
type Faults struct {
	// Drop: a reply, in-doubt question or answer is lost (plain NATS).
	Drop float64
	// Duplicate: a reply, question or answer is delivered twice.
	Duplicate float64
	// Delay: a message is held for up to four seconds instead of a few
	// milliseconds, so it arrives late and out of order; a timer fires up to
	// half a second late (a busy shard, a slow process).
	Delay float64
	// SlowStore: a key-value operation takes up to two seconds each way (a
	// stream leader election, a slow disk).
	SlowStore float64
	// PublishLost: a command is not stored by the stream (its publish failed).
	PublishLost float64
	// AckLost: a participant's acknowledgement of a command message is lost,
	// so the stream redelivers it after AckWait.
	AckLost float64
	// CrashCoordinator: a coordinator process dies, at one of the engine's
	// fault points (a draw per point reached) or at any moment (a draw per
	// tenth of a second); it restarts 50 ms to 3 s later with nothing but
	// the buckets.
	CrashCoordinator float64
	// PauseCoordinator: a coordinator process is stopped (SIGSTOP) for a
	// while, a draw per tenth of a second: shorter than its lease, longer
	// than its lease, or longer than the retention; then it goes on with
	// what it had in memory.
	PauseCoordinator float64
	// PauseParticipant: a participant process is stopped (SIGSTOP) for up to
	// five seconds, a draw per tenth of a second; the commands delivered to
	// it meanwhile wait in it and are redelivered after AckWait.
	PauseParticipant float64
	// CrashParticipant: a participant dies before handling a command, after
	// handling it and before its ack, before asking about a transaction in
	// doubt or before applying the answer; it restarts 50 ms to 3 s later
	// with its database and nothing else.
	CrashParticipant float64
	// StoreError: a key-value operation fails; half the time it was applied
	// and only its answer was lost.
	StoreError float64
	// LateStore: a key-value operation is applied after its caller gave up
	// waiting (a timeout), so the caller does not know it happened.
	LateStore float64
	// ScanCut: a listing of a bucket runs out of time partway: it returns
	// the entries up to some revision and context.DeadlineExceeded, as a
	// watch of a large bucket does.
	ScanCut float64
	// HandlerError: a participant's commit or abort fails this time (it is
	// answered "failed" and redelivered).
	HandlerError float64
	// VoteNo: a participant votes abort (workload, not a fault).
	VoteNo float64
	// ReadOnly: a participant that does not vote abort votes read-only
	// (workload): its prepare writes and then says participants.ReadOnly,
	// which the barrier must undo; it is sent no commit or abort after it.
	ReadOnly float64
	// OnePhase: a transaction has one participant (workload): it is sent
	// commit-one-phase, and its participant decides its outcome.
	OnePhase float64
	// ClientAbort: the client asks to abort a transaction at a random moment
	// (workload, not a fault).
	ClientAbort float64
	// LongTimeout: a transaction has a prepare timeout of 20 to 90 seconds
	// instead of 0.3 to 2 (workload: what a participant restarting while
	// prepared must not abort).
	LongTimeout float64
	// SagaRefuse: a saga step's action before the pivot is refused for good
	// (workload).
	SagaRefuse float64
	// SagaFail: a saga step's action fails for now one to a few times (or
	// with a non-retryable code), or its compensation fails a few times, or
	// long enough to be stuck before it recovers (workload).
	SagaFail float64
	// SagaBroken: a saga step's compensation fails until an operator acts
	// (workload).
	SagaBroken float64
}

func (f Faults) String() string {
	return fmt.Sprintf("drop=%.3f dup=%.3f delay=%.3f slowstore=%.3f publost=%.3f acklost=%.3f crashc=%.4f pausec=%.4f crashp=%.4f pausep=%.4f storeerr=%.3f latestore=%.3f scancut=%.3f handlererr=%.3f voteno=%.3f clientabort=%.3f long=%.3f sagarefuse=%.3f sagafail=%.3f sagabroken=%.3f readonly=%.3f onephase=%.3f",
		f.Drop, f.Duplicate, f.Delay, f.SlowStore, f.PublishLost, f.AckLost, f.CrashCoordinator, f.PauseCoordinator, f.CrashParticipant, f.PauseParticipant,
		f.StoreError, f.LateStore, f.ScanCut, f.HandlerError, f.VoteNo, f.ClientAbort, f.LongTimeout, f.SagaRefuse, f.SagaFail, f.SagaBroken, f.ReadOnly, f.OnePhase)
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
		CrashCoordinator: p(0.01), PauseCoordinator: p(0.03), CrashParticipant: p(0.02),
		StoreError: p(0.1), LateStore: p(0.02), HandlerError: p(0.1),
		VoteNo: p(0.15), ClientAbort: p(0.1), LongTimeout: p(0.3),
		PauseParticipant: p(0.01),
		SagaRefuse:       p(0.1), SagaFail: p(0.3), SagaBroken: p(0.1),
		ScanCut:  p(0.3), // drawn after the others: the seeds keep the faults they had
		ReadOnly: p(0.2), // and after ScanCut, for the same reason
		OnePhase: p(0.2), // and after ReadOnly
	}
}

// Timing of the simulated world, and the engine's configuration in it.
const (
	minPrepareTimeout = 300 * time.Millisecond
	maxPrepareTimeout = 2 * time.Second
	minLongTimeout    = 20 * time.Second
	maxLongTimeout    = 90 * time.Second
	retryBase         = 100 * time.Millisecond
	retryMax          = 800 * time.Millisecond
	abortSends        = 3
	leaseTTL          = 1500 * time.Millisecond
	retention         = 20 * time.Second // Config.Retention: statuses, committed records, memory
	streamMaxAge      = 10 * time.Minute // the command stream's MaxAge; abort records and IDs last as long
	inDoubtAfter      = time.Second      // participants.Config.InDoubtAfter
	inDoubtEvery      = 500 * time.Millisecond
	askTimeout        = time.Second // a participant's wait for an in-doubt answer
	healAfter         = 2 * time.Second
	meanArrival       = 20 * time.Millisecond
	chaosTick         = 100 * time.Millisecond
	quiescenceTick    = 250 * time.Millisecond
	statusGrace       = 10 * time.Second
	maxEvents         = 200_000_000
)

// Stats count what happened in a run.
type Stats struct {
	counters
	Events            int
	CoordCrashes      int
	CoordPauses       int
	PausesPastLease   int
	PausesPastRetain  int
	PartCrashes       int
	PartPauses        int
	InDoubtQueries    int // questions participants sent
	InDoubtResolved   int // transactions a participant settled from an answer
	RecordedAborts    int // abort records written
	CommitsRefused    int // commit decisions that lost to a recorded abort (engine counter)
	Recovered         int // commit records taken over (engine counter)
	BeginsWaited      int // begins that waited for room to start (engine counter)
	OrphansAborted    int // undecided transactions of dead instances aborted (engine counter)
	ClientAborts      int
	BeginRetries      int
	BeginsRefused     int // begins refused as duplicates after an earlier attempt
	BeginsOverloaded  int // begin attempts refused with ErrOverloaded (the client tries again)
	Rejected          int // commands a participant rejected as contradicting its record
	HandlerErrors     int
	ReadOnlyVotes     int // prepares a participant's handler answered participants.ReadOnly
	OnePhaseTxs       int // transactions run in one phase (sent commit-one-phase)
	StatusRegressions int // a final status overwritten by a state that is not final
	LeaseLapses       int // ticks at which a running instance had no live lease
	SagaRetries       int // saga action attempts after the first (from the records)
	SagaCompRetries   int // saga compensation attempts after the first
	SagaStuckSteps    int // steps a record newly marked stuck
	SagaTakeovers     int // saga records whose owner changed (another instance took them over)
	SagaAborts        int // saga aborts of clients the engine accepted
	OperatorActions   int // operator actions (retry now, resolve by hand) the engine accepted
	SagaStaleStatuses int // saga statuses left contradicting a final record that expired (see checkSagas)
}

func (s *Stats) add(o Stats) {
	s.counters.add(o.counters)
	s.Events += o.Events
	s.CoordCrashes += o.CoordCrashes
	s.CoordPauses += o.CoordPauses
	s.PausesPastLease += o.PausesPastLease
	s.PausesPastRetain += o.PausesPastRetain
	s.PartCrashes += o.PartCrashes
	s.PartPauses += o.PartPauses
	s.InDoubtQueries += o.InDoubtQueries
	s.InDoubtResolved += o.InDoubtResolved
	s.RecordedAborts += o.RecordedAborts
	s.CommitsRefused += o.CommitsRefused
	s.Recovered += o.Recovered
	s.BeginsWaited += o.BeginsWaited
	s.OrphansAborted += o.OrphansAborted
	s.ClientAborts += o.ClientAborts
	s.BeginRetries += o.BeginRetries
	s.BeginsRefused += o.BeginsRefused
	s.BeginsOverloaded += o.BeginsOverloaded
	s.Rejected += o.Rejected
	s.HandlerErrors += o.HandlerErrors
	s.ReadOnlyVotes += o.ReadOnlyVotes
	s.OnePhaseTxs += o.OnePhaseTxs
	s.StatusRegressions += o.StatusRegressions
	s.LeaseLapses += o.LeaseLapses
	s.SagaRetries += o.SagaRetries
	s.SagaCompRetries += o.SagaCompRetries
	s.SagaStuckSteps += o.SagaStuckSteps
	s.SagaTakeovers += o.SagaTakeovers
	s.SagaAborts += o.SagaAborts
	s.OperatorActions += o.OperatorActions
	s.SagaStaleStatuses += o.SagaStaleStatuses
}

// Result is what a run found.
type Result struct {
	Seed         uint64
	Coordinators int
	Participants int
	Faults       Faults
	// Transactions in the workload; Committed ended committed at every
	// participant, Aborted at none; InDoubt are left prepared somewhere or
	// with a status that is not final.
	Transactions, Committed, Aborted, InDoubt int
	// Sagas in the workload; each ended completed, compensated, visibly
	// stuck (compensation-stuck, or forward-stuck past its pivot), or never
	// started (no record was ever written: its begin was lost with its
	// coordinator, or refused).
	Sagas, SagasCompleted, SagasCompensated, SagasStuck, SagasNotStarted int
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
	return fmt.Sprintf("seed=%d coordinators=%d participants=%d transactions=%d committed=%d aborted=%d in_doubt=%d %s violations=%d simtime=%v events=%d [%s]",
		r.Seed, r.Coordinators, r.Participants, r.Transactions, r.Committed, r.Aborted, r.InDoubt, r.sagaCounts(), len(r.Violations), r.SimTime, r.Stats.Events, r.Faults)
}

// sagaCounts is the sagas' figures.
func (r Result) sagaCounts() string {
	return fmt.Sprintf("sagas=%d completed=%d compensated=%d stuck=%d not_started=%d",
		r.Sagas, r.SagasCompleted, r.SagasCompensated, r.SagasStuck, r.SagasNotStarted)
}

// sim is one run's world.
type sim struct {
	*env
	cfg Config
	st  Stats

	records, leases, ids, status, sagas *kvBucket
	stream                              *cmdStream

	coords  []*coord
	coordBy map[string]*coord // by instance name
	parts   []*part
	partBy  map[string]*part
	// clients runs the workload's callers; it never pauses or dies.
	clients *gate
	cdrv    *driver

	work   []*workTx
	workBy map[string]*workTx
	// sagaList and sagaBy are the saga workload.
	sagaList []*workSaga
	sagaBy   map[string]*workSaga
	// sagaActionCalls and sagaCompCalls count the calls of each (saga,
	// step)'s action and compensation handlers; compAcked is when a
	// participant first answered a step's compensation done.
	sagaActionCalls, sagaCompCalls map[string]int
	compAcked                      map[string]time.Duration
	pending                        int // client calls not finished

	// everCommit and everAbort: a commit or an abort record was written for
	// the transaction (from the record bucket's writes, as they happen).
	everCommit, everAbort map[string]bool
	// lastStatus is each transaction's latest status state; notFinal the
	// transactions whose latest status is not final; committing those whose
	// decision record says committing.
	lastStatus           map[string]string
	notFinal, committing map[string]bool
	// leaseLast is when each instance's lease was last written;
	// leaseLapseEnd when it was last written after it had expired.
	leaseLast, leaseLapseEnd map[string]time.Duration

	healTime time.Duration
	// quietSince is when everything but the statuses became quiet; 0: not.
	quietSince time.Duration
	quiescent  bool
	timedOut   bool
	ctx        context.Context
}

// Run simulates one seed and checks the guarantees.
func Run(cfg Config) Result { return runSim(cfg).result() }

// drawConfig draws from cfg.Seed the number of coordinators and
// participants cfg leaves unset, and returns the fault probabilities the
// seed draws.
func drawConfig(cfg *Config) Faults {
	draw := rand.New(rand.NewPCG(cfg.Seed, 0x51ed27))
	if cfg.Coordinators <= 0 {
		cfg.Coordinators = 1 + draw.IntN(3)
	}
	if cfg.Participants <= 0 {
		cfg.Participants = 5 + draw.IntN(4)
	}
	cfg.Participants = max(cfg.Participants, 5) // a transaction has up to 5
	return drawFaults(draw)
}

// runSim simulates one seed, checks the guarantees, and returns the world
// as the run left it.
func runSim(cfg Config) *sim {
	if cfg.Transactions <= 0 {
		cfg.Transactions = 200
	}
	if cfg.Sagas == 0 {
		cfg.Sagas = cfg.Transactions / 4
	}
	cfg.Sagas = max(cfg.Sagas, 0)
	if cfg.HealLimit <= 0 {
		cfg.HealLimit = 10 * time.Minute
	}
	f := drawConfig(&cfg)
	if cfg.Faults != nil {
		f = *cfg.Faults
	}
	s := &sim{
		env: newEnv(cfg.Seed, f, cfg.Trace), cfg: cfg,
		coordBy: map[string]*coord{}, partBy: map[string]*part{}, workBy: map[string]*workTx{},
		sagaBy: map[string]*workSaga{}, sagaActionCalls: map[string]int{}, sagaCompCalls: map[string]int{}, compAcked: map[string]time.Duration{},
		everCommit: map[string]bool{}, everAbort: map[string]bool{}, lastStatus: map[string]string{}, notFinal: map[string]bool{}, committing: map[string]bool{},
		leaseLast: map[string]time.Duration{}, leaseLapseEnd: map[string]time.Duration{},
		ctx: context.Background(),
	}
	s.run()
	return s
}

// run plays the workload, stops the faults, runs to quiescence, checks,
// and ends every task.
func (s *sim) run() {
	s.tracef("run seed=%d coordinators=%d participants=%d transactions=%d sagas=%d faults=[%s]",
		s.cfg.Seed, s.cfg.Coordinators, s.cfg.Participants, s.cfg.Transactions, s.cfg.Sagas, s.f)
	s.records = newBucket(s.env, orchestrator.RecordBucket, 0)
	s.records.watch = s.onRecordWrite
	s.records.blindCreate = s.cfg.plant == plantBlindCreate
	s.leases = newBucket(s.env, orchestrator.LeaseBucket, leaseTTL)
	s.leases.watch = s.onLeaseWrite
	s.ids = newBucket(s.env, "natstx_ids", 0)
	s.status = newBucket(s.env, messages.StatusBucket, retention)
	s.status.watch = s.onStatusWrite
	s.sagas = newBucket(s.env, orchestrator.SagaBucket, 0)
	s.sagas.watch = s.onSagaWrite
	s.stream = newStream(s.env, streamMaxAge)
	s.stream.sent = s.onCommand
	s.clients = s.s.newGate("client")
	s.cdrv = &driver{g: s.clients}
	for i := range s.cfg.Participants {
		p := s.newPart("p" + strconv.Itoa(i+1))
		s.parts = append(s.parts, p)
		s.partBy[p.name] = p
	}
	for i := range s.cfg.Coordinators {
		c := &coord{s: s, name: "c" + strconv.Itoa(i+1)}
		s.coords = append(s.coords, c)
		s.coordBy[c.name] = c
		c.start()
	}
	s.s.afterEvent = s.pump
	s.plan()
	s.s.at(chaosTick, s.chaos)
	s.s.at(operatorEvery, s.operate)
	s.s.runUntil(func() bool { return s.quiescent || s.timedOut }, maxEvents)
	if !s.quiescent && !s.timedOut {
		s.violate("the run did not reach quiescence within %d events: %s statuses_not_final=%d", maxEvents, s.busyReport(true), s.statusesNotFinal())
	}
	s.tracef("end quiescent=%v", s.quiescent)
	s.checkSagas()
	s.check()
	s.teardown()
}

// pump runs the queued shard work of every running engine, after each
// event: tasks that yielded find their answers when they resume.
func (s *sim) pump() {
	for _, c := range s.coords {
		if c.eng != nil && c.g.state == gateRunning {
			c.eng.Pump()
		}
	}
}

// chaos draws the coordinators' crashes and pauses every tick until the
// faults stop.
func (s *sim) chaos() {
	if s.healed {
		return
	}
	for _, c := range s.coords {
		if c.g.state == gateRunning && c.started && s.leases.live(c.name) == nil {
			s.st.LeaseLapses++
			s.tracef("%s runs without a live lease", c.name)
		}
	}
	for _, c := range s.coords {
		switch {
		case c.g.state != gateRunning || !c.started:
		case s.fault(s.f.CrashCoordinator):
			c.crash("at a random moment")
		case s.fault(s.f.PauseCoordinator):
			c.pause()
		}
	}
	for _, p := range s.parts {
		if p.g.state == gateRunning && s.fault(s.f.PauseParticipant) {
			p.pause()
		}
	}
	s.s.at(chaosTick, s.chaos)
}

// heal stops every fault: dead processes restart (a paused one goes on when
// its pause ends).
func (s *sim) heal() {
	s.healed = true
	s.healTime = s.s.now
	s.tracef("heal: faults off; paused processes go on when their pause ends, dead ones restart")
	for _, p := range s.parts {
		if !p.up() {
			p.restart()
		}
	}
	s.s.at(quiescenceTick, s.checkQuiescence)
}

// checkQuiescence ends the run once nothing is left to do, or once the heal
// limit passed. Statuses get statusGrace after everything else is quiet to
// become final, and stuck sagas as long to recover (or be resolved by the
// operator); the checker reports the statuses that did not, and counts the
// sagas still stuck.
func (s *sim) checkQuiescence() {
	busy := s.busyReport(false)
	notFinal := s.statusesNotFinal()
	stuck, _ := s.stuckSagas()
	switch {
	case busy == "" && notFinal == 0 && len(stuck) == 0:
		s.quiescent = true
		return
	case busy == "":
		if s.quietSince == 0 {
			s.quietSince = s.s.now
		}
		if s.s.now-s.quietSince > statusGrace {
			s.tracef("%d statuses still not final and %d sagas still stuck %v after everything else was quiet", notFinal, len(stuck), statusGrace)
			s.quiescent = true
			return
		}
	default:
		s.quietSince = 0
	}
	if s.s.now > s.healTime+s.cfg.HealLimit {
		s.violate("not quiescent %v after the faults stopped: %s statuses_not_final=%d", s.cfg.HealLimit, s.busyReport(true), notFinal)
		s.timedOut = true
		return
	}
	s.s.at(quiescenceTick, s.checkQuiescence)
}

// busyReport says what is still going on, empty when quiescent: no client
// call pending, every instance running with no transaction or saga in
// flight but the stuck sagas it owns, no command unacknowledged but those of
// stuck sagas, no saga neither final nor stuck, no commit record still
// committing, no participant prepared. Unless full, it stops at the first
// thing found.
func (s *sim) busyReport(full bool) string {
	var busy []string
	add := func(format string, args ...any) bool {
		busy = append(busy, fmt.Sprintf(format, args...))
		return !full
	}
	if s.pending > 0 && add("client_calls=%d", s.pending) {
		return busy[0]
	}
	stuck, owned := s.stuckSagas()
	for _, c := range s.coords {
		if c.eng == nil || !c.started || c.g.state != gateRunning {
			if add("%s=not_running", c.name) {
				return busy[0]
			}
		} else if n := c.eng.Stats().InFlight; n != int64(owned[c.name]) && add("%s_in_flight=%d(stuck_sagas=%d)", c.name, n, owned[c.name]) {
			return busy[0]
		}
	}
	if n := s.stream.unackedBut(stuck); n > 0 && add("unacked_commands=%d", n) {
		return busy[0]
	}
	if n := s.sagasBusy(); n > 0 && add("sagas_going=%d", n) {
		return busy[0]
	}
	if n := len(s.committing); n > 0 && add("commit_records=%d", n) {
		return busy[0]
	}
	for _, p := range s.parts {
		if n := len(p.prepared()); n > 0 && add("%s_prepared=%d", p.name, n) {
			return busy[0]
		}
	}
	return joinNames(busy)
}

// statusesNotFinal counts the live statuses that are not final (a saga's
// stuck status is, while its record is stuck too).
func (s *sim) statusesNotFinal() int {
	n := 0
	for _, id := range sortedKeys(s.notFinal) {
		en := s.status.live(id)
		switch {
		case en == nil:
			delete(s.notFinal, id)
		case !s.settledStatus(id, statusState(en.value)):
			n++
		}
	}
	return n
}

// teardown ends every process and waits, bounded, for every task to end.
func (s *sim) teardown() {
	for _, c := range s.coords {
		c.collect()
		if c.eng != nil {
			c.eng.Halt()
		}
		c.g.kill()
	}
	for _, p := range s.parts {
		p.g.kill()
	}
	s.clients.kill()
	s.s.afterEvent = nil
	s.s.runUntil(func() bool { return s.s.tasks == 0 }, 10_000_000)
	if s.s.tasks > 0 {
		s.violate("%d tasks did not end after their process died", s.s.tasks)
	}
	for _, p := range s.parts {
		_ = p.db.Close()
	}
}

func (s *sim) result() Result {
	r := Result{
		Seed: s.cfg.Seed, Coordinators: s.cfg.Coordinators, Participants: s.cfg.Participants, Faults: s.f,
		SimTime: s.s.now, HealedAt: s.healTime, Stats: s.st,
	}
	r.Stats.counters = s.n
	r.Stats.Events = s.s.events
	r.Transactions = len(s.work)
	r.Sagas = len(s.sagaList)
	for _, w := range s.sagaList {
		switch w.outcome {
		case sagaCompleted:
			r.SagasCompleted++
		case sagaCompensated:
			r.SagasCompensated++
		case sagaStuck:
			r.SagasStuck++
		case sagaNotStarted:
			r.SagasNotStarted++
		}
	}
	for _, w := range s.work {
		switch w.outcome {
		case outcomeCommitted:
			r.Committed++
		default:
			r.Aborted++
		}
		if w.inDoubt {
			r.InDoubt++
		}
	}
	r.Violations = s.violations
	r.TraceHash = s.traceHash
	r.TraceLines = s.traceLines
	return r
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
