package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/metrics"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
	"github.com/natstx/natstx/participants/sim"
)

// envCrashAt names the fault-injection variable of `natstx participant`:
// "after-<op>-apply:<n>" kills the process (SIGKILL) right after the n-th
// <op> (prepare, commit, abort, or a saga step's action or compensate) is
// applied and before its reply is sent.
const envCrashAt = "NATSTX_CRASH_AT"

type participantOptions struct {
	nats        string
	db          string
	name        string
	successRate float64
	latencyMax  time.Duration
	connectWait time.Duration
	concurrency int
	ackWait     time.Duration
	inDoubt     time.Duration
	logLevel    string
	metrics     metricsOptions
}

func newParticipant() *cobra.Command {
	o := participantOptions{}
	c := &cobra.Command{
		Use:   "participant",
		Short: "Run an example participant service (inventory, payment, shipping) or a simulated one",
		Long: `participant runs one participant as a process: it consumes its commands from
the natstx command stream and answers the coordinator. The example services
keep their data and their barrier (which transaction they prepared, committed
or aborted) in their own SQLite database, so a process that restarts finishes
what it started and never applies a command twice. Several processes with the
same name share the work.

Every participant serves both protocols: two-phase commit (prepare, commit,
abort) and saga steps (action, compensate).

A participant that voted commit and hears neither commit nor abort for
--in-doubt-after asks the coordinators for the outcome and applies it.

Tracing: with the standard OpenTelemetry variables set (OTEL_EXPORTER_OTLP_ENDPOINT,
or OTEL_TRACES_EXPORTER=otlp; OTLP over HTTP), each command is handled in a
span that continues the coordinator's trace; service.name is
natstx-participant-NAME unless OTEL_SERVICE_NAME says otherwise.

Fault injection for tests: ` + envCrashAt + `=after-prepare-apply:N (or
after-commit-apply:N, after-abort-apply:N, and for saga steps
after-action-apply:N, after-compensate-apply:N) kills the process with SIGKILL
right after the N-th such command is applied, before its reply is sent.`,
		Example: `  natstx participant inventory --db inventory.db --nats nats://127.0.0.1:4222
  natstx participant payment --db payment.db --success-rate 0.9
  natstx participant sim --name loyalty --success-rate 0.95`,
	}
	f := c.PersistentFlags()
	f.StringVar(&o.nats, "nats", defaultNATS, "URL of the NATS server (or comma-separated cluster URLs)")
	f.Float64Var(&o.successRate, "success-rate", 1, "probability that one operation succeeds (simulated failures below 1)")
	f.DurationVar(&o.connectWait, "connect-wait", 30*time.Second, "how long to keep trying to reach NATS at start (it may be restarting); once connected, it reconnects for ever")
	f.DurationVar(&o.latencyMax, "latency-max", 0, "each command waits a uniform random time up to this before it runs")
	f.IntVar(&o.concurrency, "concurrency", participants.DefaultConcurrency, "commands handled at once")
	f.DurationVar(&o.ackWait, "ack-wait", participants.DefaultAckWait, "how long a command handed to a process that died waits before another gets it")
	f.DurationVar(&o.inDoubt, "in-doubt-after", participants.DefaultInDoubtAfter, "after voting commit, ask the coordinators for the outcome when none came for this long (negative: never)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level on stderr (debug, info, warn, error)")
	addMetricsFlags(f, &o.metrics)
	for _, kind := range services.Kinds {
		var db, name string
		sc := &cobra.Command{
			Use:     kind,
			Short:   "Run the example " + kind + " service on its SQLite database",
			Long:    serviceHelp(kind),
			Example: serviceExample(kind),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				o.db, o.name = db, name
				if o.db == "" {
					return usageError{fmt.Errorf("--db is required: the SQLite file of the %s service (created if missing)", kind)}
				}
				return runParticipant(cmd.Context(), kind, o)
			},
		}
		sc.Flags().StringVar(&db, "db", "", "SQLite database file of the service (created if missing)")
		sc.Flags().StringVar(&name, "name", kind, "participant name coordinators address")
		c.AddCommand(sc)
	}
	simc := &cobra.Command{
		Use:   "sim",
		Short: "Run a simulated participant (in-memory record, random failures and latency)",
		Long: `sim runs a simulated participant named --name: it accepts any payload (or
none), keeps its record in memory, and fails each operation with probability
1 - --success-rate (a failed prepare votes abort; a failed commit or abort is
retried; a failed saga action is refused for good, so its saga compensates;
a failed compensation is retried), after a random delay up to --latency-max. It serves two-phase
commit and saga steps alike. It forgets everything when it stops: use it to
try the protocols, not to keep data.`,
		Example: `  natstx participant sim --name loyalty --success-rate 0.9
  natstx tx begin -p loyalty='{"points":30}'
  natstx tx begin --saga --step grant=loyalty:'{"points":30}':'{"points":30}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.name == "" {
				return usageError{fmt.Errorf("--name is required")}
			}
			return runParticipant(cmd.Context(), "sim", o)
		},
	}
	simc.Flags().StringVar(&o.name, "name", "", "participant name coordinators address")
	c.AddCommand(simc)
	groupCommand(c)
	return c
}

// serviceHelp is the --help text of an example service: what it does, its
// prepare payload, the data a new database starts with, and its refusals.
// The figures come from package services, so the text cannot drift from it.
func serviceHelp(kind string) string {
	head := "runs the example " + kind + ` service: a participant that keeps its data and its
barrier (what it prepared, committed, aborted) in the SQLite file --db,
created and seeded if missing. A restarted process finishes what it started
and never applies a command twice. The saga action takes the prepare's
payload, as does its compensation. A payload of the wrong shape is refused
naming the field at fault (a saga action with code bad-payload).

`
	switch kind {
	case "inventory":
		return kind + " " + head + fmt.Sprintf(`Prepare payload (JSON): {"item": NAME, "qty": N}, N >= 1
  prepare  reserves qty units of item (refused: "out of stock" when fewer
           are available; "no item" naming the items when it does not exist)
  commit   sells the reserved units; abort returns them to stock
  action   (saga) sells the units at once (refused with code out-of-stock,
           for too few units or no such item); compensate returns them
Seed data: items %s, %d units each.
Invariant checked by the demo: available + reserved + sold = total per item.`,
			strings.Join(services.InventoryItems, ", "), services.InventoryStock)
	case "payment":
		return kind + " " + head + fmt.Sprintf(`Prepare payload (JSON): {"account": NAME, "amount": N}, N >= 1
  prepare  holds amount on the account (refused: "insufficient funds" when
           its balance is lower; "no account" naming the accounts when it
           does not exist)
  commit   moves the held amount to the account %q; abort releases it
  action   (saga) charges at once (refused with code insufficient-funds, for
           a low balance or no such account); compensate refunds
Seed data: accounts %s, with a balance of %d each;
%q starts at 0 and cannot be charged.
Invariant checked by the demo: balances + held = the funds seeded.`,
			services.Merchant, strings.Join(services.PaymentAccounts, ", "), services.PaymentBalance, services.Merchant)
	case "shipping":
		return kind + " " + head + fmt.Sprintf(`Prepare payload (JSON): {"slot": NAME}
  prepare  holds one delivery in the slot (refused: "no free place" when the
           slot is full; "no slot" naming the slots when it does not exist)
  commit   books the held delivery; abort frees it
  action   (saga) books at once (refused with code no-capacity, for a full
           slot or no such slot); compensate cancels
Seed data: slots %s, %d deliveries each.
Invariant checked by the demo: held + booked <= capacity per slot.`,
			strings.Join(services.ShippingSlots, ", "), services.ShippingCapacity)
	}
	return kind + " " + head
}

// serviceExample is the --help example of an example service: how to run it
// and a transaction it accepts.
func serviceExample(kind string) string {
	return fmt.Sprintf("  natstx participant %s --db %s.db\n  natstx tx begin -p %s='%s'", kind, kind, kind, services.Payload(kind, 0))
}

// crashAt parses NATSTX_CRASH_AT into an AfterApply hook, or nil when unset.
func crashAt(spec string) (func(messages.Command), error) {
	if spec == "" {
		return nil, nil
	}
	point, count, ok := strings.Cut(spec, ":")
	n, err := strconv.Atoi(count)
	op := messages.Op(strings.TrimSuffix(strings.TrimPrefix(point, "after-"), "-apply"))
	if !ok || err != nil || n < 1 || !op.Valid() || point != "after-"+string(op)+"-apply" {
		return nil, usageError{fmt.Errorf("%s=%q: want after-prepare-apply:N, after-commit-apply:N, after-abort-apply:N, after-commit-one-phase-apply:N, after-action-apply:N or after-compensate-apply:N with N >= 1", envCrashAt, spec)}
	}
	var mu sync.Mutex
	seen := 0
	return func(cmd messages.Command) {
		if cmd.Op != op {
			return
		}
		mu.Lock()
		seen++
		hit := seen == n
		mu.Unlock()
		if hit {
			fmt.Fprintf(os.Stderr, "natstx: %s: crashing after applying %s of %s\n", envCrashAt, op, cmd.TxID)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never reply
		}
	}, nil
}

func runParticipant(ctx context.Context, kind string, o participantOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.successRate < 0 || o.successRate > 1 || o.latencyMax < 0 || o.connectWait < 0 || o.concurrency < 1 || o.ackWait < 100*time.Millisecond {
		return usageError{fmt.Errorf("--success-rate must be in [0, 1], --latency-max not negative, --concurrency at least 1, --ack-wait at least 100ms")}
	}
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	crash, err := crashAt(os.Getenv(envCrashAt))
	if err != nil {
		return err
	}
	if o.inDoubt == 0 {
		return usageError{errors.New("--in-doubt-after must not be 0: give a duration, or a negative one for never")}
	}
	// Tracing (OTEL_* variables) flushes last: after the runtime stopped.
	tp, stopTracing, err := startTracing(ctx, "natstx-participant-"+o.name, log)
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg := participants.Config{Name: o.name, Concurrency: o.concurrency, AckWait: o.ackWait,
		OpTimeout: min(participants.DefaultOpTimeout, o.ackWait/2), InDoubtAfter: o.inDoubt, AfterApply: crash, Logger: log,
		TracerProvider: tp}
	if kind == "sim" {
		svc, err := sim.New(sim.Config{Name: o.name, SuccessRate: sim.Rate(o.successRate), MaxLatency: max(o.latencyMax, time.Nanosecond)})
		if err != nil {
			return usageError{err}
		}
		cfg.Handler, cfg.SagaHandler = svc, svc
	} else {
		svc, err := services.Open(ctx, kind, o.db)
		if err != nil {
			return err
		}
		defer func() { _ = svc.DB().Close() }()
		if cfg.Barrier, err = services.NewBarrier(ctx, svc, &services.Faults{SuccessRate: o.successRate, MaxLatency: o.latencyMax}); err != nil {
			return err
		}
	}
	nc, err := connectDaemon(ctx, o.nats, "natstx-participant-"+o.name, messages.ParticipantInbox(o.name), o.connectWait)
	if err != nil {
		return err
	}
	defer nc.Close()
	rt, err := participants.New(nc, cfg)
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rt.Start(ctx); err != nil {
		return err
	}
	ready := func() error {
		if !nc.IsConnected() {
			return errors.New("not connected to NATS")
		}
		return nil
	}
	stopMetrics, err := serveMetrics(o.metrics, ready, log, metrics.NewParticipantCollector(rt))
	if err != nil {
		rt.Stop()
		return err
	}
	defer stopMetrics()
	log.Info("participant ready", zap.String("kind", kind), zap.String("name", o.name), zap.String("db", o.db), zap.String("nats", redactURL(o.nats)))
	fmt.Fprintf(os.Stdout, "participant %s (%s) ready\n", o.name, kind)
	<-ctx.Done()
	rt.Stop()
	st := rt.Stats()
	fmt.Fprintf(os.Stdout, "participant %s stopped: %d prepares, %d commits, %d aborts, %d duplicates\n", o.name, st.Prepares, st.Commits, st.Aborts, st.Duplicates)
	return nil
}
