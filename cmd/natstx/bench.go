package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/orchestrator/txn"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/sim"
)

type benchOptions struct {
	natsURL          string
	protocol         string
	participantCount int
	participants     []string
	readOnly         int
	duration         time.Duration
	count            int
	concurrency      int
	rate             float64
	maxInFlight      int
	latencyMin       time.Duration
	latencyMax       time.Duration
	failureRate      float64
	prepareTimeout   time.Duration
	payloadSize      int
	payloads         []string
	payloadOf        map[string][]byte
	replicas         int
	jsMsgs           int
	seed             int64
	quiesce          time.Duration
	noStatus         bool
	noOnePhase       bool
	noProgress       bool
	jsonOut          bool
	logLevel         string
	cpuProfile       string
	memProfile       string
	execTrace        string
	sync             string
	groupCommit      string
	memEvery         int
	memMetrics       string
}

// benchSummary is what bench reports; --json prints it as one object.
type benchSummary struct {
	Protocol     string   `json:"protocol"`
	Participants int      `json:"participants"`
	Names        []string `json:"participant_names"`
	// Simulated is true when bench ran its own simulated participants, and so
	// could check atomicity against what they applied.
	Simulated bool `json:"simulated"`
	// ReadOnly is how many of the simulated participants (the last ones)
	// vote read-only (--read-only).
	ReadOnly int    `json:"read_only"`
	NATS     string `json:"nats"`
	// Sync is the embedded server's sync mode ("interval" or "always"), or
	// "server" when bench uses a NATS server it did not start.
	Sync string `json:"sync"`
	// GroupCommit is true when bench's own coordinator wrote in atomic
	// batches (--group-commit).
	GroupCommit  bool    `json:"group_commit"`
	Concurrency  int     `json:"concurrency,omitempty"`
	OfferedRate  float64 `json:"offered_rate,omitempty"`
	Transactions int     `json:"transactions"`
	Committed    int     `json:"committed"`
	Aborted      int     `json:"aborted"`
	InDoubt      int     `json:"in_doubt"`
	// Violations is null when atomicity could not be checked (participants
	// not run by bench).
	Violations *int  `json:"violations"`
	Timeouts   int64 `json:"timeouts"`
	// Resends counts the commands bench's own coordinator sent again for
	// want of an answer (null through the API: the server's are its own).
	Resends *int64 `json:"resends"`
	// BeginsWaited counts the begins bench's own coordinator held back
	// until a transaction ahead ended its first round (its admission;
	// null through the API).
	BeginsWaited        *int64  `json:"begins_waited"`
	Seconds             float64 `json:"seconds"`
	TxnPerSec           float64 `json:"txn_per_sec"`
	MeanMs              float64 `json:"mean_ms"`
	P50ms               float64 `json:"p50_ms"`
	P90ms               float64 `json:"p90_ms"`
	P99ms               float64 `json:"p99_ms"`
	P999ms              float64 `json:"p999_ms"`
	MaxMs               float64 `json:"max_ms"`
	JetStreamMsgs       int     `json:"jetstream_msgs"`
	JetStreamMsgsPerSec float64 `json:"jetstream_msgs_per_sec"`
	// JetStreamErrors counts publishes of the raw measurement that were not
	// stored (JetStreamError is the first one's error); the rate counts only
	// stored messages.
	JetStreamErrors int      `json:"jetstream_publish_errors"`
	JetStreamError  string   `json:"jetstream_publish_error,omitempty"`
	Problems        []string `json:"problems,omitempty"`
	// Coordinator says what ran the transactions: "bench" (its own engine,
	// on its embedded server) or "api" (the coordinators already running on
	// --nats, through the coordinator API, as 'natstx tx begin' does).
	Coordinator string `json:"coordinator"`
	// CutShort is true when the run stopped early (Ctrl-C, NATS gone, no
	// coordinator); CutShortReason says why. The figures then cover the
	// transactions run until then.
	CutShort       bool   `json:"cut_short"`
	CutShortReason string `json:"cut_short_reason,omitempty"`
	// Memory holds the memory samples, with --memory-every only.
	Memory *benchMemory `json:"memory,omitempty"`
}

func newBench() *cobra.Command {
	var o benchOptions
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure transaction throughput and latency, and JetStream's own publish rate",
		Long: `bench runs transactions and reports throughput, an HDR latency histogram
(percentiles and distribution) and, in the same run on the same server, the
raw JetStream async-publish rate of command-sized messages to a file-backed
stream: the broker's ceiling to compare with.

NATS and coordinator: by default bench starts an embedded NATS server (a fresh
data directory, removed afterwards) and a coordinator in its own process. With
--nats URL it drives the coordinators already running on that NATS ('natstx
server') through the coordinator API, as 'natstx tx begin' does, and declares
nothing of theirs. The raw measurement always goes to a temporary stream of
its own (NATSTX_BENCH_<id>, subjects natstx.bench.<id>.>), deleted afterwards;
--jetstream-msgs 0 skips it.

When the connection to NATS drops mid-run (the server stopped or
restarted), when no coordinator answers, or on Ctrl-C, bench stops at once, prints the figures of the transactions run until then, says the run was
cut short ("cut_short": true with --json) and exits 1.

Participants: by default bench starts --participant-count simulated
participants (each operation takes --latency-min to --latency-max and fails
with probability --failure-rate; a failed prepare votes abort, a failed commit
or abort is retried) and, after the run, checks atomicity against what they
applied. --read-only N makes the last N of them vote read-only: their prepare
stages nothing and they are sent neither commit nor abort (protocol 6); the
check is then that they applied nothing and were sent no second phase.

Protocol: --protocol 2pc (the default) runs two-phase commit transactions;
--protocol saga runs sagas of one step per participant, in order (the payload
as action and compensation, --prepare-timeout as each attempt's timeout), on
the same participants: a failed action is refused for good and its saga
compensated, a failed compensation retried. Then committed counts completed
sagas, aborted compensated ones, and the check is that a completed saga has
every step done and a compensated one none (participants/sim.CheckSagas). With --participants NAME,... it drives participants already running
on that NATS instead (e.g. 'natstx participant sim'); atomicity is then not
checked here (violations: null).

Load: --count transactions or for --duration; closed loop with --concurrency
transactions in flight, or open loop at a fixed --rate per second (latency is
then measured from each transaction's scheduled start, so a stall is not
hidden).

Memory: --memory-every N takes a memory sample when the load starts and
then each time another N transactions have finished: the transactions
finished, the time since the start, the resident set size (RSS) and the Go
heap in use. By default they are bench's own process's, which holds
everything bench runs: the embedded NATS server and its own coordinator
(unless --nats), the simulated participants (who keep every transaction in
memory) and the load itself. RSS is read from /proc/self/status (Linux only;
elsewhere it is reported unavailable), the heap from runtime/metrics. With
--memory-metrics URL they are read instead from that Prometheus endpoint
(process_resident_memory_bytes and go_memstats_heap_inuse_bytes), such as
'natstx server --metrics-listen' serves: the way to measure a coordinator
alone. The output ends with the samples and the RSS growth from the sample
after the first N transactions to the last. A sample that could not be read
is reported missing, never estimated, and the run then exits 1.

A progress bar shows on a terminal. Exit code 1 on an atomicity violation, a
transaction whose outcome never came, a run cut short, or a memory sample
that could not be read; 2 on bad usage.`,
		Example: `  natstx bench
  natstx bench --participant-count 5 --duration 20s --concurrency 128 --json
  natstx bench -n 3 --read-only 1 --count 10000
  natstx bench --count 10000 --rate 2000 --latency-max 5ms --failure-rate 0.01
  natstx bench --nats nats://127.0.0.1:4222 --participants inventory,payment --duration 10s
  natstx bench --protocol saga -n 3 --count 5000
  natstx bench --count 200000 --memory-every 20000
  natstx bench --nats nats://127.0.0.1:4222 --participants a,b,c --count 10000000 \
    --memory-every 1000000 --memory-metrics http://127.0.0.1:9464/metrics --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return err
			}
			return runBench(cmd, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.natsURL, "nats", "", "URL of the NATS server to use; empty starts an embedded one")
	f.StringVar(&o.protocol, "protocol", "2pc", "protocol to run: 2pc, or saga (one step per participant, in order)")
	f.IntVarP(&o.participantCount, "participant-count", "n", 3, "simulated participants per transaction, started by bench")
	f.IntVar(&o.readOnly, "read-only", 0, "of the -n simulated participants, the last N vote read-only (no commit or abort is sent them); not with --nats or --participants")
	f.StringSliceVar(&o.participants, "participants", nil, "drive these running participants instead of simulated ones (NAME,NAME,...)")
	f.DurationVarP(&o.duration, "duration", "d", 10*time.Second, "how long to run (unless --count is given)")
	f.IntVar(&o.count, "count", 0, "run this many transactions instead of for --duration")
	f.IntVarP(&o.concurrency, "concurrency", "c", 64, "transactions in flight at once (closed loop)")
	f.Float64Var(&o.rate, "rate", 0, "offer this many transactions per second instead (open loop)")
	f.IntVar(&o.maxInFlight, "max-in-flight", 10000, "with --rate: the most transactions in flight; beyond it starts wait")
	f.DurationVar(&o.latencyMin, "latency-min", 0, "simulated participants: least time one operation takes")
	f.DurationVar(&o.latencyMax, "latency-max", 0, "simulated participants: most time one operation takes (0: none)")
	f.Float64Var(&o.failureRate, "failure-rate", 0, "simulated participants: probability that one operation fails")
	f.DurationVar(&o.prepareTimeout, "prepare-timeout", 5*time.Second, "prepare timeout of each transaction")
	f.IntVar(&o.payloadSize, "payload-size", 64, "bytes of payload each participant receives with prepare")
	f.StringArrayVar(&o.payloads, "payload", nil, "NAME=PAYLOAD: what running participant NAME receives instead of --payload-size bytes (for services that read it, such as natstx participant inventory); repeat per participant")
	f.IntVar(&o.replicas, "replicas", 1, "replicas of the stream and buckets bench declares: its own coordinator's, and the raw measurement's stream")
	f.IntVar(&o.jsMsgs, "jetstream-msgs", 100_000, "messages of the raw JetStream publish measurement")
	f.Int64Var(&o.seed, "seed", 0, "random seed of the simulated participants (0: random)")
	f.DurationVar(&o.quiesce, "quiesce-timeout", 30*time.Second, "how long to wait for commits and aborts to be acknowledged before checking")
	f.BoolVar(&o.noOnePhase, "no-one-phase", false, "bench's own coordinator sends prepare and commit to a transaction's only participant (-n 1) instead of commit-one-phase; not with --nats")
	f.BoolVar(&o.noStatus, "no-status", false, "bench's own coordinator skips its status bucket writes (two or three per transaction; tx status/list/watch read them); not with --nats")
	f.BoolVar(&o.noProgress, "no-progress", false, "no progress bar, even on a terminal")
	f.BoolVar(&o.jsonOut, "json", false, "print only the summary, as one JSON object")
	f.StringVar(&o.logLevel, "log-level", "error", "log level of natstx's own logs on stderr (debug, info, warn, error)")
	f.StringVar(&o.groupCommit, "group-commit", "auto", groupCommitHelp+"; bench's own coordinator only")
	f.StringVar(&o.sync, "sync", "interval", "the embedded server's disk sync: interval (JetStream's default, fsync every 2 minutes) or always (fsync before each write is acknowledged); not with --nats")
	f.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of the load phase (bench's whole process: embedded NATS, coordinator, participants, load) to this file, for go tool pprof")
	f.StringVar(&o.memProfile, "mem-profile", "", "write an allocation profile of the load phase to this file, for go tool pprof")
	f.StringVar(&o.execTrace, "exec-trace", "", "write a Go execution trace of the load phase to this file, for go tool trace (where goroutines waited: go tool trace -pprof=sched FILE)")
	f.IntVar(&o.memEvery, "memory-every", 0, "take a memory sample (RSS, Go heap in use) when the load starts and after every N transactions finished; 0: none")
	f.StringVar(&o.memMetrics, "memory-metrics", "", "with --memory-every: read RSS and heap from this Prometheus endpoint (e.g. http://127.0.0.1:9464/metrics of 'natstx server --metrics-listen') instead of bench's own process, which holds the embedded NATS, its coordinator and the simulated participants too")
	_ = c.RegisterFlagCompletionFunc("protocol", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"2pc", "saga"}, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

func (o *benchOptions) validate(cmd *cobra.Command) error {
	f := cmd.Flags()
	switch o.protocol = strings.ToLower(o.protocol); o.protocol {
	case "2pc", "saga":
	default:
		return usageError{fmt.Errorf("--protocol %q: want 2pc or saga", o.protocol)}
	}
	if _, err := embedded.ParseSyncMode(o.sync); err != nil {
		return usageError{fmt.Errorf("--sync: %w", err)}
	}
	if _, err := groupCommit(o.groupCommit, false); err != nil {
		return err
	}
	if f.Changed("group-commit") && o.natsURL != "" {
		return usageError{errors.New("--group-commit sets how bench's own coordinator writes; with --nats, the coordinators running there decide (natstx server --group-commit)")}
	}
	if f.Changed("sync") && o.natsURL != "" {
		return usageError{errors.New("--sync sets the embedded server's disk sync; with --nats, the server there decides (its jetstream sync_interval)")}
	}
	if f.Changed("count") && f.Changed("duration") {
		return usageError{errors.New("give --count or --duration, not both")}
	}
	if f.Changed("count") && o.count < 1 {
		return usageError{fmt.Errorf("--count must be at least 1 (got %d)", o.count)}
	}
	if !f.Changed("count") && o.duration <= 0 {
		return usageError{errors.New("--duration must be positive")}
	}
	if f.Changed("rate") && f.Changed("concurrency") {
		return usageError{errors.New("give --concurrency (closed loop) or --rate (open loop), not both")}
	}
	if f.Changed("rate") && !(o.rate > 0 && o.rate <= 1e6) {
		return usageError{fmt.Errorf("--rate must be above 0 and at most 1000000 per second (got %v)", o.rate)}
	}
	if o.concurrency < 1 || o.maxInFlight < 1 {
		return usageError{errors.New("--concurrency and --max-in-flight must be at least 1")}
	}
	if len(o.participants) > 0 {
		if f.Changed("participant-count") {
			return usageError{errors.New("give --participant-count (simulated) or --participants (running ones), not both")}
		}
		seen := map[string]bool{}
		for _, p := range o.participants {
			if err := messages.ValidateName("participant", p); err != nil {
				return usageError{fmt.Errorf("--participants: %w", err)}
			}
			if seen[p] {
				return usageError{fmt.Errorf("--participants names %s twice", p)}
			}
			seen[p] = true
		}
	} else if o.participantCount < 1 || o.participantCount > 64 {
		return usageError{fmt.Errorf("--participant-count must be from 1 to 64 (got %d)", o.participantCount)}
	}
	if f.Changed("read-only") {
		switch {
		case len(o.participants) > 0:
			return usageError{errors.New("--read-only makes some of bench's simulated participants vote read-only; --participants are running participants, which vote as they do")}
		case o.natsURL != "":
			return usageError{errors.New("--read-only applies to bench's own coordinator and simulated participants; not with --nats")}
		case o.protocol == "saga":
			return usageError{errors.New("--read-only is a vote on prepare, which sagas do not have; use it with --protocol 2pc")}
		case o.readOnly < 0 || o.readOnly > o.participantCount:
			return usageError{fmt.Errorf("--read-only must be from 0 to --participant-count (%d) (got %d)", o.participantCount, o.readOnly)}
		}
	}
	o.payloadOf = map[string][]byte{}
	for _, p := range o.payloads {
		name, payload, ok := strings.Cut(p, "=")
		if !ok || !slices.Contains(o.participants, name) {
			return usageError{fmt.Errorf("--payload %q: want NAME=PAYLOAD, NAME one of --participants (%s)", p, strings.Join(o.participants, ","))}
		}
		if _, twice := o.payloadOf[name]; twice {
			return usageError{fmt.Errorf("--payload gives %s's payload twice", name)}
		}
		o.payloadOf[name] = []byte(payload)
	}
	if o.noOnePhase && o.natsURL != "" {
		return usageError{errors.New("--no-one-phase configures bench's own coordinator; with --nats, give it to natstx server")}
	}
	if o.noStatus && o.natsURL != "" {
		return usageError{errors.New("--no-status applies to bench's own coordinator; with --nats the running coordinators write their statuses")}
	}
	if !(o.failureRate >= 0 && o.failureRate <= 1) {
		return usageError{fmt.Errorf("--failure-rate must be a probability from 0 to 1 (got %v)", o.failureRate)}
	}
	if o.latencyMin < 0 || o.latencyMax < 0 || (o.latencyMax > 0 && o.latencyMax < o.latencyMin) {
		return usageError{errors.New("--latency-min and --latency-max must not be negative, and --latency-max not below --latency-min")}
	}
	if o.prepareTimeout <= 0 || o.quiesce <= 0 {
		return usageError{errors.New("--prepare-timeout and --quiesce-timeout must be positive")}
	}
	if o.payloadSize < 0 || o.jsMsgs < 0 || o.replicas < 1 {
		return usageError{errors.New("--payload-size and --jetstream-msgs must not be negative, --replicas at least 1")}
	}
	return checkMemoryFlags(o.memEvery, o.memMetrics)
}

func runBench(cmd *cobra.Command, o benchOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	out := cmd.OutOrStdout()

	s := benchSummary{Protocol: o.protocol, NATS: redactURL(o.natsURL), Coordinator: "bench", Sync: "server"}
	url := o.natsURL
	if url == "" {
		mode, _ := embedded.ParseSyncMode(o.sync) // checked by validate
		s.Sync = string(mode)
		srv, err := embedded.Start(embedded.Config{Sync: mode})
		if err != nil {
			return err
		}
		defer srv.Stop()
		url, s.NATS = srv.URL(), "embedded"
	}
	// The run stops at once, keeping its figures, when the connection to
	// NATS drops: what is measured after that measures the outage.
	ctx, cut := context.WithCancelCause(ctx)
	defer cut(nil)
	lost := func(*nats.Conn) { cut(errBenchLostNATS) }
	nc, err := connect(url, "natstx-bench", nats.ClosedHandler(lost), nats.DisconnectHandler(lost))
	if err != nil {
		return err
	}
	defer nc.Close()
	var (
		run   execFunc
		stats func() orchestrator.StatsSnapshot
	)
	if o.natsURL == "" {
		s.GroupCommit, _ = groupCommit(o.groupCommit, s.Sync == string(embedded.SyncAlways)) // checked by validate
		eng, err := orchestrator.New(nc, orchestrator.Config{
			PrepareTimeout: o.prepareTimeout, MaxInFlight: max(100_000, o.concurrency, o.maxInFlight),
			Streams: orchestrator.StreamOptions{Replicas: o.replicas}, NoStatus: o.noStatus, NoAPI: true, Logger: log.Named("coordinator"),
			GroupCommit: s.GroupCommit, NoOnePhase: o.noOnePhase,
		})
		if err != nil {
			return err
		}
		if err := eng.Start(ctx); err != nil {
			return fmt.Errorf("starting the coordinator: %w", err)
		}
		defer eng.Stop()
		run, stats = engineExec(eng), eng.Stats
		if o.protocol == "saga" {
			run = engineSagaExec(eng, o.prepareTimeout)
		}
	} else {
		// A server runs on that NATS: drive it as a user would.
		cl, err := orchestrator.NewClient(nc)
		if err != nil {
			return err
		}
		s.Coordinator = "api"
		run = clientExec(nc, cl, o.prepareTimeout, cut)
		if o.protocol == "saga" {
			run = clientSagaExec(nc, cl, o.prepareTimeout, cut)
		}
	}

	names := o.participants
	var services map[string]*sim.Service
	if len(names) == 0 {
		s.Simulated, s.ReadOnly = true, o.readOnly
		services = make(map[string]*sim.Service, o.participantCount)
		run := strings.ToLower(nuid.Next()[:8])
		for i := 1; i <= o.participantCount; i++ {
			name := fmt.Sprintf("bench-%s-p%d", run, i)
			names = append(names, name)
			stopP, svc, err := startSimParticipant(ctx, url, name, o, int64(i), log)
			if err != nil {
				return err
			}
			defer stopP()
			services[name] = svc
		}
	}
	s.Participants, s.Names = len(names), names

	if !o.jsonOut {
		load := fmt.Sprintf("%d in flight", o.concurrency)
		if o.rate > 0 {
			load = fmt.Sprintf("offered at %.0f/s", o.rate)
		}
		span := o.duration.String()
		if o.count > 0 {
			span = fmt.Sprintf("%d transactions", o.count)
		}
		who := "simulated participants"
		if s.ReadOnly > 0 {
			who += fmt.Sprintf(" (%d voting read-only)", s.ReadOnly)
		}
		if !s.Simulated {
			who = "running participants " + strings.Join(names, ",")
		}
		coord := "bench's own coordinator"
		if s.Coordinator == "api" {
			coord = "the coordinators running there (API)"
		}
		if o.protocol == "saga" {
			span = strings.Replace(span, "transactions", "sagas", 1)
		}
		nats := "NATS " + s.NATS
		if s.Sync != "server" {
			nats += " (sync " + s.Sync + ")"
		}
		if s.GroupCommit {
			nats += ", group commit"
		}
		fmt.Fprintf(out, "natstx bench: %s, %d %s, %s, %s, %s, %s\n", o.protocol, len(names), who, span, load, nats, coord)
	}
	bar := newBenchBar(o, out)
	stopProfiles, err := startProfiles(o.cpuProfile, o.memProfile, o.execTrace)
	if err != nil {
		return err
	}
	mem := newMemSampler(o, cmd.ErrOrStderr())
	r := runLoad(ctx, run, o, names, bar, mem)
	s.Memory = mem.report()
	if err := stopProfiles(); err != nil {
		return err
	}
	if bar != nil {
		_ = bar.Finish() // and clears it
	}

	// Quiescence: every commit and abort acknowledged, or the limit. Bench's
	// own engine says when nothing is in flight; through the API, what the
	// simulated participants still hold prepared tells.
	deadline := time.Now().Add(o.quiesce)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if stats != nil && stats().InFlight == 0 || stats == nil && stagedIn(services) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Transactions = len(r.results)
	s.Timeouts = r.timeouts
	if stats != nil {
		st := stats()
		s.Timeouts, s.Resends, s.BeginsWaited = st.Timeouts, &st.Resends, &st.Waited
	}
	s.Seconds = r.elapsed.Seconds()
	if s.Seconds > 0 {
		s.TxnPerSec = float64(s.Transactions) / s.Seconds
	}
	if o.rate > 0 {
		s.OfferedRate = o.rate
	} else {
		s.Concurrency = o.concurrency
	}
	if s.Simulated {
		rep := sim.Check(r.results, services)
		if o.protocol == "saga" {
			rep = sim.CheckSagas(sagaResults(r.results), services)
		}
		s.Committed, s.Aborted, s.InDoubt = rep.Committed, rep.Aborted, rep.InDoubt
		s.Violations, s.Problems = &rep.Violations, rep.Problems
	} else {
		for _, res := range r.results {
			switch {
			case !res.Decided:
				s.InDoubt++
			case res.Committed:
				s.Committed++
			default:
				s.Aborted++
			}
		}
	}
	h := r.hist
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.TotalCount() > 0 {
		s.MeanMs = h.Mean() / 1000
		s.P50ms, s.P90ms, s.P99ms = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(90)), ms(h.ValueAtQuantile(99))
		s.P999ms, s.MaxMs = ms(h.ValueAtQuantile(99.9)), ms(h.Max())
	}

	if ctx.Err() != nil {
		s.CutShort, s.CutShortReason = true, cutReason(ctx)
	}
	if o.jsMsgs > 0 && ctx.Err() == nil {
		if !o.jsonOut {
			fmt.Fprintf(out, "measuring raw JetStream async publish: %d command-sized messages to a file-backed stream...\n", o.jsMsgs)
		}
		r, err := measureJetStream(ctx, nc, o)
		switch {
		case ctx.Err() != nil:
			s.CutShort, s.CutShortReason = true, cutReason(ctx)+" (during the raw JetStream measurement)"
		case err != nil:
			return fmt.Errorf("measuring JetStream's publish rate: %w", err)
		default:
			s.JetStreamMsgs, s.JetStreamMsgsPerSec, s.JetStreamErrors, s.JetStreamError = r.stored, r.perSec, r.failed, r.firstErr
		}
	}

	if o.jsonOut {
		if err := json.NewEncoder(out).Encode(s); err != nil {
			return err
		}
	} else {
		printBench(out, s, h)
		if s.Memory != nil {
			printMemory(out, s.Memory)
		}
	}
	if s.CutShort {
		return fmt.Errorf("the run was cut short: %s; the figures above cover the %d transactions run until then", s.CutShortReason, s.Transactions)
	}
	if s.Violations != nil && *s.Violations > 0 {
		return fmt.Errorf("atomicity check failed: %d violations", *s.Violations)
	}
	if s.InDoubt > 0 {
		return fmt.Errorf("%d transactions never reported an outcome within --prepare-timeout plus --quiesce-timeout", s.InDoubt)
	}
	return mem.missing()
}

// startProfiles starts a CPU profile into cpuFile and an execution trace
// into traceFile, and is ready to write the allocation profile to memFile
// (any may be empty); the function it returns stops the CPU profile and the
// trace and writes the allocation profile.
func startProfiles(cpuFile, memFile, traceFile string) (func() error, error) {
	var cpu, exec *os.File
	if cpuFile != "" {
		f, err := os.Create(cpuFile)
		if err != nil {
			return nil, fmt.Errorf("--cpu-profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("--cpu-profile: %w", err)
		}
		cpu = f
	}
	if traceFile != "" {
		f, err := os.Create(traceFile)
		if err == nil {
			if err = trace.Start(f); err != nil {
				_ = f.Close()
			}
		}
		if err != nil {
			if cpu != nil {
				pprof.StopCPUProfile()
				_ = cpu.Close()
			}
			return nil, fmt.Errorf("--exec-trace: %w", err)
		}
		exec = f
	}
	return func() error {
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				return fmt.Errorf("--cpu-profile: %w", err)
			}
		}
		if exec != nil {
			trace.Stop()
			if err := exec.Close(); err != nil {
				return fmt.Errorf("--exec-trace: %w", err)
			}
		}
		if memFile == "" {
			return nil
		}
		f, err := os.Create(memFile)
		if err != nil {
			return fmt.Errorf("--mem-profile: %w", err)
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			_ = f.Close()
			return fmt.Errorf("--mem-profile: %w", err)
		}
		return f.Close()
	}, nil
}

// errBenchLostNATS cuts a bench run short when its connection to NATS
// drops; errBenchNoCoordinator when no coordinator answers on --nats.
var (
	errBenchLostNATS      = errors.New("lost the connection to NATS (the server stopped or is unreachable)")
	errBenchNoCoordinator = errors.New("no coordinator answered on that NATS: start 'natstx server' there, or run bench without --nats")
)

// cutReason says why ctx ended: a cause given to its cancel, or Ctrl-C.
func cutReason(ctx context.Context) string {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c.Error()
	}
	return "interrupted"
}

// execFunc runs one transaction to its outcome: decided is false when the
// outcome never came; timedOut when it aborted for a missing vote.
type execFunc func(ctx context.Context, req orchestrator.Request) (id string, decided, committed, timedOut bool)

// engineExec runs transactions on bench's own engine.
func engineExec(eng *orchestrator.Engine) execFunc {
	return func(ctx context.Context, req orchestrator.Request) (string, bool, bool, bool) {
		out, err := eng.Execute(ctx, req)
		return out.ID, err == nil && out.State.Decided(), out.Committed(), out.TimedOut
	}
}

// clientExec runs transactions through the coordinator API, on whichever
// coordinator of the queue group takes each; no coordinator at all cuts the
// run short.
func clientExec(nc *nats.Conn, cl *orchestrator.Client, prepare time.Duration, cut context.CancelCauseFunc) execFunc {
	return func(ctx context.Context, req orchestrator.Request) (string, bool, bool, bool) {
		breq := messages.BeginRequest{ID: req.ID, TimeoutMs: prepare.Milliseconds(), Wait: true}
		for _, p := range req.Participants {
			breq.Participants = append(breq.Participants, messages.ParticipantSpec{Name: p.Name, Payload: p.Payload})
		}
		st, err := cl.Begin(ctx, breq)
		switch {
		case errors.Is(err, orchestrator.ErrNoCoordinator):
			cut(errBenchNoCoordinator)
		case err != nil && !nc.IsConnected():
			cut(errBenchLostNATS) // before the handler may have run
		}
		if err != nil {
			return "", false, false, false
		}
		switch st.State {
		case txn.Committed.String():
			return st.ID, true, true, false
		case txn.Aborting.String(), txn.Aborted.String():
			return st.ID, true, false, st.TimedOut
		}
		return st.ID, false, false, false // committing: the commit phase outlived ctx
	}
}

// stagedIn counts the transactions the simulated services hold prepared.
func stagedIn(services map[string]*sim.Service) int {
	n := 0
	for _, svc := range services {
		staged, _, _ := svc.Counts()
		n += staged
	}
	return n
}

// startSimParticipant runs one simulated participant on its own connection,
// as a separate service would; the returned function stops it and removes
// its durable consumer.
func startSimParticipant(ctx context.Context, url, name string, o benchOptions, i int64, log *zap.Logger) (func(), *sim.Service, error) {
	seed := o.seed
	if seed != 0 {
		seed += i
	}
	maxLat := o.latencyMax
	if maxLat == 0 {
		maxLat = max(o.latencyMin, time.Nanosecond)
	}
	// The last --read-only of the -n participants vote read-only.
	readOnly := i > int64(o.participantCount-o.readOnly)
	svc, err := sim.New(sim.Config{Name: name, SuccessRate: sim.Rate(1 - o.failureRate), MinLatency: o.latencyMin, MaxLatency: maxLat, Seed: seed,
		ReadOnly: readOnly})
	if err != nil {
		return nil, nil, err
	}
	nc, err := connect(url, "natstx-bench-"+name)
	if err != nil {
		return nil, nil, err
	}
	rt, err := participants.New(nc, participants.Config{Name: name, Handler: svc, SagaHandler: svc, Concurrency: max(256, 2*o.concurrency), Logger: log.Named(name)})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if err := rt.Start(ctx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("starting simulated participant %s: %w", name, err)
	}
	return func() {
		rt.Stop()
		if js, err := jetstream.New(nc); err == nil {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = js.DeleteConsumer(dctx, messages.CommandStream, messages.ConsumerName(name))
			cancel()
		}
		nc.Close()
	}, svc, nil
}

// loadResult is what runLoad measured.
type loadResult struct {
	results []sim.Result
	hist    *hdrhistogram.Histogram
	elapsed time.Duration
	// timeouts counts the aborts for a missing vote.
	timeouts int64
}

// runLoad runs the transactions: --count of them or for --duration, closed
// loop (--concurrency) or open loop (--rate); mem (nil: none) takes memory
// samples as they finish.
func runLoad(ctx context.Context, run execFunc, o benchOptions, names []string, bar *benchBar, mem *memSampler) loadResult {
	var (
		mu       sync.Mutex
		results  = make([]sim.Result, 0, max(o.count, 1024))
		hist     = hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
		done     atomic.Int64
		timeouts atomic.Int64
		wg       sync.WaitGroup
	)
	payload := make([]byte, o.payloadSize)
	for i := range payload {
		payload[i] = 'x'
	}
	one := func(scheduled time.Time) {
		// The coordinator assigns the ID: an ID the caller chooses costs a
		// write that claims it in the whole cluster.
		var req orchestrator.Request
		for _, n := range names {
			p, ok := o.payloadOf[n]
			if !ok {
				p = payload
			}
			req.Participants = append(req.Participants, orchestrator.Participant{Name: n, Payload: p})
		}
		// The wait for its outcome is bounded; the transaction is not by
		// that (--prepare-timeout does), and a context deadline would be
		// the transaction's (or saga's) when sooner: none is given.
		tctx, cancel := context.WithTimeout(ctx, o.prepareTimeout+o.quiesce)
		wctx, wcancel := withoutDeadline(tctx)
		id, decided, committed, timedOut := run(wctx, req)
		if id == "" {
			id = "unbegun-" + orchestrator.NewID() // failed before it had an ID
		}
		wcancel()
		cancel()
		if ctx.Err() != nil && !decided {
			return // cut short: this one does not count
		}
		if timedOut {
			timeouts.Add(1)
		}
		took := time.Since(scheduled)
		res := sim.Result{ID: id, Participants: names, Decided: decided, Committed: committed}
		mu.Lock()
		results = append(results, res)
		_ = hist.RecordValue(max(took.Microseconds(), 1))
		mu.Unlock()
		mem.finished(done.Add(1))
	}
	start := time.Now()
	mem.begin(ctx, start)
	end := start.Add(o.duration)
	more := func(i int, at time.Time) bool {
		if ctx.Err() != nil {
			return false
		}
		if o.count > 0 {
			return i < o.count
		}
		return at.Before(end)
	}
	stopBar := bar.follow(o, start, &done)
	if o.rate > 0 {
		interval := time.Duration(float64(time.Second) / o.rate)
		sem := make(chan struct{}, o.maxInFlight)
		for i := 0; ; i++ {
			at := start.Add(time.Duration(i) * interval)
			if !more(i, at) {
				break
			}
			if d := time.Until(at); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				one(at)
			}()
		}
	} else {
		var next atomic.Int64
		for w := 0; w < o.concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					now := time.Now()
					if !more(i, now) {
						return
					}
					one(now)
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopBar()
	return loadResult{results: results, hist: hist, elapsed: elapsed, timeouts: timeouts.Load()}
}

// benchBar is the progress bar, nil when off.
type benchBar struct{ *progressbar.ProgressBar }

// newBenchBar returns a progress bar on out when out is a terminal and the
// output is text, nil otherwise.
func newBenchBar(o benchOptions, out io.Writer) *benchBar {
	f, ok := out.(*os.File)
	if o.jsonOut || o.noProgress || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	total := int64(o.count)
	if o.count == 0 {
		total = int64(o.duration / time.Millisecond)
	}
	return &benchBar{progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionClearOnFinish(),
	)}
}

// follow updates the bar every 100ms until the returned function is called.
func (b *benchBar) follow(o benchOptions, start time.Time, done *atomic.Int64) func() {
	if b == nil {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			n := done.Load()
			el := time.Since(start)
			b.Describe(fmt.Sprintf("%d transactions, %.0f/s", n, float64(n)/el.Seconds()))
			if o.count > 0 {
				_ = b.Set64(n)
			} else {
				_ = b.Set64(min(int64(el/time.Millisecond), int64(o.duration/time.Millisecond)))
			}
		}
	}()
	return func() { close(stop); <-finished }
}

// measureJetStream publishes o.jsMsgs messages shaped like prepare commands
// (the same headers, a unique Nats-Msg-Id each, the same payload) with async
// publish (waiting while 16,384 PubAcks are outstanding) to a new
// file-backed stream, waits for every PubAck, deletes the
// stream and returns the rate of stored messages per second.
// jsMeasureFor bounds the raw JetStream measurement's publishing: with a
// slow store it stops before --jetstream-msgs and the rate counts what was
// sent until then.
const jsMeasureFor = 15 * time.Second

func measureJetStream(ctx context.Context, nc *nats.Conn, o benchOptions) (jsRate, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return jsRate{}, err
	}
	id := nuid.Next()
	name, prefix := "NATSTX_BENCH_"+id, "natstx.bench."+id
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(cctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage,
		Replicas: o.replicas, Duplicates: 2 * time.Minute,
	}); err != nil {
		return jsRate{}, err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = js.DeleteStream(dctx, name)
	}()
	payload := make([]byte, o.payloadSize)
	cmd := messages.Command{Op: messages.OpPrepare, Participant: "bench", Attempt: 1, ReplyTo: messages.ReplySubject("bench", "bench"),
		Deadline: time.Now().Add(time.Minute), Payload: payload}
	msgs := make([]*nats.Msg, o.jsMsgs)
	for i := range msgs {
		cmd.TxID = fmt.Sprintf("%s-%d", id, i)
		msgs[i] = &nats.Msg{Subject: prefix + "." + cmd.TxID, Header: nats.Header(cmd.Header()), Data: payload}
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var failed int
	var firstErr error
	start := time.Now()
	for _, m := range msgs {
		if time.Since(start) > jsMeasureFor {
			break // a slow store (--sync always): the rate is what was stored meanwhile
		}
		f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second))
		if err != nil {
			failed++
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		futures = append(futures, f)
	}
	wait := time.NewTimer(30 * time.Second)
	defer wait.Stop()
	select {
	case <-js.PublishAsyncComplete():
	case <-wait.C:
		return jsRate{}, errors.New("PubAcks still outstanding 30s after the last publish")
	case <-ctx.Done():
		return jsRate{}, ctx.Err()
	}
	elapsed := time.Since(start)
	stored := 0
	for _, f := range futures {
		select {
		case <-f.Ok():
			stored++
		case err := <-f.Err():
			failed++
			firstErr = cmp.Or(firstErr, err)
		}
	}
	if stored == 0 {
		return jsRate{}, fmt.Errorf("no message was stored: %w", firstErr)
	}
	r := jsRate{perSec: float64(stored) / elapsed.Seconds(), stored: stored, failed: failed}
	if firstErr != nil {
		r.firstErr = firstErr.Error()
	}
	return r, nil
}

// jsRate is the raw JetStream measurement: messages stored per second, and
// how many publishes failed (the rate counts only stored ones).
type jsRate struct {
	perSec         float64
	stored, failed int
	firstErr       string
}

// printBench prints the summary and the latency histogram as text.
func printBench(out io.Writer, s benchSummary, h *hdrhistogram.Histogram) {
	fmt.Fprintf(out, "%d transactions in %.2fs: %.0f txn/s; %d committed, %d aborted (%d by timeout), %d without outcome\n",
		s.Transactions, s.Seconds, s.TxnPerSec, s.Committed, s.Aborted, s.Timeouts, s.InDoubt)
	if s.Resends != nil && *s.Resends > 0 {
		fmt.Fprintf(out, "%d commands sent again for want of an answer (%.2f a transaction)\n", *s.Resends, float64(*s.Resends)/float64(max(s.Transactions, 1)))
	}
	if s.BeginsWaited != nil && *s.BeginsWaited > 0 {
		fmt.Fprintf(out, "%d begins waited for room to start (the coordinator was behind)\n", *s.BeginsWaited)
	}
	fmt.Fprintf(out, "latency ms: mean %.2f  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
		s.MeanMs, s.P50ms, s.P90ms, s.P99ms, s.P999ms, s.MaxMs)
	for _, l := range histogramLines(h, 40) {
		fmt.Fprintln(out, l)
	}
	if s.JetStreamMsgs > 0 {
		fmt.Fprintf(out, "raw JetStream async publish: %.0f msgs/s (%d messages); the run's %d txn/s sent %.0f commands/s\n",
			s.JetStreamMsgsPerSec, s.JetStreamMsgs, int(s.TxnPerSec), s.TxnPerSec*float64(2*s.Participants-s.ReadOnly))
		if s.JetStreamErrors > 0 {
			fmt.Fprintf(out, "  %d raw publishes were not stored (first: %s)\n", s.JetStreamErrors, s.JetStreamError)
		}
	}
	for _, p := range s.Problems {
		fmt.Fprintln(out, "VIOLATION:", p)
	}
	if s.Violations != nil {
		fmt.Fprintf(out, "atomicity: %d transactions, %d committed, %d aborted, %d violations\n", s.Transactions, s.Committed, s.Aborted, *s.Violations)
	} else {
		fmt.Fprintln(out, "atomicity: not checked (the participants are not bench's own)")
	}
}

// histogramLines draws the latency distribution in power-of-two buckets of
// microseconds, one line each, with bars up to width characters.
func histogramLines(h *hdrhistogram.Histogram, width int) []string {
	if h.TotalCount() == 0 {
		return nil
	}
	counts := map[int]int64{}
	lo, hi := math.MaxInt, 0
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		k := bits.Len64(uint64(max(b.From, 1))) - 1 // bucket [2^k, 2^(k+1)) µs
		counts[k] += b.Count
		lo, hi = min(lo, k), max(hi, k)
	}
	var peak int64
	for _, c := range counts {
		peak = max(peak, c)
	}
	total := float64(h.TotalCount())
	lines := []string{"latency distribution (ms):"}
	for k := lo; k <= hi; k++ {
		c := counts[k]
		n := int(math.Round(float64(c) / float64(peak) * float64(width)))
		if c > 0 && n == 0 {
			n = 1
		}
		lines = append(lines, fmt.Sprintf("  %9.3f - %9.3f |%-*s %8d %5.1f%%",
			float64(uint64(1)<<k)/1000, float64(uint64(1)<<(k+1))/1000, width, strings.Repeat("#", n), c, 100*float64(c)/total))
	}
	return lines
}
