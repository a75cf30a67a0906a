package wire

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
)

// Case is one conformance case.
type Case struct {
	// Name identifies the case in reports and in selections.
	Name string
	// Doc says what the case checks, in one sentence.
	Doc string
	// Saga marks a case of the saga operations (action, compensate), which
	// a participant of two-phase commit only does not implement.
	Saga bool
	run  func(e *Env)
}

// Status is a case's verdict.
type Status string

// The verdicts of a case.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Result is the outcome of one case.
type Result struct {
	Case   Case
	Status Status
	// Message says why a case failed or was skipped.
	Message string
	// Notes are what the case could not check (no audit API, no way to
	// restart the participant) and what it observed.
	Notes   []string
	Elapsed time.Duration
}

// Env is what a case sees while it runs: the probe and helpers that stop
// the case on the first failure.
type Env struct {
	ctx   context.Context
	p     *Probe
	c     Case
	notes []string
}

// stop ends a case early: failed, or skipped.
type stop struct {
	status Status
	msg    string
}

// Fatalf fails the case.
func (e *Env) Fatalf(format string, args ...any) {
	panic(stop{Fail, fmt.Sprintf(format, args...)})
}

// Skipf skips the case, saying why.
func (e *Env) Skipf(format string, args ...any) {
	panic(stop{Skip, fmt.Sprintf(format, args...)})
}

// Notef adds a note to the case's result, once.
func (e *Env) Notef(format string, args ...any) {
	if n := fmt.Sprintf(format, args...); !slices.Contains(e.notes, n) {
		e.notes = append(e.notes, n)
	}
}

// Run runs case c against the probe, which must have started, and then
// checks that the participant settled every command (acknowledged or
// terminated it) and sent no reply a coordinator would drop.
func (p *Probe) Run(ctx context.Context, c Case) (res Result) {
	start := time.Now()
	e := &Env{ctx: ctx, p: p, c: c}
	res = Result{Case: c, Status: Pass}
	p.mu.Lock()
	p.bad = nil
	p.mu.Unlock()
	defer func() {
		res.Elapsed = time.Since(start)
		res.Notes = e.notes
		if r := recover(); r != nil {
			s, ok := r.(stop)
			if !ok {
				panic(r)
			}
			res.Status, res.Message = s.status, s.msg
		}
	}()
	c.run(e)
	if err := p.settled(ctx, p.wait()); err != nil {
		e.Fatalf("%v", err)
	}
	p.mu.Lock()
	bad := p.bad
	p.mu.Unlock()
	if len(bad) > 0 {
		e.Fatalf("%s", strings.Join(bad, "; "))
	}
	return res
}

// TxID returns a transaction ID unique to this run, case and tag.
func (e *Env) TxID(tag string) string {
	id := e.p.run + "-" + e.c.Name + "-" + tag
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	if !slices.Contains(e.p.used[e.c.Name], id) {
		e.p.used[e.c.Name] = append(e.p.used[e.c.Name], id)
	}
	return id
}

// TxIDs returns the transaction (and saga) IDs case used so far, in the
// order it first used them.
func (p *Probe) TxIDs(caseName string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.used[caseName])
}

// Cmd is a two-phase commit command of this probe: its reply subject, and
// the probe's payload on a prepare or a commit-one-phase.
func (e *Env) Cmd(txid string, op messages.Op, attempt int) messages.Command {
	c := messages.Command{TxID: txid, Op: op, Participant: e.p.Participant, Attempt: attempt, ReplyTo: e.p.ReplySubject()}
	if op == messages.OpPrepare || op == messages.OpCommitOnePhase {
		c.Payload = e.p.Payload
	}
	return c
}

// SagaCmd is a saga command for step of saga, with the probe's action or
// compensation payload.
func (e *Env) SagaCmd(saga string, op messages.Op, step string, attempt int) messages.Command {
	c := e.Cmd(saga, op, attempt)
	c.Step = step
	if op == messages.OpAction {
		c.Payload = e.p.ActionPayload
	} else {
		c.Payload = e.p.CompensatePayload
	}
	return c
}

// sender gives each publish its own Nats-Msg-Id, so that the stream stores a
// deliberate duplicate (the same command again, as a redelivery looks).
func (e *Env) sender() string {
	e.p.sends++
	return "conformance" + strconv.Itoa(e.p.sends)
}

// Publish stores one message in the command stream.
func (e *Env) Publish(subject string, h map[string][]string, body []byte) {
	ctx, cancel := context.WithTimeout(e.ctx, e.p.wait())
	defer cancel()
	if _, err := e.p.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: nats.Header(h), Data: body}); err != nil {
		e.Fatalf("publishing to %s: %v", subject, err)
	}
}

// Send publishes cmd as a message of its own.
func (e *Env) Send(cmd messages.Command) {
	cmd.Sender = e.sender()
	e.Publish(cmd.Subject(), cmd.Header(), cmd.Payload)
}

// SendBatch publishes cmds as one batch message, as a coordinator under
// load does.
func (e *Env) SendBatch(cmds ...messages.Command) {
	id := e.sender()
	h, body, err := messages.EncodeCommandBatch(e.p.Participant, e.p.run+"."+id, cmds)
	if err != nil {
		e.Fatalf("encoding a batch: %v", err)
	}
	e.Publish(messages.BatchSubject(e.p.Participant, e.p.run+id), h, body)
}

// Await returns the next unread reply about txid's op (and step), failing
// the case after limit.
func (e *Env) Await(txid string, op messages.Op, step string, limit time.Duration) Received {
	r, ok := e.next(txid, op, step, limit)
	if !ok {
		what := string(op) + " of " + txid
		if step != "" {
			what = string(op) + " of step " + step + " of saga " + txid
		}
		e.Fatalf("no reply to %s on %s within %s", what, e.p.ReplySubject(), limit)
	}
	return r
}

func (e *Env) next(txid string, op messages.Op, step string, limit time.Duration) (Received, bool) {
	k := key(txid, op, step)
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		e.p.mu.Lock()
		if rs := e.p.inbox[k]; len(rs) > 0 {
			e.p.inbox[k] = rs[1:]
			e.p.mu.Unlock()
			return rs[0], true
		}
		ch := e.p.changed
		e.p.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return Received{}, false
		case <-e.ctx.Done():
			e.Fatalf("stopped: %v", e.ctx.Err())
		}
	}
}

// pause waits d, or fails the case when its context ends.
func (e *Env) pause(d time.Duration) {
	select {
	case <-time.After(d):
	case <-e.ctx.Done():
		e.Fatalf("stopped: %v", e.ctx.Err())
	}
}

// Want is what a reply must say. Reason "*" accepts any reason; Code is
// checked only when CheckCode is set.
type Want struct {
	Result    messages.Result
	Reason    string
	Code      string
	CheckCode bool
}

// Expect sends cmd alone and checks its reply.
func (e *Env) Expect(cmd messages.Command, want Want) messages.Reply {
	e.Send(cmd)
	return e.Check(cmd, want)
}

// Check waits for the reply to cmd and checks it: the result, reason and
// code wanted, and the transaction, operation, step and attempt echoed.
func (e *Env) Check(cmd messages.Command, want Want) messages.Reply {
	r := e.Await(cmd.TxID, cmd.Op, cmd.Step, e.p.wait()).Reply
	what := describe(cmd)
	switch {
	case r.Result != want.Result:
		e.Fatalf("%s: answered %s%s, want %s", what, r.Result, reasonText(r), want.Result)
	case want.Reason != "*" && r.Reason != want.Reason:
		e.Fatalf("%s: answered %s with reason %q, want reason %q", what, r.Result, r.Reason, want.Reason)
	case want.CheckCode && r.Code != want.Code:
		e.Fatalf("%s: answered %s with code %q, want code %q", what, r.Result, r.Code, want.Code)
	case r.Attempt != cmd.Attempt:
		e.Fatalf("%s: the reply says attempt %d, want the command's %d echoed", what, r.Attempt, cmd.Attempt)
	}
	return r
}

// Quietly checks that no further reply about txid's op comes within the
// probe's quiet period: the command was not delivered again.
func (e *Env) Quietly(txid string, op messages.Op, step string, why string) {
	if r, ok := e.next(txid, op, step, e.p.quiet()); ok {
		e.Fatalf("%s: another reply came (%s%s, attempt %d): %s", describe(messages.Command{TxID: txid, Op: op, Step: step}), r.Reply.Result, reasonText(r.Reply), r.Reply.Attempt, why)
	}
}

// WantStates checks, through the audit API, what the participant holds
// about each transaction; without an audit API it notes that it could not.
func (e *Env) WantStates(want map[string]string) {
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	got, err := e.p.Audit(e.ctx, ids...)
	if err == ErrNoAudit {
		e.Notef("states not checked: %v", err)
		return
	}
	if err != nil {
		e.Fatalf("%v", err)
	}
	for _, id := range ids {
		if got[id] != want[id] {
			e.Fatalf("audit says %s is %q, want %q", id, got[id], want[id])
		}
	}
}

// WantCalls checks that the participant's handler ran op for key n times,
// when the probe can count them (Probe.Calls).
func (e *Env) WantCalls(op messages.Op, k string, n int) {
	if e.p.Calls == nil {
		return
	}
	if got := e.p.Calls(op, k); got != n {
		e.Fatalf("the handler ran %s of %s %d times, want %d", op, k, got, n)
	}
}

func describe(c messages.Command) string {
	s := string(c.Op) + " of " + c.TxID
	if c.Step != "" {
		s = string(c.Op) + " of step " + c.Step + " of saga " + c.TxID
	}
	if c.Attempt > 0 {
		s += " (attempt " + strconv.Itoa(c.Attempt) + ")"
	}
	return s
}

func reasonText(r messages.Reply) string {
	s := ""
	if r.Reason != "" {
		s += fmt.Sprintf(" (%q)", r.Reason)
	}
	if r.Code != "" {
		s += " code " + r.Code
	}
	return s
}
