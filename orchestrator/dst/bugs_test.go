package dst

import (
	"strings"
	"testing"
	"time"
)

// The checker is trusted only if it catches what follows from a broken
// guarantee. The engine and the participant SDK are the real ones, so the
// bugs are planted in the simulated infrastructure they rely on: a disk that
// loses a participant's database at a restart, and a decision bucket whose
// Create is not a compare-and-set. Each must produce violations of the named
// kind within a few seeds. (The engine's own fixes of issue 9, reverted one
// at a time, are found as docs/SIMULATION.md reports.)
func TestPlantedBugsAreCaught(t *testing.T) {
	seeds := 12
	if raceDetector {
		seeds = 4
	}
	faults := Faults{Drop: 0.05, Delay: 0.05, SlowStore: 0.1, CrashParticipant: 0.02, StoreError: 0.05, VoteNo: 0.05}
	for _, tc := range []struct {
		name  string
		plant plant
		want  []string // a violation of one of these kinds must be among those found
	}{
		{"participant loses its database at a restart", plantVolatileDisk, []string{"atomicity: mixed outcome", "left prepared", "commits before"}},
		{"decision bucket without compare-and-set", plantBlindCreate, []string{"after an abort record", "atomicity: mixed outcome", "after a commit record"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results := runConfigs(seeds, func(i int) Config {
				f := faults
				return Config{Seed: uint64(i + 1), Transactions: 100, Coordinators: 2, Faults: &f, HealLimit: 20 * time.Second, plant: tc.plant}
			})
			failed, found := 0, false
			var example string
			for _, r := range results {
				if r.Failed() {
					failed++
				}
				for _, v := range r.Violations {
					for _, w := range tc.want {
						if strings.Contains(v, w) {
							found = true
							if example == "" {
								example = v
							}
						}
					}
				}
			}
			if !found {
				t.Fatalf("planted bug not caught: %d of %d seeds failed, none with one of %q", failed, len(results), tc.want)
			}
			t.Logf("caught in %d of %d seeds, e.g. %s", failed, len(results), example)
		})
	}
}
