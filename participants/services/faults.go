package services

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// Simulated failures a Faults-wrapped service returns.
var (
	// ErrSimulated is the simulated failure of one operation: at prepare an
	// abort vote, at commit or abort a retry.
	ErrSimulated = errors.New("simulated failure")
)

// Faults injects failures and latency into a service, like the seeds'
// simulated services, so that a demo over real stores still sees aborts.
// The zero value injects nothing.
type Faults struct {
	// SuccessRate is the probability, in [0, 1], that one operation succeeds;
	// 0 means 1 (no failures).
	SuccessRate float64
	// MaxLatency bounds a uniform random delay before each command, taken
	// before the local transaction opens so it never holds the database.
	MaxLatency time.Duration
	// RefuseRate is the probability, in [0, 1], that a saga action is
	// refused for good (participants.Refuse with code CodeSimulated) before
	// touching the database, rolled after SuccessRate; 0 never. It gives a
	// saga demo compensated sagas: a plain failure is only retried.
	RefuseRate float64
	// Seed seeds the dice; 0 picks a random seed.
	Seed int64

	once sync.Once
	mu   sync.Mutex
	rng  *rand.Rand
}

// Validate checks the rates and durations.
func (f *Faults) Validate() error {
	if !(f.SuccessRate >= 0 && f.SuccessRate <= 1) {
		return fmt.Errorf("services: Faults.SuccessRate is %v, it must be in [0, 1]", f.SuccessRate)
	}
	if !(f.RefuseRate >= 0 && f.RefuseRate <= 1) {
		return fmt.Errorf("services: Faults.RefuseRate is %v, it must be in [0, 1]", f.RefuseRate)
	}
	if f.MaxLatency < 0 {
		return fmt.Errorf("services: Faults.MaxLatency is %s, it must not be negative", f.MaxLatency)
	}
	return nil
}

func (f *Faults) init() {
	f.once.Do(func() {
		seed := f.Seed
		if seed == 0 {
			seed = time.Now().UnixNano()
		}
		f.rng = rand.New(rand.NewSource(seed))
	})
}

// fails rolls the dice.
func (f *Faults) fails() bool {
	if f.SuccessRate == 0 || f.SuccessRate == 1 {
		return false
	}
	f.init()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() >= f.SuccessRate
}

// Delay sleeps a random latency up to MaxLatency, or until ctx ends. It fits
// participants.BarrierConfig.Before.
func (f *Faults) Delay(ctx context.Context, _ messages.Op, _ participants.Tx) error {
	if f.MaxLatency <= 0 {
		return nil
	}
	f.init()
	f.mu.Lock()
	d := time.Duration(f.rng.Int63n(int64(f.MaxLatency) + 1))
	f.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Wrap returns h with failures injected: each operation fails with
// ErrSimulated with probability 1 - SuccessRate, before touching the
// database.
func (f *Faults) Wrap(h participants.SQLHandler) participants.SQLHandler {
	return faulty{h: h, f: f}
}

type faulty struct {
	h participants.SQLHandler
	f *Faults
}

func (x faulty) Prepare(ctx context.Context, dbtx *sql.Tx, tx participants.Tx, payload []byte) error {
	if x.f.fails() {
		return fmt.Errorf("%w of prepare", ErrSimulated)
	}
	return x.h.Prepare(ctx, dbtx, tx, payload)
}

func (x faulty) Commit(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	if x.f.fails() {
		return fmt.Errorf("%w of commit", ErrSimulated)
	}
	return x.h.Commit(ctx, dbtx, tx)
}

func (x faulty) Abort(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	if x.f.fails() {
		return fmt.Errorf("%w of abort", ErrSimulated)
	}
	return x.h.Abort(ctx, dbtx, tx)
}

// CodeSimulated is the code of a refusal Faults.RefuseRate injects.
const CodeSimulated = "simulated"

// refuses rolls the dice for a refusal.
func (f *Faults) refuses() bool {
	if f.RefuseRate == 0 {
		return false
	}
	f.init()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < f.RefuseRate
}

// WrapSaga returns h with failures injected: each action or compensation
// fails with ErrSimulated (failed for now: the coordinator retries) with
// probability 1 - SuccessRate, and an action that does not fail is refused
// for good with probability RefuseRate, before touching the database.
func (f *Faults) WrapSaga(h participants.SQLSagaHandler) participants.SQLSagaHandler {
	return faultySaga{h: h, f: f}
}

type faultySaga struct {
	h participants.SQLSagaHandler
	f *Faults
}

func (x faultySaga) Action(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	if x.f.fails() {
		return fmt.Errorf("%w of action", ErrSimulated)
	}
	if x.f.refuses() {
		return participants.Refuse(CodeSimulated, "simulated refusal")
	}
	return x.h.Action(ctx, dbtx, st, payload)
}

func (x faultySaga) Compensate(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	if x.f.fails() {
		return fmt.Errorf("%w of compensation", ErrSimulated)
	}
	return x.h.Compensate(ctx, dbtx, st, payload)
}

// NewBarrier returns a barrier for svc on its database, for its two-phase
// commit and saga handlers, with faults (nil for none) injected.
func NewBarrier(ctx context.Context, svc Service, faults *Faults) (*participants.Barrier, error) {
	cfg := participants.BarrierConfig{DB: svc.DB(), Dialect: participants.SQLite, Handler: svc, SagaHandler: svc}
	if faults != nil {
		if err := faults.Validate(); err != nil {
			return nil, err
		}
		cfg.Handler = faults.Wrap(svc)
		cfg.SagaHandler = faults.WrapSaga(svc)
		cfg.Before = faults.Delay
	}
	return participants.NewBarrier(ctx, cfg)
}
