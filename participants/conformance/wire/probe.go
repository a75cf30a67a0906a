// Package wire is natstx's black-box participant conformance check: cases
// that drive one running participant, whatever its language, over NATS
// only, as a coordinator would, and check its answers against
// docs/PROTOCOL.md.
//
// A Probe publishes commands into the command stream (NATSTX_CMD) on
// natstx.cmd.<participant>.<txid>, with a reply subject of its own,
// natstx.reply.<instance>.<participant>, reads the replies there (single or
// batched), asks the participant's audit API what it holds, and observes
// (and answers) the in-doubt questions the participant asks on
// natstx.api.v1.outcome. Every run uses fresh transaction IDs, so a
// participant's record of an earlier run does not matter.
//
// `natstx conformance --participant NAME` runs Cases against a running
// participant; package conformance's Go suite runs the same cases against
// the native Runtime and the watermill adapter, where it also checks the
// handler's call counts (Probe.Calls).
package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/natstx/natstx/messages"
)

// Defaults of Probe.
const (
	// DefaultWait bounds each wait for one reply.
	DefaultWait = 10 * time.Second
	// DefaultInDoubtWait bounds the wait for an in-doubt question; the Go
	// runtime asks 10 to 15 seconds after its vote by default.
	DefaultInDoubtWait = 30 * time.Second
	// DefaultCrashWait bounds the wait for a command to be delivered again
	// after a crash: the participant consumer's AckWait (30s by default)
	// plus the restart.
	DefaultCrashWait = 60 * time.Second
	// DefaultQuiet is how long a probe listens to make sure that nothing
	// more is answered (a command that must not be delivered again).
	DefaultQuiet = time.Second
)

// ErrNoAudit is returned by Probe.Audit when the participant does not
// serve the audit API.
var ErrNoAudit = errors.New("the participant does not serve the audit API")

// Crasher lets the crash case kill a participant between applying a
// command and replying to it, and start it again. `natstx conformance
// --start CMD` runs the participant as a child process and arms the crash
// with NATSTX_CRASH_AT=after-<op>-apply:1; the Go suite stops a handler
// goroutine there instead.
type Crasher interface {
	// ArmCrash makes the participant die right after it applies its next
	// command of operation op (its effects durable, if it keeps any), before
	// it replies or settles the message.
	ArmCrash(ctx context.Context, op messages.Op) error
	// Crashed returns once the participant died as armed.
	Crashed(ctx context.Context) error
	// Restart starts the participant again, disarmed.
	Restart(ctx context.Context) error
}

// Probe drives one participant over NATS. Set the exported fields, then
// Start; Close when done.
type Probe struct {
	// Conn is the NATS connection; it must be allowed to publish into the
	// command stream (a coordinator's permissions) and to request the
	// participant's audit API.
	Conn *nats.Conn
	// Participant is the name of the participant under test.
	Participant string
	// Payload is a prepare payload the participant votes commit on.
	Payload []byte
	// ActionPayload is a saga action payload the participant does (ack);
	// CompensatePayload goes with its compensations.
	ActionPayload, CompensatePayload []byte
	// Wait bounds each wait for one reply; zero means DefaultWait.
	Wait time.Duration
	// InDoubtWait bounds the wait for an in-doubt question; zero means
	// DefaultInDoubtWait, negative skips the in-doubt case.
	InDoubtWait time.Duration
	// CrashWait bounds the wait for a redelivery after a crash; zero means
	// DefaultCrashWait.
	CrashWait time.Duration
	// Quiet is how long the probe listens for replies that must not come;
	// zero means DefaultQuiet.
	Quiet time.Duration
	// Crash, if set, lets the crash case run; nil skips it with a note.
	Crash Crasher
	// Calls, if set, returns how many times the participant's handler ran
	// op for key (a transaction ID, or "<saga>/<step>" for a saga step): the
	// Go suite, which owns the handler, checks exactly-once effects with
	// it. Nil checks only what the wire shows.
	Calls func(op messages.Op, key string) int

	run      string // this run's unique prefix of transaction IDs
	instance string // the reply subject's instance token
	js       jetstream.JetStream
	replies  *nats.Subscription
	outcomes *nats.Subscription
	sends    int

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced when anything arrives
	inbox     map[string][]Received
	bad       []string                             // replies that broke the protocol
	questions map[string][]messages.OutcomeRequest // in-doubt questions, by ID
	answers   map[string]string                    // outcome to answer, by ID
	held      map[string]bool                      // IDs whose questions go unanswered
	used      map[string][]string                  // IDs each case used
}

// Received is one reply as it arrived.
type Received struct {
	Reply   messages.Reply
	Subject string
	// Batched is true for a reply that came in a reply batch.
	Batched bool
	At      time.Time
}

func (p *Probe) wait() time.Duration { return orDefault(p.Wait, DefaultWait) }

func (p *Probe) quiet() time.Duration { return orDefault(p.Quiet, DefaultQuiet) }

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Start checks that the command stream and the participant's durable
// consumer exist (waiting up to Wait for the consumer: the participant may
// be starting) and subscribes to the replies and the in-doubt questions.
func (p *Probe) Start(ctx context.Context) error {
	if p.Conn == nil {
		return errors.New("conformance: no NATS connection")
	}
	if err := messages.ValidateName("participant", p.Participant); err != nil {
		return fmt.Errorf("conformance: %w", err)
	}
	id := nuid.Next()
	p.run = "cf" + id[len(id)-10:]
	p.instance = "conformance-" + id[len(id)-8:]
	p.changed = make(chan struct{})
	p.inbox = map[string][]Received{}
	p.questions = map[string][]messages.OutcomeRequest{}
	p.answers = map[string]string{}
	p.held = map[string]bool{}
	p.used = map[string][]string{}
	js, err := jetstream.New(p.Conn)
	if err != nil {
		return err
	}
	p.js = js
	sctx, cancel := context.WithTimeout(ctx, p.wait())
	defer cancel()
	if _, err := js.Stream(sctx, messages.CommandStream); err != nil {
		return fmt.Errorf("conformance: the command stream %s: %w; start a natstx coordinator (natstx server), which declares it", messages.CommandStream, err)
	}
	for {
		_, err := js.Consumer(sctx, messages.CommandStream, messages.ConsumerName(p.Participant))
		if err == nil {
			break
		}
		if sctx.Err() != nil || !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("conformance: participant %s has no durable consumer %s on %s (%v): is it running?",
				p.Participant, messages.ConsumerName(p.Participant), messages.CommandStream, err)
		}
		select {
		case <-sctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if p.replies, err = p.Conn.Subscribe(messages.ReplyFilter(p.instance), p.onReply); err != nil {
		return err
	}
	if p.outcomes, err = p.Conn.Subscribe(messages.APIOutcome, p.onQuestion); err != nil {
		_ = p.replies.Unsubscribe()
		return err
	}
	return p.Conn.FlushWithContext(sctx)
}

// Close ends the subscriptions.
func (p *Probe) Close() {
	if p.replies != nil {
		_ = p.replies.Unsubscribe()
	}
	if p.outcomes != nil {
		_ = p.outcomes.Unsubscribe()
	}
}

// Instance is the instance token of the probe's reply subject.
func (p *Probe) Instance() string { return p.instance }

// ReplySubject is where the participant must answer the probe's commands.
func (p *Probe) ReplySubject() string { return messages.ReplySubject(p.instance, p.Participant) }

// notify wakes every waiter; the caller holds mu.
func (p *Probe) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// onReply decodes a reply message (alone or a batch) and files each reply
// under its transaction, operation and step; a reply that breaks the
// protocol is kept as a complaint instead.
func (p *Probe) onReply(m *nats.Msg) {
	h := map[string][]string(m.Header)
	type item struct {
		h    map[string][]string
		body []byte
	}
	var items []item
	batched := messages.IsBatch(h)
	var bad []string
	if batched {
		its, err := messages.DecodeBatch(h, m.Data)
		if err != nil {
			bad = append(bad, fmt.Sprintf("reply batch on %s does not decode: %v", m.Subject, err))
		}
		for _, it := range its {
			items = append(items, item{it.Header, it.Body})
		}
	} else {
		items = []item{{h, m.Data}}
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, it := range items {
		r, err := messages.DecodeReply(it.h, it.body)
		if err == nil {
			err = messages.CheckReplySubject(m.Subject, r)
		}
		if err == nil && r.Participant != p.Participant {
			err = fmt.Errorf("reply in the name of %q to commands for %q", r.Participant, p.Participant)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("reply on %s dropped by any coordinator: %v (headers %v)", m.Subject, err, it.h))
			continue
		}
		k := key(r.TxID, r.Op, r.Step)
		p.inbox[k] = append(p.inbox[k], Received{Reply: r, Subject: m.Subject, Batched: batched, At: now})
	}
	p.bad = append(p.bad, bad...)
	p.notify()
}

// onQuestion records an in-doubt question about one of this run's
// transactions and answers it as told by Decide (pending until then), or
// not at all while the case holds its questions. It
// leaves the questions of other transactions to the coordinators.
func (p *Probe) onQuestion(m *nats.Msg) {
	var q messages.OutcomeRequest
	if err := json.Unmarshal(m.Data, &q); err != nil || !strings.HasPrefix(q.ID, p.run+"-") {
		return
	}
	p.mu.Lock()
	p.questions[q.ID] = append(p.questions[q.ID], q)
	if p.held[q.ID] {
		// No answer: the participant's question times out, as when the
		// coordinator it reached is paused.
		p.notify()
		p.mu.Unlock()
		return
	}
	resp := messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "natstx conformance"}
	if o, ok := p.answers[q.ID]; ok {
		resp.Outcome = o
	}
	p.notify()
	p.mu.Unlock()
	data, _ := json.Marshal(resp)
	_ = m.Respond(data)
}

func key(txid string, op messages.Op, step string) string {
	return txid + " " + string(op) + " " + step
}

// Audit asks the participant for its local state of ids (none, prepared,
// committed, aborted). It returns ErrNoAudit when nobody serves the audit
// subject.
func (p *Probe) Audit(ctx context.Context, ids ...string) (map[string]string, error) {
	data, _ := json.Marshal(messages.AuditRequest{IDs: ids})
	ctx, cancel := context.WithTimeout(ctx, p.wait())
	defer cancel()
	m, err := p.Conn.RequestWithContext(ctx, messages.AuditSubject(p.Participant), data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, ErrNoAudit
	}
	if err != nil {
		return nil, fmt.Errorf("audit request on %s: %w", messages.AuditSubject(p.Participant), err)
	}
	var resp messages.AuditResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("audit answer %q is not an AuditResponse: %w", m.Data, err)
	}
	switch {
	case resp.Error != "":
		return nil, fmt.Errorf("audit answered error %q", resp.Error)
	case resp.Participant != p.Participant:
		return nil, fmt.Errorf("audit answered for participant %q, want %q", resp.Participant, p.Participant)
	}
	return resp.States, nil
}

// settled waits until the participant's consumer has nothing pending or
// unacknowledged: every command was acknowledged or terminated.
func (p *Probe) settled(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last *jetstream.ConsumerInfo
	for {
		c, err := p.js.Consumer(ctx, messages.CommandStream, messages.ConsumerName(p.Participant))
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = c.Info(ctx); err == nil {
				last = info
				if info.NumAckPending == 0 && info.NumPending == 0 {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				return fmt.Errorf("reading consumer %s: %v", messages.ConsumerName(p.Participant), err)
			}
			return fmt.Errorf("after %s consumer %s still has %d commands unacknowledged and %d undelivered: every command must be acknowledged or terminated once answered",
				limit, messages.ConsumerName(p.Participant), last.NumAckPending, last.NumPending)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
