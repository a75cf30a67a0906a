// Package sim is a simulated participant service for demos and tests: a
// participants.Handler and participants.SagaHandler with configurable
// latency and failure rate that records what it applied, so a test can
// check atomicity afterwards (Check for two-phase commit, CheckSagas for
// sagas). A Service configured ReadOnly votes read-only
// (participants.ReadOnly) instead of staging what it is sent.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// DefaultMaxLatency is MaxLatency when both latencies are zero.
const DefaultMaxLatency = 100 * time.Millisecond

// Errors a Service returns when the dice say an operation fails.
var (
	// ErrPrepare is the simulated prepare failure: an abort vote.
	ErrPrepare = errors.New("simulated prepare failure")
	// ErrCommit is the simulated commit failure; the runtime retries.
	ErrCommit = errors.New("simulated commit failure")
	// ErrAbort is the simulated abort failure; the runtime retries.
	ErrAbort = errors.New("simulated abort failure")
	// ErrCompensate is the simulated compensation failure: answered failed,
	// the coordinator retries.
	ErrCompensate = errors.New("simulated compensation failure")
)

// CodeRefused is the code of a simulated saga action refusal.
const CodeRefused = "simulated"

// ReasonRefused is the reason of a simulated saga action refusal.
const ReasonRefused = "simulated action refusal"

// Config configures a Service.
type Config struct {
	// Name is the participant name, for messages; required.
	Name string
	// SuccessRate is the probability, in [0, 1], that one operation succeeds.
	// Nil means 1; use Rate(0) for a service that always fails.
	SuccessRate *float64
	// MinLatency and MaxLatency bound each operation's simulated latency,
	// drawn uniformly between them. Both zero means 0 to 100ms; for
	// practically none, set MaxLatency to time.Nanosecond.
	MinLatency, MaxLatency time.Duration
	// Seed seeds the random source, which makes a run's sequence of outcomes
	// reproducible for the same sequence of calls; 0 picks a random seed.
	Seed int64
	// ReadOnly makes Prepare vote read-only: when it succeeds (per
	// SuccessRate; a simulated failure still votes abort), it records that
	// it looked at the transaction and returns participants.ReadOnly,
	// staging nothing. Its Commit or Abort called for such a transaction
	// then breaks the protocol (a read-only vote gets no second phase): it
	// is counted (SecondPhaseAfterReadOnly), and does nothing.
	ReadOnly bool
}

// Rate returns a pointer to p, for Config.SuccessRate.
func Rate(p float64) *float64 { return &p }

// Service is a simulated participant. It implements participants.Handler and
// is safe for concurrent use.
type Service struct {
	name       string
	rate       float64
	minLatency time.Duration
	spread     time.Duration
	readOnly   bool

	mu            sync.Mutex
	rng           *rand.Rand
	staged        map[string][]byte
	committed     map[string][]byte
	aborted       map[string]bool
	doubleApplies int
	// votedReadOnly holds the transactions Prepare voted read-only on;
	// secondPhases counts Commits and Aborts called for them.
	votedReadOnly map[string]bool
	secondPhases  int

	// done holds the saga steps whose action is done (and not
	// compensated), compensated those compensated after their action.
	done        map[string][]byte
	compensated map[string]bool
}

var (
	_ participants.Handler     = (*Service)(nil)
	_ participants.SagaHandler = (*Service)(nil)
)

// New returns a Service for cfg.
func New(cfg Config) (*Service, error) {
	if err := messages.ValidateName("participant name", cfg.Name); err != nil {
		return nil, fmt.Errorf("sim: Name: %w", err)
	}
	rate := 1.0
	if cfg.SuccessRate != nil {
		rate = *cfg.SuccessRate
	}
	if !(rate >= 0 && rate <= 1) { // also rejects NaN
		return nil, fmt.Errorf("sim: SuccessRate is %v, it must be in [0, 1]", rate)
	}
	if cfg.MinLatency < 0 || cfg.MaxLatency < 0 {
		return nil, fmt.Errorf("sim: MinLatency (%s) and MaxLatency (%s) must not be negative", cfg.MinLatency, cfg.MaxLatency)
	}
	if cfg.MinLatency == 0 && cfg.MaxLatency == 0 {
		cfg.MaxLatency = DefaultMaxLatency
	}
	if cfg.MaxLatency < cfg.MinLatency {
		return nil, fmt.Errorf("sim: MaxLatency (%s) is below MinLatency (%s)", cfg.MaxLatency, cfg.MinLatency)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	return &Service{
		name:       cfg.Name,
		rate:       rate,
		minLatency: cfg.MinLatency,
		spread:     cfg.MaxLatency - cfg.MinLatency,
		readOnly:   cfg.ReadOnly,
		rng:        rand.New(rand.NewSource(seed)),
		staged:     make(map[string][]byte),
		committed:  make(map[string][]byte),
		aborted:    make(map[string]bool),

		votedReadOnly: make(map[string]bool),

		done:        make(map[string][]byte),
		compensated: make(map[string]bool),
	}, nil
}

// Name is the service's participant name.
func (s *Service) Name() string { return s.name }

// Prepare stages payload after the simulated latency, or fails with
// ErrPrepare. A ReadOnly Service stages nothing: it records the transaction
// as voted read-only and returns participants.ReadOnly.
func (s *Service) Prepare(ctx context.Context, tx participants.Tx, payload []byte) error {
	if err := s.sleep(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.succeeds() {
		return ErrPrepare
	}
	if s.readOnly {
		s.votedReadOnly[tx.ID] = true
		return participants.ReadOnly
	}
	s.staged[tx.ID] = slices.Clone(payload)
	return nil
}

// afterReadOnly counts a Commit or Abort of a transaction Prepare voted
// read-only on, and reports whether it was one.
func (s *Service) afterReadOnly(txid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.votedReadOnly[txid] {
		s.secondPhases++
		return true
	}
	return false
}

// Commit moves the staged payload to committed after the simulated latency,
// or fails with ErrCommit. A Commit of an already committed transaction
// counts as a double apply and succeeds; one of a transaction voted
// read-only counts as a second phase after a read-only vote, and succeeds
// at once, doing nothing.
func (s *Service) Commit(ctx context.Context, tx participants.Tx) error {
	if s.afterReadOnly(tx.ID) {
		return nil
	}
	if err := s.sleep(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, done := s.committed[tx.ID]; done {
		s.doubleApplies++
		return nil
	}
	if !s.succeeds() {
		return ErrCommit
	}
	s.committed[tx.ID] = s.staged[tx.ID]
	delete(s.staged, tx.ID)
	return nil
}

// Abort discards the staged payload after the simulated latency, or fails
// with ErrAbort. An Abort of a committed transaction counts as a double apply
// and fails: what is committed cannot be discarded. One of a transaction
// voted read-only counts as a second phase after a read-only vote, and
// succeeds at once, doing nothing.
func (s *Service) Abort(ctx context.Context, tx participants.Tx) error {
	if s.afterReadOnly(tx.ID) {
		return nil
	}
	if err := s.sleep(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, done := s.committed[tx.ID]; done {
		s.doubleApplies++
		return fmt.Errorf("sim: abort of committed transaction %s", tx.ID)
	}
	if !s.succeeds() {
		return ErrAbort
	}
	delete(s.staged, tx.ID)
	s.aborted[tx.ID] = true
	return nil
}

// stepKey keys a saga step in the maps.
func stepKey(sagaID, step string) string { return sagaID + "/" + step }

// Action does a saga step's action after the simulated latency: it records
// payload as done, or, when the dice say it fails, refuses it for good
// (participants.Refuse with CodeRefused), as a failed prepare votes abort.
// An Action of a step already done or compensated counts as a double apply
// and succeeds.
func (s *Service) Action(ctx context.Context, st participants.Step, payload []byte) error {
	if err := s.sleep(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := stepKey(st.SagaID, st.Name)
	if _, done := s.done[k]; done || s.compensated[k] {
		s.doubleApplies++
		return nil
	}
	if !s.succeeds() {
		return participants.Refuse(CodeRefused, ReasonRefused)
	}
	s.done[k] = slices.Clone(payload)
	return nil
}

// Compensate undoes a done saga step after the simulated latency, or fails
// with ErrCompensate (the coordinator retries). A Compensate of a step not
// done, or already compensated, counts as a double apply and fails: there
// is nothing to undo.
func (s *Service) Compensate(ctx context.Context, st participants.Step, _ []byte) error {
	if err := s.sleep(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := stepKey(st.SagaID, st.Name)
	if _, done := s.done[k]; !done {
		s.doubleApplies++
		return fmt.Errorf("sim: compensation of saga %s step %s, which is not done", st.SagaID, st.Name)
	}
	if !s.succeeds() {
		return ErrCompensate
	}
	delete(s.done, k)
	s.compensated[k] = true
	return nil
}

// StepDone reports whether step of saga sagaID is done here and not
// compensated.
func (s *Service) StepDone(sagaID, step string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.done[stepKey(sagaID, step)]
	return ok
}

// StepCompensated reports whether step of saga sagaID was done, then
// compensated here.
func (s *Service) StepCompensated(sagaID, step string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.compensated[stepKey(sagaID, step)]
}

// SagaCounts returns how many saga steps are done (and not compensated)
// and how many were compensated.
func (s *Service) SagaCounts() (done, compensated int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.done), len(s.compensated)
}

// Committed reports whether txid is committed here.
func (s *Service) Committed(txid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.committed[txid]
	return ok
}

// Staged reports whether txid is prepared here and not yet committed or
// aborted.
func (s *Service) Staged(txid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.staged[txid]
	return ok
}

// CommittedPayload returns the payload committed for txid.
func (s *Service) CommittedPayload(txid string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.committed[txid]
	return slices.Clone(p), ok
}

// CommittedIDs returns the committed transaction IDs, sorted.
func (s *Service) CommittedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.committed))
	for id := range s.committed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Counts returns how many transactions are staged now, committed, and
// aborted (discarded after a successful prepare or never prepared).
func (s *Service) Counts() (staged, committed, aborted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.staged), len(s.committed), len(s.aborted)
}

// DoubleApplies counts Commits of already committed transactions, Aborts
// of committed ones, Actions of saga steps already done or compensated and
// Compensates of steps not done. Behind a participants.Runtime it stays 0.
func (s *Service) DoubleApplies() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.doubleApplies
}

// ReadOnly reports whether the Service votes read-only (Config.ReadOnly).
func (s *Service) ReadOnly() bool { return s.readOnly }

// VotedReadOnly reports whether Prepare voted read-only on txid.
func (s *Service) VotedReadOnly(txid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.votedReadOnly[txid]
}

// SecondPhaseAfterReadOnly counts Commits and Aborts called for
// transactions Prepare voted read-only on: a read-only vote gets neither,
// so behind a participants.Runtime it stays 0.
func (s *Service) SecondPhaseAfterReadOnly() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secondPhases
}

// sleep waits a random latency, or until ctx ends.
func (s *Service) sleep(ctx context.Context) error {
	s.mu.Lock()
	d := s.minLatency
	if s.spread > 0 {
		d += time.Duration(s.rng.Int63n(int64(s.spread) + 1))
	}
	s.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// succeeds rolls the dice; the caller holds s.mu.
func (s *Service) succeeds() bool {
	switch s.rate {
	case 1:
		return true
	case 0:
		return false
	}
	return s.rng.Float64() < s.rate
}
