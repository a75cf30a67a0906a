package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
)

// DefaultReadyCacheFor is how long a ReadyCheck keeps what it learned about
// the streams when NewReadyCheck is given no duration.
const DefaultReadyCacheFor = 5 * time.Second

// readyLookupTimeout bounds one look at the streams.
const readyLookupTimeout = 2 * time.Second

// ReadyCheck is a coordinator's readiness probe (natstx server's /readyz):
// Engine.Ready, and the JetStream stream and key-value buckets the engine
// works with still exist. Start declares them, but an operator or a lost
// cluster may delete one later; the engine would then fail its writes or
// commands while Engine.Ready still answered ready. The streams are looked
// up at most once per cache period, however often the probe is asked, and
// concurrent probes share one look. Safe for concurrent use.
type ReadyCheck struct {
	eng      *Engine
	cacheFor time.Duration
	now      func() time.Time
	streams  []string

	mu      sync.Mutex
	checked time.Time // when the streams were last looked up; zero: never
	err     error     // what that look found
}

// NewReadyCheck returns the readiness probe of e; what it learns about the
// streams it keeps for cacheFor (DefaultReadyCacheFor if cacheFor <= 0).
// For a simulated engine (NewSimulated), which uses no JetStream, it is
// Engine.Ready.
func NewReadyCheck(e *Engine, cacheFor time.Duration) *ReadyCheck {
	if cacheFor <= 0 {
		cacheFor = DefaultReadyCacheFor
	}
	return &ReadyCheck{eng: e, cacheFor: cacheFor, now: time.Now, streams: RequiredStreams(e.cfg)}
}

// RequiredStreams names the JetStream streams a coordinator with cfg needs:
// the command stream and the streams behind its key-value buckets (records,
// IDs, leases, sagas, and the status bucket unless Config.NoStatus).
func RequiredStreams(cfg Config) []string {
	s := []string{messages.CommandStream, "KV_" + RecordBucket, "KV_" + IDBucket, "KV_" + LeaseBucket, "KV_" + SagaBucket}
	if !cfg.NoStatus {
		s = append(s, messages.StatusStream)
	}
	return s
}

// Ready returns nil when the engine is ready and every stream it needs
// exists; otherwise an error that says why, naming the missing streams
// (a bucket's stream is KV_<bucket>).
func (c *ReadyCheck) Ready() error {
	if err := c.eng.Ready(); err != nil {
		return err
	}
	if c.eng.js == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.checked.IsZero() && c.now().Sub(c.checked) < c.cacheFor {
		return c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyLookupTimeout)
	defer cancel()
	c.err = c.lookUp(ctx)
	c.checked = c.now()
	return c.err
}

// lookUp asks JetStream for the info of each stream the engine needs.
func (c *ReadyCheck) lookUp(ctx context.Context) error {
	var missing []string
	for _, name := range c.streams {
		_, err := c.eng.js.Stream(ctx, name)
		switch {
		case err == nil:
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing = append(missing, name)
		default:
			return fmt.Errorf("natstx: cannot look up stream %s: %w", name, err)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("natstx: JetStream streams missing: %s (a coordinator declares them when it starts)", strings.Join(missing, ", "))
	}
	return nil
}
