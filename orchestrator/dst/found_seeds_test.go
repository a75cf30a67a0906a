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
		// readOnly: the seed ran with read-only votes (it found its bug
		// after they came; the others run as they did before them).
		readOnly bool
	}{
		{169, 100, "a paused coordinator's retried first create ran a finished saga again after its record expired", false},
		{300219, 200, "the answer of a saga record write made before a fence released the held sends of the entry that recovered the saga: an action was sent with no record having it out", false},
		{600479, 200, "the orphan sweep of an instance resumed past the retention wrote the final status of a saga it drove, final in memory with its record's write in flight (and lost: another instance had compensated the saga), over the expired status: completed after compensated", false},
		{9823, 100, "a transaction whose participants all voted read-only committed without a decision record, after the coordinator that owned it was paused past its lease and another had swept it as an orphan and recorded its abort: the status went from aborted to committed", true},
	} {
		// The faults and workload the seed drew when it found the bug:
		// read-only votes, if they came later, would change its run.
		cfg := Config{Seed: c.seed, Transactions: c.tx}
		f := drawConfig(&cfg)
		if !c.readOnly {
			f.ReadOnly = 0
		}
		f.OnePhase = 0 // none of them found its bug with one-phase commits
		cfg.Faults = &f
		r := Run(cfg)
		if r.Failed() {
			t.Errorf("seed %d (%d transactions), which found %q: %s", c.seed, c.tx, c.bug, r.Summary())
			report(t, r)
		}
	}
}
