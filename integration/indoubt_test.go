package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/sim"
)

// doubtRig is one NATS server, simulated services behind runtimes that ask
// about transactions in doubt after a short time, and coordinators the test
// starts, halts and replaces.
type doubtRig struct {
	t        *testing.T
	srv      *embedded.Server
	services map[string]*sim.Service
	runtimes map[string]*participants.Runtime
	names    []string
}

func newDoubtRig(t *testing.T, names ...string) *doubtRig {
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	r := &doubtRig{t: t, srv: srv, services: map[string]*sim.Service{}, runtimes: map[string]*participants.Runtime{}, names: names}
	// The stream must exist before the participants start: a first
	// coordinator, stopped at once, declares it.
	r.coordinator(orchestrator.Config{Instance: "bootstrap"}).Stop()
	nc := r.connect()
	for i, n := range names {
		svc, err := sim.New(sim.Config{Name: n, MaxLatency: 5 * time.Millisecond, Seed: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		rt, err := participants.New(nc, participants.Config{Name: n, Handler: svc, InDoubtAfter: 300 * time.Millisecond,
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(n)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rt.Stop)
		r.services[n], r.runtimes[n] = svc, rt
	}
	return r
}

func (r *doubtRig) connect() *nats.Conn { return connect(r.t, r.srv.URL()) }

func (r *doubtRig) coordinator(cfg orchestrator.Config) *orchestrator.Engine {
	cfg.LeaseTTL = 600 * time.Millisecond
	cfg.Logger = zaptest.NewLogger(r.t, zaptest.Level(zap.ErrorLevel)).Named(cfg.Instance)
	return startEngine(r.t, context.Background(), r.connect(), cfg)
}

// begin starts n transactions over every participant on eng and returns
// their IDs; it does not wait for them.
func (r *doubtRig) begin(eng *orchestrator.Engine, n int) []string {
	var ids []string
	for i := 0; i < n; i++ {
		req := orchestrator.Request{}
		for _, name := range r.names {
			req.Participants = append(req.Participants, orchestrator.Participant{Name: name})
		}
		id, err := eng.Begin(context.Background(), req)
		if err != nil {
			r.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// settled waits until no participant holds any transaction in doubt and the
// coordinators' status of each transaction (from an instance's memory, the
// status bucket or the decision record) is final, then checks every
// participant against that decision: each applied a committed transaction
// and none an aborted one, and nothing is left staged. A status that stays
// undecided counts as in doubt.
func (r *doubtRig) settled(ids []string) sim.Report {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		busy := 0
		for _, n := range r.names {
			busy += r.runtimes[n].Stats().InDoubt
		}
		if busy == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d transactions still in doubt after 30s", busy)
		}
		time.Sleep(20 * time.Millisecond)
	}
	nc := r.connect()
	var results []sim.Result
	for _, id := range ids {
		st, unknown := r.finalStatus(nc, id)
		switch {
		case unknown && !r.seenAnywhere(id):
			// Its begin reached no coordinator (it was killed or not up):
			// no status, no record, and no participant heard of it.
			continue
		case unknown:
			// Finished longer ago than the retention (a test's short one):
			// the coordinators have forgotten it; the participants must
			// agree with each other, as sim.Check verifies.
			committed := r.services[r.names[0]].Committed(id)
			results = append(results, sim.Result{ID: id, Participants: r.names, Decided: true, Committed: committed})
			continue
		}
		final := st.State == orchestrator.Committed.String() || st.State == orchestrator.Aborted.String()
		if !final {
			r.t.Errorf("%s: status %q (%s) is not final 30s after every participant settled", id, st.State, st.Reason)
		}
		results = append(results, sim.Result{ID: id, Participants: r.names, Decided: final, Committed: st.State == orchestrator.Committed.String()})
	}
	return sim.Check(results, r.services)
}

// finalStatus asks the coordinators for transaction id's status until it is
// final or 30s pass, and returns the last one; unknown reports that the
// coordinators know nothing of it (no status, no record).
func (r *doubtRig) finalStatus(nc *nats.Conn, id string) (st messages.TxStatus, unknown bool) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = messages.TxStatus{}
		data, _ := json.Marshal(messages.StatusRequest{ID: id})
		if m, err := nc.Request(messages.APIStatus, data, 5*time.Second); err == nil {
			var resp messages.StatusResponse
			if json.Unmarshal(m.Data, &resp) == nil {
				if resp.Status != nil {
					st = *resp.Status
				} else if strings.Contains(resp.Error, "unknown transaction") {
					return st, true
				}
			}
		}
		if st.State == orchestrator.Committed.String() || st.State == orchestrator.Aborted.String() || time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seenAnywhere reports whether any participant has a record of id.
func (r *doubtRig) seenAnywhere(id string) bool {
	for _, n := range r.names {
		if r.runtimes[n].State(id) != participants.StateNone {
			return true
		}
	}
	return false
}

// TestInDoubtParticipantsLearnAbortAfterTheCoordinatorDiesUndecided: the
// coordinator dies after some votes, before any decision; the participants
// that voted commit ask, a coordinator records the presumed abort, and they
// abort. Nothing stays prepared.
func TestInDoubtParticipantsLearnAbortAfterTheCoordinatorDiesUndecided(t *testing.T) {
	r := newDoubtRig(t, "inventory", "payment", "shipping")
	var once sync.Once
	halted := make(chan struct{})
	votes := 0
	c1 := r.coordinator(orchestrator.Config{Instance: "c1", PrepareTimeout: time.Second, FaultHook: func(p orchestrator.FaultPoint, _ string) bool {
		if p != orchestrator.PointVoteReceived {
			return false
		}
		votes++ // the hook runs on one shard at a time per transaction; one transaction here
		if votes < 2 {
			return false
		}
		once.Do(func() { close(halted) })
		return true
	}, Shards: 1})
	ids := r.begin(c1, 1)
	<-halted
	// Without the status bucket c2 cannot find c1's undecided transaction
	// by itself (TestAnotherInstanceAbortsWhatADeadOneLeftUndecided covers
	// that): the participants' questions are all that resolves it here.
	r.coordinator(orchestrator.Config{Instance: "c2", NoStatus: true})
	rep := r.settled(ids)
	var queries, resolved uint64
	for _, n := range r.names {
		queries += r.runtimes[n].Stats().InDoubtQueries
		resolved += r.runtimes[n].Stats().InDoubtResolved
	}
	report.Counts(t, fmt.Sprintf("%s; in-doubt queries %d, resolved %d", rep, queries, resolved))
	if rep.Violations != 0 || rep.Aborted != 1 || resolved == 0 {
		t.Fatalf("want one transaction aborted through in-doubt resolution: %s, resolved %d, problems %v", rep, resolved, rep.Problems)
	}
}

// TestInDoubtParticipantsLearnCommitOnceACoordinatorIsBack: the coordinator
// dies right after its commit decision became durable, and no coordinator
// runs for longer than the in-doubt time; once one is back, every
// participant commits.
func TestInDoubtParticipantsLearnCommitOnceACoordinatorIsBack(t *testing.T) {
	r := newDoubtRig(t, "inventory", "payment")
	halted := make(chan string, 1)
	var once sync.Once
	c1 := r.coordinator(orchestrator.Config{Instance: "c1", FaultHook: func(p orchestrator.FaultPoint, id string) bool {
		if p != orchestrator.PointCommitDurable {
			return false
		}
		once.Do(func() { halted <- id })
		return true
	}})
	ids := r.begin(c1, 1)
	<-halted
	c1.Stop()
	time.Sleep(time.Second) // longer than the in-doubt time: participants ask and nobody answers
	for _, n := range r.names {
		if r.services[n].Committed(ids[0]) {
			t.Fatalf("%s committed with no coordinator running", n)
		}
	}
	r.coordinator(orchestrator.Config{Instance: "c2"})
	rep := r.settled(ids)
	report.Counts(t, rep.String())
	if rep.Violations != 0 || rep.Committed != 1 {
		t.Fatalf("want the transaction committed everywhere: %s %v", rep, rep.Problems)
	}
}
