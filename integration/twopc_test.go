package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants/sim"
)

// TestAtomicityUnderRandomFailures runs 2,000 transactions, 200 at a time,
// across three services that fail operations at random and answer after a
// random delay, then checks that every transaction was applied by all of them
// or by none.
func TestAtomicityUnderRandomFailures(t *testing.T) {
	const n, conc = 2000, 200
	c := startCluster(t, orchestrator.Config{RetryBase: 200 * time.Millisecond, RetryMax: time.Second},
		serviceSpec{"inventory", 0.95, 50 * time.Millisecond},
		serviceSpec{"payment", 0.9, 50 * time.Millisecond},
		serviceSpec{"shipping", 0.9, 50 * time.Millisecond},
	)
	results, peak := c.load(n, conc, 2*time.Second)
	c.quiesce(60 * time.Second)
	rep := sim.Check(results, c.services)
	st := c.eng.Stats()
	report.Counts(t, fmt.Sprintf("%s; peak in flight %d; timeouts %d, resends %d", rep, peak, st.Timeouts, st.Resends))
	for _, p := range rep.Problems {
		t.Error("violation:", p)
	}
	if rep.Transactions != n || rep.Violations != 0 || rep.InDoubt != 0 {
		t.Fatalf("want %d transactions, 0 violations, 0 in doubt; got %s", n, rep)
	}
	if rep.Committed == 0 || rep.Aborted == 0 {
		t.Fatalf("want both commits and aborts; got %s", rep)
	}
	if peak < conc {
		t.Fatalf("want %d transactions in flight at once, saw at most %d", conc, peak)
	}
	if st.Committed != int64(rep.Committed) || st.Aborted != int64(rep.Aborted) {
		t.Fatalf("engine counted %d committed and %d aborted; clients saw %d and %d", st.Committed, st.Aborted, rep.Committed, rep.Aborted)
	}
}
