package orchestrator

import (
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// Config configures an Engine. Zero fields take the defaults listed.
type Config struct {
	// Instance names this coordinator; its replies arrive on
	// natstx.reply.<Instance>.<participant>. Default: a random unique name.
	Instance string
	// PrepareTimeout is how long a transaction waits for every vote before it
	// aborts, unless the request or its context says less. Default 5s.
	PrepareTimeout time.Duration
	// RetryBase is the delay before an unanswered command is re-sent; it
	// doubles up to RetryMax. Defaults 500ms and 5s.
	RetryBase time.Duration
	RetryMax  time.Duration
	// AbortSends bounds how often abort is sent to a silent participant (it
	// stays queued in the stream after that). Default 8. Commit has no bound.
	AbortSends int
	// MaxPayload is the largest payload one participant may receive. Default
	// 256 KiB; it must leave room for headers under the server's limit.
	MaxPayload int
	// MaxInFlight bounds the transactions running at once; Begin returns
	// ErrOverloaded beyond it. Default 100,000.
	//
	// Fewer may be in their first round (from begin to decision, or to the
	// first re-send) at once: an adaptive limit, at most MaxInFlight, that
	// falls while the first votes come later than half of RetryBase (the
	// coordinator or the broker is behind) and grows while they come in
	// time. A begin beyond it waits for room, first come first served, up to
	// its timeout (which the wait uses up) or its context, then gets
	// ErrOverloaded having sent nothing; at most MaxInFlight begins wait.
	// Sagas do not wait. Stats: AdmissionLimit, Starting, Waiting, Waited.
	MaxInFlight int
	// Retention is how long a finished transaction's outcome is remembered:
	// its status in the status bucket (for Status, List, Watch and audits),
	// its committed record, and this engine's memory of it (for Wait).
	// Default 1h.
	Retention time.Duration
	// MaxStatusBytes bounds the size of the status bucket; beyond it the
	// oldest statuses go first, whatever Retention says. Default 512 MiB
	// (about a million transactions).
	MaxStatusBytes int64
	// MaxRemembered bounds the finished outcomes kept in memory; the oldest go
	// first. Default 200,000.
	MaxRemembered int
	// Shards is the number of event loops transactions are spread over.
	// Default 4 per CPU.
	Shards int
	// Streams sizes the JetStream resources the engine declares.
	Streams StreamOptions
	// LeaseTTL is how long an instance counts as alive after its last lease
	// renewal (renewed every third of it); another instance takes over its
	// commit decisions once it expired. Default 5s.
	LeaseTTL time.Duration
	// FaultHook, when set, is called at each FaultPoint; returning true halts
	// the engine there as if its process died (it sends, writes and renews
	// nothing more). For fault-injection tests.
	FaultHook func(point FaultPoint, txid string) bool
	// NoAPI keeps the engine off the coordinator API subjects (begin, abort,
	// status, outcome): for an engine used only in its own process, e.g. a
	// benchmark, on a NATS shared with coordinators that serve users.
	NoAPI bool
	// MaxBeginRate bounds the begins a second this instance accepts through
	// the coordinator API (transactions and sagas) from each identity, with
	// bursts of up to one second's worth; beyond it a begin is answered
	// ErrRateLimited. The identity is the user the NATS server names in the
	// Nats-Request-Info header of a request that crossed accounts (each
	// operator user of natstx auth, whose account imports the API with
	// share); requests without one (from the coordinators' own account, or
	// on a NATS without natstx's accounts) share one limit. The limit is per
	// coordinator instance: the API's queue group spreads begins over them.
	// Begin and Execute called in process are not limited. 0: no limit.
	MaxBeginRate float64
	// NoStatus turns off the status bucket writes that Client.Status, List
	// and Watch read.
	NoStatus bool
	// GroupCommit coalesces the key-value writes that wait while others are
	// out (decision records, statuses, saga records, ID claims) into
	// JetStream atomic batches: for a NATS server that fsyncs every write
	// (sync always), where each write would cost an fsync. Needs NATS server
	// 2.12 or later (it turns on atomic batches on the buckets); without sync
	// always it is slower than writing them one by one.
	GroupCommit bool
	// StatusLinger is how long a transaction's committing status waits
	// before it is written: a commit that ends within it writes only its
	// begin status and its final one (two asynchronous puts instead of
	// three). The begin and final statuses, and an abort decision, are
	// written at once: the orphan sweep finds a dead instance's undecided
	// transactions by the first, and users expect the outcome as soon as it
	// is known (an abort decision is the outcome its waiters are told at
	// once). A saga's first and final statuses are written at once, the
	// changes between them (one per step) once StatusLinger has passed: a
	// saga that ends within it writes two statuses, whatever its steps.
	// Default 100ms; negative writes each change at once.
	StatusLinger time.Duration
	// NoOnePhase sends prepare and then commit or abort to the participant
	// of a transaction that has only one, as to several. By default such a
	// transaction is sent commit-one-phase instead (docs/PROTOCOL.md), if
	// that participant has answered this instance within the last 30
	// seconds: one command and one reply, no decision record; the
	// participant decides the outcome, so the transaction's timeout does not
	// abort it (a participant that handles the command after the deadline
	// votes abort) and it waits for the participant's answer, re-sending the
	// command, however long that takes. (To a participant not heard from
	// lately, not running or misnamed perhaps, it sends prepare, which the
	// timeout aborts.)
	NoOnePhase bool
	// Logger receives the engine's logs; default none.
	Logger *zap.Logger
	// TracerProvider, when set, makes the engine trace (OpenTelemetry): a
	// span per transaction and saga (a child of the caller's, from the
	// context given to Begin or the API request's W3C headers), one per
	// phase, and one per command, whose context each command carries to
	// its participant. Nil: no tracing, at no cost.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.Instance == "" {
		c.Instance = nuid.Next()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PrepareTimeout, 5*time.Second)
	def(&c.StatusLinger, 100*time.Millisecond)
	def(&c.RetryBase, 500*time.Millisecond)
	def(&c.RetryMax, 5*time.Second)
	def(&c.Retention, time.Hour)
	def(&c.LeaseTTL, 5*time.Second)
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	defInt(&c.AbortSends, 8)
	defInt(&c.MaxPayload, 256<<10)
	defInt(&c.MaxInFlight, 100_000)
	defInt(&c.MaxRemembered, 200_000)
	if c.MaxStatusBytes == 0 {
		c.MaxStatusBytes = 512 << 20
	}
	defInt(&c.Shards, 4*runtime.GOMAXPROCS(0))
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate checks the configuration after defaults are applied; each error
// names the field.
func (c *Config) Validate() error {
	if err := messages.ValidateName("Config.Instance", c.Instance); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"PrepareTimeout", c.PrepareTimeout}, {"RetryBase", c.RetryBase}, {"RetryMax", c.RetryMax}, {"Retention", c.Retention}, {"LeaseTTL", c.LeaseTTL}} {
		if d.v < 0 {
			return fmt.Errorf("natstx: Config.%s is %v; it must be positive", d.name, d.v)
		}
	}
	if c.MaxBeginRate < 0 || math.IsNaN(c.MaxBeginRate) || math.IsInf(c.MaxBeginRate, 0) {
		return fmt.Errorf("natstx: Config.MaxBeginRate is %v; it must be a positive number of begins a second, or 0 for no limit", c.MaxBeginRate)
	}
	if c.MaxStatusBytes < 0 {
		return fmt.Errorf("natstx: Config.MaxStatusBytes is %d; it must be positive", c.MaxStatusBytes)
	}
	if c.RetryMax < c.RetryBase {
		return fmt.Errorf("natstx: Config.RetryMax %v is below Config.RetryBase %v", c.RetryMax, c.RetryBase)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"AbortSends", c.AbortSends}, {"MaxPayload", c.MaxPayload}, {"MaxInFlight", c.MaxInFlight}, {"MaxRemembered", c.MaxRemembered}, {"Shards", c.Shards}} {
		if n.v < 1 {
			return fmt.Errorf("natstx: Config.%s is %d; it must be at least 1", n.name, n.v)
		}
	}
	return nil
}

// abortRetention is how long an abort record, and a caller-chosen ID, stays
// in its bucket: the longer of Retention and the command stream's MaxAge
// (24h by default). While an abort record lasts no commit can be recorded
// for its transaction; a coordinator stalled between its last clock reading
// and its commit write for longer than this, less the prepare timeout and
// commitWriteGrace, is the one case that bound does not cover
// (docs/RECOVERY.md).
func (c *Config) abortRetention() time.Duration {
	return max(c.Retention, c.Streams.withDefaults().MaxAge)
}

// maxQuestionAge is the age past which an in-doubt question is not answered
// with a new abort record (messages.OutcomeRequest.AskedAtMs): a minute, or
// half the retention if less, and at least the lease. It assumes clocks
// within that of each other.
func (c *Config) maxQuestionAge() time.Duration {
	return max(c.LeaseTTL, min(time.Minute, c.Retention/2))
}

// commitWriteGrace is how long after a transaction's deadline its owner
// still tries to write the commit decision (the store being unavailable);
// after that it records an abort instead, or learns that its commit got in.
const commitWriteGrace = time.Minute
