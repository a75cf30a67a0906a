package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/txn"
)

// txClient is what every tx subcommand shares: the NATS URL, the request
// timeout and --json.
type txClient struct {
	natsURL string
	timeout time.Duration
	jsonOut bool
}

func (tc *txClient) flags(c *cobra.Command, timeout time.Duration, timeoutHelp string) {
	addNATSFlag(c, &tc.natsURL)
	c.Flags().DurationVar(&tc.timeout, "timeout", timeout, timeoutHelp)
	c.Flags().BoolVar(&tc.jsonOut, "json", false, "print JSON instead of text")
}

// open connects and returns a client and a function that closes it.
func (tc *txClient) open(name string, opts ...nats.Option) (*orchestrator.Client, func(), error) {
	if tc.timeout <= 0 {
		return nil, nil, usageError{errors.New("--timeout must be positive")}
	}
	nc, err := connect(tc.natsURL, name, opts...)
	if err != nil {
		return nil, nil, err
	}
	cl, err := orchestrator.NewClient(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return cl, nc.Close, nil
}

// withoutDeadline returns a context with the values of ctx (its trace) that
// ends when ctx does but has no deadline, and a function that releases it.
// A begin request takes it when ctx only bounds the wait for the answer:
// the client sends a deadline of its context as the transaction's (or the
// saga's), and a wait bound must not become that by accident.
func withoutDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	return c, func() {
		stop()
		cancel()
	}
}

// watchReconnect is how long `tx watch` keeps trying to reconnect after it
// lost NATS, e.g. while `natstx server` restarts.
const watchReconnect = 10 * time.Second

// errLostNATS ends `tx watch` when its connection closes for good.
var errLostNATS = errors.New("the watch ended: lost the connection to NATS; is the server still running?")

func newTx() *cobra.Command {
	c := &cobra.Command{
		Use:   "tx",
		Short: "Begin, inspect, watch and abort transactions and sagas on running coordinators",
		Long: `tx talks to the coordinators ('natstx server') on a NATS server: begin asks one
of them to run a transaction (or, with --saga, a saga); status, list and watch
read the natstx_status bucket every coordinator writes each transaction's
state to; abort asks the transaction's coordinator to abort it while it is
still preparing (a saga: to compensate it while it goes forward); retry and
resolve are the operator's actions on a saga (retry now, resolve a stuck
step by hand).

Exit codes: 0 success (for begin: committed, or begun with --async); 1 the
transaction aborted, is unknown, or NATS or the coordinator cannot be reached;
2 bad usage.`,
		Example: `  natstx tx begin -p inventory='{"item":"widget","qty":1}' -p payment='{"account":"alice","amount":10}'
  natstx tx status 4FQ3ZKcJmgxA6pJnS0QhZQ
  natstx tx list --state preparing --state committing
  natstx tx watch --json
  natstx tx abort 4FQ3ZKcJmgxA6pJnS0QhZQ --reason "operator: stuck order"
  natstx tx list --state compensation-stuck
  natstx tx resolve order-7 --step charge --note "refunded by hand"`,
	}
	c.AddCommand(newTxBegin(), newTxStatus(), newTxList(), newTxWatch(), newTxAbort(), newTxRetry(), newTxResolve())
	groupCommand(c)
	return c
}

// beginFile is the format of `tx begin --file`, JSON or YAML.
type beginFile struct {
	ID           string `yaml:"id"`
	Timeout      string `yaml:"timeout"`
	Participants []struct {
		Name string `yaml:"name"`
		// Payload is sent as is when it is a string, as its JSON encoding
		// otherwise.
		Payload any `yaml:"payload"`
	} `yaml:"participants"`
}

type beginOptions struct {
	txClient
	participants []string
	file         string
	id           string
	prepare      time.Duration
	async        bool
	saga         bool
	steps        []string
	deadline     time.Duration
	traceparent  string
}

func newTxBegin() *cobra.Command {
	var o beginOptions
	c := &cobra.Command{
		Use:   "begin",
		Short: "Begin a transaction or a saga and wait for its outcome (or not, with --async)",
		Long: `begin asks a coordinator to run one transaction across the participants named
with --participant NAME=PAYLOAD (repeat it; NAME=@FILE reads the payload from
a file; NAME alone sends none) or listed in a JSON or YAML --file:

  id: order-42            # optional; a new ID otherwise
  timeout: 5s             # optional prepare timeout
  participants:
    - name: inventory
      payload: {item: widget, qty: 1}   # a string is sent as is, anything else as JSON
    - name: payment
      payload: '{"account": "alice", "amount": 10}'

The payloads are the participants' own business: 'natstx participant
inventory --help' (and payment, shipping) shows what each example service
accepts, e.g. {"item":"widget","qty":1}, {"account":"alice","amount":10} and
{"slot":"mon"}; a simulated participant ('natstx participant sim') accepts
anything, or none.

It waits for the outcome, up to --timeout, and prints it; with --async it
prints the transaction as begun and returns at once. Exit code 0 when it
committed (or began, with --async), 1 when it aborted or no outcome came in
time (the transaction goes on: see 'natstx tx status ID'). --timeout bounds
the wait only: the transaction's prepare timeout is --prepare-timeout (or
the file's timeout), else the coordinator's.

With --saga it begins a saga instead (docs/SAGA.md): steps, each an action at
one participant and its compensation, run in order; when one fails for good,
those done are compensated, last first. The steps come from a saga --file
(YAML or JSON: name, order, deadline, timeout, retry, compensation, steps) or
from --step NAME=PARTICIPANT[:ACTION[:COMPENSATION]] flags, in order, where
ACTION and COMPENSATION are JSON values (or @FILE) and the policies take their
defaults. --deadline bounds the saga going forward. It waits until the saga
completed, was compensated, or is stuck (exit code 0 only when completed).

--traceparent makes the transaction (or saga) part of the caller's trace:
the coordinator continues the W3C trace context given (the value of a
traceparent header, 00-TRACEID-SPANID-FLAGS), and so do the participants
when they trace (OTEL_* variables, see docs/OPERATIONS.md).`,
		Example: `  natstx tx begin -p inventory='{"item":"widget","qty":1}' -p payment='{"account":"alice","amount":10}'
  natstx tx begin --file order.yaml --json
  natstx tx begin --id order-42 -p inventory=@item.json -p shipping='{"slot":"mon"}' --async
  natstx tx begin -p loyalty --prepare-timeout 2s
  natstx tx begin -p loyalty --traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
  natstx tx begin --saga --file configs/saga-order.yaml
  natstx tx begin --saga --step reserve=inventory:'{"item":"widget","qty":1}':'{"item":"widget","qty":1}' \
                         --step charge=payment:'{"account":"alice","amount":10}':'{"account":"alice","amount":10}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.saga {
				return runSagaBegin(cmd, o)
			}
			if len(o.steps) > 0 || o.deadline != 0 {
				return usageError{errors.New("--step and --deadline are for sagas: add --saga")}
			}
			req, err := o.request()
			if err != nil {
				return err
			}
			return runTxBegin(cmd, o, req)
		},
	}
	o.flags(c, 30*time.Second, "how long to wait for the outcome (or, with --async, for the coordinator to accept)")
	f := c.Flags()
	f.StringArrayVarP(&o.participants, "participant", "p", nil, "NAME=PAYLOAD, NAME=@FILE or NAME; repeat for each participant")
	f.StringVarP(&o.file, "file", "f", "", "JSON or YAML file with the participants (and optionally id, timeout)")
	f.StringVar(&o.id, "id", "", "transaction ID (default: a new unique one)")
	f.DurationVar(&o.prepare, "prepare-timeout", 0, "prepare timeout of this transaction (default: the coordinator's)")
	f.BoolVar(&o.async, "async", false, "return as soon as the transaction has begun")
	f.BoolVar(&o.saga, "saga", false, "run a saga: steps from --step or a saga --file (docs/SAGA.md)")
	f.StringArrayVar(&o.steps, "step", nil, "saga step NAME=PARTICIPANT[:ACTION-JSON[:COMPENSATION-JSON]] (JSON or @FILE); repeat, in order")
	f.DurationVar(&o.deadline, "deadline", 0, "saga: stop going forward (and compensate) this long after the start; the file's, when sooner, wins")
	f.StringVar(&o.traceparent, "traceparent", "", "W3C trace context (00-TRACEID-SPANID-FLAGS) the coordinator continues: the transaction joins the caller's trace")
	return c
}

// request builds the BeginRequest from the file and the flags; flags win.
func (o beginOptions) request() (messages.BeginRequest, error) {
	var req messages.BeginRequest
	prepare := o.prepare
	if o.file != "" {
		data, err := os.ReadFile(o.file)
		if err != nil {
			return req, usageError{fmt.Errorf("--file: %w", err)}
		}
		var bf beginFile
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&bf); err != nil {
			return req, usageError{fmt.Errorf("--file %s is not a transaction in JSON or YAML (id, timeout, participants: [{name, payload}]): %w", o.file, err)}
		}
		req.ID = bf.ID
		if bf.Timeout != "" && prepare == 0 {
			d, err := time.ParseDuration(bf.Timeout)
			if err != nil || d <= 0 {
				return req, usageError{fmt.Errorf("--file %s: timeout %q is not a positive duration such as 5s", o.file, bf.Timeout)}
			}
			prepare = d
		}
		for i, p := range bf.Participants {
			spec := messages.ParticipantSpec{Name: p.Name}
			switch v := p.Payload.(type) {
			case nil:
			case string:
				spec.Payload = []byte(v)
			default:
				b, err := json.Marshal(v)
				if err != nil {
					return req, usageError{fmt.Errorf("--file %s: participant %d (%s): payload cannot be encoded as JSON: %w", o.file, i+1, p.Name, err)}
				}
				spec.Payload = b
			}
			req.Participants = append(req.Participants, spec)
		}
	}
	for _, p := range o.participants {
		name, payload, hasPayload := strings.Cut(p, "=")
		spec := messages.ParticipantSpec{Name: name}
		if hasPayload {
			spec.Payload = []byte(payload)
			if path, ok := strings.CutPrefix(payload, "@"); ok {
				b, err := os.ReadFile(path)
				if err != nil {
					return req, usageError{fmt.Errorf("--participant %s: %w", p, err)}
				}
				spec.Payload = b
			}
		}
		req.Participants = append(req.Participants, spec)
	}
	if o.id != "" {
		req.ID = o.id
	}
	if req.ID == "" {
		req.ID = orchestrator.NewID()
	}
	if err := messages.ValidateName("transaction ID", req.ID); err != nil {
		return req, usageError{err}
	}
	if len(req.Participants) == 0 {
		return req, usageError{errors.New("no participants: name them with --participant NAME=PAYLOAD or in a --file")}
	}
	seen := map[string]bool{}
	for _, p := range req.Participants {
		if err := messages.ValidateName("participant", p.Name); err != nil {
			return req, usageError{err}
		}
		if seen[p.Name] {
			return req, usageError{fmt.Errorf("participant %s is named twice", p.Name)}
		}
		seen[p.Name] = true
	}
	if prepare < 0 {
		return req, usageError{errors.New("--prepare-timeout must be positive")}
	}
	req.TimeoutMs = prepare.Milliseconds()
	req.Wait = !o.async
	return req, nil
}

func runTxBegin(cmd *cobra.Command, o beginOptions, req messages.BeginRequest) error {
	traced, err := withTraceParent(cmd.Context(), o.traceparent)
	if err != nil {
		return err
	}
	cl, done, err := o.open("natstx-tx-begin")
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(traced, o.timeout)
	defer cancel()
	// --timeout bounds the wait, not the transaction (--prepare-timeout, or
	// the coordinator's, does that).
	bctx, bcancel := withoutDeadline(ctx)
	defer bcancel()
	st, err := cl.Begin(bctx, req)
	if err != nil {
		if ctx.Err() != nil {
			if o.async {
				return fmt.Errorf("transaction %s: the coordinator did not answer within --timeout %v", req.ID, o.timeout)
			}
			return fmt.Errorf("transaction %s: no outcome within --timeout %v; it goes on: see 'natstx tx status %s'", req.ID, o.timeout, req.ID)
		}
		return fmt.Errorf("transaction %s: %w", req.ID, err)
	}
	if err := printStatus(cmd.OutOrStdout(), st, o.jsonOut); err != nil {
		return err
	}
	if st.State == txn.Aborted.String() || st.State == txn.Aborting.String() {
		return fmt.Errorf("transaction %s aborted: %s", st.ID, st.Reason)
	}
	return nil
}

func newTxStatus() *cobra.Command {
	var (
		o       txClient
		history bool
	)
	c := &cobra.Command{
		Use:   "status ID",
		Short: "Show a transaction's state, reason and each participant's vote",
		Long: `status prints what the natstx_status bucket holds for transaction ID: its state,
the reason of an abort, its coordinator, and each participant's vote and
acknowledgement. With --history, also what happened to it, event by event:
begun, each command sent and re-sent, each vote, ack and failure, the
decision and why, timeouts, operator actions (who and why), takeovers by
another coordinator, the end (the first 16 and the latest events, 64 at
most). Exit code 1 when no status is held for ID: it never began on this
NATS, or it finished longer ago than the coordinator's --retention.`,
		Example: `  natstx tx status 4FQ3ZKcJmgxA6pJnS0QhZQ
  natstx tx status order-42 --history
  natstx tx status order-42 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := messages.ValidateName("transaction ID", args[0]); err != nil {
				return usageError{err}
			}
			cl, done, err := o.open("natstx-tx-status")
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			st, err := cl.Status(ctx, args[0])
			if errors.Is(err, orchestrator.ErrUnknownTx) {
				return fmt.Errorf("no transaction %s on this NATS: it never began here, or it finished longer ago than the coordinator's --retention", args[0])
			}
			if err != nil {
				return err
			}
			if !history {
				st.History, st.HistoryDropped = nil, 0
			}
			if err := printStatus(cmd.OutOrStdout(), st, o.jsonOut); err != nil || o.jsonOut || !history {
				return err
			}
			return printHistory(cmd.OutOrStdout(), st)
		},
	}
	o.flags(c, 5*time.Second, "how long to wait for NATS to answer")
	c.Flags().BoolVar(&history, "history", false, "also print the transaction's event history (with --json: include it)")
	return c
}

// printHistory prints st's event history, one event a line, each at its
// time since the first.
func printHistory(out io.Writer, st messages.TxStatus) error {
	if len(st.History) == 0 {
		_, err := fmt.Fprintln(out, "  no history recorded")
		return err
	}
	fmt.Fprintf(out, "  history (%d events):\n", len(st.History)+st.HistoryDropped)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	first := st.History[0].At
	for i, ev := range st.History {
		if i == 16 && st.HistoryDropped > 0 {
			fmt.Fprintf(tw, "    ...\t(%d events left out)\t\t\n", st.HistoryDropped)
		}
		who := ev.Participant
		if ev.Step != "" {
			who += " " + ev.Step
		}
		detail := ev.Detail
		if ev.Attempt > 0 {
			detail += fmt.Sprintf(" #%d", ev.Attempt)
		}
		if ev.By != "" {
			detail += " (by " + ev.By + ")"
		}
		fmt.Fprintf(tw, "    +%s\t%s\t%s\t%s\n", ev.At.Sub(first).Round(100*time.Microsecond), ev.Event, who, detail)
	}
	return tw.Flush()
}

var txStates = []string{
	txn.Preparing.String(), txn.Committing.String(), txn.Aborting.String(), txn.Committed.String(), txn.Aborted.String(),
}

func newTxList() *cobra.Command {
	var (
		o      txClient
		states []string
	)
	c := &cobra.Command{
		Use:   "list",
		Short: "List the transactions held in the status bucket, by start time",
		Long: `list prints every transaction the natstx_status bucket holds (running ones, and
finished ones within the coordinators' retention), oldest first; --state keeps
only those in the given states (repeat it, or separate with commas):
` + strings.Join(txStates, ", ") + ` for two-phase commit;
` + strings.Join(sagaStates, ", ") + ` for sagas.`,
		Example: `  natstx tx list
  natstx tx list --state preparing,committing
  natstx tx list --state aborted --json
  natstx tx list --state compensation-stuck`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range states {
				if _, err := txn.ParseState(s); err != nil && !slices.Contains(sagaStates, s) {
					return usageError{fmt.Errorf("--state %q: want one of %s (two-phase commit) or %s (sagas)", s, strings.Join(txStates, ", "), strings.Join(sagaStates, ", "))}
				}
			}
			cl, done, err := o.open("natstx-tx-list")
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			list, err := cl.List(ctx, states...)
			if err != nil {
				return err
			}
			sort.SliceStable(list, func(i, j int) bool { return list[i].StartedAt.Before(list[j].StartedAt) })
			out := cmd.OutOrStdout()
			if o.jsonOut {
				if list == nil {
					list = []messages.TxStatus{}
				}
				return json.NewEncoder(out).Encode(list)
			}
			if len(list) == 0 {
				fmt.Fprintln(out, "no transactions")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tSTARTED\tPARTICIPANTS\tREASON")
			for _, st := range list {
				names := make([]string, len(st.Participants))
				for i, p := range st.Participants {
					names[i] = p.Name
				}
				if st.Protocol == messages.ProtocolSaga {
					// A saga's steps, each at its participant.
					names = names[:0]
					for _, s := range st.Steps {
						names = append(names, s.Name+"@"+s.Participant)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.ID, st.State, st.StartedAt.Local().Format(time.DateTime), strings.Join(names, ","), st.Reason)
			}
			return tw.Flush()
		},
	}
	o.flags(c, 5*time.Second, "how long to wait for NATS to answer")
	c.Flags().StringSliceVar(&states, "state", nil, "only transactions in these states")
	_ = c.RegisterFlagCompletionFunc("state", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return append(slices.Clone(txStates), sagaStates...), cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

func newTxWatch() *cobra.Command {
	var (
		o     txClient
		count int
		only  string
	)
	c := &cobra.Command{
		Use:   "watch",
		Short: "Print every transaction state change as it happens",
		Long: `watch prints one line per state change of any transaction (begun, decided,
finished) from now on, as the coordinators write them to the natstx_status
bucket, until Ctrl-C, --count changes, or --for elapses. With --json each
change is one JSON object per line.`,
		Example: `  natstx tx watch
  natstx tx watch --json | jq .state
  natstx tx watch --tx order-42 --count 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 0 {
				return usageError{errors.New("--count must not be negative")}
			}
			if only != "" {
				if err := messages.ValidateName("transaction ID", only); err != nil {
					return usageError{fmt.Errorf("--tx: %w", err)}
				}
			}
			forD, _ := cmd.Flags().GetDuration("for")
			if forD < 0 {
				return usageError{errors.New("--for must not be negative")}
			}
			o.timeout = 5 * time.Second
			since := time.Now()
			var reconnected atomic.Bool
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			ctx, lost := context.WithCancelCause(ctx)
			defer lost(nil)
			// A server restart (seconds) does not end the watch; a server
			// gone for longer than watchReconnect does.
			cl, done, err := o.open("natstx-tx-watch", nats.ClosedHandler(func(*nats.Conn) { lost(errLostNATS) }),
				nats.MaxReconnects(int(watchReconnect/(500*time.Millisecond))),
				nats.DisconnectErrHandler(func(c *nats.Conn, _ error) {
					if c.IsClosed() {
						return // its own end, not a lost server
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "lost NATS; reconnecting for up to %v\n", watchReconnect)
				}),
				nats.ReconnectHandler(func(*nats.Conn) {
					reconnected.Store(true)
					fmt.Fprintln(cmd.ErrOrStderr(), "reconnected; watching")
				}))
			if err != nil {
				return err
			}
			defer done()
			if forD > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, forD)
				defer cancel()
			}
			ch, err := cl.Watch(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "watching transactions on %s; Ctrl-C stops\n", o.natsURL)
			out := cmd.OutOrStdout()
			n := 0
			var seen changeFilter
			for st := range ch {
				if only != "" && st.ID != only {
					continue
				}
				if reconnected.Load() && st.UpdatedAt.Before(since) {
					continue // the watcher's restart replays what it saw before
				}
				if !seen.changed(st) {
					continue // a re-send or a refresh: nothing a reader sees changed
				}
				if o.jsonOut {
					if err := json.NewEncoder(out).Encode(st); err != nil {
						return err
					}
				} else {
					fmt.Fprintln(out, watchLine(st))
				}
				if n++; count > 0 && n >= count {
					return nil
				}
			}
			// The changes stopped before --count: Ctrl-C or --for (no error),
			// or the watcher ended by itself because NATS went away, which
			// may close the channel before the connection reports closed.
			if ctx.Err() == nil || errors.Is(context.Cause(ctx), errLostNATS) {
				return errLostNATS
			}
			return nil
		},
	}
	addNATSFlag(c, &o.natsURL)
	c.Flags().BoolVar(&o.jsonOut, "json", false, "print each change as one JSON object per line")
	c.Flags().IntVar(&count, "count", 0, "stop after this many changes (0: no limit)")
	c.Flags().Duration("for", 0, "stop after this long (0: until Ctrl-C)")
	c.Flags().StringVar(&only, "tx", "", "only changes of this transaction")
	return c
}

func newTxAbort() *cobra.Command {
	var (
		o           txClient
		reason, who string
	)
	c := &cobra.Command{
		Use:   "abort ID",
		Short: "Abort a transaction that is still preparing, or compensate a saga going forward",
		Long: `abort asks the coordinator that owns transaction ID to abort it. Only a
transaction still preparing can be aborted: once the commit decision is
recorded it will commit, whatever happens. A one-phase commit (a transaction
with one participant, sent commit-one-phase) cannot be: its participant
decides it. A saga still going forward, and not
past its pivot, compensates now (the abort is recorded with --who and
--reason). Exit code 1 when the transaction is unknown, already decided (a
saga: finished, compensating or past its pivot), or its coordinator does not
answer.`,
		Example: `  natstx tx abort 4FQ3ZKcJmgxA6pJnS0QhZQ
  natstx tx abort order-42 --reason "customer cancelled" --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := messages.ValidateName("transaction ID", args[0]); err != nil {
				return usageError{err}
			}
			cl, done, err := o.open("natstx-tx-abort")
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			if cur, err := cl.Status(ctx, args[0]); err == nil && cur.Protocol == messages.ProtocolSaga {
				// A saga going forward compensates now.
				st, err := sagaAct(ctx, cl, cur, messages.SagaActRequest{ID: args[0], Action: messages.SagaAbort, Who: who, Why: reason})
				if err != nil {
					return err
				}
				return printStatus(cmd.OutOrStdout(), st, o.jsonOut)
			}
			st, err := cl.AbortAs(ctx, args[0], reason, who)
			switch {
			case errors.Is(err, orchestrator.ErrUnknownTx):
				return fmt.Errorf("no transaction %s on this NATS: it never began here, or it finished longer ago than the coordinator's --retention", args[0])
			case errors.Is(err, orchestrator.ErrNoCoordinator):
				return fmt.Errorf("transaction %s: its coordinator %s does not answer (stopped?): %w", args[0], st.Owner, err)
			case err != nil:
				return err
			}
			return printStatus(cmd.OutOrStdout(), st, o.jsonOut)
		},
	}
	o.flags(c, 5*time.Second, "how long to wait for the coordinator to answer")
	c.Flags().StringVar(&reason, "reason", "aborted by an operator", "why, recorded as the transaction's abort reason")
	c.Flags().StringVar(&who, "who", defaultWho(), "who aborts, recorded with the abort")
	return c
}

// printStatus prints st as a block of text, or as one JSON object.
func printStatus(out io.Writer, st messages.TxStatus, jsonOut bool) error {
	if jsonOut {
		return json.NewEncoder(out).Encode(st)
	}
	if st.Protocol == messages.ProtocolSaga {
		return printSagaStatus(out, st)
	}
	head := fmt.Sprintf("tx %s %s", st.ID, st.State)
	if !st.StartedAt.IsZero() && !st.UpdatedAt.IsZero() {
		head += fmt.Sprintf(" (%s after start)", st.UpdatedAt.Sub(st.StartedAt).Round(100*time.Microsecond))
	}
	if st.Reason != "" {
		head += ": " + st.Reason
	}
	if st.TimedOut {
		head += " [timed out]"
	}
	fmt.Fprintln(out, head)
	fmt.Fprintf(out, "  coordinator %s, started %s\n", st.Owner, st.StartedAt.Local().Format(time.RFC3339Nano))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, p := range st.Participants {
		acked := "not acked"
		if p.Acked {
			acked = "acked"
		}
		reason := p.Reason
		if p.Rejected != "" {
			reason = strings.TrimSpace(reason + " [replies rejected: " + p.Rejected + "]")
		}
		fmt.Fprintf(tw, "  %s\tvote %s\t%s\tsends %d\t%s\n", p.Name, p.Vote, acked, p.Sends, reason)
	}
	return tw.Flush()
}

// changeFilter lets through the status writes of `tx watch` that change
// what it prints: the state, a vote, an acknowledgement or the reason. The
// writes made for each re-send of a command only count sends, and would
// print the same line again. It remembers the last change of each
// transaction, for at most maxWatched transactions (then it starts afresh).
type changeFilter struct{ last map[string]string }

const maxWatched = 100_000

// changed reports whether st differs, as printed, from the last status of
// its transaction that was let through, and remembers it.
func (f *changeFilter) changed(st messages.TxStatus) bool {
	key := st.State + " " + st.Reason
	for _, p := range st.Participants {
		key += fmt.Sprintf(" %s=%s/%v/%s", p.Name, p.Vote, p.Acked, p.Reason)
	}
	for _, s := range st.Steps {
		key += fmt.Sprintf(" %s=%s/%v", s.Name, s.Status, s.Stuck)
	}
	if f.last == nil || len(f.last) >= maxWatched {
		f.last = make(map[string]string)
	}
	if f.last[st.ID] == key {
		return false
	}
	f.last[st.ID] = key
	return true
}

// watchLine is one line of `tx watch`.
func watchLine(st messages.TxStatus) string {
	parts := make([]string, len(st.Participants))
	for i, p := range st.Participants {
		parts[i] = p.Name + "=" + p.Vote
		if p.Acked {
			parts[i] += "+ack"
		}
	}
	if st.Protocol == messages.ProtocolSaga {
		parts = parts[:0]
		for _, s := range st.Steps {
			parts = append(parts, s.Name+"="+s.Status)
		}
	}
	line := fmt.Sprintf("%s %s %s [%s]", st.UpdatedAt.Local().Format("15:04:05.000"), st.ID, st.State, strings.Join(parts, " "))
	if st.Reason != "" {
		line += " " + st.Reason
	}
	return line
}
