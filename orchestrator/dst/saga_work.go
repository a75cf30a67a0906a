package dst

import (
	"fmt"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
)

// The saga workload: sagas begun through the engine's saga API
// (Engine.BeginSaga) among the two-phase transactions, each with its own
// definition drawn from the seed: sequential steps or a small dependency
// graph with parallel steps, sometimes a pivot, retry policies with short
// intervals, per-attempt timeouts, usually a deadline. What each step's
// participant does is written in the step's payloads (sagaLedger reads
// them): an action refused for good, failing for now a few times, or failing
// with a non-retryable code; a compensation failing a few times, failing
// long enough to be stuck, or failing until an operator acts. A simulated
// operator retries stuck sagas now or marks their stuck step compensated by
// hand (Engine.ActOnSaga); a client sometimes aborts a saga.

// Payloads of saga steps: what the participant's handler does.
const (
	payloadOK     = "ok"
	payloadRefuse = "refuse"    // the action is refused for good
	payloadCode   = "code"      // the action fails with codeBadInput (non-retryable)
	payloadFail   = "fail"      // "fail N": the action fails for now N times
	payloadCFail  = "cfail"     // "cfail N": the compensation fails N times
	payloadBroken = "broken"    // the compensation fails until an operator acts
	codeBadInput  = "bad-input" // the definitions' non-retryable code
	operatorWho   = "sim-operator"
	operatorEvery = time.Second
)

// opPolicy is what the simulated operator does for a stuck saga.
type opPolicy uint8

const (
	opNone    opPolicy = iota // leaves it stuck
	opRetry                   // retries it now
	opResolve                 // marks its stuck step resolved by hand
)

// workSaga is one saga of the workload and what the checker learns of it.
type workSaga struct {
	id     string
	def    saga.Definition
	policy opPolicy
	// clientBegin: coord is the instance whose BeginSaga accepted it (or
	// the last one asked).
	clientBegin
	// doc is the latest record written to the saga bucket; nil before the
	// first. writes counts them.
	doc    *sagaDoc
	writes int
	// steps are what the saga bucket's writes said of each step, in the
	// definition's order.
	steps []stepHist
	// actedAt is when the operator last acted on it.
	actedAt time.Duration
	acted   bool
	// outcome is how it ended, from the check after the run.
	outcome sagaOutcome
}

// sagaDoc is what the saga bucket holds for one saga (the engine's
// sagaDoc): the instance driving it and its record.
type sagaDoc struct {
	Owner  string      `json:"owner"`
	Record saga.Record `json:"record"`
}

// stepHist is what the durable records said of one step over time.
type stepHist struct {
	// everOut: a record had its action out (running); out: the latest does.
	everOut, out bool
	// settledAt is when a record last said the action was no longer out
	// (answered or timed out), after one said it was.
	settledAt time.Duration
	settled   bool
	// compSentAt is when a record first said the step was compensating.
	compSentAt time.Duration
	compSent   bool
}

// rec is the saga's latest durable record; nil if none was written.
func (w *workSaga) rec() *saga.Record {
	if w.doc == nil {
		return nil
	}
	return &w.doc.Record
}

// planSagas draws the saga workload and schedules its begins, spread over
// [0, until), and the clients' aborts.
func (s *sim) planSagas(until time.Duration) {
	for i := range s.cfg.Sagas {
		at := s.between(0, until)
		w := s.drawSaga(fmt.Sprintf("sg%05d", i+1))
		s.sagaList = append(s.sagaList, w)
		s.sagaBy[w.id] = w
		s.pending++
		s.s.at(at, func() { s.beginSaga(w) })
		if s.rng.Float64() < s.f.ClientAbort {
			s.pending++
			s.s.at(at+s.between(0, 3*time.Second), func() { s.abortSaga(w) })
		}
	}
}

// drawSaga draws one saga's definition and the behaviour of its steps.
func (s *sim) drawSaga(id string) *workSaga {
	ms := func(lo, hi time.Duration) time.Duration { return s.between(lo, hi).Truncate(time.Millisecond) }
	d := saga.Definition{
		Name:    "sim",
		Timeout: ms(300*time.Millisecond, 1500*time.Millisecond),
		Retry: saga.RetryPolicy{
			InitialInterval: ms(50*time.Millisecond, 200*time.Millisecond), BackoffFactor: 2, MaxInterval: time.Second,
			MaxAttempts: 2 + s.rng.IntN(3), NonRetryable: []string{codeBadInput},
		},
		Compensation: saga.CompensationPolicy{
			InitialInterval: ms(50*time.Millisecond, 200*time.Millisecond), BackoffFactor: 2,
			MaxInterval: ms(500*time.Millisecond, 1500*time.Millisecond), StuckAfterAttempts: 3 + s.rng.IntN(3), StuckAfter: 30 * time.Second,
		},
	}
	if s.rng.IntN(5) > 0 {
		d.Deadline = ms(2*time.Second, 12*time.Second)
	}
	// The shapes: a sequence of 2 to 4 steps (pivot anywhere, or none); a
	// diamond a -> {b, c} -> d (pivot a, d or none); two roots joined
	// {a, b} -> c (pivot c or none).
	var names []string
	var deps [][]string
	pivot := -1
	var after []bool // steps after the pivot
	switch shape := s.rng.IntN(4); shape {
	case 0, 1:
		k := 2 + s.rng.IntN(3)
		for i := range k {
			names = append(names, fmt.Sprintf("s%d", i+1))
		}
		deps = make([][]string, k)
		if s.rng.IntN(5) < 2 {
			pivot = s.rng.IntN(k)
		}
		after = make([]bool, k)
		for i := range after {
			after[i] = pivot >= 0 && i > pivot
		}
	case 2:
		d.Order = saga.OrderGraph
		names = []string{"a", "b", "c", "d"}
		deps = [][]string{nil, {"a"}, {"a"}, {"b", "c"}}
		switch s.rng.IntN(3) {
		case 0:
			pivot, after = 0, []bool{false, true, true, true}
		case 1:
			pivot = 3
		}
	default:
		d.Order = saga.OrderGraph
		names = []string{"a", "b", "c"}
		deps = [][]string{nil, nil, {"a", "b"}}
		if s.rng.IntN(2) == 0 {
			pivot = 2
		}
	}
	if after == nil {
		after = make([]bool, len(names))
	}
	for i, name := range names {
		st := saga.Step{Name: name, Participant: s.parts[s.rng.IntN(len(s.parts))].name, DependsOn: deps[i], Pivot: i == pivot}
		if s.rng.IntN(10) < 3 {
			st.Timeout = ms(200*time.Millisecond, time.Second)
		}
		r := s.rng.Float64()
		switch {
		case after[i] && r < s.f.SagaFail:
			st.Action = fmt.Appendf(nil, "%s %d", payloadFail, 1+s.rng.IntN(5)) // retried forward, past the stuck threshold sometimes
		case after[i]:
			st.Action = []byte(payloadOK)
		case r < s.f.SagaRefuse:
			st.Action = []byte(payloadRefuse)
		case r < s.f.SagaRefuse+s.f.SagaFail && s.rng.IntN(10) < 3:
			st.Action = []byte(payloadCode)
		case r < s.f.SagaRefuse+s.f.SagaFail:
			st.Action = fmt.Appendf(nil, "%s %d", payloadFail, 1+s.rng.IntN(3))
		default:
			st.Action = []byte(payloadOK)
		}
		r = s.rng.Float64()
		switch {
		case r < s.f.SagaBroken:
			st.Compensation = []byte(payloadBroken)
		case r < s.f.SagaBroken+s.f.SagaFail && s.rng.IntN(10) < 3:
			st.Compensation = fmt.Appendf(nil, "%s %d", payloadCFail, 4+s.rng.IntN(5)) // a long outage: stuck, then it recovers
		case r < s.f.SagaBroken+s.f.SagaFail:
			st.Compensation = fmt.Appendf(nil, "%s %d", payloadCFail, 1+s.rng.IntN(2))
		default:
			st.Compensation = []byte(payloadOK)
		}
		d.Steps = append(d.Steps, st)
	}
	w := &workSaga{id: id, def: d, policy: opPolicy(s.rng.IntN(3)), steps: make([]stepHist, len(d.Steps))}
	return w
}

// describe is the definition in one line, for the trace.
func (w *workSaga) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "order=%s deadline=%v timeout=%v max_attempts=%d stuck_after=%d", orSequential(w.def.Order), w.def.Deadline, w.def.Timeout,
		w.def.Retry.MaxAttempts, w.def.Compensation.StuckAfterAttempts)
	for _, st := range w.def.Steps {
		pv := ""
		if st.Pivot {
			pv = " pivot"
		}
		fmt.Fprintf(&b, " [%s@%s%s deps=%s action=%q comp=%q]", st.Name, st.Participant, pv, joinNames(st.DependsOn), st.Action, st.Compensation)
	}
	return b.String()
}

func orSequential(o saga.Order) saga.Order {
	if o == "" {
		return saga.OrderSequential
	}
	return o
}

// beginSaga begins w through a random subscribed instance, with the caller's
// ID, retrying as beginRetrying says.
func (s *sim) beginSaga(w *workSaga) {
	req := orchestrator.SagaRequest{ID: w.id, Definition: w.def}
	s.beginRetrying(w.id, "saga ", &w.clientBegin, func(c *coord) error {
		_, err := c.eng.BeginSaga(s.ctx, req)
		return err
	}, w.describe)
}

// sagaDriver returns the subscribed instance that drives w by its latest
// record (or that began it), or nil.
func (s *sim) sagaDriver(w *workSaga) *coord {
	name := w.coord
	if w.doc != nil {
		name = w.doc.Owner
	}
	c := s.coordBy[name]
	if c == nil || !c.subscribed() {
		return nil
	}
	return c
}

// abortSaga is a client's abort of w, through the instance that drives it.
func (s *sim) abortSaga(w *workSaga) {
	s.cdrv.Go(func() {
		defer func() { s.pending-- }()
		c := s.sagaDriver(w)
		if !w.begun || c == nil {
			return
		}
		rec, err := c.eng.ActOnSaga(messages.SagaActRequest{ID: w.id, Action: messages.SagaAbort, Who: "sim-client", Why: "the client gave up"})
		if err == nil {
			s.st.SagaAborts++
		}
		s.tracef("%s %s saga client abort: state=%s err=%v", c.name, w.id, rec.State, err)
	})
}

// operate is the simulated operator, every operatorEvery until the run is
// over: for each saga whose latest record is stuck, as its policy says,
// retry now or mark the stuck step resolved by hand, at most once per two
// rounds per saga.
func (s *sim) operate() {
	if s.quiescent || s.timedOut {
		return
	}
	for _, w := range s.sagaList {
		rec := w.rec()
		if rec == nil || !rec.State.Stuck() || w.policy == opNone || w.acted && s.s.now-w.actedAt < 2*operatorEvery {
			continue
		}
		c := s.sagaDriver(w)
		stuck := rec.StuckSteps()
		if c == nil || len(stuck) == 0 {
			continue
		}
		req := messages.SagaActRequest{ID: w.id, Action: messages.SagaRetry, Who: operatorWho, Why: "the participant is back"}
		if w.policy == opResolve {
			req.Action, req.Step, req.Why = messages.SagaResolve, stuck[0].Name, "undone by hand"
		}
		w.acted, w.actedAt = true, s.s.now
		eng := c.eng
		s.cdrv.Go(func() {
			rec, err := eng.ActOnSaga(req)
			if err == nil {
				s.st.OperatorActions++
			}
			s.tracef("%s %s operator %s %s: state=%s err=%v", c.name, w.id, req.Action, req.Step, rec.State, err)
		})
	}
	s.s.at(operatorEvery, s.operate)
}
