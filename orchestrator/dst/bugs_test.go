package dst

import (
	"strings"
	"testing"
	"time"
)

// The simulator is trusted only if it catches a planted bug. Each model
// below is broken on purpose; a batch of seeds must find violations, and
// the message must name the guarantee the bug breaks.
func TestPlantedBugsAreCaught(t *testing.T) {
	for _, tc := range []struct {
		name string
		bug  bug
		want string // a violation of this kind must be among those found
	}{
		{"participant commits on prepare", bugCommitOnPrepare, "committed before any commit decision was durable"},
		{"driver sends commit before persisting it", bugSendBeforePersist, "atomicity: mixed outcome"},
		{"participant forgets its records when it crashes", bugVolatileParticipant, ""},
		{"coordinator answers abort without recording it", bugAnswerAbortWhenUnknown, "atomicity: mixed outcome"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results := runConfigs(20, func(i int) Config {
				return Config{Seed: uint64(i + 1), Transactions: 100, HealLimit: time.Minute, bug: tc.bug}
			})
			failed, found := 0, false
			var example string
			for _, r := range results {
				if r.Failed() {
					failed++
					if example == "" {
						example = r.Violations[0]
					}
				}
				for _, v := range r.Violations {
					found = found || strings.Contains(v, tc.want)
				}
			}
			if failed == 0 || !found {
				t.Fatalf("planted bug not caught: %d of %d seeds failed, none with %q", failed, len(results), tc.want)
			}
			t.Logf("caught in %d of %d seeds, e.g. %s", failed, len(results), example)
		})
	}
}

// TestEarlyCommitAnswerBreaksAtomicity pins the protocol bug the simulator
// found in the engine's resolve (orchestrator/recovery.go), since fixed: a
// participant in doubt was answered "commit" from the coordinator's memory as
// soon as its state machine decided commit, before the commit record was
// durable. If another
// coordinator meanwhile records an abort for a participant in doubt (the
// deadline passed), the create of the commit record is refused and the
// transaction aborts, while the participants told "commit" have committed.
//
// Seed 55 (200 transactions), tx00010 (three coordinators): c3 decided
// commit at 0.166s (deadline 1.320s); its commit record write failed, and the
// retry was slow. c3 answered "commit" from memory to p4 (0.793s) and p3
// (1.760s); c2, which does not run the transaction, recorded an abort for p6
// after the deadline (1.602s); c3's create was refused (1.686s) and it
// aborted: p4 and p3 committed, p1, p2 and p6 aborted. Replay with
//
//	go test ./orchestrator/dst -run 'TestSimulation$' -v -dst.seed=55 -dst.early-commit-answer -dst.trace=dst-55.trace
//
// The engine now answers "pending" until the record is durable, as the
// simulator does by default; this test keeps the old rule as a planted bug
// the simulator must go on catching.
func TestEarlyCommitAnswerBreaksAtomicity(t *testing.T) {
	r := Run(Config{Seed: 55, Transactions: 200, EarlyCommitAnswer: true})
	var mixed, early bool
	for _, v := range r.Violations {
		mixed = mixed || strings.HasPrefix(v, "tx00010: atomicity: mixed outcome")
		early = early || strings.HasPrefix(v, "tx00010: p4 committed before any commit decision was durable")
	}
	if !mixed || !early {
		t.Fatalf("seed 55 with the engine's resolve no longer shows the bug in tx00010: %q", r.Violations)
	}
	if fixed := Run(Config{Seed: 55, Transactions: 200}); fixed.Failed() {
		t.Fatalf("seed 55 with resolve answering pending until the record is durable: %q", fixed.Violations)
	}
}

// TestNoFaults: without faults, no-votes or client aborts, every
// transaction commits, and the counts add up.
func TestNoFaults(t *testing.T) {
	for _, coords := range []int{1, 3} {
		r := Run(Config{Seed: 7, Transactions: 300, Coordinators: coords, Faults: &Faults{}})
		if r.Failed() || r.Transactions != 300 || r.Committed != 300 || r.Aborted != 0 {
			t.Fatalf("%d coordinators: %s %q", coords, r.Summary(), r.Violations)
		}
		if st := r.Stats; st.CoordCrashes+st.PartCrashes+st.Dropped+st.Redelivered+st.InDoubtQueries > 0 {
			t.Fatalf("faults happened in a run without faults: %+v", st)
		}
	}
	// Everyone votes no: nothing commits.
	r := Run(Config{Seed: 7, Transactions: 300, Faults: &Faults{VoteNo: 1}})
	if r.Failed() || r.Committed != 0 || r.Aborted != 300 {
		t.Fatalf("all votes no: %s %q", r.Summary(), r.Violations)
	}
}
