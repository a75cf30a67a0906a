package orchestrator_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
)

// The tests of this file each reproduce one safety hole found by review
// (issue 9, findings 1-9) against the engine on a real embedded NATS; each
// failed before its fix.

// blockAt returns a fault hook that, the first time the engine reaches
// point, reports the transaction on the returned channel and then blocks
// until release is closed: a coordinator stalled there (a SIGSTOP, a long GC
// pause, a write stuck in a retry).
func blockAt(point orchestrator.FaultPoint, release <-chan struct{}) (func(orchestrator.FaultPoint, string) bool, chan string) {
	hit := make(chan string, 1)
	return func(p orchestrator.FaultPoint, id string) bool {
		if p != point {
			return false
		}
		select {
		case hit <- id:
			<-release
		default:
		}
		return false
	}, hit
}

// kvBucket opens the fixture's key-value bucket name.
func kvBucket(t *testing.T, f *fixture, name string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(f.nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctxT(t, 5*time.Second), name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func recordBucket(t *testing.T, f *fixture) jetstream.KeyValue {
	return kvBucket(t, f, orchestrator.RecordBucket)
}

func statusBucket(t *testing.T, f *fixture) jetstream.KeyValue {
	return kvBucket(t, f, messages.StatusBucket)
}

// Finding 1: an owner stalled while writing its commit decision, for longer
// than the retention, must not record commit after another instance
// recorded abort for a participant in doubt (before the fix the abort
// record expired with the retention, and the stalled owner's create then
// succeeded: a mixed outcome).
func TestAStalledOwnerCannotCommitAfterARecordedAbortExpiresWithTheRetention(t *testing.T) {
	release := make(chan struct{})
	hook, writing := blockAt(orchestrator.PointCommitWriting, release)
	const retention = time.Second
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, Retention: retention, FaultHook: hook})
	c2 := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease, Retention: retention})
	a, b := newCounting(), newCounting()
	f.participant("a", a)
	f.participant("b", b)
	ctx := ctxT(t, 30*time.Second)
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("a", "b"), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	<-writing // every vote is yes; c1 stalls before its commit write lands
	// Past the deadline participant a asks c2, which records abort.
	waitFor(t, func() bool {
		r := c2.Resolve(ctx, messages.OutcomeRequest{ID: id, Participant: "a", DeadlineMs: time.Now().UnixMilli() - 1})
		return r.Outcome == messages.OutcomeAbort
	}, "c2 to record abort")
	// The stall outlasts the retention (and the delete marker it leaves).
	time.Sleep(3 * retention)
	close(release)
	out, err := f.eng.Wait(ctx, id)
	if err != nil || out.Committed() {
		t.Fatalf("the stalled owner's outcome: %s %q %v; want aborted by refusal", out.State, out.Reason, err)
	}
	waitFor(t, func() bool { _, aa := a.count(id); _, ab := b.count(id); return aa == 1 && ab == 1 }, "abort on both")
	if ca, _ := a.count(id); ca != 0 {
		t.Fatal("a committed")
	}
	if cb, _ := b.count(id); cb != 0 {
		t.Fatal("b committed")
	}
	e, err := recordBucket(t, f).Get(ctx, id)
	if err != nil || !strings.Contains(string(e.Value()), `"state":"aborted"`) {
		t.Fatalf("the record must still say aborted: %v %s", err, e.Value())
	}
}

// Finding 2: a participant restarted after preparing asks without the
// deadline; while the owner is alive and collecting votes, the answer must
// be pending, never an abort recorded at once.
func TestAQuestionWithoutDeadlineWaitsWhileTheOwnerIsAlive(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease})
	c2 := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease})
	a := newCounting()
	f.participant("a", a)
	ctx := ctxT(t, 20*time.Second)
	// "ghost" never votes: c1 is collecting votes for a minute.
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("a", "ghost"), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return statusWritten(t, f, id) }, "c1's status to be written")
	if r := c2.Resolve(ctx, messages.OutcomeRequest{ID: id, Participant: "a"}); r.Outcome != messages.OutcomePending {
		t.Fatalf("asked another instance without a deadline while the owner lives: %+v", r)
	}
	if _, err := recordBucket(t, f).Get(ctx, id); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("no record may exist yet: %v", err)
	}
	if st, err := f.eng.Status(id); err != nil || st.State != orchestrator.Preparing {
		t.Fatalf("c1 must still be collecting votes: %s %v", st.State, err)
	}
	// Once the owner is gone, the same question settles it.
	f.eng.Stop()
	waitFor(t, func() bool {
		return c2.Resolve(ctx, messages.OutcomeRequest{ID: id, Participant: "a"}).Outcome == messages.OutcomeAbort
	}, "abort once c1 is gone")
}

func statusWritten(t *testing.T, f *fixture, id string) bool {
	c := newClient(t, f)
	_, err := c.Status(ctxT(t, 5*time.Second), id)
	return err == nil
}

// Finding 4: an orphan sweep that fails must be done again. c1 dies with a
// transaction undecided; c2's first sweep after c1's lease is gone cannot
// record the abort (the record is unreadable); once it is readable again,
// a later sweep must abort the orphan (before the fix no sweep ever came
// again: the dead instance had been crossed off already).
func TestAFailedOrphanSweepIsDoneAgain(t *testing.T) {
	hook, hit := haltAt(orchestrator.PointVoteReceived)
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, FaultHook: hook})
	a := newCounting()
	f.participant("a", a)
	ctx := ctxT(t, 30*time.Second)
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("a", "ghost"), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitHit(t, hit)
	kv := recordBucket(t, f)
	if _, err := kv.Put(ctx, id, []byte("not a record")); err != nil {
		t.Fatal(err)
	}
	c2 := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease})
	waitFor(t, func() bool { return c2.Stats().SweepsIncomplete > 0 }, "a sweep of c2 to fail on the unreadable record")
	if err := kv.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ab := a.count(id); return ab == 1 }, "a later sweep to abort the orphan")
	if c2.Stats().OrphansAborted != 1 {
		t.Fatalf("OrphansAborted = %d", c2.Stats().OrphansAborted)
	}
}

// Finding 5: a transaction ID the caller chose is begun once in the whole
// cluster, not once per instance.
func TestACallerChosenIDIsBegunOnceAcrossInstances(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1"})
	c2 := f.engine(orchestrator.Config{Instance: "c2"})
	block := make(chan struct{})
	defer close(block)
	f.participant("a", holding(block, nil))
	ctx := ctxT(t, 10*time.Second)
	if _, err := f.eng.Begin(ctx, orchestrator.Request{ID: "order-42", Participants: parts("a")}); err != nil {
		t.Fatal(err)
	}
	_, err := c2.Begin(ctx, orchestrator.Request{ID: "order-42", Participants: parts("a")})
	if !errors.Is(err, orchestrator.ErrDuplicateTx) {
		t.Fatalf("the same ID on another instance: want ErrDuplicateTx, got %v", err)
	}
}

// Finding 6: the owner's commit write finds a commit record that another
// instance claimed meanwhile (the owner was paused past its lease after its
// first write's answer was lost). It is the same decision: the owner goes
// on instead of retrying for ever.
func TestACommitRecordClaimedByAnotherInstanceCountsAsDurable(t *testing.T) {
	release := make(chan struct{})
	hook, writing := blockAt(orchestrator.PointCommitWriting, release)
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, FaultHook: hook, NoOnePhase: true}) // a commit record is two-phase
	a := newCounting()
	f.participant("a", a)
	ctx := ctxT(t, 20*time.Second)
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("a")})
	if err != nil {
		t.Fatal(err)
	}
	<-writing
	rec, _ := json.Marshal(map[string]any{"id": id, "state": "committing", "participants": []string{"a"}, "owner": "c9", "decided_at": time.Now().UTC()})
	if _, err := recordBucket(t, f).Create(ctx, id, rec); err != nil {
		t.Fatal(err)
	}
	close(release)
	out, err := f.eng.Wait(ctx, id)
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("want committed, got %s %q %v", out.State, out.Reason, err)
	}
	if ca, _ := a.count(id); ca != 1 {
		t.Fatalf("a committed %d times", ca)
	}
}

// Finding 9: an abort recorded for a participant in doubt, of a transaction
// no status was written for, is what Status reports afterwards (before the
// fix: "unknown transaction").
func TestStatusReportsAnAbortRecordedForAParticipantInDoubt(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1"})
	ctx := ctxT(t, 10*time.Second)
	if r := f.eng.Resolve(ctx, messages.OutcomeRequest{ID: "lost-tx", Participant: "a", DeadlineMs: time.Now().UnixMilli() - 1}); r.Outcome != messages.OutcomeAbort {
		t.Fatalf("resolve: %+v", r)
	}
	st, err := newClient(t, f).Status(ctx, "lost-tx")
	if err != nil || st.State != "aborted" || !strings.Contains(st.Reason, "presumed abort") {
		t.Fatalf("status: %+v %v", st, err)
	}
}

// Found by the simulator (seed 963827): an instance whose lease lapsed
// while it went on is taken for dead; another takes its saga over and
// finishes it; a "running" status the first wrote before it knew lands
// late, over the final one, naming the first, alive, as owner. The instance
// that finished the saga writes its final status again at its next sweep
// (before the fix none did: the sweep left statuses of live owners alone,
// and the live owner, which saw no death, swept nothing for ten minutes).
func TestAStaleStatusOfALiveInstanceIsCorrectedByTheInstanceThatFinishedTheSaga(t *testing.T) {
	// c1 started moments ago: it sweeps what the status bucket gets for
	// the window after its start, as after any death it sees.
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease})
	f.sagaParticipant("a", always(messages.Ack))
	f.sagaParticipant("b", always(messages.Ack))
	rec, err := f.eng.ExecuteSaga(ctxT(t, 20*time.Second), orchestrator.SagaRequest{Definition: threeSteps("a", "b")})
	if err != nil || rec.State != saga.StateCompleted {
		t.Fatalf("want completed, got %s %v", rec.State, err)
	}
	staleStatusOfALiveInstanceIsCorrected(t, f, rec.ID, "completed", "running")
}

// The same for a two-phase transaction: a stale "preparing" status of a
// live instance over a transaction that committed here.
func TestAStaleStatusOfALiveInstanceIsCorrectedByTheInstanceThatCommitted(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease})
	f.participant("a", newCounting())
	out, err := f.eng.Execute(ctxT(t, 20*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil || !out.Committed() {
		t.Fatalf("want committed, got %s %v", out.State, err)
	}
	staleStatusOfALiveInstanceIsCorrected(t, f, out.ID, "committed", "preparing")
}

// staleStatusOfALiveInstanceIsCorrected waits for id's status to say final,
// writes over it a status saying stale owned by c9, an instance whose lease
// the test keeps alive and that never ran id, and waits for the fixture's
// engine to write the final status again.
func staleStatusOfALiveInstanceIsCorrected(t *testing.T, f *fixture, id, final, stale string) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	status := statusBucket(t, f)
	var st messages.TxStatus
	waitFor(t, func() bool {
		e, err := status.Get(ctx, id)
		return err == nil && json.Unmarshal(e.Value(), &st) == nil && st.State == final
	}, "the final status")

	leases := kvBucket(t, f, orchestrator.LeaseBucket)
	alive := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		for range 1000 {
			if _, err := leases.Put(ctx, "c9", []byte("c9")); err != nil {
				return
			}
			select {
			case <-alive:
				return
			case <-time.After(lease / 4):
			}
		}
	}()
	defer func() { close(alive); <-renewed }()

	st.State, st.Owner = stale, "c9"
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := status.Put(ctx, id, data); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		var now messages.TxStatus
		e, err := status.Get(ctx, id)
		return err == nil && json.Unmarshal(e.Value(), &now) == nil && now.State == final
	}, "the final status written again over c9's stale one")
}

// A slow transaction's status is refreshed when whom it waits for changes,
// or every ten seconds, not at each resend: under overload each refresh (a
// read, a decode, a compare-and-set write) at every resend of every slow
// transaction took a fifth of the CPU and collapsed the throughput
// (docs/BENCHMARKS.md). Here "ghost" never answers: dozens of resends, the
// waiting set the same, and the status is written a few times at most.
func TestASlowTransactionsStatusIsNotRewrittenAtEveryResend(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1", RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond, StatusLinger: -1})
	f.participant("a", newCounting())
	_, writes := statusWritesOver40Resends(t, f, "a", "ghost")
	if len(writes) > 4 {
		t.Fatalf("%d status writes (%v) over %d resends, want a few (begin, a vote, a refresh)", len(writes), writes, f.eng.Stats().Resends)
	}
}

// statusWritesOver40Resends begins a transaction over the participants
// named (some of which never answer) and returns its ID and the states of
// the status writes it made by 40 resends: every write the watch delivers
// until it stays quiet for half a second (a few more resends meanwhile), for
// 3 s at most.
func statusWritesOver40Resends(t *testing.T, f *fixture, names ...string) (string, []string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	w, err := statusBucket(t, f).WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts(names...), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.eng.Stats().Resends >= 40 }, "40 resends")
	var writes []string
	end := time.After(3 * time.Second)
	for done := false; !done; {
		select {
		case <-end:
			done = true
		case e := <-w.Updates():
			if e != nil && e.Key() == id {
				st, _ := messages.PeekState(e.Value())
				writes = append(writes, st)
			}
		case <-time.After(500 * time.Millisecond):
			done = true
		}
	}
	return id, writes
}

// TestAStatusThatAlreadySaysWhomItWaitsForIsNotRefreshed: a transaction
// whose participants never answer keeps the status its begin wrote (waiting
// for both) through its resends: no refresh repeats it, not even at the
// first resend (each one is a read and a compare-and-set write, which under
// overload every slow transaction paid).
func TestAStatusThatAlreadySaysWhomItWaitsForIsNotRefreshed(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1", RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond, StatusLinger: -1})
	id, writes := statusWritesOver40Resends(t, f, "ghost1", "ghost2")
	if len(writes) != 1 || writes[0] != "preparing" {
		t.Fatalf("status writes over %d resends: %v, want the begin's alone (preparing)", f.eng.Stats().Resends, writes)
	}
	e, err := statusBucket(t, f).Get(ctxT(t, 10*time.Second), id)
	if err != nil {
		t.Fatal(err)
	}
	var st messages.TxStatus
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	if strings.Join(st.Waiting, ",") != "ghost1,ghost2" {
		t.Fatalf("the status waits for %v, want ghost1 and ghost2", st.Waiting)
	}
}
