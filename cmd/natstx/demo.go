package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
	"github.com/natstx/natstx/participants/sim"
)

type demoOptions struct {
	count        int
	concurrency  int
	timeout      time.Duration
	rates        []float64
	latencyMax   time.Duration
	seed         int64
	dataDir      string
	jsonOut      bool
	quiet        bool
	logLevel     string
	quiesceLimit time.Duration
	saga         bool
	refuseRate   float64
	sync         string
	ui           bool
	uiListen     string
	uiFallback   bool // --ui-listen was not given: another port if its default is taken
}

var demoServices = []string{"inventory", "payment", "shipping"}

func newDemo() *cobra.Command {
	o := demoOptions{}
	var rates string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run concurrent transactions across three example services and check atomicity",
		Long: `demo starts an embedded NATS server, a coordinator and the three example
services (inventory, payment, shipping), each with its own SQLite database
(in a temporary directory, or --data-dir) and its barrier, wrapped in a fault
injector that fails each operation with some probability and waits a random
delay. It runs transactions concurrently, prints one line per transaction and
a summary, then checks on the services' databases that every transaction was
applied by all services or by none, and that stock and funds are conserved.
It exits 1 on any violation.

With --ui it also serves the web console on loopback (--ui-listen, printed
at the start) and, after the run and its checks, keeps the coordinator, the
services and the console up until Ctrl-C, to look around in the console.

With --saga it runs the same orders as sagas instead (docs/SAGA.md): reserve
stock, charge payment, book shipping, each compensated by releasing it. Each
saga action fails for now (retried) as above, and is refused for good with
probability --refuse-rate, which compensates the steps done. The summary has
the same keys: committed counts completed sagas, aborted compensated ones; the
check is that a completed saga has every step applied, a compensated one none,
and the same conservation invariants.`,
		Example: `  natstx demo
  natstx demo --count 2000 --concurrency 200 --quiet
  natstx demo --success-rates 1,1,0.5 --timeout 300ms --json
  natstx demo --saga --count 200 --refuse-rate 0.1
  natstx demo --ui`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.rates, err = parseRates(rates); err != nil {
				return usageError{err}
			}
			if o.count < 1 || o.concurrency < 1 {
				return usageError{fmt.Errorf("--count and --concurrency must be at least 1 (got %d and %d)", o.count, o.concurrency)}
			}
			if o.timeout <= 0 || o.latencyMax < 0 {
				return usageError{fmt.Errorf("--timeout must be positive and --latency-max not negative")}
			}
			if !(o.refuseRate >= 0 && o.refuseRate <= 1) {
				return usageError{fmt.Errorf("--refuse-rate must be a probability from 0 to 1 (got %v)", o.refuseRate)}
			}
			if cmd.Flags().Changed("refuse-rate") && !o.saga {
				return usageError{fmt.Errorf("--refuse-rate is for sagas: add --saga")}
			}
			if err := o.checkUI(cmd.Flags().Changed("ui-listen")); err != nil {
				return err
			}
			return runDemo(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := c.Flags()
	f.IntVar(&o.count, "count", 300, "number of transactions")
	f.IntVar(&o.concurrency, "concurrency", 50, "transactions in flight at once")
	f.DurationVar(&o.timeout, "timeout", time.Second, "prepare timeout: votes missing after it abort the transaction (--saga: each attempt's timeout)")
	f.BoolVar(&o.saga, "saga", false, "run the orders as sagas (reserve, charge, ship, compensated on failure) instead of two-phase commit")
	f.Float64Var(&o.refuseRate, "refuse-rate", 0.05, "--saga: probability that a saga action is refused for good (its saga is compensated)")
	f.StringVar(&rates, "success-rates", "0.95,0.9,0.9", "success rate of inventory, payment and shipping (probability each operation succeeds)")
	f.DurationVar(&o.latencyMax, "latency-max", 100*time.Millisecond, "each simulated operation takes a uniform random time up to this")
	f.Int64Var(&o.seed, "seed", 0, "random seed of the simulated failures (0: random)")
	f.StringVar(&o.dataDir, "data-dir", "", "directory of the services' SQLite files (default: a temporary directory, removed afterwards)")
	f.StringVar(&o.sync, "sync", "interval", "the embedded server's disk sync: interval (JetStream's default, fsync every 2 minutes) or always (fsync before each write is acknowledged)")
	f.BoolVar(&o.jsonOut, "json", false, "print only the summary, as one JSON object")
	f.BoolVar(&o.quiet, "quiet", false, "no line per transaction")
	f.StringVar(&o.logLevel, "log-level", "error", "log level of natstx's own logs on stderr (debug, info, warn, error)")
	f.DurationVar(&o.quiesceLimit, "quiesce-timeout", 30*time.Second, "how long to wait for commits and aborts to be acknowledged before checking")
	f.BoolVar(&o.ui, "ui", false, "serve the web console on --ui-listen during the run, and keep everything up after it until Ctrl-C")
	f.StringVar(&o.uiListen, "ui-listen", defaultDemoUI, "--ui: loopback HOST:PORT of the web console (if the default port is taken, any free one)")
	return c
}

func parseRates(s string) ([]float64, error) {
	parts := strings.Split(s, ",")
	if len(parts) != len(demoServices) {
		return nil, fmt.Errorf("--success-rates needs %d comma-separated values (%s), got %q", len(demoServices), strings.Join(demoServices, ", "), s)
	}
	rates := make([]float64, len(parts))
	for i, p := range parts {
		r, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("--success-rates: %q is not a probability between 0 and 1", p)
		}
		rates[i] = r
	}
	return rates, nil
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zap.ParseAtomicLevel(level)
	if err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %w", err)}
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = lvl
	cfg.Sampling = nil
	cfg.Encoding = "console"
	cfg.EncoderConfig = zap.NewDevelopmentEncoderConfig()
	return cfg.Build()
}

// demoSummary is what demo prints at the end; --json prints it as is.
type demoSummary struct {
	Transactions int      `json:"transactions"`
	Committed    int      `json:"committed"`
	Aborted      int      `json:"aborted"`
	InDoubt      int      `json:"in_doubt"`
	Violations   int      `json:"violations"`
	Timeouts     int      `json:"timeouts"`
	Seconds      float64  `json:"seconds"`
	TxnPerSec    float64  `json:"txn_per_sec"`
	P50ms        float64  `json:"p50_ms"`
	P99ms        float64  `json:"p99_ms"`
	MaxMs        float64  `json:"max_ms"`
	Problems     []string `json:"problems,omitempty"`
}

func runDemo(ctx context.Context, o demoOptions, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	mode, err := embedded.ParseSyncMode(o.sync)
	if err != nil {
		return usageError{fmt.Errorf("--sync: %w", err)}
	}
	srv, err := embedded.Start(embedded.Config{Sync: mode})
	if err != nil {
		return err
	}
	defer srv.Stop()
	nc, err := nats.Connect(srv.URL(), nats.Name("natstx-demo"))
	if err != nil {
		return fmt.Errorf("connecting to the embedded NATS server: %w", err)
	}
	defer nc.Close()

	tp, stopTracing, err := startTracing(ctx, "natstx-demo", log)
	if err != nil {
		return err // a usage error, naming the variable
	}
	defer stopTracing()
	eng, err := orchestrator.New(nc, orchestrator.Config{PrepareTimeout: o.timeout, Logger: log.Named("coordinator"), TracerProvider: tp})
	if err != nil {
		return err
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer eng.Stop()
	var consoleURL string
	if o.ui {
		u, stopConsole, err := startDemoConsole(o, nc, eng, log)
		if err != nil {
			return err
		}
		defer stopConsole()
		consoleURL = u
		fmt.Fprintf(demoNotes(o, out), "natstx demo: %s\n", consoleLine(consoleURL, false))
	}

	dir := o.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "natstx-demo-"); err != nil {
			return fmt.Errorf("creating a data directory: %w", err)
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	svcs := make(map[string]services.Service, len(demoServices))
	for i, name := range demoServices {
		seed := o.seed
		if seed != 0 {
			seed += int64(i)
		}
		svc, err := services.Open(ctx, name, filepath.Join(dir, name+".db"))
		if err != nil {
			return err
		}
		defer svc.DB().Close()
		faults := &services.Faults{SuccessRate: o.rates[i], MaxLatency: o.latencyMax, Seed: seed}
		if o.saga {
			faults.RefuseRate = o.refuseRate
		}
		b, err := services.NewBarrier(ctx, svc, faults)
		if err != nil {
			return err
		}
		rt, err := participants.New(nc, participants.Config{Name: name, Barrier: b, Concurrency: 2 * o.concurrency, RetryDelay: 20 * time.Millisecond, Logger: log.Named(name), TracerProvider: tp})
		if err != nil {
			return err
		}
		if err := rt.Start(ctx); err != nil {
			return err
		}
		defer rt.Stop()
		svcs[name] = svc
	}

	var (
		rep        sim.Report
		invariants []string
		latencies  []time.Duration
		elapsed    time.Duration
	)
	// quiesce waits for every commit and abort to be acknowledged, every
	// saga to end (or the limit).
	quiesce := func() {
		deadline := time.Now().Add(o.quiesceLimit)
		for eng.Stats().InFlight > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if o.saga {
		if !o.jsonOut {
			fmt.Fprintf(out, "natstx demo: %d sagas (reserve, charge, ship), %d at once, across %s (success rates %v, refuse rate %v, latency up to %v, attempt timeout %v)\n",
				o.count, o.concurrency, strings.Join(demoServices, ", "), o.rates, o.refuseRate, o.latencyMax, o.timeout)
		}
		sr := runSagas(ctx, eng, o, out)
		quiesce()
		latencies, elapsed = sr.latencies, sr.elapsed
		if rep, invariants, err = checkSagaDemo(ctx, sr, svcs); err != nil {
			return err
		}
	} else {
		if !o.jsonOut {
			fmt.Fprintf(out, "natstx demo: %d transactions, %d at once, across %s (success rates %v, latency up to %v, prepare timeout %v)\n",
				o.count, o.concurrency, strings.Join(demoServices, ", "), o.rates, o.latencyMax, o.timeout)
		}
		var results []sim.Result
		results, latencies, elapsed = runTransactions(ctx, eng, o, out)
		quiesce()
		if rep, invariants, err = checkDemo(ctx, results, svcs); err != nil {
			return err
		}
	}
	s := demoSummary{
		Transactions: rep.Transactions, Committed: rep.Committed, Aborted: rep.Aborted,
		InDoubt: rep.InDoubt, Violations: rep.Violations, Timeouts: int(eng.Stats().Timeouts),
		Seconds: elapsed.Seconds(), TxnPerSec: float64(o.count) / elapsed.Seconds(), Problems: rep.Problems,
	}
	if n := len(latencies); n > 0 {
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		s.P50ms, s.P99ms, s.MaxMs = ms(latencies[n/2]), ms(latencies[min(n-1, n*99/100)]), ms(latencies[n-1])
	}
	if o.jsonOut {
		enc := json.NewEncoder(out)
		if err := enc.Encode(s); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "done in %.2fs: %.0f transactions/s, latency p50 %.1fms p99 %.1fms max %.1fms, %d aborted by timeout\n",
			s.Seconds, s.TxnPerSec, s.P50ms, s.P99ms, s.MaxMs, s.Timeouts)
		for _, l := range invariants {
			fmt.Fprintln(out, l)
		}
		for _, p := range rep.Problems {
			fmt.Fprintln(out, "VIOLATION:", p)
		}
		fmt.Fprintf(out, "atomicity: %d transactions, %d committed, %d aborted, %d violations\n",
			rep.Transactions, rep.Committed, rep.Aborted, rep.Violations)
	}
	var failed error
	if rep.Violations > 0 || rep.InDoubt > 0 {
		failed = fmt.Errorf("atomicity check failed: %d violations, %d in doubt", rep.Violations, rep.InDoubt)
	}
	if o.ui {
		waitInConsole(ctx, o, out, consoleURL)
	}
	return failed
}

// runTransactions runs o.count transactions, o.concurrency at a time, and
// returns each one's result and latency.
func runTransactions(ctx context.Context, eng *orchestrator.Engine, o demoOptions, out io.Writer) ([]sim.Result, []time.Duration, time.Duration) {
	var (
		mu        sync.Mutex
		results   = make([]sim.Result, 0, o.count)
		latencies = make([]time.Duration, 0, o.count)
		next      = make(chan int)
		wg        sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req := orchestrator.Request{ID: orchestrator.NewID()}
				for _, name := range demoServices {
					req.Participants = append(req.Participants, orchestrator.Participant{
						Name: name, Payload: services.Payload(name, i),
					})
				}
				t0 := time.Now()
				// Give each transaction ample time to finish its commit phase.
				tctx, cancel := context.WithTimeout(ctx, o.timeout+o.quiesceLimit)
				outc, err := eng.Execute(tctx, req)
				cancel()
				took := time.Since(t0)
				r := sim.Result{ID: req.ID, Participants: demoServices, Decided: err == nil && outc.State.Decided(), Committed: outc.Committed()}
				mu.Lock()
				results = append(results, r)
				latencies = append(latencies, took)
				if !o.quiet && !o.jsonOut {
					fmt.Fprintln(out, describe(outc, err, took))
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < o.count && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return results, latencies, time.Since(start)
}

func describe(o orchestrator.Outcome, err error, took time.Duration) string {
	ms := float64(took.Microseconds()) / 1000
	switch {
	case err != nil:
		return fmt.Sprintf("tx %s %s after %.1fms: %v", o.ID, o.State, ms, err)
	case o.Committed():
		return fmt.Sprintf("tx %s committed in %.1fms", o.ID, ms)
	default:
		return fmt.Sprintf("tx %s aborted in %.1fms: %s", o.ID, ms, o.Reason)
	}
}

// checkDemo checks atomicity and the conservation invariants on the
// services' databases; every broken invariant counts as a violation.
func checkDemo(ctx context.Context, results []sim.Result, svcs map[string]services.Service) (sim.Report, []string, error) {
	var rep sim.Report
	decided := make([]services.Result, 0, len(results))
	for _, r := range results {
		rep.Transactions++
		switch {
		case !r.Decided:
			rep.InDoubt++
			continue
		case r.Committed:
			rep.Committed++
		default:
			rep.Aborted++
		}
		decided = append(decided, services.Result{ID: r.ID, Participants: r.Participants, Committed: r.Committed})
	}
	n, problems, err := services.CheckAtomicity(ctx, decided, svcs)
	if err != nil {
		return rep, nil, err
	}
	rep.Violations, rep.Problems = n, problems
	lines, err := checkInvariants(ctx, &rep, svcs)
	return rep, lines, err
}

// checkInvariants checks the services' conservation invariants and counts a
// broken one in rep as a violation; it returns each service's summary line.
func checkInvariants(ctx context.Context, rep *sim.Report, svcs map[string]services.Service) ([]string, error) {
	lines, err := services.CheckAll(ctx, svcs)
	if errors.Is(err, services.ErrInvariant) {
		rep.Violations++
		rep.Problems = append(rep.Problems, err.Error())
		return lines, nil
	}
	return lines, err
}
