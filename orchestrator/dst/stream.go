package dst

import (
	"fmt"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

// The simulated command stream is a JetStream work queue with one durable
// consumer per participant: a stored command is delivered after a latency,
// again after AckWait while it is not acknowledged (also while its
// participant is down), again after the nak delay when it is nakked, never
// again once it is acknowledged or terminated, and dropped once it is older
// than MaxAge. A publish whose Nats-Msg-Id the stream stored within its
// Duplicates window is dropped as a duplicate, as JetStream does.

// Timing of the command stream.
const (
	ackWait         = time.Second // the participant consumer's AckWait
	nakDelay        = 200 * time.Millisecond
	duplicateWindow = 2 * time.Minute // CommandStreamConfig's Duplicates
)

// streamMsg is one stored command.
type streamMsg struct {
	seq      int
	cmd      messages.Command
	header   map[string][]string
	storedAt time.Duration
	done     bool
	// deliveries counts the times it was handed to its consumer.
	deliveries int
}

func (m *streamMsg) String() string {
	if m.cmd.Step != "" {
		return fmt.Sprintf("%s %s->%s %s:%s#%d msg=%d", m.cmd.TxID, m.cmd.ReplyTo, m.cmd.Participant, m.cmd.Op, m.cmd.Step, m.cmd.Attempt, m.seq)
	}
	return fmt.Sprintf("%s %s->%s %s#%d msg=%d", m.cmd.TxID, m.cmd.ReplyTo, m.cmd.Participant, m.cmd.Op, m.cmd.Attempt, m.seq)
}

// cmdTarget is the party behind a participant's consumer. deliver hands it
// one message; ok false means it was down or died before settling it (the
// stream redelivers it after AckWait).
type cmdTarget interface {
	deliver(m *streamMsg) (settle participants.Settle, ok bool)
}

// cmdStream is the command stream.
type cmdStream struct {
	e *env
	// maxAge drops commands older than it; 0: none.
	maxAge  time.Duration
	seq     int
	seen    map[string]time.Duration // Nats-Msg-Id -> when it was stored
	seenQ   []seenID                 // the same, oldest first, for pruning
	targets map[string]cmdTarget
	// unacked counts stored commands neither acknowledged, terminated nor
	// expired; unackedBy the same per transaction or saga ID.
	unacked   int
	unackedBy map[string]int
	// sent, when set, sees every command a coordinator publishes, stored
	// or not: the checker learns from it how each transaction was run.
	sent func(messages.Command)
}

type seenID struct {
	id string
	at time.Duration
}

func newStream(e *env, maxAge time.Duration) *cmdStream {
	return &cmdStream{e: e, maxAge: maxAge, seen: map[string]time.Duration{}, targets: map[string]cmdTarget{}, unackedBy: map[string]int{}}
}

// settled counts m as neither acknowledged, terminated nor expired any more.
func (st *cmdStream) settled(m *streamMsg) {
	m.done = true
	st.unacked--
	if st.unackedBy[m.cmd.TxID]--; st.unackedBy[m.cmd.TxID] <= 0 {
		delete(st.unackedBy, m.cmd.TxID)
	}
}

// unackedBut counts the unacknowledged commands but those of the IDs in
// except.
func (st *cmdStream) unackedBut(except map[string]bool) int {
	n := st.unacked
	for id := range except {
		n -= st.unackedBy[id]
	}
	return n
}

// consume attaches participant name's consumer to t.
func (st *cmdStream) consume(name string, t cmdTarget) { st.targets[name] = t }

// publisher is one party's connection to the stream: orchestrator.Commands.
type publisher struct {
	st     *cmdStream
	g      *gate
	writer string
}

var _ orchestrator.Commands = (*publisher)(nil)

func (st *cmdStream) publisher(g *gate, writer string) *publisher {
	return &publisher{st: st, g: g, writer: writer}
}

// Publish sends cmd to the stream without waiting. With probability
// PublishLost it is not stored (half the time the caller hears of it).
func (p *publisher) Publish(cmd messages.Command) error {
	if p.g.state == gateDead {
		return errDead
	}
	e := p.st.e
	if p.st.sent != nil {
		p.st.sent(cmd)
	}
	if e.fault(e.f.PublishLost) {
		e.n.PublishesLost++
		e.tracef("%s publish lost %s %s->%s #%d", p.writer, cmd.TxID, cmd.Op, cmd.Participant, cmd.Attempt)
		if e.rng.IntN(2) == 0 {
			return fmt.Errorf("dst: publishing %s failed", cmd.Op)
		}
		return nil
	}
	hdr := cmd.Header()
	e.s.at(e.latency(), func() { p.st.store(cmd, hdr) })
	return nil
}

// store stores a command unless its Nats-Msg-Id was stored within the
// Duplicates window.
func (st *cmdStream) store(cmd messages.Command, hdr map[string][]string) {
	e := st.e
	now := e.s.now
	n := 0
	for n < len(st.seenQ) && now-st.seenQ[n].at >= duplicateWindow {
		if st.seen[st.seenQ[n].id] == st.seenQ[n].at {
			delete(st.seen, st.seenQ[n].id)
		}
		n++
	}
	st.seenQ = st.seenQ[n:]
	id := ""
	if v := hdr[messages.HeaderMsgID]; len(v) > 0 {
		id = v[0]
	}
	if id != "" {
		if at, dup := st.seen[id]; dup && now-at < duplicateWindow {
			e.n.DuplicateMsgIDs++
			e.tracef("stream drops %s %s->%s #%d: Nats-Msg-Id %s seen %v ago", cmd.TxID, cmd.Op, cmd.Participant, cmd.Attempt, id, now-at)
			return
		}
		st.seen[id] = now
		st.seenQ = append(st.seenQ, seenID{id: id, at: now})
	}
	st.seq++
	m := &streamMsg{seq: st.seq, cmd: cmd, header: hdr, storedAt: now}
	st.unacked++
	st.unackedBy[cmd.TxID]++
	e.tracef("stored %s", m)
	e.s.at(e.latency(), func() { st.deliver(m) })
}

// deliver hands m to its consumer and settles it as the consumer says.
func (st *cmdStream) deliver(m *streamMsg) {
	if m.done {
		return
	}
	e := st.e
	if st.maxAge > 0 && e.s.now-m.storedAt >= st.maxAge {
		st.settled(m)
		e.n.ExpiredCommands++
		e.tracef("expired %s (MaxAge)", m)
		return
	}
	redeliver := func(after time.Duration) {
		e.s.at(after+e.between(0, 10*time.Millisecond), func() { st.deliver(m) })
	}
	t := st.targets[m.cmd.Participant]
	if t == nil {
		redeliver(ackWait)
		return
	}
	m.deliveries++
	e.n.Delivered++
	if m.deliveries > 1 {
		e.n.Redelivered++
	}
	settle, ok := t.deliver(m)
	if !ok {
		redeliver(ackWait)
		return
	}
	switch settle {
	case participants.SettleNak:
		redeliver(nakDelay)
	case participants.SettleAck, participants.SettleTerm:
		if settle == participants.SettleAck && e.fault(e.f.AckLost) {
			e.tracef("ack lost msg=%d", m.seq)
			redeliver(ackWait)
			return
		}
		st.settled(m)
	}
}
