package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/spf13/cobra"

	"github.com/natstx/natstx/messages"
)

type publishOptions struct {
	natsURL     string
	participant string
	txid        string
	op          string
	payload     string
	payloadFile string
	deadline    time.Duration
	attempt     int
	timeout     time.Duration
	jsonOut     bool
}

// publishResult is what publish prints; --json prints it as one object.
type publishResult struct {
	Subject     string  `json:"subject"`
	Stream      string  `json:"stream"`
	Sequence    uint64  `json:"sequence"`
	TxID        string  `json:"txid"`
	Op          string  `json:"op"`
	Participant string  `json:"participant"`
	Attempt     int     `json:"attempt"`
	Result      string  `json:"result"`
	Reason      string  `json:"reason,omitempty"`
	ReplyMs     float64 `json:"reply_ms"`
}

func newPublish() *cobra.Command {
	var o publishOptions
	c := &cobra.Command{
		Use:   "publish",
		Short: "Send one raw protocol command to a participant and print its reply",
		Long: `publish is the CLI publisher: it sends one protocol command (prepare, commit or
abort) to a participant, as a coordinator would, and prints the reply, for
testing a participant by hand.

The command goes into the command stream (JetStream publish, so it is stored
until the participant takes it) on natstx.cmd.<participant>.<txid>, with every
protocol header (version, txid, operation, participant, attempt, deadline,
reply subject, Nats-Msg-Id). Its reply subject is a fresh one of its own,
natstx.reply.publish-<unique>.<participant>, that publish listens on until
--timeout.

It plays the coordinator: under the identities of 'natstx auth init' it needs
the coordinator's credentials (--creds coordinator.creds), the only identity
that may publish commands and read replies.

JetStream drops a command whose Nats-Msg-Id (<txid>.<op>.<participant>.<attempt>)
it stored in the last two minutes: to send the same command again, raise
--attempt.

Exit codes: 0 a reply arrived (whatever it says: vote-commit, vote-abort, ack,
failed); 1 no reply within --timeout, or NATS/JetStream unreachable; 2 bad
usage.`,
		Example: `  natstx publish --participant inventory --tx order-1 --op prepare --payload '{"item":"widget","qty":1}'
  natstx publish --participant inventory --tx order-1 --op commit
  natstx publish --participant payment --tx order-2 --op abort --json
  natstx publish --participant inventory --tx order-1 --op commit --attempt 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmdMsg, err := o.command()
			if err != nil {
				return err
			}
			return runPublish(cmd, o, cmdMsg)
		},
	}
	f := c.Flags()
	addNATSFlag(c, &o.natsURL)
	f.StringVarP(&o.participant, "participant", "p", "", "participant to send the command to (required)")
	f.StringVar(&o.txid, "tx", "", "transaction ID (required)")
	f.StringVar(&o.op, "op", "", "operation: prepare, commit, abort or commit-one-phase (required)")
	f.StringVar(&o.payload, "payload", "", "payload of a prepare or commit-one-phase, sent as is (e.g. JSON)")
	f.StringVar(&o.payloadFile, "payload-file", "", "read the payload of a prepare or commit-one-phase from this file")
	f.DurationVar(&o.deadline, "deadline", 30*time.Second, "prepare and commit-one-phase only: the transaction's deadline, from now (0: none)")
	f.IntVar(&o.attempt, "attempt", 1, "attempt number; a new one makes JetStream store a command it already has")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for the reply")
	f.BoolVar(&o.jsonOut, "json", false, "print the result as one JSON object")
	for _, name := range []string{"participant", "tx", "op"} {
		_ = c.MarkFlagRequired(name)
	}
	_ = c.RegisterFlagCompletionFunc("op", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{string(messages.OpPrepare), string(messages.OpCommit), string(messages.OpAbort), string(messages.OpCommitOnePhase)}, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

// command builds and validates the command the flags describe.
func (o publishOptions) command() (messages.Command, error) {
	op := messages.Op(strings.ToLower(o.op))
	if !op.TwoPhase() {
		return messages.Command{}, usageError{fmt.Errorf("--op %q: want prepare, commit, abort or commit-one-phase", o.op)}
	}
	for _, n := range []struct{ flag, what, v string }{{"participant", "participant", o.participant}, {"tx", "transaction ID", o.txid}} {
		if err := messages.ValidateName(n.what, n.v); err != nil {
			return messages.Command{}, usageError{fmt.Errorf("--%s: %w", n.flag, err)}
		}
	}
	if o.attempt < 1 {
		return messages.Command{}, usageError{fmt.Errorf("--attempt %d: it counts from 1", o.attempt)}
	}
	if o.timeout <= 0 {
		return messages.Command{}, usageError{errors.New("--timeout must be positive")}
	}
	if o.payload != "" && o.payloadFile != "" {
		return messages.Command{}, usageError{errors.New("give --payload or --payload-file, not both")}
	}
	payload := []byte(o.payload)
	if o.payloadFile != "" {
		b, err := os.ReadFile(o.payloadFile)
		if err != nil {
			return messages.Command{}, usageError{fmt.Errorf("--payload-file: %w", err)}
		}
		payload = b
	}
	if !op.Votes() && len(payload) > 0 {
		return messages.Command{}, usageError{fmt.Errorf("only prepare and commit-one-phase carry a payload; drop --payload for %s", op)}
	}
	c := messages.Command{TxID: o.txid, Op: op, Participant: o.participant, Attempt: o.attempt, Payload: payload}
	if op.Votes() && o.deadline > 0 {
		c.Deadline = time.Now().Add(o.deadline)
	}
	return c, nil
}

func runPublish(cmd *cobra.Command, o publishOptions, c messages.Command) error {
	// As the coordinator it plays: the NATS default inbox, not the
	// operators' (whose account receives what is delivered there).
	nc, err := connectAs(o.natsURL, "natstx-publish", "")
	if err != nil {
		return err
	}
	defer nc.Close()
	// A reply subject as a coordinator's (not an inbox): a participant may
	// publish its replies only there (messages.ParticipantPermissions), and
	// from the participants' account of `natstx auth init` only there
	// reach natstx's (messages.AccountImports).
	inbox := messages.ReplySubject("publish-"+nuid.Next(), c.Participant)
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("subscribing to the reply subject: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	c.ReplyTo = inbox
	if err := c.Validate(); err != nil {
		return usageError{err}
	}
	// Publishing commands is the coordinator's, in the account that holds
	// the command stream: JetStream of its own, no prefix.
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	start := time.Now()
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: c.Subject(), Header: nats.Header(c.Header()), Data: c.Payload})
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return fmt.Errorf("no JetStream stream stores %s: is a coordinator running on this NATS? ('natstx server' declares stream %s)", c.Subject(), messages.CommandStream)
	case err != nil:
		return fmt.Errorf("publishing %s to %s: %w", c.Op, c.Subject(), err)
	case ack.Duplicate:
		return fmt.Errorf("stream %s already holds this command (Nats-Msg-Id %s), so JetStream dropped it; send it again with --attempt %d",
			ack.Stream, messages.MsgID(c.TxID, c.Op, c.Participant, c.Attempt), c.Attempt+1)
	}
	msg, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return fmt.Errorf("published %s to %s (stream %s, sequence %d), but no reply within %v: is participant %s running on this NATS?",
			c.Op, c.Subject(), ack.Stream, ack.Sequence, o.timeout, c.Participant)
	}
	took := time.Since(start)
	r, err := messages.DecodeReply(msg.Header, msg.Data)
	if err != nil {
		return fmt.Errorf("the reply on %s is malformed: %w", inbox, err)
	}
	res := publishResult{
		Subject: c.Subject(), Stream: ack.Stream, Sequence: ack.Sequence, TxID: r.TxID, Op: string(r.Op),
		Participant: r.Participant, Attempt: r.Attempt, Result: string(r.Result), Reason: r.Reason,
		ReplyMs: float64(took.Microseconds()) / 1000,
	}
	out := cmd.OutOrStdout()
	if o.jsonOut {
		return json.NewEncoder(out).Encode(res)
	}
	fmt.Fprintf(out, "published %s for %s to %s (stream %s, sequence %d, attempt %d)\n", c.Op, c.TxID, c.Subject(), ack.Stream, ack.Sequence, c.Attempt)
	line := fmt.Sprintf("reply from %s after %.1fms: %s", r.Participant, res.ReplyMs, r.Result)
	if r.Reason != "" {
		line += ": " + r.Reason
	}
	fmt.Fprintln(out, line)
	return nil
}
