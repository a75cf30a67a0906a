package dst

import "testing"

// TestSeedsThatFoundBugs replays the seeds that found engine bugs, with the
// transactions per seed they ran with: each must stay free of violations (it
// showed one on the code before its fix).
func TestSeedsThatFoundBugs(t *testing.T) {
	for _, c := range []struct {
		seed uint64
		tx   int
		bug  string
	}{
		{169, 100, "a paused coordinator's retried first create ran a finished saga again after its record expired"},
		{300219, 200, "the answer of a saga record write made before a fence released the held sends of the entry that recovered the saga: an action was sent with no record having it out"},
		{600479, 200, "the orphan sweep of an instance resumed past the retention wrote the final status of a saga it drove, final in memory with its record's write in flight (and lost: another instance had compensated the saga), over the expired status: completed after compensated"},
	} {
		r := Run(Config{Seed: c.seed, Transactions: c.tx})
		if r.Failed() {
			t.Errorf("seed %d (%d transactions), which found %q: %s", c.seed, c.tx, c.bug, r.Summary())
			report(t, r)
		}
	}
}
