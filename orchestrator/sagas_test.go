package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/metrics"
	"github.com/natstx/natstx/orchestrator/saga"
)

// wireStep is a saga participant spoken to over the wire, as any language
// could: it consumes its commands from the stream, answers each with what
// answer says, and keeps the log of what it was asked.
type wireStep struct {
	mu     sync.Mutex
	log    []string // "action:step" / "compensate:step", in arrival order
	answer func(cmd messages.Command) (messages.Result, string)
}

func (w *wireStep) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.log...)
}

// sagaParticipant starts a wire participant named name on the fixture; an
// empty result from answer sends no reply.
func (f *fixture) sagaParticipant(name string, answer func(cmd messages.Command) (messages.Result, string)) *wireStep {
	f.t.Helper()
	w := &wireStep{answer: answer}
	nc := f.connect()
	js, err := jetstream.New(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx := ctxT(f.t, 10*time.Second)
	cons, err := js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.ConsumerName(name), FilterSubject: messages.ParticipantFilter(name), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		cmd, err := messages.DecodeCommand(m.Headers(), m.Data())
		if err != nil {
			_ = m.Term()
			return
		}
		w.mu.Lock()
		w.log = append(w.log, string(cmd.Op)+":"+cmd.Step)
		w.mu.Unlock()
		res, code := w.answer(cmd)
		if res == "" { // no answer: the reply is lost
			_ = m.Ack()
			return
		}
		r := messages.Reply{TxID: cmd.TxID, Op: cmd.Op, Participant: name, Result: res, Attempt: cmd.Attempt, Step: cmd.Step, Code: code}
		if res != messages.Ack {
			r.Reason = fmt.Sprintf("%s %s of %s", res, cmd.Op, cmd.Step)
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: cmd.ReplyTo, Header: nats.Header(r.Header()), Data: r.Body()})
		_ = m.Ack()
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(cc.Stop)
	return w
}

func always(r messages.Result) func(messages.Command) (messages.Result, string) {
	return func(messages.Command) (messages.Result, string) { return r, "" }
}

func threeSteps(participants ...string) saga.Definition {
	d := saga.Definition{Name: "order", Timeout: 2 * time.Second,
		Retry:        saga.RetryPolicy{InitialInterval: 20 * time.Millisecond, MaxAttempts: 3},
		Compensation: saga.CompensationPolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond, StuckAfterAttempts: 3}}
	for i, p := range participants {
		d.Steps = append(d.Steps, saga.Step{Name: fmt.Sprintf("step%d", i+1), Participant: p,
			Action: []byte("do " + p), Compensation: []byte("undo " + p)})
	}
	return d
}

func TestSagaCompletesStepByStep(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	a, b, c := f.sagaParticipant("a", always(messages.Ack)), f.sagaParticipant("b", always(messages.Ack)), f.sagaParticipant("c", always(messages.Ack))
	rec, err := f.eng.ExecuteSaga(ctxT(t, 20*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b", "c")})
	if err != nil || rec.State != saga.StateCompleted {
		t.Fatalf("want completed, got %s %q %v", rec.State, rec.Reason, err)
	}
	for i, w := range []*wireStep{a, b, c} {
		if got := w.seen(); len(got) != 1 || got[0] != fmt.Sprintf("action:step%d", i+1) {
			t.Fatalf("participant %d saw %v", i, got)
		}
	}
	st, err := newClient(t, f).Status(ctxT(t, 5*time.Second), rec.ID)
	waitFor(t, func() bool {
		st, err = newClient(t, f).Status(ctxT(t, 5*time.Second), rec.ID)
		return err == nil && st.State == "completed"
	}, "the status to say completed")
	if st.Protocol != messages.ProtocolSaga || len(st.Steps) != 3 || st.Steps[2].Status != "done" || st.Steps[0].Participant != "a" {
		t.Fatalf("status %+v", st)
	}
	if s := f.eng.Stats(); s.SagasCompleted != 1 || s.InFlight != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSagaRefusedStepCompensatesTheOthersInReverse(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	var mu sync.Mutex
	var order []string
	record := func(r messages.Result) func(messages.Command) (messages.Result, string) {
		return func(cmd messages.Command) (messages.Result, string) {
			mu.Lock()
			order = append(order, cmd.Participant+":"+string(cmd.Op))
			mu.Unlock()
			if cmd.Op == messages.OpCompensate {
				return messages.Ack, ""
			}
			return r, "no-stock"
		}
	}
	f.sagaParticipant("a", record(messages.Ack))
	f.sagaParticipant("b", record(messages.Ack))
	f.sagaParticipant("c", record(messages.Refused))
	rec, err := f.eng.ExecuteSaga(ctxT(t, 20*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b", "c")})
	if err != nil || rec.State != saga.StateCompensated {
		t.Fatalf("want compensated, got %s %q %v", rec.State, rec.Reason, err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "a:action b:action c:action b:compensate a:compensate"
	if got := strings.Join(order, " "); got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
	if st, _ := rec.Step("step3"); st.LastCode != "no-stock" || st.Status != saga.StepFailed {
		t.Fatalf("the refused step: %+v", st)
	}
}

func TestSagaStepFailingForNowIsRetriedThenDone(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.sagaParticipant("a", always(messages.Ack))
	var tries sync.Map
	f.sagaParticipant("b", func(cmd messages.Command) (messages.Result, string) {
		if cmd.Attempt < 3 {
			tries.Store(cmd.Attempt, true)
			return messages.Failed, "busy"
		}
		return messages.Ack, ""
	})
	rec, err := f.eng.ExecuteSaga(ctxT(t, 20*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b")})
	if err != nil || rec.State != saga.StateCompleted {
		t.Fatalf("want completed, got %s %q %v", rec.State, rec.Reason, err)
	}
	if st, _ := rec.Step("step2"); st.Attempts != 3 || st.LastCode != "busy" {
		t.Fatalf("step2: %+v", st)
	}
}

// A compensation that keeps failing makes the saga visibly stuck; an
// operator resolves the step by hand, and the saga ends compensated with
// the note recorded.
func TestSagaCompensationStuckThenResolvedByAnOperator(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.sagaParticipant("a", func(cmd messages.Command) (messages.Result, string) {
		if cmd.Op == messages.OpCompensate {
			return messages.Failed, "ledger-down"
		}
		return messages.Ack, ""
	})
	f.sagaParticipant("b", always(messages.Refused))
	ctx := ctxT(t, 30*time.Second)
	id, err := f.eng.BeginSaga(ctx, orchestrator.SagaRequest{Definition: threeSteps("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, f)
	var st messages.TxStatus
	waitFor(t, func() bool {
		st, err = c.Status(ctx, id)
		return err == nil && st.State == string(saga.StateCompensationStuck)
	}, "the saga to be compensation-stuck")
	if !st.Steps[0].Stuck || st.Steps[0].LastCode != "ledger-down" || st.Steps[0].CompensationAttempts < 3 || st.Steps[0].NextRetryAt.IsZero() {
		t.Fatalf("the stuck step: %+v", st.Steps[0])
	}
	if f.eng.Stats().SagasStuck == 0 {
		t.Fatal("stuck not counted")
	}
	// The Prometheus collector reports the count, read after it is set.
	if n := stuckMetric(t, f.eng); n < 1 || n > float64(f.eng.Stats().SagasStuck) {
		t.Fatalf("natstx_saga_steps_stuck_total = %g, want from 1 to %d (the engine's count)", n, f.eng.Stats().SagasStuck)
	}
	// The list reads the status bucket, written without waiting: the stuck
	// state reaches it a write after Status answers it from memory.
	var stuck []messages.TxStatus
	waitFor(t, func() bool {
		stuck, err = c.List(ctx, string(saga.StateCompensationStuck))
		return err == nil && len(stuck) > 0
	}, "the stuck saga in the status list")
	if len(stuck) != 1 || stuck[0].ID != id {
		t.Fatalf("list --state compensation-stuck: %v", stuck)
	}
	if _, err := c.ActOnSaga(ctx, messages.SagaActRequest{ID: id, Action: messages.SagaResolve, Step: "step1"}); err == nil {
		t.Fatal("an action without who and why must be refused")
	}
	if _, err := c.ActOnSaga(ctx, messages.SagaActRequest{ID: id, Action: messages.SagaResolve, Step: "step1", Who: "alice", Why: "refunded by hand, ticket 42"}); err != nil {
		t.Fatal(err)
	}
	rec, err := f.eng.WaitSaga(ctx, id)
	if err != nil || rec.State != saga.StateCompensated {
		t.Fatalf("want compensated, got %s %v", rec.State, err)
	}
	if s, _ := rec.Step("step1"); s.Status != saga.StepCompensatedByHand || !strings.Contains(s.Note, "ticket 42") {
		t.Fatalf("step1: %+v", s)
	}
	if len(rec.Operator) != 1 || rec.Operator[0].Who != "alice" {
		t.Fatalf("operator actions: %+v", rec.Operator)
	}
}

// stuckMetric gathers natstx_saga_steps_stuck_total from the engine's
// Prometheus collector.
func stuckMetric(t *testing.T, eng *orchestrator.Engine) float64 {
	t.Helper()
	mfs, err := metrics.NewRegistry(metrics.NewEngineCollector(eng)).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "natstx_saga_steps_stuck_total" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no natstx_saga_steps_stuck_total among the engine's metrics")
	return 0
}

// sagaOwnerAboutToDie begins a saga of steps at a and b on coordinator
// c1 and returns once b got its action, whose answer c1 never sees (b
// answers only the other instances): c1 is to die now, and another instance
// to take the saga over.
func sagaOwnerAboutToDie(t *testing.T) (*fixture, string) {
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease})
	f.sagaParticipant("a", always(messages.Ack))
	var once sync.Once
	held := make(chan struct{})
	f.sagaParticipant("b", func(cmd messages.Command) (messages.Result, string) {
		if cmd.ReplyTo == messages.ReplySubject("c1", "b") {
			once.Do(func() { close(held) })
			return "", "" // c1 dies before b's answer reaches it
		}
		return messages.Ack, ""
	})
	id, err := f.eng.BeginSaga(ctxT(t, 5*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	<-held
	return f, id
}

// The coordinator dies mid-saga; another instance claims the record once
// its lease is gone and drives the saga to its end.
func TestSagaIsTakenOverWhenItsCoordinatorDies(t *testing.T) {
	f, id := sagaOwnerAboutToDie(t)
	f.eng.Halt()
	c2 := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease})
	waitFor(t, func() bool { r, err := c2.SagaStatus(id); return err == nil && r.State == saga.StateCompleted }, "c2 to complete the saga")
	if c2.Stats().Recovered != 1 {
		t.Fatalf("Recovered = %d", c2.Stats().Recovered)
	}
}

func TestSagaBegunThroughTheAPIFromAFile(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.sagaParticipant("inventory", always(messages.Ack))
	f.sagaParticipant("payment", always(messages.Ack))
	def := `name: order
steps:
  - name: reserve
    participant: inventory
    action: {item: widget, qty: 2}
    compensation: {item: widget, qty: 2}
  - name: charge
    participant: payment
    action: {account: alice, amount: 30}
    compensation: {account: alice, amount: 30}
`
	st, err := newClient(t, f).BeginSaga(ctxT(t, 20*time.Second), messages.SagaBeginRequest{ID: "order-7", Definition: def, Wait: true})
	if err != nil || st.State != "completed" || st.ID != "order-7" || len(st.Steps) != 2 {
		t.Fatalf("%+v %v", st, err)
	}
	_, err = newClient(t, f).BeginSaga(ctxT(t, 5*time.Second), messages.SagaBeginRequest{Definition: "steps:\n  - name: x\n"})
	if err == nil || !strings.Contains(err.Error(), "participant") {
		t.Fatalf("a definition without a participant: %v", err)
	}
	_, err = newClient(t, f).BeginSaga(ctxT(t, 5*time.Second), messages.SagaBeginRequest{ID: "order-7", Definition: def})
	if err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("the same ID again: %v", err)
	}
}

// stepDriver is a simulated engine's driver for a test that steps time by
// hand: Now is a clock the test advances, a Sleep waits for the test to
// advance the clock past its end (or for the engine to stop), a task is a
// goroutine, and timers never fire.
type stepDriver struct {
	mu   sync.Mutex
	cond *sync.Cond
	now  time.Time
	wg   sync.WaitGroup
	// sleeps holds the wake-up time of each goroutine in Sleep.
	sleeps map[int]time.Time
	slept  int
}

func newStepDriver() *stepDriver {
	d := &stepDriver{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), sleeps: map[int]time.Time{}}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func (d *stepDriver) Now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

type neverTimer struct{}

func (neverTimer) Stop() bool { return true }

func (d *stepDriver) AfterFunc(time.Duration, func()) orchestrator.Timer { return neverTimer{} }

func (d *stepDriver) Go(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// WithTimeout ends only when cancelled or when parent ends: the test's
// clock moves by hand, and its timers never fire.
func (d *stepDriver) WithTimeout(parent context.Context, _ time.Duration) (context.Context, context.CancelFunc) {
	return context.WithCancel(parent)
}

func (d *stepDriver) Sleep(after time.Duration, stop <-chan struct{}) bool {
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	if after <= 0 {
		runtime.Gosched()
		return !stopped()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	until := d.now.Add(after)
	d.slept++
	id := d.slept
	d.sleeps[id] = until
	for d.now.Before(until) && !stopped() {
		d.cond.Wait()
	}
	delete(d.sleeps, id)
	return !stopped()
}

// settled reports whether exactly n goroutines sleep, each until a time
// still ahead: whatever the last advance woke has done its work.
func (d *stepDriver) settled(n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, until := range d.sleeps {
		if !until.After(d.now) {
			return false
		}
	}
	return len(d.sleeps) == n
}

// advance moves the clock and wakes the sleepers (also to see a stop).
func (d *stepDriver) advance(by time.Duration) {
	d.mu.Lock()
	d.now = d.now.Add(by)
	d.mu.Unlock()
	d.cond.Broadcast()
}

// startSimulated starts a simulated engine on drv, halted at the end of
// the test.
func startSimulated(t *testing.T, drv *stepDriver, cfg orchestrator.Config, p orchestrator.Ports) *orchestrator.Engine {
	t.Helper()
	p.Driver = drv
	eng, err := orchestrator.NewSimulated(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		eng.Halt()
		drv.advance(0)
		drv.wg.Wait()
	})
	return eng
}

// memStore is an in-memory orchestrator.Store (keys do not expire);
// loseFirstCreate makes the first Create apply its write and answer an
// error, as a lost answer does; a Create or Update waits while gate is
// open (until it is closed), as a slow write does.
type memStore struct {
	mu              sync.Mutex
	rev             uint64
	m               map[string]orchestrator.StoreEntry
	creates         int
	loseFirstCreate bool
	gate            chan struct{}
	// listings counts the calls of Entries, read the entries they returned.
	listings, read int
	// page, when not 0, is how many entries a listing reads before it runs
	// out of time: it answers them, in revision order, with
	// context.DeadlineExceeded, as a watch of a large bucket does.
	page int
}

func newMemStore() *memStore { return &memStore{m: map[string]orchestrator.StoreEntry{}} }

func (s *memStore) write(key string, value []byte) uint64 {
	s.rev++
	s.m[key] = orchestrator.StoreEntry{Key: key, Value: append([]byte(nil), value...), Revision: s.rev}
	return s.rev
}

func (s *memStore) Get(_ context.Context, key string) (orchestrator.StoreEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	en, ok := s.m[key]
	if !ok {
		return en, orchestrator.ErrNoEntry
	}
	return en, nil
}

func (s *memStore) Create(_ context.Context, key string, value []byte, _ time.Duration) (uint64, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		return 0, orchestrator.ErrEntryExists
	}
	rev := s.write(key, value)
	if s.creates++; s.loseFirstCreate && s.creates == 1 {
		return 0, errors.New("the answer was lost")
	}
	return rev, nil
}

func (s *memStore) Update(_ context.Context, key string, value []byte, rev uint64, _ time.Duration) (uint64, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if en, ok := s.m[key]; !ok || en.Revision != rev {
		return 0, orchestrator.ErrRevisionChanged
	}
	return s.write(key, value), nil
}

func (s *memStore) Put(_ context.Context, key string, value []byte, _ time.Duration) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.write(key, value), nil
}

func (s *memStore) PutAsync(key string, value []byte, _ func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.write(key, value)
}

func (s *memStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

func (s *memStore) Entries(_ context.Context, after uint64, keep func(orchestrator.StoreEntry) bool) ([]orchestrator.StoreEntry, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listings++
	var all []orchestrator.StoreEntry
	for _, en := range s.m {
		if en.Revision > after {
			all = append(all, en)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Revision < all[j].Revision })
	var err error
	if s.page > 0 && len(all) > s.page {
		all, err = all[:s.page], context.DeadlineExceeded
	}
	var out []orchestrator.StoreEntry
	highest := after
	for _, en := range all {
		s.read++
		highest = max(highest, en.Revision)
		if keep == nil || keep(en) {
			out = append(out, en)
		}
	}
	return out, highest, err
}

// TestOperatorActionWhileTheSagaRecordIsWrittenIsCheckedAtOnce: an
// operator's action that comes while the saga's record is being written is
// tried on a copy of the saga at once: a resolve of a step the saga does
// not have is refused, not acknowledged (CI caught the console
// acknowledging one), and a valid abort is accepted, then taken by the
// saga once the write is done. The answer does not wait for the write (in
// the simulator a caller that waits on a shard for longer than its turn
// held simulated time still). Driven by hand, so the write is surely in
// flight when the actions come.
func TestOperatorActionWhileTheSagaRecordIsWrittenIsCheckedAtOnce(t *testing.T) {
	drv := newStepDriver()
	sagas := newMemStore()
	sagas.gate = make(chan struct{})
	var release sync.Once
	open := func() { release.Do(func() { close(sagas.gate) }) }
	eng := startSimulated(t, drv, orchestrator.Config{Instance: "c1", LeaseTTL: 1500 * time.Millisecond, Shards: 1},
		orchestrator.Ports{Stores: orchestrator.Stores{Records: newMemStore(), Leases: newMemStore(), IDs: newMemStore(), Sagas: sagas}, Commands: &cmdLog{}})
	t.Cleanup(open) // runs before the engine's halt, which waits for the write
	type answer struct {
		rec saga.Record
		err error
	}
	// call runs f in a goroutine and pumps the engine's shards until it
	// answers, for at most a few seconds of the machine's time.
	call := func(what string, f func() (saga.Record, error)) answer {
		t.Helper()
		ch := make(chan answer, 1)
		go func() { rec, err := f(); ch <- answer{rec, err} }()
		for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(time.Millisecond) {
			eng.Pump()
			select {
			case a := <-ch:
				return a
			default:
			}
		}
		t.Fatalf("no answer to %s", what)
		return answer{}
	}
	began := call("BeginSaga", func() (saga.Record, error) {
		id, err := eng.BeginSaga(context.Background(), orchestrator.SagaRequest{ID: "sg1", Definition: threeSteps("a", "b")})
		return saga.Record{ID: id}, err
	})
	if began.err != nil {
		t.Fatal(began.err)
	}
	act := func(action, step string) answer {
		return call(action, func() (saga.Record, error) {
			return eng.ActOnSaga(messages.SagaActRequest{ID: "sg1", Action: action, Step: step, Who: "ops-anna", Why: "test"})
		})
	}
	// The first record's write is held: the actions come while it is out.
	if a := act(messages.SagaResolve, "no-such-step"); a.err == nil || !strings.Contains(a.err.Error(), "not a step") {
		t.Fatalf("a resolve of a step the saga does not have, while its record is written: %v (want refused: not a step)", a.err)
	}
	if a := act(messages.SagaRetry, ""); a.err == nil || !strings.Contains(a.err.Error(), "no step is waiting to retry") {
		t.Fatalf("a retry with no step waiting to retry, while its record is written: %v (want refused)", a.err)
	}
	if a := act(messages.SagaAbort, ""); a.err != nil {
		t.Fatalf("an abort while the record is written: %v", a.err)
	}
	open()
	rec := call("SagaStatus after the write", func() (saga.Record, error) {
		for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(time.Millisecond) {
			if rec, err := eng.SagaStatus("sg1"); err != nil || len(rec.Operator) > 0 {
				return rec, err
			}
		}
		return saga.Record{}, errors.New("the abort was never taken")
	})
	if rec.err != nil {
		t.Fatal(rec.err)
	}
	if (rec.rec.State != saga.StateCompensating && rec.rec.State != saga.StateCompensated) || len(rec.rec.Operator) != 1 || rec.rec.Operator[0].Kind != saga.EventAbort {
		t.Fatalf("the record after the write: state %s, operator actions %+v; want the one abort taken", rec.rec.State, rec.rec.Operator)
	}
}

// cmdLog records the commands an engine publishes.
type cmdLog struct {
	mu   sync.Mutex
	cmds []messages.Command
}

func (c *cmdLog) Publish(cmd messages.Command) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cmds = append(c.cmds, cmd)
	return nil
}

func (c *cmdLog) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cmds)
}

// TestSagaIsNotRunAgainAfterItsRecordExpired: a saga's first record is
// written, but its answer is lost; its coordinator then stalls for longer
// than the retention, during which another instance takes the saga over,
// finishes it, and its final record expires. When the coordinator goes on,
// its retried write must not create the record again (that ran the saga
// again from its start: found by the simulator, seed 169, sg00015, whose
// done steps were then left standing in a "compensated" saga): it gives the
// saga up, sends nothing, and holds nothing in flight. Driven by hand in
// simulated time, so the result does not depend on the machine.
func TestSagaIsNotRunAgainAfterItsRecordExpired(t *testing.T) {
	drv := newStepDriver()
	sagas := newMemStore()
	sagas.loseFirstCreate = true
	cmds := &cmdLog{}
	eng := startSimulated(t, drv, orchestrator.Config{Instance: "c1", Retention: 20 * time.Second, LeaseTTL: 1500 * time.Millisecond, Shards: 1},
		orchestrator.Ports{Stores: orchestrator.Stores{Records: newMemStore(), Leases: newMemStore(), IDs: newMemStore(), Sagas: sagas}, Commands: cmds})
	// pumpUntil runs the engine's shards until cond holds, for at most a few
	// seconds of the machine's time.
	pumpUntil := func(cond func() bool, what string) {
		t.Helper()
		for start := time.Now(); !cond(); {
			eng.Pump()
			if time.Since(start) > 5*time.Second {
				t.Fatalf("no %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	began := make(chan error, 1)
	go func() {
		_, err := eng.BeginSaga(context.Background(), orchestrator.SagaRequest{ID: "sg1", Definition: threeSteps("a", "b")})
		began <- err
	}()
	var beginErr error
	pumpUntil(func() bool {
		select {
		case beginErr = <-began:
			return true
		default:
			return false
		}
	}, "answer to BeginSaga")
	if beginErr != nil {
		t.Fatal(beginErr)
	}
	pumpUntil(func() bool { sagas.mu.Lock(); defer sagas.mu.Unlock(); return sagas.creates == 1 }, "first record write")
	// Meanwhile another instance took the saga over and finished it, and its
	// final record expired with the retention.
	if err := sagas.Delete(context.Background(), "sg1"); err != nil {
		t.Fatal(err)
	}
	drv.advance(25 * time.Second)
	pumpUntil(func() bool { return eng.Stats().InFlight == 0 }, "saga given up")
	if _, err := sagas.Get(context.Background(), "sg1"); err == nil || sagas.creates != 1 {
		t.Fatalf("the saga's record was created again (%d creates): the saga runs again", sagas.creates)
	}
	if n := cmds.count(); n != 0 {
		t.Fatalf("%d commands sent for a saga whose first record was never known written", n)
	}
}

// bucketWrites is how many messages the stream of key-value bucket has
// stored since it was made (its last sequence).
func bucketWrites(t *testing.T, js jetstream.JetStream, bucket string) uint64 {
	t.Helper()
	s, err := js.Stream(ctxT(t, 5*time.Second), "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestAFastSagaWritesTwoStatusesAndItsFinalRecordOnce: a three-step saga
// that ends within StatusLinger writes its first status and its final one,
// not one per step (with a negative linger, every step's is written); its
// record is written four times (created, then once per step), the write
// that makes it final carrying the retention as its TTL, with no rewrite
// of it afterwards to make it expire.
func TestAFastSagaWritesTwoStatusesAndItsFinalRecordOnce(t *testing.T) {
	for _, tc := range []struct {
		linger   time.Duration
		statuses uint64
	}{
		{time.Hour, 2},
		{-1, 4},
	} {
		f := newFixture(t, orchestrator.Config{StatusLinger: tc.linger, Retention: 90 * time.Minute})
		f.sagaParticipant("a", always(messages.Ack))
		f.sagaParticipant("b", always(messages.Ack))
		f.sagaParticipant("c", always(messages.Ack))
		rec, err := f.eng.ExecuteSaga(ctxT(t, 20*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b", "c")})
		if err != nil || rec.State != saga.StateCompleted {
			t.Fatalf("linger %v: want completed, got %s %q %v", tc.linger, rec.State, rec.Reason, err)
		}
		c := newClient(t, f)
		waitFor(t, func() bool {
			st, err := c.Status(ctxT(t, 5*time.Second), rec.ID)
			return err == nil && st.State == "completed"
		}, "the status to say completed")
		js, err := jetstream.New(f.nc)
		if err != nil {
			t.Fatal(err)
		}
		// What a late write would add has had time to land.
		time.Sleep(300 * time.Millisecond)
		if got := bucketWrites(t, js, messages.StatusBucket); got != tc.statuses {
			t.Errorf("linger %v: %d status writes, want %d", tc.linger, got, tc.statuses)
		}
		if got := bucketWrites(t, js, orchestrator.SagaBucket); got != 4 {
			t.Errorf("linger %v: %d saga record writes, want 4 (a create and one per step)", tc.linger, got)
		}
		s, err := js.Stream(ctxT(t, 5*time.Second), "KV_"+orchestrator.SagaBucket)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(ctxT(t, 5*time.Second), "$KV."+orchestrator.SagaBucket+"."+rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ttl := m.Header.Get(jetstream.MsgTTLHeader); ttl != "1h30m0s" || !strings.Contains(string(m.Data), `"state":"completed"`) {
			t.Errorf("linger %v: the final record has %s=%q, want 1h30m0s; record %s", tc.linger, jetstream.MsgTTLHeader, ttl, m.Data)
		}
	}
}

// TestASlowSagasProgressIsWrittenOnceTheLingerHasPassed: a saga held at
// its second step has the status of that step written within the linger,
// though only its first and final statuses are written at once.
func TestASlowSagasProgressIsWrittenOnceTheLingerHasPassed(t *testing.T) {
	f := newFixture(t, orchestrator.Config{StatusLinger: 50 * time.Millisecond})
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	f.sagaParticipant("a", always(messages.Ack))
	f.sagaParticipant("b", func(messages.Command) (messages.Result, string) { <-release; return messages.Ack, "" })
	f.sagaParticipant("c", always(messages.Ack))
	id, err := f.eng.BeginSaga(ctxT(t, 5*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b", "c")})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, f)
	var st messages.TxStatus
	waitFor(t, func() bool {
		st, err = c.Status(ctxT(t, 5*time.Second), id)
		return err == nil && len(st.Steps) == 3 && st.Steps[0].Status == "done" && st.Steps[1].Status == "running"
	}, "the status to say step1 done, step2 running")
	open()
	waitFor(t, func() bool {
		st, err = c.Status(ctxT(t, 5*time.Second), id)
		return err == nil && st.State == "completed"
	}, "the status to say completed")
}
