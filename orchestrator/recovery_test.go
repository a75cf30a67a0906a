package orchestrator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

// counting is a participant handler that counts what it applied per
// transaction, to check that nothing is applied twice or lost.
type counting struct {
	mu              sync.Mutex
	commits, aborts map[string]int
	holdPrepare     chan struct{} // when set, prepare waits for it
	prepareErr      error
	preparesStarted atomic.Int32
}

func newCounting() *counting {
	return &counting{commits: map[string]int{}, aborts: map[string]int{}}
}

func (c *counting) Prepare(ctx context.Context, _ participants.Tx, _ []byte) error {
	c.preparesStarted.Add(1)
	if c.holdPrepare != nil {
		select {
		case <-c.holdPrepare:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return c.prepareErr
}

func (c *counting) Commit(_ context.Context, tx participants.Tx) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commits[tx.ID]++
	return nil
}

func (c *counting) Abort(_ context.Context, tx participants.Tx) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborts[tx.ID]++
	return nil
}

func (c *counting) count(id string) (commits, aborts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commits[id], c.aborts[id]
}

// haltAt returns a fault hook that halts the engine the first time it
// reaches point, and a channel closed then with the transaction's ID.
func haltAt(point orchestrator.FaultPoint) (func(orchestrator.FaultPoint, string) bool, chan string) {
	hit := make(chan string, 1)
	var once sync.Once
	return func(p orchestrator.FaultPoint, id string) bool {
		if p != point {
			return false
		}
		halted := false
		once.Do(func() { hit <- id; halted = true })
		return halted
	}, hit
}

func waitHit(t *testing.T, hit chan string) string {
	t.Helper()
	select {
	case id := <-hit:
		return id
	case <-time.After(10 * time.Second):
		t.Fatal("the fault point was never reached")
		return ""
	}
}

const lease = 600 * time.Millisecond

func TestAnotherInstanceFinishesACommitWhoseOwnerDied(t *testing.T) {
	hook, hit := haltAt(orchestrator.PointCommitDurable)
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, FaultHook: hook})
	a, b := newCounting(), newCounting()
	f.participant("a", a)
	f.participant("b", b)
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	if got := waitHit(t, hit); got != id {
		t.Fatalf("halted on %s, began %s", got, id)
	}
	// c1 is dead between its durable decision and any commit.
	if ca, _ := a.count(id); ca != 0 {
		t.Fatal("commit reached a participant from a halted engine")
	}
	c2 := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease})
	waitFor(t, func() bool { ca, _ := a.count(id); cb, _ := b.count(id); return ca == 1 && cb == 1 }, "c2 to deliver commit to both")
	waitFor(t, func() bool { return c2.Stats().InFlight == 0 && c2.Stats().Recovered == 1 }, "c2 to finish the recovered transaction")
	st, err := c2.Status(id)
	if err != nil || st.State != orchestrator.Committed {
		t.Fatalf("c2 status: %s %v", st.State, err)
	}
	if _, aa := a.count(id); aa != 0 {
		t.Fatal("a was told to abort a committed transaction")
	}
}

func TestARestartedInstanceFinishesItsOwnCommit(t *testing.T) {
	hook, hit := haltAt(orchestrator.PointCommitAcked)
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, FaultHook: hook})
	a, b := newCounting(), newCounting()
	f.participant("a", a)
	f.participant("b", b)
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	waitHit(t, hit)
	f.eng.Stop()
	restarted := f.engine(orchestrator.Config{Instance: "c1", LeaseTTL: lease})
	waitFor(t, func() bool { ca, _ := a.count(id); cb, _ := b.count(id); return ca == 1 && cb == 1 }, "commit on both")
	waitFor(t, func() bool { return restarted.Stats().Recovered == 1 && restarted.Stats().InFlight == 0 },
		"the restarted instance to recover its commit and finish it")
	if st, err := restarted.Status(id); err != nil || st.State != orchestrator.Committed {
		t.Fatalf("status after recovery: %s %v", st.State, err)
	}
}

func TestInDoubtAnswers(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease})
	a := newCounting()
	f.participant("a", a)
	ctx := ctxT(t, 10*time.Second)

	// Unknown, deadline not passed: pending. Deadline passed: abort, recorded.
	future := time.Now().Add(time.Hour).UnixMilli()
	if r := f.eng.Resolve(ctx, messages.OutcomeRequest{ID: "ghost1", DeadlineMs: future}); r.Outcome != messages.OutcomePending {
		t.Fatalf("before the deadline: %+v", r)
	}
	past := time.Now().Add(-time.Second).UnixMilli()
	if r := f.eng.Resolve(ctx, messages.OutcomeRequest{ID: "ghost1", DeadlineMs: past}); r.Outcome != messages.OutcomeAbort {
		t.Fatalf("after the deadline: %+v", r)
	}
	// Once recorded, the abort holds whatever the deadline says.
	if r := f.eng.Resolve(ctx, messages.OutcomeRequest{ID: "ghost1", DeadlineMs: future}); r.Outcome != messages.OutcomeAbort {
		t.Fatalf("recorded abort: %+v", r)
	}

	// A committed transaction answers commit, over the real API subject too.
	out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a")})
	if err != nil || out.State != orchestrator.Committed {
		t.Fatal(out.State, err)
	}
	if r := f.eng.Resolve(ctx, messages.OutcomeRequest{ID: out.ID, DeadlineMs: past}); r.Outcome != messages.OutcomeCommit {
		t.Fatalf("committed: %+v", r)
	}
	m, err := f.nc.Request(messages.APIOutcome, []byte(`{"id":"`+out.ID+`"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"outcome":"commit"`) {
		t.Fatalf("API outcome: %v %s", err, m.Data)
	}
	m, err = f.nc.Request(messages.APIOutcome, []byte(`{"id":"bad.id"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), `"error"`) {
		t.Fatalf("API outcome with a bad ID: %v %s", err, m.Data)
	}
}

// TestRecordedAbortWinsOverALaterCommit: a participant in doubt got "abort"
// from another coordinator while the owner was still collecting votes; the
// owner's commit decision is then refused and it aborts everywhere.
func TestRecordedAbortWinsOverALaterCommit(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease})
	other := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease})
	a, b := newCounting(), newCounting()
	b.holdPrepare = make(chan struct{})
	f.participant("a", a)
	f.participant("b", b)
	ctx := ctxT(t, 10*time.Second)
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return b.preparesStarted.Load() == 1 }, "b to start preparing")
	if r := other.Resolve(ctx, messages.OutcomeRequest{ID: id, Participant: "a", DeadlineMs: time.Now().Add(-time.Millisecond).UnixMilli()}); r.Outcome != messages.OutcomeAbort {
		t.Fatalf("c2 answered %+v", r)
	}
	close(b.holdPrepare)
	out, err := f.eng.Wait(ctx, id)
	if err != nil || out.Committed() || !strings.Contains(out.Reason, "commit refused") {
		t.Fatalf("want abort by refusal; got %s %q %v", out.State, out.Reason, err)
	}
	waitFor(t, func() bool { _, aa := a.count(id); _, ab := b.count(id); return aa == 1 && ab == 1 }, "abort on both")
	if ca, _ := a.count(id); ca != 0 {
		t.Fatal("a committed")
	}
	if f.eng.Stats().CommitsRefused != 1 {
		t.Fatalf("CommitsRefused = %d", f.eng.Stats().CommitsRefused)
	}
}

func TestTwoInstancesCannotShareAName(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "same", LeaseTTL: lease})
	eng, err := orchestrator.New(f.connect(), orchestrator.Config{Instance: "same", LeaseTTL: lease})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Stop()
	if err := eng.Start(ctxT(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("want a clear error, got %v", err)
	}
}

func TestStatusAPIAnswersFromAnyInstance(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1"})
	f.participant("a", yes)
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil {
		t.Fatal(err)
	}
	f.engine(orchestrator.Config{Instance: "c2"})
	for i := 0; i < 6; i++ { // the queue group spreads requests over c1 and c2
		m, err := f.nc.Request(messages.APIStatus, []byte(`{"id":"`+out.ID+`"}`), 5*time.Second)
		if err != nil || !strings.Contains(string(m.Data), `"state":"committed"`) {
			t.Fatalf("status request %d: %v %s", i, err, m.Data)
		}
	}
	m, err := f.nc.Request(messages.APIStatus, []byte(`{"id":"nope"}`), 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "unknown transaction") {
		t.Fatalf("unknown: %v %s", err, m.Data)
	}
}

// TestInDoubtIsPendingWhileTheCommitRecordIsWritten: a commit decision that
// is not durable yet may still be refused, so a participant asking then is
// told to wait, not to commit.
func TestInDoubtIsPendingWhileTheCommitRecordIsWritten(t *testing.T) {
	release := make(chan struct{})
	writing := make(chan string, 1)
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, NoOnePhase: true, FaultHook: func(p orchestrator.FaultPoint, id string) bool {
		if p == orchestrator.PointCommitWriting {
			writing <- id
			<-release // a slow write
		}
		return false
	}})
	f.participant("a", yes)
	ctx := ctxT(t, 10*time.Second)
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("a")})
	if err != nil {
		t.Fatal(err)
	}
	<-writing
	if r := f.eng.Resolve(ctx, messages.OutcomeRequest{ID: id, DeadlineMs: time.Now().Add(-time.Second).UnixMilli()}); r.Outcome != messages.OutcomePending {
		t.Fatalf("while the record is written: %+v", r)
	}
	close(release)
	waitFor(t, func() bool {
		return f.eng.Resolve(ctx, messages.OutcomeRequest{ID: id}).Outcome == messages.OutcomeCommit
	}, "commit once the record is durable")
}

// TestAnotherInstanceAbortsWhatADeadOneLeftUndecided: c1 dies while
// collecting votes; once its lease is gone, c2 finds the transaction
// preparing in the status bucket, records the abort, sends abort to every
// participant, and the status ends aborted.
func TestAnotherInstanceAbortsWhatADeadOneLeftUndecided(t *testing.T) {
	hook, hit := haltAt(orchestrator.PointVoteReceived)
	f := newFixture(t, orchestrator.Config{Instance: "c1", LeaseTTL: lease, FaultHook: hook})
	a := newCounting()
	f.participant("a", a)
	// "ghost" never votes, so c1 is still collecting votes when it dies.
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("a", "ghost"), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitHit(t, hit)
	c2 := f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease, AbortSends: 2, RetryBase: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	waitFor(t, func() bool { _, ab := a.count(id); return ab == 1 }, "a to be told abort by c2")
	c := newClient(t, f)
	waitFor(t, func() bool {
		st, err := c.Status(ctxT(t, 5*time.Second), id)
		return err == nil && st.State == "aborted" && st.Owner == "c2"
	}, "the status to end aborted, owned by c2")
	if c2.Stats().OrphansAborted != 1 {
		t.Fatalf("OrphansAborted = %d", c2.Stats().OrphansAborted)
	}
	if ca, _ := a.count(id); ca != 0 {
		t.Fatal("a committed")
	}
	// Participants in doubt now hear abort from the record.
	if r := c2.Resolve(ctxT(t, 5*time.Second), messages.OutcomeRequest{ID: id}); r.Outcome != messages.OutcomeAbort {
		t.Fatalf("in doubt after the orphan abort: %+v", r)
	}
}

// TestRecoveryListsTheRecordsOnlyWhenAnInstanceMayHaveDied: recovery used to
// list every record, finished ones included (the retention keeps them:
// millions under load), at every look at the leases, every half lease. Now
// it lists them all when an instance may have died (one seen live is gone,
// at start, after a look a lease or more since the last), and at every look
// for 20 s after that only those written since; those written since again
// every 10 minutes (a write that landed late); and it still takes over a
// dead instance's commit at once.
// Driven in simulated time.
func TestRecoveryListsTheRecordsOnlyWhenAnInstanceMayHaveDied(t *testing.T) {
	drv := newStepDriver()
	records, leases := newMemStore(), newMemStore()
	const finished = 100 // committed records the retention keeps
	for i := range finished {
		id := fmt.Sprintf("done%d", i)
		if _, err := records.Create(context.Background(), id, []byte(`{"id":"`+id+`","state":"committed","owner":"c0"}`), 0); err != nil {
			t.Fatal(err)
		}
	}
	const lease = 1500 * time.Millisecond
	eng := startSimulated(t, drv, orchestrator.Config{Instance: "c1", LeaseTTL: lease, Shards: 1},
		orchestrator.Ports{Stores: orchestrator.Stores{Records: records, Leases: leases, IDs: newMemStore(), Sagas: newMemStore()}, Commands: &cmdLog{}})
	// settle waits until the recovery and lease loops have done what the
	// last move of the clock woke them for.
	settle := func() {
		t.Helper()
		for start := time.Now(); !drv.settled(2); time.Sleep(100 * time.Microsecond) {
			eng.Pump()
			if time.Since(start) > 5*time.Second {
				t.Fatal("the recovery and lease loops did not go back to sleep")
			}
		}
	}
	// run moves the clock on by d in steps, settling after each.
	run := func(d, step time.Duration) {
		t.Helper()
		for moved := time.Duration(0); moved < d; moved += step {
			drv.advance(step)
			settle()
		}
	}
	settle()
	listings := func() int {
		records.mu.Lock()
		defer records.mu.Unlock()
		return records.listings
	}
	read := func() int {
		records.mu.Lock()
		defer records.mu.Unlock()
		return records.read
	}
	owner := func(id string) string {
		en, err := records.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("record %s: %v", id, err)
		}
		var rec struct{ Owner string }
		if err := json.Unmarshal(en.Value, &rec); err != nil {
			t.Fatal(err)
		}
		return rec.Owner
	}
	step := lease / 6

	// At start, then at every look (every 750 ms) for 20 s.
	run(30*time.Second, step)
	afterStart := listings()
	if afterStart < 20 || afterStart > 30 {
		t.Fatalf("%d listings of the records in the 30 s after the start; want one per look for 20 s, about 27", afterStart)
	}
	if n := read(); n != finished {
		t.Fatalf("the listings after the start read %d records; want the %d there once, then none (nothing was written since)", n, finished)
	}
	// Nobody died: no more listings (it was one per look, 80 a minute).
	run(time.Minute, step)
	if n := listings(); n != afterStart {
		t.Fatalf("%d listings of the records in a minute in which no instance died; want none", n-afterStart)
	}
	// Another instance, with a commit to finish, comes and goes.
	if _, err := leases.Put(context.Background(), "c2", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	rec := `{"id":"t1","state":"committing","participants":["a"],"owner":"c2","decided_at":"2030-01-01T00:00:00Z"}`
	if _, err := records.Create(context.Background(), "t1", []byte(rec), 0); err != nil {
		t.Fatal(err)
	}
	run(2*time.Second, step)
	if n := listings(); n != afterStart || owner("t1") != "c2" {
		t.Fatalf("a new live instance made recovery list the records (%d times) or claim its commit (owner %s)", n-afterStart, owner("t1"))
	}
	if err := leases.Delete(context.Background(), "c2"); err != nil {
		t.Fatal(err)
	}
	readBefore := read()
	run(time.Second, step)
	if n := listings(); n == afterStart || owner("t1") != "c1" {
		t.Fatalf("c2's lease is gone: want its commit claimed at the next look; %d listings since, owner %s", n-afterStart, owner("t1"))
	}
	// 20 s later the listings stop again.
	run(25*time.Second, step)
	if n := read() - readBefore; n < finished+1 || n > finished+3 {
		t.Fatalf("the listings after c2 died read %d records; want all %d once, then only t1's claim", n, finished+1)
	}
	quiet := listings()
	run(30*time.Second, step)
	if n := listings(); n != quiet {
		t.Fatalf("%d listings in the 30 s after the window; want none", n-quiet)
	}
	// A look 2 s after the last (this instance paused, say) may have missed
	// a lease: it lists.
	run(2*time.Second, 2*time.Second)
	if n := listings(); n == quiet {
		t.Fatal("no listing after a look that came a lease after the last")
	}
	// And every 10 minutes anyway, what was written since.
	run(30*time.Second, step)
	before, readBefore := listings(), read()
	if _, err := records.Create(context.Background(), "late", []byte(`{"id":"late","state":"committing","participants":["a"],"owner":"c9","decided_at":"2030-01-01T00:00:00Z"}`), 0); err != nil {
		t.Fatal(err)
	}
	run(10*time.Minute, 700*time.Millisecond)
	if n := listings(); n == before || owner("late") != "c1" {
		t.Fatalf("in 10 minutes %d listings; the record that landed late is owned by %s; want it claimed", n-before, owner("late"))
	}
	if n := read() - readBefore; n > 3 {
		t.Fatalf("the 10-minute listing read %d records; want only those written since the last (the late one, its claim)", n)
	}
}

// TestRecoveryGoesOnWhereAListingThatRanOutOfTimeStopped: a listing of a
// bucket too large to read within its time (here: 25 entries) used to be
// dropped whole, and the next look started over from the first entry, to
// fail the same way, at every look, for good (seen in a long run: the
// 10-minute scan of 1.4 million records). Now what was read is acted on
// and the next look goes on from there: a dead instance's commit records
// and undecided transactions beyond the first page are taken over, and the
// records are read about once, not at every look.
// Driven in simulated time.
func TestRecoveryGoesOnWhereAListingThatRanOutOfTimeStopped(t *testing.T) {
	drv := newStepDriver()
	records, leases, status := newMemStore(), newMemStore(), newMemStore()
	records.page, status.page = 25, 25
	commits, orphans := deadInstanceLeftovers(t, records, status, func(i int) bool { return i%10 == 9 })
	const lease = 1500 * time.Millisecond
	eng := startSimulated(t, drv, orchestrator.Config{Instance: "c1", LeaseTTL: lease, Shards: 1},
		orchestrator.Ports{Stores: orchestrator.Stores{Records: records, Leases: leases, IDs: newMemStore(), Sagas: newMemStore(), Status: status}, Commands: &cmdLog{}})
	stepLooks(t, drv, eng, lease/6, 30*time.Second, nil)
	checkRecovered(t, records, commits, orphans)
	records.mu.Lock()
	read, total := records.read, len(records.m)
	records.mu.Unlock()
	// The scans after the start read all once, then, for 20 s, what was
	// written since (the claims and the aborts): about 2 x 110 + 20. Started
	// over at every look, they would read 25 at each of the 40 looks.
	if read > 3*total {
		t.Fatalf("the listings read %d records of %d; want each about once or twice, not again at every look", read, total)
	}
}

// TestRecoveryScansEndWhileInstancesKeepDying: an instance that dies at
// every look (here one lease appears and another vanishes each half lease)
// asks each time for the records and statuses to be scanned from the first
// entry. Starting over at once, a scan that takes several looks (listings
// of 25 entries here; on a real bucket of millions, a listing gets an
// eighth of a lease) never got past its first slice, and what dead c9 left
// further on was never recovered; now the scan under way ends first.
func TestRecoveryScansEndWhileInstancesKeepDying(t *testing.T) {
	drv := newStepDriver()
	records, leases, status := newMemStore(), newMemStore(), newMemStore()
	records.page, status.page = 25, 25
	commits, orphans := deadInstanceLeftovers(t, records, status, func(i int) bool { return i >= 80 && i%5 == 4 })
	const lease = 1500 * time.Millisecond
	eng := startSimulated(t, drv, orchestrator.Config{Instance: "c1", LeaseTTL: lease, Shards: 1},
		orchestrator.Ports{Stores: orchestrator.Stores{Records: records, Leases: leases, IDs: newMemStore(), Sagas: newMemStore(), Status: status}, Commands: &cmdLog{}})
	stepLooks(t, drv, eng, lease/6, 30*time.Second, func(k int) {
		if k%3 != 0 {
			return
		}
		// Every half lease, one look: a new instance, the last one gone.
		put(t, leases, fmt.Sprintf("flap%03d", k), `{}`)
		if k > 0 {
			if err := leases.Delete(context.Background(), fmt.Sprintf("flap%03d", k-3)); err != nil {
				t.Fatal(err)
			}
		}
	})
	checkRecovered(t, records, commits, orphans)
}

// deadInstanceLeftovers fills records and status with 100 transactions c0
// finished and, after those i for which left says so, what dead c9 left: a
// commit record (returned in commits) and a preparing status with no
// record (in orphans).
func deadInstanceLeftovers(t *testing.T, records, status *memStore, left func(i int) bool) (commits, orphans []string) {
	t.Helper()
	for i := range 100 {
		id := fmt.Sprintf("done%03d", i)
		put(t, records, id, `{"id":"`+id+`","state":"committed","owner":"c0"}`)
		put(t, status, id, `{"id":"`+id+`","state":"committed","owner":"c0","participants":[{"name":"a"}]}`)
		if left(i) {
			id := fmt.Sprintf("commit%03d", i)
			put(t, records, id, `{"id":"`+id+`","state":"committing","participants":["a"],"owner":"c9","decided_at":"2030-01-01T00:00:00Z"}`)
			commits = append(commits, id)
			id = fmt.Sprintf("orphan%03d", i)
			put(t, status, id, `{"id":"`+id+`","state":"preparing","owner":"c9","participants":[{"name":"a"}]}`)
			orphans = append(orphans, id)
		}
	}
	return commits, orphans
}

// stepLooks moves drv's clock by step until total has passed, calling
// before (if not nil) with the step's number before each, and lets eng's
// loops run after each until they sleep again.
func stepLooks(t *testing.T, drv *stepDriver, eng *orchestrator.Engine, step, total time.Duration, before func(k int)) {
	t.Helper()
	for k, moved := 0, time.Duration(0); moved < total; k, moved = k+1, moved+step {
		if before != nil {
			before(k)
		}
		drv.advance(step)
		for start := time.Now(); !drv.settled(2); time.Sleep(100 * time.Microsecond) {
			eng.Pump()
			if time.Since(start) > 5*time.Second {
				t.Fatal("the recovery and lease loops did not go back to sleep")
			}
		}
	}
}

// checkRecovered fails t unless c1 claimed every commit record in commits
// and recorded an abort for every transaction in orphans.
func checkRecovered(t *testing.T, records *memStore, commits, orphans []string) {
	t.Helper()
	state := func(id string) (state, owner string) {
		en, err := records.Get(context.Background(), id)
		if err != nil {
			return "none", ""
		}
		var v struct{ State, Owner string }
		if err := json.Unmarshal(en.Value, &v); err != nil {
			t.Fatal(err)
		}
		return v.State, v.Owner
	}
	for _, id := range commits {
		if st, owner := state(id); st != "committing" || owner != "c1" {
			t.Errorf("dead c9's commit record %s: %s, owned by %s; want claimed by c1", id, st, owner)
		}
	}
	for _, id := range orphans {
		if st, owner := state(id); st != "aborted" || owner != "c1" {
			t.Errorf("dead c9's undecided transaction %s: record %s by %q; want an abort recorded by c1", id, st, owner)
		}
	}
}

// put writes key in s with value, or fails t.
func put(t *testing.T, s *memStore, key, value string) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, []byte(value), 0); err != nil {
		t.Fatal(err)
	}
}
