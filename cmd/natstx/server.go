package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/orchestrator/metrics"
)

// embeddedOptions are the flags of the embedded NATS server, shared by
// `natstx server` and `natstx nats`.
type embeddedOptions struct {
	listen        string
	dataDir       string
	serverName    string
	clusterName   string
	clusterListen string
	routes        []string
	logs          bool
	natsConfig    string
	sync          string
	tls           embedded.TLSConfig
	clusterTLS    embedded.TLSConfig
}

func addEmbeddedFlags(f *pflag.FlagSet, o *embeddedOptions) {
	f.StringVar(&o.listen, "nats-listen", "127.0.0.1:4222", "HOST:PORT the embedded NATS server listens on for clients")
	f.StringVar(&o.dataDir, "data-dir", "natstx-data", "directory of the embedded server's JetStream files (created if missing)")
	f.StringVar(&o.serverName, "server-name", "", "name of the embedded server; in a cluster it must differ per node (default natstx-<port>)")
	f.StringVar(&o.clusterName, "cluster-name", "", "join a JetStream cluster of this name (with --cluster-listen and --routes)")
	f.StringVar(&o.clusterListen, "cluster-listen", "", "HOST:PORT this node listens on for cluster routes")
	f.StringSliceVar(&o.routes, "routes", nil, "route URLs of the other cluster nodes, e.g. nats://127.0.0.1:6223")
	f.BoolVar(&o.logs, "nats-logs", false, "print the embedded NATS server's own log lines on stderr")
	f.StringVar(&o.sync, "sync", "interval", "when the embedded server flushes JetStream's files to disk: interval (JetStream's default, every 2 minutes: a process crash loses nothing, a machine crash or power loss on a single node may lose the last interval's writes) or always (fsync before each write is acknowledged)")
	f.StringVar(&o.natsConfig, "nats-config", "", "NATS server configuration file the embedded server loads first: the accounts and users of 'natstx auth init'")
	f.StringVar(&o.tls.Cert, "nats-tls-cert", "", "certificate (PEM) of the embedded server: clients must then connect with TLS")
	f.StringVar(&o.tls.Key, "nats-tls-key", "", "private key (PEM) of --nats-tls-cert")
	f.StringVar(&o.tls.CA, "nats-tls-ca", "", "CA (PEM) of the client certificates, with --nats-tls-verify")
	f.BoolVar(&o.tls.Verify, "nats-tls-verify", false, "require every client to present a certificate signed by --nats-tls-ca")
	f.StringVar(&o.clusterTLS.Cert, "cluster-tls-cert", "", "certificate (PEM) of this node on cluster routes; routes then use TLS both ways")
	f.StringVar(&o.clusterTLS.Key, "cluster-tls-key", "", "private key (PEM) of --cluster-tls-cert")
	f.StringVar(&o.clusterTLS.CA, "cluster-tls-ca", "", "CA (PEM) that signed every node's --cluster-tls-cert")
}

// groupCommitHelp is the help of --group-commit (server, bench).
const groupCommitHelp = "coalesce the coordinator's key-value writes into JetStream atomic batches, a few fsyncs each: auto (on with the embedded server's --sync always), on (for a NATS server of your own that syncs always; needs 2.12 or later) or off; without sync always batches are slower than single writes"

// groupCommit resolves --group-commit: auto is on when the coordinator
// writes to an embedded server that fsyncs every write.
func groupCommit(mode string, embeddedSyncAlways bool) (bool, error) {
	switch mode {
	case "auto":
		return embeddedSyncAlways, nil
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, usageError{fmt.Errorf("--group-commit %q: use auto (on with the embedded server's --sync always), on or off", mode)}
}

// config turns the flags into an embedded.Config.
func (o embeddedOptions) config() (embedded.Config, error) {
	host, port, err := splitHostPort("nats-listen", o.listen)
	if err != nil {
		return embedded.Config{}, err
	}
	if o.dataDir == "" {
		return embedded.Config{}, usageError{errors.New("--data-dir is empty; name a directory for JetStream's files")}
	}
	mode, err := embedded.ParseSyncMode(o.sync)
	if err != nil {
		return embedded.Config{}, usageError{fmt.Errorf("--sync: %w", err)}
	}
	cfg := embedded.Config{Host: host, Port: port, DataDir: o.dataDir, Name: o.serverName, Logs: o.logs, ConfigFile: o.natsConfig, Sync: mode}
	if o.tls != (embedded.TLSConfig{}) {
		if o.tls.Cert == "" || o.tls.Key == "" || (o.tls.Verify && o.tls.CA == "") {
			return embedded.Config{}, usageError{errors.New("TLS for clients needs --nats-tls-cert and --nats-tls-key (and --nats-tls-ca with --nats-tls-verify)")}
		}
		t := o.tls
		cfg.TLS = &t
	}
	clustered := o.clusterName != "" || o.clusterListen != "" || len(o.routes) > 0
	if clustered {
		if o.clusterName == "" || o.clusterListen == "" {
			return embedded.Config{}, usageError{errors.New("a cluster needs both --cluster-name and --cluster-listen (and --routes to the other nodes)")}
		}
		chost, cport, err := splitHostPort("cluster-listen", o.clusterListen)
		if err != nil {
			return embedded.Config{}, err
		}
		cfg.Cluster = &embedded.ClusterConfig{Name: o.clusterName, Host: chost, Port: cport, Routes: o.routes}
		if o.clusterTLS != (embedded.TLSConfig{}) {
			if o.clusterTLS.Cert == "" || o.clusterTLS.Key == "" || o.clusterTLS.CA == "" {
				return embedded.Config{}, usageError{errors.New("TLS on routes needs --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca")}
			}
			t := o.clusterTLS
			cfg.Cluster.TLS = &t
		}
	} else if o.clusterTLS != (embedded.TLSConfig{}) {
		return embedded.Config{}, usageError{errors.New("--cluster-tls-* need a cluster (--cluster-name, --cluster-listen, --routes)")}
	}
	return cfg, nil
}

// startEmbedded starts the embedded server, creating its data directory.
func startEmbedded(o embeddedOptions) (*embedded.Server, error) {
	cfg, err := o.config()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating --data-dir: %w", err)
	}
	srv, err := embedded.Start(cfg)
	if errors.Is(err, embedded.ErrDataDirInUse) {
		return nil, fmt.Errorf("%w (--data-dir names it)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (pick another port with --nats-listen, or stop what uses it)", err)
	}
	return srv, nil
}

// printConfig prints the effective value of every flag of cmd as YAML, in the
// config file's format, for --print-config.
func printConfig(cmd *cobra.Command, out io.Writer) error {
	m := map[string]any{}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		switch f.Name {
		case "help", "config", "print-config":
			return
		}
		// A URL's password is masked wherever it is (--nats, --routes).
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			vs := make([]string, 0, len(sv.GetSlice()))
			for _, v := range sv.GetSlice() {
				vs = append(vs, redactURL(v))
			}
			m[f.Name] = vs
			return
		}
		m[f.Name] = redactURL(f.Value.String())
		if secretFlags[f.Name] && f.Value.String() != "" {
			m[f.Name] = "xxxxx (set)"
		}
	})
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var doc yaml.Node
	doc.Kind = yaml.MappingNode
	for _, k := range keys {
		var kn, vn yaml.Node
		kn.SetString(k)
		if err := vn.Encode(m[k]); err != nil {
			return err
		}
		doc.Content = append(doc.Content, &kn, &vn)
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}

// signalContext is ctx ended by SIGINT or SIGTERM.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

func newNATS() *cobra.Command {
	var (
		o    embeddedOptions
		show bool
	)
	c := &cobra.Command{
		Use:   "nats",
		Short: "Run only the embedded NATS server with JetStream, for local development",
		Long: `nats runs the NATS server natstx embeds, with JetStream on --data-dir, and
nothing else: no coordinator. Participants, 'natstx server --nats URL' and
every client command can then use it. It stops on Ctrl-C (SIGINT) or SIGTERM.`,
		Example: `  natstx nats
  natstx nats --nats-listen 127.0.0.1:14222 --data-dir /tmp/natstx-nats
  natstx nats --config configs/cluster/node1.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if show {
				return printConfigOf(cmd)
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			srv, err := startEmbedded(o)
			if err != nil {
				return err
			}
			defer srv.Stop()
			fmt.Fprintf(cmd.OutOrStdout(), "natstx nats: NATS with JetStream listening on %s, data in %s, sync %s; Ctrl-C stops it\n", srv.URL(), srv.DataDir(), o.sync)
			<-ctx.Done()
			fmt.Fprintln(cmd.OutOrStdout(), "natstx nats: stopping")
			return nil
		},
	}
	addEmbeddedFlags(c.Flags(), &o)
	c.Flags().BoolVar(&show, "print-config", false, "print the effective settings (flags, NATSTX_* variables, config file) as YAML and exit")
	return c
}

func printConfigOf(cmd *cobra.Command) error { return printConfig(cmd, cmd.OutOrStdout()) }

// defaultRetention is how long `natstx server` keeps a finished
// transaction's outcome and status by default: long enough to inspect it
// with tx status, tx list and audit hours later.
const defaultRetention = 2 * time.Hour

type serverOptions struct {
	embedded       embeddedOptions
	natsURL        string
	instance       string
	prepareTimeout time.Duration
	retention      time.Duration
	leaseTTL       time.Duration
	maxInFlight    int
	maxPayload     int
	replicas       int
	drainTimeout   time.Duration
	statusLinger   time.Duration
	noOnePhase     bool
	maxBeginRate   float64
	groupCommit    string
	metrics        metricsOptions
	console        consoleOptions
	startTimeout   time.Duration
	logLevel       string
	printConfig    bool
}

func newServer() *cobra.Command {
	var o serverOptions
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the coordinator (with an embedded NATS server unless --nats is given)",
		Long: `server runs a natstx coordinator: it declares the command stream and the
buckets, serves the coordinator API (natstx tx ...), drives transactions to
their outcome and writes each one's status to the natstx_status bucket.

By default it embeds a NATS server with JetStream on --data-dir, listening on
--nats-listen; with --nats URL it uses an external server or cluster instead.
Several coordinators may share one NATS: each has its own --instance name.

With --ui-listen it also serves the web console (docs/OPERATIONS.md): a live
list of transactions and sagas, a page per transaction, a dashboard, and
operator actions. It is off by default; on an address other than loopback it
needs a token (--ui-token or NATSTX_UI_TOKEN).

Settings come from flags, then NATSTX_* environment variables (NATSTX_DATA_DIR
for --data-dir), then the YAML file named by --config or NATSTX_CONFIG, whose
keys are the flag names (see configs/), then the defaults.

On SIGINT or SIGTERM it waits up to --drain-timeout for the transactions in
flight to finish, then stops the coordinator, then the embedded server.
Transactions still running then stay in the stream and buckets.`,
		Example: `  natstx server
  natstx server --nats-listen 127.0.0.1:14222 --data-dir /var/lib/natstx
  natstx server --nats nats://10.0.0.5:4222 --instance coord-2
  natstx server --config configs/single.yaml --print-config
  natstx server --ui-listen 127.0.0.1:8080
  NATSTX_UI_TOKEN=$(openssl rand -hex 16) natstx server --ui-listen 0.0.0.0:8080
  NATSTX_PREPARE_TIMEOUT=2s natstx server`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.printConfig {
				return printConfigOf(cmd)
			}
			if o.prepareTimeout <= 0 || o.retention <= 0 || o.leaseTTL <= 0 || o.drainTimeout < 0 || o.startTimeout <= 0 {
				return usageError{errors.New("--prepare-timeout, --retention, --lease-ttl and --start-timeout must be positive, --drain-timeout not negative")}
			}
			if o.maxPayload < 1 {
				return usageError{fmt.Errorf("--max-payload must be at least 1 byte (got %d)", o.maxPayload)}
			}
			if o.maxInFlight < 1 || o.replicas < 1 || o.replicas > 5 {
				return usageError{fmt.Errorf("--max-in-flight must be at least 1 and --replicas from 1 to 5 (got %d and %d)", o.maxInFlight, o.replicas)}
			}
			if err := o.console.check(); err != nil {
				return err
			}
			if _, err := o.groupCommitOn(); err != nil {
				return err
			}
			return runServer(cmd, o)
		},
	}
	f := c.Flags()
	addEmbeddedFlags(f, &o.embedded)
	f.StringVar(&o.natsURL, "nats", "", "URL of an external NATS server or cluster; empty runs the embedded server")
	f.StringVar(&o.instance, "instance", "", "this coordinator's instance name, unique among coordinators (default: random)")
	f.DurationVar(&o.leaseTTL, "lease-ttl", 5*time.Second, "how long this instance counts as alive after its last lease renewal; others take over its commits after it")
	f.DurationVar(&o.prepareTimeout, "prepare-timeout", 5*time.Second, "how long a transaction waits for its votes before it aborts, unless its request says less")
	f.DurationVar(&o.retention, "retention", defaultRetention, "how long a finished transaction's outcome and status stay readable (tx status, tx list, audit)")
	f.IntVar(&o.maxInFlight, "max-in-flight", 100_000, "transactions running at once; more are refused")
	f.IntVar(&o.maxPayload, "max-payload", 256<<10, "largest payload, in bytes, one participant may receive in a transaction or saga step; larger requests are refused")
	f.IntVar(&o.replicas, "replicas", 1, "replicas of the command stream and buckets: 1 on one server, 3 on a 3-node cluster")
	addMetricsFlags(f, &o.metrics)
	addConsoleFlags(f, &o.console)
	f.Float64Var(&o.maxBeginRate, "max-begin-rate", 0, "the most begins a second this coordinator accepts through its API (tx begin, bench --nats, clients) from each identity (each operator user of natstx auth; callers NATS does not name share one limit), bursts up to one second's worth; beyond it a begin is refused with a clear error (0: no limit)")
	f.StringVar(&o.groupCommit, "group-commit", "auto", groupCommitHelp)
	f.DurationVar(&o.statusLinger, "status-linger", 100*time.Millisecond, "how long a transaction's committing status, and a saga's status at each step, waits before it is written to the status bucket; a commit or saga that ends sooner writes only its first and final status (0: write every change at once)")
	f.BoolVar(&o.noOnePhase, "no-one-phase", false, "send prepare and then commit or abort to a transaction's only participant, as to several, instead of commit-one-phase (with which that participant decides the outcome, and the timeout does not abort the transaction)")
	f.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long to wait for transactions in flight before stopping")
	f.DurationVar(&o.startTimeout, "start-timeout", time.Minute, "how long to wait for JetStream (a cluster forming) at start-up")
	f.StringVar(&o.logLevel, "log-level", "info", "log level on stderr (debug, info, warn, error)")
	f.BoolVar(&o.printConfig, "print-config", false, "print the effective settings (flags, NATSTX_* variables, config file) as YAML and exit")
	return c
}

// groupCommitOn resolves --group-commit for this server.
func (o serverOptions) groupCommitOn() (bool, error) {
	return groupCommit(o.groupCommit, o.natsURL == "" && o.embedded.sync == string(embedded.SyncAlways))
}

func runServer(cmd *cobra.Command, o serverOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	out := cmd.OutOrStdout()

	url, where := o.natsURL, "external NATS"
	if url == "" {
		srv, err := startEmbedded(o.embedded)
		if err != nil {
			return err
		}
		defer func() {
			srv.Stop()
			log.Info("embedded NATS server stopped")
		}()
		url, where = srv.URL(), "embedded NATS, JetStream in "+srv.DataDir()+", sync "+o.embedded.sync
	}
	// A daemon keeps reconnecting while an external server restarts. Its own
	// stop closes the connection, which is no disconnect to warn about.
	var stopping atomic.Bool
	nc, err := connectAs(url, "natstx-server", "", nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if stopping.Load() || c.IsClosed() {
				return
			}
			log.Warn("disconnected from NATS; reconnecting", zap.String("nats", redactURL(url)), zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", zap.String("nats", nc.ConnectedUrlRedacted()))
		}))
	if err != nil {
		if o.natsURL != "" && !cmd.Flags().Changed("nats") && os.Getenv(envPrefix+"NATS") == o.natsURL {
			return fmt.Errorf("%w (%sNATS is set, so the server uses that NATS instead of embedding one; unset it to run the embedded server)", err, envPrefix)
		}
		return err
	}
	defer nc.Close()
	// Tracing (the OTEL_* variables) starts first, so that its spans are
	// flushed after the engine stopped.
	tp, stopTracing, err := startTracing(ctx, "natstx-server", log)
	if err != nil {
		return err // a usage error, naming the variable
	}
	defer stopTracing()
	eng, err := startEngine(ctx, nc, o, tp, log)
	if err != nil {
		return err
	}
	// /readyz: the engine, and the stream and buckets it needs still exist
	// (looked up at most every few seconds).
	ready := orchestrator.NewReadyCheck(eng, 0)
	stopMetrics, err := serveMetrics(o.metrics, ready.Ready, log, metrics.NewEngineCollector(eng))
	if err != nil {
		eng.Stop()
		return err
	}
	defer stopMetrics()
	consoleURL := ""
	if o.console.listen != "" {
		u, stopConsole, err := startConsole(o.console, nc, eng, log)
		if err != nil {
			eng.Stop()
			return err
		}
		defer stopConsole()
		consoleURL = u
	}
	fmt.Fprintf(out, "natstx server: coordinator %s ready on %s (%s); Ctrl-C stops it\n", eng.Instance(), redactURL(url), where)
	if consoleURL != "" {
		fmt.Fprintf(out, "natstx server: %s\n", consoleLine(consoleURL, o.console.token != ""))
	}
	<-ctx.Done()

	// Drain: let transactions in flight finish, up to the limit; a second
	// signal cuts the wait short.
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	n := eng.Stats().InFlight
	fmt.Fprintf(out, "natstx server: shutting down; no new transactions; waiting up to %v for %d in flight\n", o.drainTimeout, n)
	dctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	go func() {
		select {
		case <-again:
			cancel()
		case <-dctx.Done():
		}
	}()
	_ = eng.Drain(dctx) // a deadline or a second signal cuts it short
	left := eng.Stats().InFlight
	stopping.Store(true)
	eng.Stop()
	printRejectedReplies(out, eng.Stats().RejectedReplies)
	if left > 0 {
		fmt.Fprintf(out, "natstx server: coordinator stopped with %d transactions in flight; they stay in the stream and buckets\n", left)
	} else {
		fmt.Fprintln(out, "natstx server: coordinator stopped, no transaction in flight")
	}
	return nil
}

// printRejectedReplies prints, per participant, how many of its replies
// could not be read (a participant in another language speaking the protocol
// wrongly), if any were.
func printRejectedReplies(out io.Writer, by map[string]int64) {
	if len(by) == 0 {
		return
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", n, by[n])
	}
	fmt.Fprintf(out, "natstx server: replies rejected as malformed, by participant: %s (the log says why)\n", strings.Join(parts, ", "))
}

// probeJetStream declares the command stream, retrying every 2s, until
// JetStream accepts it. In a cluster still electing its JetStream leader a
// request can vanish unanswered, so short attempts find the leader as soon as
// it exists, where one long attempt would wait out its whole timeout.
func probeJetStream(ctx context.Context, nc *nats.Conn, o serverOptions, log *zap.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		err := orchestrator.EnsureStreams(actx, js, orchestrator.StreamOptions{Replicas: o.replicas})
		acancel()
		if err == nil {
			return nil
		}
		if first {
			log.Info("waiting for JetStream to hold the coordinator's stream and buckets", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("starting the coordinator: JetStream was not ready within --start-timeout %v: %w (is JetStream enabled on that server? in a cluster, are enough nodes up for --replicas %d?)", o.startTimeout, err, o.replicas)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// startEngine starts the coordinator once JetStream can hold its stream and
// buckets: at once on one server; in a cluster that is forming, after the
// JetStream leader election and once enough nodes are up for --replicas. A
// start that fails for want of JetStream is retried with a new engine until
// --start-timeout.
func startEngine(ctx context.Context, nc *nats.Conn, o serverOptions, tp trace.TracerProvider, log *zap.Logger) (*orchestrator.Engine, error) {
	hook, err := faultHookFromEnv()
	if err != nil {
		return nil, err
	}
	cfg := orchestrator.Config{
		Instance: o.instance, PrepareTimeout: o.prepareTimeout, Retention: o.retention, LeaseTTL: o.leaseTTL,
		MaxInFlight: o.maxInFlight, MaxPayload: o.maxPayload, Streams: orchestrator.StreamOptions{Replicas: o.replicas},
		Logger: log.Named("coordinator"), FaultHook: hook, StatusLinger: o.statusLinger, MaxBeginRate: o.maxBeginRate,
		TracerProvider: tp, NoOnePhase: o.noOnePhase,
	}
	cfg.GroupCommit, _ = o.groupCommitOn() // checked with the flags
	if o.statusLinger <= 0 {
		cfg.StatusLinger = -1 // at once
	}
	if _, err := orchestrator.New(nc, cfg); err != nil {
		return nil, usageError{err}
	}
	if cfg.Instance == "" {
		cfg.Instance = orchestrator.NewID() // the same name across retries
	}
	ctx, cancel := context.WithTimeout(ctx, o.startTimeout)
	defer cancel()
	if err := probeJetStream(ctx, nc, o, log); err != nil {
		return nil, err
	}
	for first := true; ; first = false {
		eng, err := orchestrator.New(nc, cfg)
		if err != nil {
			return nil, usageError{err}
		}
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		err = eng.Start(sctx)
		scancel()
		if err == nil {
			return eng, nil
		}
		eng.Stop()
		if first {
			log.Info("waiting for JetStream to hold the coordinator's stream and buckets", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("starting the coordinator: JetStream was not ready within --start-timeout %v: %w (is JetStream enabled on that server? in a cluster, are enough nodes up for --replicas %d?)", o.startTimeout, err, o.replicas)
		case <-time.After(time.Second):
		}
	}
}
