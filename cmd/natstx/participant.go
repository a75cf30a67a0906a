package main

import (
	"context"
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
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
	"github.com/natstx/natstx/participants/sim"
)

// envCrashAt names the fault-injection variable of `natstx participant`:
// "after-<op>-apply:<n>" kills the process (SIGKILL) right after the n-th
// <op> (prepare, commit or abort) is applied and before its reply is sent.
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
	logLevel    string
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

Fault injection for tests: ` + envCrashAt + `=after-prepare-apply:N (or
after-commit-apply:N, after-abort-apply:N) kills the process with SIGKILL right
after the N-th such command is applied, before its reply is sent.`,
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
	f.StringVar(&o.logLevel, "log-level", "info", "log level on stderr (debug, info, warn, error)")
	for _, kind := range services.Kinds {
		var db, name string
		sc := &cobra.Command{
			Use:   kind,
			Short: "Run the example " + kind + " service on its SQLite database",
			Args:  cobra.NoArgs,
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
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.name == "" {
				return usageError{fmt.Errorf("--name is required")}
			}
			return runParticipant(cmd.Context(), "sim", o)
		},
	}
	simc.Flags().StringVar(&o.name, "name", "", "participant name coordinators address")
	c.AddCommand(simc)
	return c
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
		return nil, usageError{fmt.Errorf("%s=%q: want after-prepare-apply:N, after-commit-apply:N or after-abort-apply:N with N >= 1", envCrashAt, spec)}
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
	cfg := participants.Config{Name: o.name, Concurrency: o.concurrency, AckWait: o.ackWait,
		OpTimeout: min(participants.DefaultOpTimeout, o.ackWait/2), AfterApply: crash, Logger: log}
	if kind == "sim" {
		svc, err := sim.New(sim.Config{Name: o.name, SuccessRate: sim.Rate(o.successRate), MaxLatency: max(o.latencyMax, time.Nanosecond)})
		if err != nil {
			return usageError{err}
		}
		cfg.Handler = svc
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
	nc, err := connectDaemon(ctx, o.nats, "natstx-participant-"+o.name, o.connectWait)
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
	log.Info("participant ready", zap.String("kind", kind), zap.String("name", o.name), zap.String("db", o.db), zap.String("nats", o.nats))
	fmt.Fprintf(os.Stdout, "participant %s (%s) ready\n", o.name, kind)
	<-ctx.Done()
	rt.Stop()
	st := rt.Stats()
	fmt.Fprintf(os.Stdout, "participant %s stopped: %d prepares, %d commits, %d aborts, %d duplicates\n", o.name, st.Prepares, st.Commits, st.Aborts, st.Duplicates)
	return nil
}
