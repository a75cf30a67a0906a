package dst

import (
	"fmt"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/txn"
)

// workTx is one transaction of the workload and what the checker learns of
// it.
type workTx struct {
	id      string
	parts   []string
	votes   map[string]bool // each participant's planned vote
	timeout time.Duration
	beginAt time.Duration
	// coord is the coordinator that began it.
	coord string
	begun bool
	// decisions made by a coordinator's state machine, for the checker.
	decidedCommit, decidedAbort bool
	// clientCommitted: a coordinator finished it committed (Execute returned
	// committed).
	clientCommitted bool
}

// plan draws the workload and schedules its begins, client aborts and the
// moment faults stop.
func (s *sim) plan() {
	at := time.Duration(0)
	for i := range s.cfg.Transactions {
		at += time.Duration(s.rng.ExpFloat64() * float64(meanArrival))
		w := &workTx{
			id:      fmt.Sprintf("tx%05d", i+1),
			votes:   map[string]bool{},
			timeout: s.between(minPrepareTimeout, maxPrepareTimeout),
			beginAt: at,
		}
		n := 2 + s.rng.IntN(4)
		for _, j := range s.rng.Perm(len(s.parts))[:n] {
			name := s.parts[j].name
			w.parts = append(w.parts, name)
			w.votes[name] = s.rng.Float64() >= s.f.VoteNo
		}
		s.work = append(s.work, w)
		s.workBy[w.id] = w
		s.pendingBegins++
		s.after(at, func() { s.begin(w) })
		if s.rng.Float64() < s.f.ClientAbort {
			s.after(at+s.between(0, w.timeout*3/2), func() { s.clientAbort(w) })
		}
	}
	s.after(at+healAfter, s.heal)
}

// begin hands a transaction to a running coordinator; the client retries
// while none runs.
func (s *sim) begin(w *workTx) {
	c := s.upCoordinator()
	if c == nil {
		s.tracef("%s begin: no coordinator running; client retries", w.id)
		s.after(100*time.Millisecond, func() { s.begin(w) })
		return
	}
	s.pendingBegins--
	w.begun, w.coord = true, c.name
	c.begin(w)
}

func (s *sim) clientAbort(w *workTx) {
	c := s.coordBy[w.coord]
	if !w.begun || !c.up {
		return
	}
	en := c.active[w.id]
	if en == nil {
		return
	}
	s.res.Stats.ClientAborts++
	s.tracef("%s %s client abort", c.name, w.id)
	c.step(en, txn.Event{Kind: txn.EventAbort, Reason: "client gave up"})
}

// record is a decision record in the bucket.
type record struct {
	state        string // "committing" or "aborted"
	participants []string
	owner        string
	revision     uint64
}

const (
	recCommitting = "committing"
	recAborted    = "aborted"
)

// store is the key-value bucket of decision records: Create succeeds only if
// the key is absent, Update only at the revision read.
type store struct {
	recs     map[string]*record
	revision uint64
	// history, for the checker: a commit or abort was ever recorded.
	everCommit, everAbort map[string]bool
}

func newStore() *store {
	return &store{recs: map[string]*record{}, everCommit: map[string]bool{}, everAbort: map[string]bool{}}
}

// create writes rec under id if no record exists; else it returns the one
// that does.
func (st *store) create(id string, rec record) (record, bool) {
	if have, ok := st.recs[id]; ok {
		return *have, false
	}
	st.revision++
	rec.revision = st.revision
	st.recs[id] = &rec
	if rec.state == recCommitting {
		st.everCommit[id] = true
	} else {
		st.everAbort[id] = true
	}
	return rec, true
}

// command is one command message in the stream.
type command struct {
	id      int
	tx      string
	op      messages.Op
	part    string
	attempt int
	// deadline of prepare, truncated to milliseconds as on the wire; 0 for
	// other commands.
	deadline time.Duration
	replyTo  string
	acked    bool
}

func (m *command) String() string {
	return fmt.Sprintf("%s %s->%s %s#%d msg=%d", m.tx, m.replyTo, m.part, m.op, m.attempt, m.id)
}

// publish stores a command in the stream, unless the publish fails. A stored
// command is delivered after a latency, and again after AckWait until it is
// acknowledged.
func (s *sim) publish(c *command) {
	if s.fault(s.f.PublishLost) {
		s.res.Stats.PublishesLost++
		s.tracef("publish lost %s", c)
		return
	}
	s.seqMsg++
	c.id = s.seqMsg
	s.unacked++
	s.tracef("publish %s", c)
	s.after(s.latency(), func() { s.deliver(c) })
}

// deliver hands a stored command to its participant. The participant may
// crash before handling it (it is redelivered), after handling it and before
// its ack (redelivered, a duplicate), or lose the ack.
func (s *sim) deliver(m *command) {
	if m.acked {
		return
	}
	p := s.partBy[m.part]
	redeliver := func(after time.Duration) {
		s.res.Stats.Redelivered++
		s.after(after+s.between(0, 10*time.Millisecond), func() { s.deliver(m) })
	}
	if !p.up {
		redeliver(ackWait)
		return
	}
	s.res.Stats.Delivered++
	if s.fault(s.f.CrashParticipant) {
		s.tracef("deliver %s", m)
		p.crash("before handling " + string(m.op))
		redeliver(ackWait)
		return
	}
	res, reason, settle := p.handle(m)
	s.tracef("deliver %s -> %s %s settle=%s", m, res, reason, settle)
	s.reply(m, res, reason)
	if s.fault(s.f.CrashParticipant) {
		p.crash("after handling " + string(m.op) + ", before its ack")
		redeliver(ackWait)
		return
	}
	switch settle {
	case settleNak:
		redeliver(nakDelay)
	case settleAck, settleTerm:
		if settle == settleAck && s.fault(s.f.AckLost) {
			s.tracef("ack lost msg=%d", m.id)
			redeliver(ackWait)
			return
		}
		m.acked = true
		s.unacked--
	}
}

// reply sends a participant's answer to the coordinator instance named in
// the command, on plain NATS: it may be dropped, duplicated or delayed.
func (s *sim) reply(m *command, res messages.Result, reason string) {
	r := messages.Reply{TxID: m.tx, Op: m.op, Participant: m.part, Result: res, Attempt: m.attempt, Reason: reason}
	s.net(fmt.Sprintf("reply %s %s %s#%d %s", m.tx, m.part, m.op, m.attempt, res), func() {
		s.coordBy[m.replyTo].onReply(r)
	})
}

// net carries one plain-NATS message: dropped, or delivered once or twice,
// each after its own latency.
func (s *sim) net(what string, deliver func()) {
	if s.fault(s.f.Drop) {
		s.res.Stats.Dropped++
		s.tracef("drop %s", what)
		return
	}
	n := 1
	if s.fault(s.f.Duplicate) {
		s.res.Stats.Duplicated++
		n = 2
	}
	for range n {
		s.after(s.latency(), deliver)
	}
}

// settle says what the participant's consumer does with a command message.
type settle uint8

const (
	settleAck settle = iota
	settleNak
	settleTerm
)

func (st settle) String() string {
	return [...]string{"ack", "nak", "term"}[st]
}

func joinNames(ns []string) string { return strings.Join(ns, ",") }
