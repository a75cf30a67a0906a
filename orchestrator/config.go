package orchestrator

import (
	"fmt"
	"runtime"
	"time"

	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// Config configures an Engine. Zero fields take the defaults listed.
type Config struct {
	// Instance names this coordinator; its replies arrive on
	// natstx.reply.<Instance>. Default: a random unique name.
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
	MaxInFlight int
	// Retention is how long a finished transaction's outcome is remembered for
	// Status, Wait and duplicate detection. Default 1m.
	Retention time.Duration
	// MaxRemembered bounds the finished outcomes kept; the oldest go first.
	// Default 200,000.
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
	// NoStatus turns off the status bucket writes (three asynchronous puts per
	// transaction) that Client.Status, List and Watch read.
	NoStatus bool
	// Logger receives the engine's logs; default none.
	Logger *zap.Logger
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
	def(&c.RetryBase, 500*time.Millisecond)
	def(&c.RetryMax, 5*time.Second)
	def(&c.Retention, time.Minute)
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
