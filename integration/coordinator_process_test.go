package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/integration/report"
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
// aborted everywhere, none left prepared, and that the transaction it died on
// ends as that point implies: aborted if it died having only sent prepare
// (no decision can exist), committed if its commit decision was durable or
// already acknowledged.
func TestCoordinatorProcessKilledAtEachPoint(t *testing.T) {
	for _, tc := range []struct {
		point orchestrator.FaultPoint
		// victim is how the transaction the process died on must end:
		// "committed", "aborted", or "" when either is right (a vote received
		// may have been the last one, and the commit write may have landed).
		victim string
	}{
		{orchestrator.PointPrepareSent, "aborted"},
		{orchestrator.PointVoteReceived, ""},
		{orchestrator.PointCommitDurable, "committed"},
		{orchestrator.PointCommitAcked, "committed"},
	} {
		t.Run(string(tc.point), func(t *testing.T) {
			r := newDoubtRig(t, "inventory", "payment", "shipping")
			c1 := r.startServer("c1", "NATSTX_FAULT="+string(tc.point)+":20")
			ids, begun := r.beginAll(string(tc.point), 60)
			c1.waitKilled(t, "killing this process at "+string(tc.point))
			victim := killedTx(t, c1.stderr.String())
			r.startServer("c1") // the same instance, restarted
			rep := r.settled(ids)
			report.Counts(t, fmt.Sprintf("killed at %s on %s: %d begin requests answered; %s", tc.point, victim, begun, rep))
			if rep.Violations != 0 {
				t.Fatalf("%s: %v", rep, rep.Problems)
			}
			committed := 0
			for _, n := range r.names {
				if r.services[n].Committed(victim) {
					committed++
				}
			}
			got := map[int]string{0: "aborted", len(r.names): "committed"}[committed]
			if got == "" {
				t.Fatalf("%s committed on %d of %d services", victim, committed, len(r.names))
			}
			if tc.victim != "" && got != tc.victim {
				t.Fatalf("killed at %s, transaction %s ended %s; that point implies %s", tc.point, victim, got, tc.victim)
			}
			if tc.victim == "committed" && rep.Committed == 0 {
				t.Fatalf("no transaction committed: %s", rep)
			}
		})
	}
}

// killedTx reads the transaction a NATSTX_FAULT kill happened on from the
// process's standard error.
func killedTx(t *testing.T, stderr string) string {
	t.Helper()
	_, after, ok := strings.Cut(stderr, " of transaction ")
	id, _, _ := strings.Cut(after, "\n")
	if !ok || id == "" {
		t.Fatalf("no transaction named in the kill line; stderr:\n%s", stderr)
	}
	return strings.TrimSpace(id)
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
	report.Counts(t, fmt.Sprintf("3 coordinators, c2 killed mid-run: %d begin requests answered; %s", begun, rep))
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

// TestCoordinatorProcessPausedPastItsLeaseCannotCommitAfterAnAbort: two
// `natstx server` processes share a batch; one is SIGSTOPped in the middle for
// longer than its lease, the prepare timeout and the retention together, then
// resumed with its memory as it was. Meanwhile the participants in doubt
// asked the other instance, which recorded aborts. Once resumed, the paused
// instance must not record (or send) commit for any of them: every
// transaction ends one way on every service, and every commit record belongs
// to a transaction every service committed. (Before the fix an abort record
// expired with the retention, and the resumed instance's commit write then
// succeeded.)
func TestCoordinatorProcessPausedPastItsLeaseCannotCommitAfterAnAbort(t *testing.T) {
	r := newDoubtRig(t, "inventory", "payment", "shipping")
	args := []string{"--lease-ttl", "1s", "--prepare-timeout", "2s", "--retention", "2s"}
	paused := startNatstx(t, nil, append([]string{"server", "--nats", r.srv.URL(), "--instance", "c1", "--log-level", "warn"}, args...)...)
	startNatstx(t, nil, append([]string{"server", "--nats", r.srv.URL(), "--instance", "c2", "--log-level", "warn"}, args...)...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(150 * time.Millisecond)
		_ = paused.cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(7 * time.Second) // lease 1s + deadline 2s + retention 2s, and the abort record's delete marker
		_ = paused.cmd.Process.Signal(syscall.SIGCONT)
	}()
	ids, begun := r.beginAll("paused", 200)
	<-done
	rep := r.settled(ids)
	report.Counts(t, fmt.Sprintf("c1 paused 7s mid-run: %d begin requests answered; %s", begun, rep))
	if rep.Violations != 0 {
		t.Fatalf("%s: %v", rep, rep.Problems)
	}
	// Let the resumed instance act on what it held when it was paused.
	time.Sleep(3 * time.Second)
	js, err := jetstream.New(r.connect())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), orchestrator.RecordBucket)
	if err != nil {
		t.Fatal(err)
	}
	commitRecords, aborted := 0, 0
	for _, id := range ids {
		e, err := kv.Get(context.Background(), id)
		if err != nil {
			continue
		}
		var rec struct{ State, Owner string }
		if json.Unmarshal(e.Value(), &rec) != nil || rec.State == "aborted" {
			aborted++
			continue
		}
		commitRecords++
		for _, n := range r.names {
			if !r.services[n].Committed(id) {
				t.Errorf("%s: a %s record by %s, but %s did not commit", id, rec.State, rec.Owner, n)
			}
		}
	}
	t.Logf("records: %d commit, %d abort", commitRecords, aborted)
	if rep2 := r.settled(ids); rep2.Violations != 0 {
		t.Fatalf("after the resumed instance acted: %s: %v", rep2, rep2.Problems)
	}
}
