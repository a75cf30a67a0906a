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

	// Imported as testreport: this package's report fails a test with a
	// run's violations.
	testreport "github.com/natstx/natstx/integration/report"
)

var (
	flagSeeds = flag.Int("dst.seeds", 0, "number of seeds TestSimulation runs (0: 24, or 6 under the race detector)")
	flagFirst = flag.Uint64("dst.first", 1, "first seed TestSimulation runs")
	flagSeed  = flag.Uint64("dst.seed", 0, "replay this one seed (overrides -dst.seeds and -dst.first)")
	flagTx    = flag.Int("dst.tx", 100, "transactions per seed")
	flagTrace = flag.String("dst.trace", "", "with -dst.seed: write the run's trace to this file")
	flagCoord = flag.Int("dst.coordinators", 0, "coordinator instances per run (0: 1 to 3, from the seed)")
	flagLog   = flag.Bool("dst.log", false, "with -dst.seed: add the engines' own log lines to the trace")
)

// raceDetector: the tests run under the race detector (race_test.go).
var raceDetector bool

// TestSimulation runs a batch of seeds (24 seeds of 100 transactions in CI,
// 6 under the race detector) and fails on any violation, printing the seed
// and the command that replays it; a batch of 16 seeds or more must also
// have exercised every fault and recovery path. make sim runs more.
func TestSimulation(t *testing.T) {
	if *flagSeed != 0 {
		var trace bytes.Buffer
		r := Run(Config{Seed: *flagSeed, Transactions: *flagTx, Coordinators: *flagCoord, Trace: &trace, EngineLog: *flagLog})
		if *flagTrace != "" {
			if err := os.WriteFile(*flagTrace, trace.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("trace (%d lines) written to %s", r.TraceLines, *flagTrace)
		}
		testreport.Counts(t, r.Summary())
		report(t, r)
		return
	}
	seeds := *flagSeeds
	if seeds <= 0 {
		seeds = 24
		if raceDetector {
			seeds = 6
		}
	}
	start := time.Now()
	results := runSeeds(*flagFirst, seeds, *flagTx)
	total, failed := sumResults(t, results)
	testreport.Counts(t, fmt.Sprintf("seeds=%d (%d..%d) transactions=%d committed=%d aborted=%d in_doubt=%d %s violations=%d failed_seeds=%v",
		len(results), *flagFirst, *flagFirst+uint64(seeds)-1, total.Transactions, total.Committed, total.Aborted,
		total.InDoubt, total.sagaCounts(), len(total.Violations), failed))
	t.Logf("simulated=%v wall=%v %s", total.SimTime.Round(time.Second), time.Since(start).Round(time.Millisecond), statsLine(total.Stats))
	if seeds >= 16 {
		faultsHappened(t, total.Stats)
	}
}

// sumResults adds up a batch's results, reports each failed run on t, and
// returns the sum and the seeds that failed.
func sumResults(t *testing.T, results []Result) (total Result, failed []uint64) {
	t.Helper()
	for _, r := range results {
		total.Transactions += r.Transactions
		total.Committed += r.Committed
		total.Aborted += r.Aborted
		total.InDoubt += r.InDoubt
		total.Sagas += r.Sagas
		total.SagasCompleted += r.SagasCompleted
		total.SagasCompensated += r.SagasCompensated
		total.SagasStuck += r.SagasStuck
		total.SagasNotStarted += r.SagasNotStarted
		total.Violations = append(total.Violations, r.Violations...)
		total.Stats.add(r.Stats)
		total.SimTime += r.SimTime
		if r.Failed() {
			failed = append(failed, r.Seed)
			report(t, r)
		}
	}
	return total, failed
}

// faultsHappened fails t if a batch exercised none of one fault or recovery
// path, so that a quiet simulator cannot pass for a thorough one.
func faultsHappened(t *testing.T, st Stats) {
	t.Helper()
	for name, n := range map[string]int{
		"store errors": st.StoreErrors, "lost store answers": st.StoreLostAnswers, "late store writes": st.StoreLate,
		"listings cut short": st.ScansCut,
		"redeliveries":       st.Redelivered, "lost publishes": st.PublishesLost, "dropped messages": st.Dropped,
		"duplicated messages": st.Duplicated, "delayed messages": st.Delayed, "coordinator crashes": st.CoordCrashes,
		"pauses past the lease": st.PausesPastLease, "pauses past the retention": st.PausesPastRetain,
		"participant crashes": st.PartCrashes, "participant pauses": st.PartPauses, "in-doubt questions": st.InDoubtQueries, "in-doubt answers": st.InDoubtResolved,
		"recorded aborts": st.RecordedAborts, "recovered commits": st.Recovered, "orphans aborted": st.OrphansAborted,
		"client aborts": st.ClientAborts, "handler errors": st.HandlerErrors, "read-only votes": st.ReadOnlyVotes, "one-phase commits": st.OnePhaseTxs,
		"saga step retries": st.SagaRetries, "saga compensation retries": st.SagaCompRetries, "stuck saga steps": st.SagaStuckSteps,
		"saga takeovers": st.SagaTakeovers, "saga aborts": st.SagaAborts, "operator actions": st.OperatorActions,
	} {
		if n == 0 {
			t.Errorf("no %s in the batch", name)
		}
	}
}

// statsLine prints every counter.
func statsLine(st Stats) string {
	return fmt.Sprintf("events=%d store_ops=%d store_errors=%d store_lost_answers=%d store_late=%d scans_cut=%d publishes_lost=%d duplicate_msg_ids=%d "+
		"deliveries=%d redeliveries=%d expired_commands=%d dropped=%d duplicated=%d delayed=%d "+
		"coordinator_crashes=%d pauses=%d pauses_past_lease=%d pauses_past_retention=%d participant_crashes=%d participant_pauses=%d "+
		"in_doubt_queries=%d in_doubt_answers=%d recorded_aborts=%d commits_refused=%d recovered=%d orphans_aborted=%d begins_waited=%d "+
		"client_aborts=%d begin_retries=%d begins_refused=%d begins_overloaded=%d rejected=%d handler_errors=%d read_only_votes=%d one_phase=%d status_regressions=%d lease_lapses=%d "+
		"saga_retries=%d saga_comp_retries=%d saga_stuck_steps=%d saga_takeovers=%d saga_aborts=%d operator_actions=%d saga_stale_statuses=%d",
		st.Events, st.StoreOps, st.StoreErrors, st.StoreLostAnswers, st.StoreLate, st.ScansCut, st.PublishesLost, st.DuplicateMsgIDs,
		st.Delivered, st.Redelivered, st.ExpiredCommands, st.Dropped, st.Duplicated, st.Delayed,
		st.CoordCrashes, st.CoordPauses, st.PausesPastLease, st.PausesPastRetain, st.PartCrashes, st.PartPauses,
		st.InDoubtQueries, st.InDoubtResolved, st.RecordedAborts, st.CommitsRefused, st.Recovered, st.OrphansAborted, st.BeginsWaited,
		st.ClientAborts, st.BeginRetries, st.BeginsRefused, st.BeginsOverloaded, st.Rejected, st.HandlerErrors, st.ReadOnlyVotes, st.OnePhaseTxs, st.StatusRegressions, st.LeaseLapses,
		st.SagaRetries, st.SagaCompRetries, st.SagaStuckSteps, st.SagaTakeovers, st.SagaAborts, st.OperatorActions, st.SagaStaleStatuses)
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
		return Config{Seed: first + uint64(i), Transactions: tx, Coordinators: *flagCoord}
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

// TestSameSeedSameTrace: a run is a function of its seed, engine and
// participant SDK included. Two runs of one seed write identical traces;
// different seeds write different ones.
func TestSameSeedSameTrace(t *testing.T) {
	traceOf := func(seed uint64) (string, Result) {
		var b bytes.Buffer
		r := Run(Config{Seed: seed, Transactions: 50, Trace: &b})
		return b.String(), r
	}
	seen := map[uint64]uint64{}
	seeds := []uint64{1, 2, 3, 42}
	if raceDetector {
		seeds = seeds[:2]
	}
	for _, seed := range seeds {
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

// TestNoFaults: without faults, no-votes, client aborts or failing saga
// steps, every transaction commits and every saga completes, and the counts
// add up; with every vote no, no transaction commits; with every saga
// action refused, every saga is compensated.
func TestNoFaults(t *testing.T) {
	for _, coords := range []int{1, 3} {
		r := Run(Config{Seed: 7, Transactions: 100, Coordinators: coords, Faults: &Faults{}})
		if r.Failed() || r.Transactions != 100 || r.Committed != 100 || r.Aborted != 0 || r.InDoubt != 0 ||
			r.Sagas != 25 || r.SagasCompleted != 25 {
			t.Fatalf("%d coordinators: %s %q", coords, r.Summary(), r.Violations)
		}
		if st := r.Stats; st.CoordCrashes+st.PartCrashes+st.Dropped+st.InDoubtQueries+st.CoordPauses > 0 {
			t.Fatalf("faults happened in a run without faults: %s", statsLine(st))
		}
	}
	r := Run(Config{Seed: 7, Transactions: 100, Faults: &Faults{VoteNo: 1}})
	if r.Failed() || r.Committed != 0 || r.Aborted != 100 {
		t.Fatalf("all votes no: %s %q", r.Summary(), r.Violations)
	}
	r = Run(Config{Seed: 7, Transactions: 20, Sagas: 50, Faults: &Faults{SagaRefuse: 1}})
	if r.Failed() || r.Sagas != 50 || r.SagasCompensated+r.SagasCompleted != 50 || r.SagasCompensated == 0 || r.SagasStuck+r.SagasNotStarted != 0 {
		t.Fatalf("every saga action before a pivot refused: %s %q", r.Summary(), r.Violations)
	}
	if r.Stats.SagaRetries+r.Stats.SagaCompRetries+r.Stats.SagaStuckSteps+r.Stats.OperatorActions > 0 {
		t.Fatalf("saga retries or stuck steps in a run where no step fails for now: %s", statsLine(r.Stats))
	}
}

// TestSimulationWithLittleRoom runs a batch of seeds (from 9100: 48 seeds of
// 60 transactions, 8 under the race detector) whose engines have
// MaxInFlight 4, so that admission binds: begins beyond four starting wait
// for room in simulated time, and begins beyond four waiting, or four in
// flight, are refused with ErrOverloaded having sent nothing (the client
// tries again with the same ID). It fails on any violation, and if no begin
// of the whole batch waited or none was refused for overload (the batch then
// proved nothing of admission).
func TestSimulationWithLittleRoom(t *testing.T) {
	const (
		first       = 9100
		tx          = 60
		maxInFlight = 4
	)
	seeds := 48
	if raceDetector {
		seeds = 8
	}
	start := time.Now()
	results := runConfigs(seeds, func(i int) Config {
		return Config{Seed: first + uint64(i), Transactions: tx, MaxInFlight: maxInFlight}
	})
	total, failed := sumResults(t, results)
	testreport.Counts(t, fmt.Sprintf("seeds=%d (%d..%d) max_in_flight=%d transactions=%d committed=%d aborted=%d in_doubt=%d %s violations=%d begins_waited=%d begins_overloaded=%d failed_seeds=%v",
		len(results), first, first+seeds-1, maxInFlight, total.Transactions, total.Committed, total.Aborted, total.InDoubt,
		total.sagaCounts(), len(total.Violations), total.Stats.BeginsWaited, total.Stats.BeginsOverloaded, failed))
	t.Logf("simulated=%v wall=%v %s", total.SimTime.Round(time.Second), time.Since(start).Round(time.Millisecond), statsLine(total.Stats))
	if total.Stats.BeginsWaited == 0 {
		t.Errorf("no begin waited for room in %d seeds with MaxInFlight %d: admission never bound", seeds, maxInFlight)
	}
	if total.Stats.BeginsOverloaded == 0 {
		t.Errorf("no begin was refused for overload in %d seeds with MaxInFlight %d", seeds, maxInFlight)
	}
}
