package orchestrator_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
)

// Each aborted transaction is counted under its cause, and every phase
// histogram counts what ran through it: two commits (decision writes and
// completions), five aborts of five causes, a completed saga.
func TestStatsCountAbortsByCauseAndEachPhase(t *testing.T) {
	f := newFixture(t, orchestrator.Config{AbortSends: 2, RetryBase: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		NoOnePhase: true}) // aborts of every cause: a one-phase commit has one
	f.participant("a", yes)
	release := make(chan struct{})
	f.participant("held", holding(release, nil))
	t.Cleanup(func() { close(release) }) // before held stops
	f.participant("no", participants.HandlerFuncs{PrepareFunc: func(context.Context, participants.Tx, []byte) error {
		return errors.New("out of stock")
	}})
	f.sagaParticipant("s", always(messages.Ack))
	ctx := ctxT(t, 30*time.Second)
	for range 2 {
		if out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a")}); err != nil || !out.Committed() {
			t.Fatalf("commit: %s %v", out.State, err)
		}
	}
	// vote: no votes abort.
	if out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a", "no")}); err != nil || out.Committed() {
		t.Fatalf("vote no: %s %v", out.State, err)
	}
	// timeout: ghost never votes.
	if out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a", "ghost"), Timeout: 200 * time.Millisecond}); err != nil || !out.TimedOut {
		t.Fatalf("timeout: %s %v", out.State, err)
	}
	// operator: aborted by name while held prepares.
	id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("held")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := f.eng.AbortAs(id, "alice", "not today"); !ok || err != nil {
		t.Fatalf("AbortAs: %v %v", ok, err)
	}
	// caller: its context ends while held prepares.
	gaveUp, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	out, err := f.eng.Execute(gaveUp, orchestrator.Request{Participants: parts("held")})
	if err != nil || out.Committed() {
		t.Fatalf("caller gave up: %s %v", out.State, err)
	}
	if rec, err := f.eng.ExecuteSaga(ctx, orchestrator.SagaRequest{Definition: threeSteps("s", "s")}); err != nil || rec.State != saga.StateCompleted {
		t.Fatalf("saga: %s %v", rec.State, err)
	}
	waitFor(t, func() bool { return f.eng.Stats().InFlight == 0 }, "every transaction to end")
	s := f.eng.Stats()
	want := map[string]int64{"vote": 1, "timeout": 1, "operator": 1, "caller": 1, "refused": 0, "orphan": 0}
	if !maps.Equal(s.AbortedBy, want) {
		t.Errorf("AbortedBy = %v, want %v", s.AbortedBy, want)
	}
	if s.Begun != 7 || s.SagasBegun != 1 || s.Committed != 2 || s.Aborted != 4 || s.SagasCompleted != 1 {
		t.Errorf("begun %d (sagas %d), committed %d, aborted %d, sagas completed %d; want 7 (1), 2, 4, 1",
			s.Begun, s.SagasBegun, s.Committed, s.Aborted, s.SagasCompleted)
	}
	for name, h := range map[string]struct {
		got  orchestrator.Histogram
		want uint64
	}{
		"decide": {s.DecideLatency, 6}, "complete": {s.CompleteLatency, 6}, "write": {s.WriteLatency, 2}, "saga": {s.SagaLatency, 1},
	} {
		if h.got.Count != h.want || h.got.Cumulative[len(h.got.Cumulative)-1] > h.got.Count || h.got.Sum <= 0 {
			t.Errorf("%s latency: %d observations (sum %gs), want %d", name, h.got.Count, h.got.Sum, h.want)
		}
	}
}
