package dst

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagSeeds = flag.Int("dst.seeds", 60, "number of seeds TestSimulation runs")
	flagFirst = flag.Uint64("dst.first", 1, "first seed TestSimulation runs")
	flagSeed  = flag.Uint64("dst.seed", 0, "replay this one seed (overrides -dst.seeds and -dst.first)")
	flagTx    = flag.Int("dst.tx", 200, "transactions per seed")
	flagTrace = flag.String("dst.trace", "", "with -dst.seed: write the run's trace to this file")
	flagCoord = flag.Int("dst.coordinators", 0, "coordinator instances per run (0: 1 to 3, from the seed)")
	flagEng   = flag.Bool("dst.early-commit-answer", false, "answer participants in doubt as the engine does today (Config.EarlyCommitAnswer)")
)

// TestSimulation runs a batch of seeds (60 seeds of 200 transactions in CI)
// and fails on any violation, printing the seed and the command that
// replays it. make sim runs more.
func TestSimulation(t *testing.T) {
	if *flagSeed != 0 {
		var trace bytes.Buffer
		r := Run(Config{Seed: *flagSeed, Transactions: *flagTx, Coordinators: *flagCoord, Trace: &trace, EarlyCommitAnswer: *flagEng})
		if *flagTrace != "" {
			if err := os.WriteFile(*flagTrace, trace.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("trace (%d lines) written to %s", r.TraceLines, *flagTrace)
		}
		t.Log(r.Summary())
		report(t, r)
		return
	}
	start := time.Now()
	results := runSeeds(*flagFirst, *flagSeeds, *flagTx)
	var total Result
	var failed []uint64
	for _, r := range results {
		total.Transactions += r.Transactions
		total.Committed += r.Committed
		total.Aborted += r.Aborted
		total.Violations = append(total.Violations, r.Violations...)
		total.Stats.add(r.Stats)
		total.SimTime += r.SimTime
		if r.Failed() {
			failed = append(failed, r.Seed)
			report(t, r)
		}
	}
	t.Logf("seeds=%d (%d..%d) transactions=%d committed=%d aborted=%d violations=%d failed_seeds=%v",
		len(results), *flagFirst, *flagFirst+uint64(*flagSeeds)-1, total.Transactions, total.Committed, total.Aborted, len(total.Violations), failed)
	st := total.Stats
	t.Logf("events=%d simulated=%v wall=%v deliveries=%d redeliveries=%d publishes_lost=%d dropped=%d duplicated=%d delayed=%d coordinator_crashes=%d participant_crashes=%d store_errors=%d in_doubt_queries=%d in_doubt_resolved=%d recorded_aborts=%d commits_refused=%d recovered=%d rejected=%d client_aborts=%d",
		st.Events, total.SimTime.Round(time.Second), time.Since(start).Round(time.Millisecond), st.Delivered, st.Redelivered, st.PublishesLost,
		st.Dropped, st.Duplicated, st.Delayed, st.CoordCrashes, st.PartCrashes, st.StoreErrors, st.InDoubtQueries,
		st.InDoubtResolved, st.RecordedAborts, st.CommitsRefused, st.Recovered, st.Rejected, st.ClientAborts)
	if *flagSeeds*(*flagTx) >= 10_000 && total.Transactions < 10_000 {
		t.Errorf("the batch ran %d transactions, want at least 10,000", total.Transactions)
	}
}

// report fails t with a run's violations, its seed and how to replay it.
func report(t *testing.T, r Result) {
	t.Helper()
	if !r.Failed() {
		return
	}
	const show = 10
	vs := r.Violations
	more := ""
	if len(vs) > show {
		vs, more = vs[:show], fmt.Sprintf("\n  ... and %d more", len(r.Violations)-show)
	}
	t.Errorf("seed %d: %d violations:\n  %s%s\n%s\nreplay: %s",
		r.Seed, len(r.Violations), strings.Join(vs, "\n  "), more, r.Summary(), ReplayCommand(r.Seed, r.Transactions))
}

// runSeeds runs n seeds from first on every CPU; results are in seed order.
func runSeeds(first uint64, n, tx int) []Result {
	return runConfigs(n, func(i int) Config {
		return Config{Seed: first + uint64(i), Transactions: tx, Coordinators: *flagCoord, EarlyCommitAnswer: *flagEng}
	})
}

func runConfigs(n int, cfg func(i int) Config) []Result {
	results := make([]Result, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = Run(cfg(i))
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return results
}

// TestSameSeedSameTrace: a run is a function of its seed. Two runs of one
// seed write identical traces; different seeds write different ones.
func TestSameSeedSameTrace(t *testing.T) {
	traceOf := func(seed uint64) (string, Result) {
		var b bytes.Buffer
		r := Run(Config{Seed: seed, Transactions: 100, Trace: &b})
		return b.String(), r
	}
	seen := map[uint64]uint64{}
	for _, seed := range []uint64{1, 2, 3, 42, 1 << 40} {
		a, ra := traceOf(seed)
		b, rb := traceOf(seed)
		if a != b {
			al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
			for i := range min(len(al), len(bl)) {
				if al[i] != bl[i] {
					t.Fatalf("seed %d: traces differ at line %d:\n  %s\n  %s", seed, i+1, al[i], bl[i])
				}
			}
			t.Fatalf("seed %d: traces differ in length: %d and %d lines", seed, len(al), len(bl))
		}
		if ra.TraceHash != rb.TraceHash || ra.TraceLines != rb.TraceLines || ra.Stats != rb.Stats {
			t.Fatalf("seed %d: equal traces but different results: %+v / %+v", seed, ra, rb)
		}
		if ra.TraceLines != strings.Count(a, "\n") {
			t.Fatalf("seed %d: %d trace lines counted, %d written", seed, ra.TraceLines, strings.Count(a, "\n"))
		}
		if ra.Stats.Events < 1000 {
			t.Fatalf("seed %d: only %d events: the run did nothing", seed, ra.Stats.Events)
		}
		if other, dup := seen[ra.TraceHash]; dup {
			t.Fatalf("seeds %d and %d gave the same trace", other, seed)
		}
		seen[ra.TraceHash] = seed
	}
}

// TestFaultsHappen makes sure the batch's seeds exercise every fault and
// every recovery path, so that a quiet simulator cannot pass for a thorough
// one.
func TestFaultsHappen(t *testing.T) {
	var st Stats
	for _, r := range runSeeds(1, 50, 200) {
		st.add(r.Stats)
	}
	for name, n := range map[string]int{
		"redeliveries": st.Redelivered, "lost publishes": st.PublishesLost, "dropped messages": st.Dropped,
		"duplicated messages": st.Duplicated, "delayed messages": st.Delayed, "coordinator crashes": st.CoordCrashes,
		"participant crashes": st.PartCrashes, "store errors": st.StoreErrors, "in-doubt queries": st.InDoubtQueries,
		"in-doubt resolutions": st.InDoubtResolved, "recorded aborts": st.RecordedAborts, "recovered commits": st.Recovered,
		"client aborts": st.ClientAborts, "refused commit decisions": st.CommitsRefused,
	} {
		if n == 0 {
			t.Errorf("no %s in 50 seeds", name)
		}
	}
	t.Logf("%+v", st)
}
