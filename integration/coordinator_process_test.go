package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
)

// startServer runs `natstx server` against the rig's NATS as a child process,
// with env added (NATSTX_FAULT to make it kill itself at a protocol point).
func (r *doubtRig) startServer(instance string, env ...string) *proc {
	return startNatstx(r.t, env, "server", "--nats", r.srv.URL(), "--instance", instance,
		"--lease-ttl", "1s", "--prepare-timeout", "2s", "--retention", "1m", "--log-level", "warn")
}

// beginAll begins n transactions through the coordinator API, with IDs the
// test chooses so that it can check them even if their coordinator died
// before it answered.
func (r *doubtRig) beginAll(prefix string, n int) (ids []string, begun int) {
	nc := r.connect()
	client, err := orchestrator.NewClient(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		ids = append(ids, id)
		req := messages.BeginRequest{ID: id}
		for _, name := range r.names {
			req.Participants = append(req.Participants, messages.ParticipantSpec{Name: name, Payload: []byte(id)})
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if _, err := client.Begin(ctx, req); err == nil {
				mu.Lock()
				begun++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ids, begun
}

// TestCoordinatorProcessKilledAtEachPoint runs `natstx server` as a process
// that SIGKILLs itself at one protocol point in the middle of a batch, starts
// it again, and checks that every transaction ends committed everywhere or
// aborted everywhere, none left prepared.
func TestCoordinatorProcessKilledAtEachPoint(t *testing.T) {
	for _, point := range []orchestrator.FaultPoint{
		orchestrator.PointPrepareSent, orchestrator.PointVoteReceived,
		orchestrator.PointCommitDurable, orchestrator.PointCommitAcked,
	} {
		t.Run(string(point), func(t *testing.T) {
			r := newDoubtRig(t, "inventory", "payment", "shipping")
			c1 := r.startServer("c1", "NATSTX_FAULT="+string(point)+":20")
			ids, begun := r.beginAll(string(point), 60)
			c1.waitKilled(t, "killing this process at "+string(point))
			r.startServer("c1") // the same instance, restarted
			rep := r.settled(ids)
			t.Logf("killed at %s: %d begin requests answered; %s", point, begun, rep)
			if rep.Violations != 0 || rep.Transactions != len(ids) {
				t.Fatalf("%s: %v", rep, rep.Problems)
			}
		})
	}
}

// TestOneOfThreeCoordinatorsKilledUnderLoad: three `natstx server`
// processes share the load; one is killed in the middle; the other two
// finish its transactions, and no transaction ends two ways.
func TestOneOfThreeCoordinatorsKilledUnderLoad(t *testing.T) {
	r := newDoubtRig(t, "inventory", "payment")
	r.startServer("c1")
	victim := r.startServer("c2")
	r.startServer("c3")
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		victim.kill()
	}()
	ids, begun := r.beginAll("load", 300)
	<-done
	rep := r.settled(ids)
	t.Logf("3 coordinators, c2 killed mid-run: %d begin requests answered; %s", begun, rep)
	if rep.Violations != 0 || rep.Committed == 0 {
		t.Fatalf("%s: %v", rep, rep.Problems)
	}
	// What the status bucket says agrees with what the services applied.
	client, err := orchestrator.NewClient(r.connect())
	if err != nil {
		t.Fatal(err)
	}
	disagree := 0
	for _, id := range ids {
		st, err := client.Status(context.Background(), id)
		if err != nil || !strings.HasSuffix(st.State, "ed") {
			continue // status of a dead owner's transaction may lag
		}
		if (st.State == "committed") != r.services["inventory"].Committed(id) {
			disagree++
			t.Errorf("%s: status %s, inventory committed %v", id, st.State, r.services["inventory"].Committed(id))
		}
	}
	if disagree > 0 {
		t.Fatalf("%d transactions where the status and the services disagree", disagree)
	}
}
