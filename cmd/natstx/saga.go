package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
)

// sagaStates are the states of a saga's status, for tx list --state.
var sagaStates = []string{
	string(saga.StateRunning), string(saga.StateForwardStuck), string(saga.StateCompensating),
	string(saga.StateCompensationStuck), string(saga.StateCompleted), string(saga.StateCompensated),
}

// stepFlag is one --step of `tx begin --saga`.
type stepFlag struct {
	Name         string          `json:"name"`
	Participant  string          `json:"participant"`
	Action       json.RawMessage `json:"action,omitempty"`
	Compensation json.RawMessage `json:"compensation,omitempty"`
}

// parseStepFlag reads NAME=PARTICIPANT[:ACTION[:COMPENSATION]], where ACTION
// and COMPENSATION are JSON values (an object, an array, a string, a
// number) or @FILE. A JSON value may hold colons: it is read as JSON up to
// its end.
func parseStepFlag(s string) (stepFlag, error) {
	var st stepFlag
	bad := func(format string, args ...any) error {
		return usageError{fmt.Errorf("--step %q: "+format+"; want NAME=PARTICIPANT[:ACTION-JSON[:COMPENSATION-JSON]]", append([]any{s}, args...)...)}
	}
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return st, bad("no '=' after the step name")
	}
	st.Name = name
	st.Participant, rest, ok = strings.Cut(rest, ":")
	if err := messages.ValidateName("step", st.Name); err != nil {
		return st, bad("%v", err)
	}
	if err := messages.ValidateName("participant", st.Participant); err != nil {
		return st, bad("%v", err)
	}
	for i, dst := range []*json.RawMessage{&st.Action, &st.Compensation} {
		if !ok {
			break
		}
		what := []string{"action", "compensation"}[i]
		if path, isFile := strings.CutPrefix(rest, "@"); isFile {
			path, rest, ok = strings.Cut(path, ":")
			b, err := os.ReadFile(path)
			if err != nil {
				return st, bad("%s: %v", what, err)
			}
			if !json.Valid(b) {
				return st, bad("%s: %s is not JSON", what, path)
			}
			*dst = json.RawMessage(bytes.TrimSpace(b))
			continue
		}
		dec := json.NewDecoder(strings.NewReader(rest))
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return st, bad("%s is not a JSON value: %v", what, err)
		}
		*dst = raw
		rest = strings.TrimSpace(rest[dec.InputOffset():])
		rest, ok = strings.CutPrefix(rest, ":")
		if !ok && rest != "" {
			return st, bad("unexpected %q after the %s", rest, what)
		}
	}
	if ok {
		return st, bad("unexpected %q after the compensation", rest)
	}
	return st, nil
}

// sagaDefinition returns the definition text of `tx begin --saga`: the
// --file as is, or the --step flags as JSON. It parses it here too, so that
// a bad definition is a usage error naming the field.
func (o beginOptions) sagaDefinition() (string, error) {
	switch {
	case len(o.participants) > 0:
		return "", usageError{errors.New("--participant is for two-phase commit; a saga's steps are --step NAME=PARTICIPANT:ACTION[:COMPENSATION] or a --file")}
	case o.prepare != 0:
		return "", usageError{errors.New("--prepare-timeout is for two-phase commit; a saga has --deadline, and each step a timeout in its --file")}
	case o.file != "" && len(o.steps) > 0:
		return "", usageError{errors.New("give the saga's steps in a --file or with --step, not both")}
	case o.file == "" && len(o.steps) == 0:
		return "", usageError{errors.New("no steps: give them with --step NAME=PARTICIPANT:ACTION[:COMPENSATION] or in a --file (see docs/SAGA.md)")}
	}
	var def []byte
	if o.file != "" {
		b, err := os.ReadFile(o.file)
		if err != nil {
			return "", usageError{fmt.Errorf("--file: %w", err)}
		}
		def = b
	} else {
		file := struct {
			Name  string     `json:"name"`
			Steps []stepFlag `json:"steps"`
		}{Name: "cli"}
		for _, s := range o.steps {
			st, err := parseStepFlag(s)
			if err != nil {
				return "", err
			}
			file.Steps = append(file.Steps, st)
		}
		b, err := json.Marshal(file)
		if err != nil {
			return "", err
		}
		def = b
	}
	if _, err := saga.Parse(def); err != nil {
		where := "--step"
		if o.file != "" {
			where = "--file " + o.file
		}
		return "", usageError{fmt.Errorf("%s: %w", where, err)}
	}
	return string(def), nil
}

// runSagaBegin is `tx begin --saga`.
func runSagaBegin(cmd *cobra.Command, o beginOptions) error {
	def, err := o.sagaDefinition()
	if err != nil {
		return err
	}
	id := o.id
	if id == "" {
		id = orchestrator.NewID()
	}
	if err := messages.ValidateName("saga ID", id); err != nil {
		return usageError{err}
	}
	if o.deadline < 0 {
		return usageError{errors.New("--deadline must not be negative")}
	}
	// The saga begins without Wait: a coordinator's wait ends only when the
	// saga completed or was compensated, while begin must also return when
	// it is stuck; so begin follows its status here instead.
	traced, err := withTraceParent(cmd.Context(), o.traceparent)
	if err != nil {
		return err
	}
	req := messages.SagaBeginRequest{ID: id, Definition: def, TimeoutMs: o.deadline.Milliseconds()}
	cl, done, err := o.open("natstx-tx-begin")
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(traced, o.timeout)
	defer cancel()
	// --timeout bounds the wait, not the saga (--deadline does that).
	bctx, bcancel := withoutDeadline(ctx)
	defer bcancel()
	st, err := cl.BeginSaga(bctx, req)
	if err == nil && !o.async {
		st, err = waitSaga(ctx, cl, st)
	}
	if err != nil {
		if ctx.Err() != nil {
			if o.async {
				return fmt.Errorf("saga %s: the coordinator did not answer within --timeout %v", id, o.timeout)
			}
			return fmt.Errorf("saga %s: no outcome within --timeout %v; it goes on: see 'natstx tx status %s'", id, o.timeout, id)
		}
		return fmt.Errorf("saga %s: %w", id, err)
	}
	if err := printStatus(cmd.OutOrStdout(), st, o.jsonOut); err != nil {
		return err
	}
	if o.async || st.State == string(saga.StateCompleted) {
		return nil
	}
	if st.Reason != "" {
		return fmt.Errorf("saga %s is %s: %s", st.ID, st.State, st.Reason)
	}
	return fmt.Errorf("saga %s is %s", st.ID, st.State)
}

// sagaPoll is how often begin reads a saga's status while it waits.
const sagaPoll = 20 * time.Millisecond

// waitSaga reads saga st.ID's status until it completed, was compensated or
// is stuck, or ctx ends (then it returns ctx's error).
func waitSaga(ctx context.Context, cl *orchestrator.Client, st messages.TxStatus) (messages.TxStatus, error) {
	for {
		if s := saga.State(st.State); s.Final() || s.Stuck() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(sagaPoll):
		}
		cur, err := cl.Status(ctx, st.ID)
		switch {
		case err == nil:
			st = cur
		case ctx.Err() != nil:
			return st, ctx.Err()
		case !errors.Is(err, orchestrator.ErrUnknownTx):
			return st, err
		} // unknown: its first status is not written yet
	}
}

// printSagaStatus prints a saga's status as a block of text: a head line,
// the coordinator, and one line per step.
func printSagaStatus(out io.Writer, st messages.TxStatus) error {
	head := fmt.Sprintf("saga %s %s", st.ID, st.State)
	if !st.StartedAt.IsZero() && !st.UpdatedAt.IsZero() {
		head += fmt.Sprintf(" (%s after start)", st.UpdatedAt.Sub(st.StartedAt).Round(100*time.Microsecond))
	}
	if st.Reason != "" {
		head += ": " + st.Reason
	}
	fmt.Fprintln(out, head)
	line := fmt.Sprintf("  coordinator %s, started %s", st.Owner, st.StartedAt.Local().Format(time.RFC3339Nano))
	if !st.Deadline.IsZero() {
		line += ", deadline " + st.Deadline.Local().Format(time.RFC3339Nano)
	}
	fmt.Fprintln(out, line)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, s := range st.Steps {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Name, s.Participant, s.Status, stepDetails(s))
	}
	return tw.Flush()
}

// stepDetails is the end of a step's line in `tx status`: attempts, flags,
// the last error and the next retry.
func stepDetails(s messages.StepStatus) string {
	parts := []string{fmt.Sprintf("attempts %d", s.Attempts)}
	if s.CompensationAttempts > 0 {
		parts = append(parts, fmt.Sprintf("compensation attempts %d", s.CompensationAttempts))
	}
	if s.Pivot {
		parts = append(parts, "pivot")
	}
	if s.Stuck {
		parts = append(parts, "STUCK")
	}
	if s.LastError != "" {
		e := "last error " + s.LastError
		if s.LastCode != "" {
			e += " [" + s.LastCode + "]"
		}
		parts = append(parts, e)
	}
	if !s.NextRetryAt.IsZero() {
		parts = append(parts, "next retry "+s.NextRetryAt.Local().Format(time.RFC3339Nano))
	}
	if s.Note != "" {
		parts = append(parts, "note: "+s.Note)
	}
	return strings.Join(parts, ", ")
}

// defaultWho is who an operator action is recorded as by default:
// $USER@hostname.
func defaultWho() string {
	name := os.Getenv("USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		name = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return name + "@" + host
}

// sagaAct sends an operator action on a saga, after checking what the
// status bucket says of it, so that the error names what was wrong.
func sagaAct(ctx context.Context, cl *orchestrator.Client, st messages.TxStatus, req messages.SagaActRequest) (messages.TxStatus, error) {
	if st.Protocol != messages.ProtocolSaga {
		return st, fmt.Errorf("%s is a two-phase commit transaction (%s), not a saga: 'tx %s' acts on sagas only", st.ID, st.State, req.Action)
	}
	if saga.State(st.State).Final() {
		return st, fmt.Errorf("saga %s already finished: it is %s; nothing to %s", st.ID, st.State, req.Action)
	}
	if req.Step != "" {
		names := make([]string, len(st.Steps))
		found := false
		for i, s := range st.Steps {
			names[i] = s.Name
			found = found || s.Name == req.Step
		}
		if !found {
			return st, fmt.Errorf("saga %s has no step %q (steps: %s)", st.ID, req.Step, strings.Join(names, ", "))
		}
	}
	out, err := cl.ActOnSaga(ctx, req)
	if errors.Is(err, orchestrator.ErrNoCoordinator) {
		return st, fmt.Errorf("saga %s: its coordinator %s does not answer (stopped?): %w", st.ID, st.Owner, err)
	}
	return out, err
}

// runSagaAction looks saga id up and applies req to it; it prints the
// status after the action.
func runSagaAction(cmd *cobra.Command, o txClient, name string, req messages.SagaActRequest) error {
	if err := messages.ValidateName("saga ID", req.ID); err != nil {
		return usageError{err}
	}
	if req.Who == "" || req.Why == "" {
		return usageError{errors.New("an operator action needs --who and a reason (--why or --note)")}
	}
	cl, done, err := o.open(name)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	st, err := cl.Status(ctx, req.ID)
	if errors.Is(err, orchestrator.ErrUnknownTx) {
		return fmt.Errorf("no saga %s on this NATS: it never began here, or it finished longer ago than the coordinator's --retention", req.ID)
	}
	if err != nil {
		return err
	}
	st, err = sagaAct(ctx, cl, st, req)
	if err != nil {
		return err
	}
	return printStatus(cmd.OutOrStdout(), st, o.jsonOut)
}

func newTxRetry() *cobra.Command {
	var (
		o        txClient
		who, why string
	)
	c := &cobra.Command{
		Use:   "retry ID",
		Short: "Retry now every step of a saga waiting for its back-off",
		Long: `retry asks the coordinator that drives saga ID to send at once the next attempt
of every step waiting for its back-off, action or compensation: the answer to
"the participant is back, and the next retry is an hour away". It counts as an
attempt. The action is recorded in the saga with --who and --why. Exit code 1
when ID is unknown, not a saga, already finished, or has nothing to retry.`,
		Example: `  natstx tx retry order-7 --why "payment service is back"
  natstx tx retry order-7 --who alice --why "ticket 4711" --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSagaAction(cmd, o, "natstx-tx-retry", messages.SagaActRequest{ID: args[0], Action: messages.SagaRetry, Who: who, Why: why})
		},
	}
	o.flags(c, 5*time.Second, "how long to wait for the coordinator to answer")
	c.Flags().StringVar(&who, "who", defaultWho(), "who retries, recorded with the action")
	c.Flags().StringVar(&why, "why", "retry now, by an operator", "why, recorded with the action")
	return c
}

func newTxResolve() *cobra.Command {
	var (
		o               txClient
		who, note, step string
	)
	c := &cobra.Command{
		Use:   "resolve ID --step STEP --note TEXT",
		Short: "Mark a stuck saga step compensated (or, past the pivot, done) by hand",
		Long: `resolve tells the coordinator that drives saga ID that the operator undid step
STEP's effect some other way: a step whose compensation keeps failing becomes
compensated-by-hand and the compensations waiting on it go on. Past the pivot,
a step being retried forward is marked done by hand instead. The note and
--who are recorded in the saga and shown by 'tx status'. Exit code 1 when ID
is unknown, not a saga, already finished, has no such step, or the step is
not one that can be resolved.`,
		Example: `  natstx tx resolve order-7 --step charge --note "refunded by hand, ticket 4711"
  natstx tx resolve order-7 --step ship --note "booked by phone" --who alice --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if step == "" || note == "" {
				return usageError{errors.New("resolve needs --step (the step resolved) and --note (what was done by hand)")}
			}
			return runSagaAction(cmd, o, "natstx-tx-resolve", messages.SagaActRequest{ID: args[0], Action: messages.SagaResolve, Step: step, Who: who, Why: note})
		},
	}
	o.flags(c, 5*time.Second, "how long to wait for the coordinator to answer")
	c.Flags().StringVar(&step, "step", "", "the step resolved by hand")
	c.Flags().StringVar(&note, "note", "", "what was done by hand, recorded with the step")
	c.Flags().StringVar(&who, "who", defaultWho(), "who resolves, recorded with the step")
	return c
}
