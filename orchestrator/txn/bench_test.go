package txn

import (
	"testing"

	"github.com/natstx/natstx/messages"
)

// BenchmarkCommitOfThree runs the state machine of one transaction of three
// participants from start to committed: three votes (the decision, whose
// record the driver makes durable), three acks. It is the protocol core's
// share of a transaction's cost.
func BenchmarkCommitOfThree(b *testing.B) {
	spec := testSpec("a", "b", "c")
	b.ReportAllocs()
	for b.Loop() {
		tx, err := New(spec)
		if err != nil {
			b.Fatal(err)
		}
		tx.Start()
		for _, p := range []string{"a", "b", "c"} {
			tx.Step(Event{Kind: EventVote, Participant: p, Yes: true})
		}
		for _, p := range []string{"a", "b", "c"} {
			tx.Step(Event{Kind: EventAck, Participant: p, Op: messages.OpCommit})
		}
		if tx.State() != Committed {
			b.Fatalf("state %s", tx.State())
		}
	}
}
