package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants/conformance/wire"
)

// errConformance makes `natstx conformance` exit 1 after its report.
var errConformance = errors.New("conformance failed")

type conformanceOptions struct {
	natsURL     string
	participant string
	payload     string
	action      string
	compensate  string
	sagas       bool
	run         string
	start       string
	timeout     time.Duration
	inDoubtWait time.Duration
	crashWait   time.Duration
	list        bool
	jsonOut     bool
}

func newConformance() *cobra.Command {
	o := conformanceOptions{}
	c := &cobra.Command{
		Use:   "conformance --participant NAME",
		Short: "Check a running participant, in any language, against the wire protocol",
		Long: `conformance checks one running participant over NATS, whatever language it is
written in, against the wire protocol of docs/PROTOCOL.md. It publishes
commands into the command stream NATSTX_CMD on natstx.cmd.<participant>.<txid>
(alone and in batch messages), with a reply subject of its own,
natstx.reply.<conformance-instance>.<participant>, and checks the replies: the
vote, the same vote for a duplicate prepare, a late prepare after an abort
voting abort, commit and abort idempotent, contradictions answered failed, an
expired deadline voting abort, malformed commands answered failed or
terminated, batches, the audit API (natstx.audit.<participant>), saga steps,
and the in-doubt question the participant asks on natstx.api.v1.outcome (which
it answers itself when no coordinator does). After each case every command
must be acknowledged or terminated. Each run uses new transaction IDs.

The crash case needs a way to kill the participant between applying a
command and replying: with --start CMD, conformance runs the participant
itself (sh -c CMD), restarts it with NATSTX_CRASH_AT=after-prepare-apply:1
(then after-commit-apply:1), which the participant must honour by dying at
that point, and checks that the command delivered again after the restart is
answered as before. Without --start the case is skipped with a note. Give the
participant a short ack wait (natstx participant --ack-wait 2s): a command
comes back that long after the crash.

Run it against a participant no coordinator is using: the command stream
must exist (natstx server declares it), and the identity needs the
coordinator's permissions (it publishes commands).

It prints each case with PASS, FAIL (and why) or SKIP, and exits 1 if any
case failed.`,
		Example: `  natstx conformance --participant loyalty
  natstx conformance --participant inventory --payload '{"item": "widget", "qty": 1}' \
    --start 'natstx participant inventory --db /tmp/inv.db --ack-wait 2s --in-doubt-after 1s'
  natstx conformance --participant ledger --sagas=false --run 'prepare|batch'
  natstx conformance --list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runConformance(cmd, o) },
	}
	addNATSFlag(c, &o.natsURL)
	f := c.Flags()
	f.StringVar(&o.participant, "participant", "", "name of the participant to check (required)")
	f.StringVar(&o.payload, "payload", "{}", "prepare payload the participant votes commit on")
	f.StringVar(&o.action, "action-payload", "", "saga action payload the participant does (default: --payload)")
	f.StringVar(&o.compensate, "compensate-payload", "", "saga compensation payload")
	f.BoolVar(&o.sagas, "sagas", true, "run the saga cases (--sagas=false for a participant of two-phase commit only)")
	f.StringVar(&o.run, "run", "", "run only the cases whose name matches this regular expression")
	f.StringVar(&o.start, "start", "", "shell command that runs the participant; conformance starts it, and kills and restarts it for the crash case")
	f.DurationVar(&o.timeout, "timeout", wire.DefaultWait, "how long to wait for each reply")
	f.DurationVar(&o.inDoubtWait, "in-doubt-wait", wire.DefaultInDoubtWait, "how long to wait for the participant's in-doubt question (negative: skip the case)")
	f.DurationVar(&o.crashWait, "crash-wait", wire.DefaultCrashWait, "how long to wait for a command delivered again after a crash")
	f.BoolVar(&o.list, "list", false, "list the cases and exit")
	f.BoolVar(&o.jsonOut, "json", false, "print one JSON object per case instead of text")
	return c
}

// conformanceResult is one case in --json output.
type conformanceResult struct {
	Case      string   `json:"case"`
	Status    string   `json:"status"`
	Message   string   `json:"message,omitempty"`
	Notes     []string `json:"notes,omitempty"`
	ElapsedMs int64    `json:"elapsed_ms"`
}

func runConformance(cmd *cobra.Command, o conformanceOptions) error {
	out := cmd.OutOrStdout()
	var re *regexp.Regexp
	if o.run != "" {
		var err error
		if re, err = regexp.Compile(o.run); err != nil {
			return usageError{fmt.Errorf("--run: %w", err)}
		}
	}
	var cases []wire.Case
	for _, c := range wire.Cases() {
		if (re == nil || re.MatchString(c.Name)) && (o.sagas || !c.Saga) {
			cases = append(cases, c)
		}
	}
	if o.list {
		for _, c := range wire.Cases() {
			fmt.Fprintf(out, "%-24s %s\n", c.Name, c.Doc)
		}
		return nil
	}
	switch {
	case o.participant == "":
		return usageError{errors.New("--participant is required: the name of the participant to check")}
	case messages.ValidateName("participant", o.participant) != nil:
		return usageError{fmt.Errorf("--participant: %w", messages.ValidateName("participant", o.participant))}
	case o.timeout <= 0 || o.crashWait <= 0 || o.inDoubtWait == 0:
		return usageError{errors.New("--timeout and --crash-wait must be positive, --in-doubt-wait not 0")}
	case len(cases) == 0:
		return usageError{fmt.Errorf("no case matches --run %q (see --list)", o.run)}
	}
	if o.action == "" {
		o.action = o.payload
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	nc, err := connectAs(o.natsURL, "natstx-conformance", "") // it plays the coordinator: its inbox is the NATS default
	if err != nil {
		return err
	}
	defer nc.Close()
	p := &wire.Probe{
		Conn: nc, Participant: o.participant, Payload: []byte(o.payload),
		ActionPayload: []byte(o.action), CompensatePayload: []byte(o.compensate),
		Wait: o.timeout, InDoubtWait: o.inDoubtWait, CrashWait: o.crashWait,
	}
	if o.start != "" {
		ch := &child{command: o.start, log: &lockedWriter{w: cmd.ErrOrStderr(), mu: &sync.Mutex{}}}
		if err := ch.launch(""); err != nil {
			return err
		}
		defer ch.shutdown()
		p.Crash = ch
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	defer p.Close()
	if !o.jsonOut {
		fmt.Fprintf(out, "conformance of participant %s (protocol %d): commands on %s, replies on %s\n",
			o.participant, messages.Version, messages.CommandSubject(o.participant, "<txid>"), p.ReplySubject())
	}
	var failed []string
	passed, skipped := 0, 0
	for _, c := range cases {
		res := p.Run(ctx, c)
		switch res.Status {
		case wire.Pass:
			passed++
		case wire.Fail:
			failed = append(failed, c.Name)
		case wire.Skip:
			skipped++
		}
		if o.jsonOut {
			if err := json.NewEncoder(out).Encode(conformanceResult{Case: c.Name, Status: string(res.Status), Message: res.Message,
				Notes: res.Notes, ElapsedMs: res.Elapsed.Milliseconds()}); err != nil {
				return err
			}
			continue
		}
		line := fmt.Sprintf("%-4s  %-24s %6.2fs", res.Status, c.Name, res.Elapsed.Seconds())
		if res.Message != "" {
			line += "  " + res.Message
		}
		fmt.Fprintln(out, line)
		for _, n := range res.Notes {
			fmt.Fprintln(out, "      note: "+n)
		}
	}
	if !o.jsonOut {
		fmt.Fprintf(out, "conformance: %d passed, %d failed, %d skipped\n", passed, len(failed), skipped)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %s", errConformance, strings.Join(failed, ", "))
	}
	return nil
}

// child is the participant run by --start: a shell command in its own
// process group, which the crash case restarts with NATSTX_CRASH_AT. Its
// standard error goes to log (and is kept for error messages); its
// standard output is discarded.
type child struct {
	command string
	log     io.Writer

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *bytes.Buffer
}

// launch starts the command, with NATSTX_CRASH_AT=crashAt if not empty.
func (c *child) launch(crashAt string) error {
	cmd := exec.Command("sh", "-c", c.command)
	cmd.Env = os.Environ()
	if crashAt != "" {
		cmd.Env = append(cmd.Env, envCrashAt+"="+crashAt)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = io.MultiWriter(&lockedWriter{w: &stderr, mu: &c.mu}, c.log)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("--start: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	c.mu.Lock()
	c.cmd, c.done, c.stderr = cmd, done, &stderr
	c.mu.Unlock()
	return nil
}

// lockedWriter serialises writes to w with mu.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tail returns the end of the child's stderr.
func (c *child) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.TrimSpace(c.stderr.String())
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// running returns the current process and its done channel.
func (c *child) running() (*exec.Cmd, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd, c.done
}

// shutdown stops the child: SIGTERM to its process group, SIGKILL after 10s.
func (c *child) shutdown() {
	cmd, done := c.running()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// ArmCrash restarts the participant with NATSTX_CRASH_AT=after-<op>-apply:1.
func (c *child) ArmCrash(_ context.Context, op messages.Op) error {
	c.shutdown()
	return c.launch("after-" + string(op) + "-apply:1")
}

// Crashed waits for the participant to die.
func (c *child) Crashed(ctx context.Context) error {
	cmd, done := c.running()
	select {
	case <-done:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // anything it left behind
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: the participant (%s) did not die; does it honour %s? stderr: %s", ctx.Err(), c.command, envCrashAt, c.tail())
	}
}

// Restart starts the participant again, disarmed.
func (c *child) Restart(context.Context) error { return c.launch("") }
