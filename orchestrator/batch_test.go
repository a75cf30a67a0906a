package orchestrator_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator"
)

// commitBurst begins n transactions on participants a, b and c (which the
// fixture runs, voting yes) at once and fails the test unless every one
// commits; it returns their outcomes.
func commitBurst(t *testing.T, ctx context.Context, f *fixture, n int) []orchestrator.Outcome {
	t.Helper()
	for _, name := range []string{"a", "b", "c"} {
		f.participant(name, yes)
	}
	var wg sync.WaitGroup
	outs := make([]orchestrator.Outcome, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = f.eng.Execute(ctx, orchestrator.Request{Participants: parts("a", "b", "c"), Timeout: 30 * time.Second})
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !outs[i].Committed() {
			t.Fatalf("transaction %d: %s %v", i, outs[i].State, errs[i])
		}
	}
	return outs
}

// TestABurstOfTransactionsTravelsInBatchesAndAllCommit begins a burst of
// transactions at once: the commands for each participant pile up behind
// the publishes awaiting their PubAck and go out as batch messages, the
// participants answer with reply batches, and every transaction commits.
func TestABurstOfTransactionsTravelsInBatchesAndAllCommit(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	const burst = 600
	commitBurst(t, ctxT(t, 60*time.Second), f, burst)
	st := f.eng.Stats()
	t.Logf("%d transactions: %d batch messages carried %d commands (of %d); %d retries replaced a waiting command", burst, st.Batches, st.Batched, 6*burst, st.CommandsReplaced)
	if st.Batches == 0 || st.Batched < 2*st.Batches {
		t.Fatalf("no batching under a burst of %d transactions: %+v", burst, st)
	}
	if st.MalformedReplies != 0 || st.Committed != burst {
		t.Fatalf("stats %+v", st)
	}
}

// TestGroupCommitUnderABurstCommitsEveryTransaction: with group commit the
// decision records and statuses of a burst go out in atomic batches, every
// transaction commits, and each ends with its final status stored. A batch
// may be refused only where a status refresh (made on a re-send, when the
// machine is slow) lost to a newer status, as it should.
func TestGroupCommitUnderABurstCommitsEveryTransaction(t *testing.T) {
	f := newFixture(t, orchestrator.Config{GroupCommit: true})
	const burst = 300
	ctx := ctxT(t, 60*time.Second)
	outs := commitBurst(t, ctx, f, burst)
	c := newClient(t, f)
	for _, out := range outs {
		waitFor(t, func() bool {
			st, err := c.Status(ctx, out.ID)
			return err == nil && st.State == "committed"
		}, "the committed status of "+out.ID)
	}
	st := f.eng.Stats()
	t.Logf("%d transactions: %d atomic batches carried %d writes, %d refused", burst, st.WriteBatches, st.WritesBatched, st.BatchesRefused)
	if st.WriteBatches == 0 || st.WritesBatched < 16*st.WriteBatches {
		t.Fatalf("want atomic batches of 16 writes or more: %+v", st)
	}
	if st.BatchesRefused != 0 && st.Resends == 0 {
		t.Fatalf("%d batches refused without a re-send, so without a status refresh that could lose: %+v", st.BatchesRefused, st)
	}
}
