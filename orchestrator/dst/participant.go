package dst

import (
	"time"

	"github.com/natstx/natstx/messages"
)

// pstate is a participant's durable state for one transaction.
type pstate uint8

const (
	pNone pstate = iota
	pPrepared
	pCommitted
	pAborted
)

func (p pstate) String() string {
	return [...]string{"none", "prepared", "committed", "aborted"}[p]
}

// precord is a participant's durable record of one transaction: the barrier.
type precord struct {
	state  pstate
	reason string
	// deadline from the prepare command, for the in-doubt question.
	deadline time.Duration
}

// participant is a model participant service: the runtime's idempotency
// rules over a durable record (the SQL barrier), which survives crashes.
type participant struct {
	s    *sim
	name string
	up   bool
	inc  int
	recs map[string]*precord
}

func (p *participant) crash(where string) {
	s := p.s
	s.res.Stats.PartCrashes++
	s.tracef("%s CRASH %s", p.name, where)
	p.up = false
	p.inc++
	if s.cfg.bug == bugVolatileParticipant {
		for _, id := range sortedKeys(p.recs) {
			if p.recs[id].state == pPrepared {
				s.prepared--
			}
		}
		p.recs = map[string]*precord{}
	}
	s.after(s.between(50*time.Millisecond, 3*time.Second), func() {
		if !p.up {
			p.restart()
		}
	})
}

// restart comes back with the durable records and starts asking about every
// transaction it is in doubt of.
func (p *participant) restart() {
	p.up = true
	p.s.tracef("%s restart", p.name)
	for _, id := range sortedKeys(p.recs) {
		if p.recs[id].state == pPrepared {
			p.armInDoubt(id, inDoubtEvery)
		}
	}
}

func (p *participant) rec(id string) *precord {
	r := p.recs[id]
	if r == nil {
		r = &precord{}
		p.recs[id] = r
	}
	return r
}

// set moves a record to a new state and checks, as it happens, that no
// decision is reversed and that commit follows a durable commit decision.
func (p *participant) set(id string, r *precord, to pstate, reason string) {
	s := p.s
	from := r.state
	if from == pCommitted && to != pCommitted {
		s.violate("%s: %s committed, then went to %s (%s)", id, p.name, to, reason)
	}
	if to == pCommitted && from != pCommitted && !s.store.everCommit[id] {
		s.violate("%s: %s committed before any commit decision was durable", id, p.name)
	}
	if from == pPrepared && to != pPrepared {
		s.prepared--
	}
	if to == pPrepared && from != pPrepared {
		s.prepared++
	}
	r.state, r.reason = to, reason
}

// handle applies one command to the record, with the runtime's rules:
// a duplicate prepare gets the recorded vote; a duplicate commit or abort
// is acknowledged again; an abort before prepare is remembered so that the
// late prepare votes abort; a prepare after the deadline votes abort; a
// command that contradicts the record is rejected.
func (p *participant) handle(m *command) (messages.Result, string, settle) {
	s := p.s
	r := p.rec(m.tx)
	switch m.op {
	case messages.OpPrepare:
		switch r.state {
		case pNone:
			if m.deadline > 0 && s.now >= m.deadline {
				p.set(m.tx, r, pAborted, "deadline passed")
				return messages.VoteAbort, "deadline passed", settleAck
			}
			w := s.workBy[m.tx]
			if !w.votes[p.name] {
				p.set(m.tx, r, pAborted, "voted no")
				return messages.VoteAbort, "voted no", settleAck
			}
			r.deadline = m.deadline
			if s.cfg.bug == bugCommitOnPrepare {
				p.set(m.tx, r, pCommitted, "applied at prepare (planted bug)")
				return messages.VoteCommit, "", settleAck
			}
			p.set(m.tx, r, pPrepared, "")
			p.armInDoubt(m.tx, s.between(200*time.Millisecond, 3*time.Second))
			return messages.VoteCommit, "", settleAck
		case pPrepared, pCommitted:
			return messages.VoteCommit, "", settleAck
		default:
			return messages.VoteAbort, r.reason, settleAck
		}
	case messages.OpCommit:
		switch r.state {
		case pPrepared:
			if s.fault(s.f.HandlerError) {
				return messages.Failed, "commit failed this time", settleNak
			}
			p.set(m.tx, r, pCommitted, "commit")
			return messages.Ack, "", settleAck
		case pCommitted:
			return messages.Ack, "", settleAck
		case pNone:
			s.res.Stats.Rejected++
			return messages.Failed, "commit without a record", settleTerm
		default:
			s.res.Stats.Rejected++
			return messages.Failed, "commit after abort", settleTerm
		}
	default: // abort
		switch r.state {
		case pNone:
			p.set(m.tx, r, pAborted, "abort before prepare")
			return messages.Ack, "", settleAck
		case pPrepared:
			if s.fault(s.f.HandlerError) {
				return messages.Failed, "abort failed this time", settleNak
			}
			p.set(m.tx, r, pAborted, "abort")
			return messages.Ack, "", settleAck
		case pAborted:
			return messages.Ack, "", settleAck
		default:
			s.res.Stats.Rejected++
			return messages.Failed, "abort after commit", settleTerm
		}
	}
}

// armInDoubt asks about id after d if the participant is still prepared.
func (p *participant) armInDoubt(id string, d time.Duration) {
	inc := p.inc
	p.s.after(d, func() { p.inDoubt(id, inc) })
}

// inDoubt asks a coordinator (the queue group picks a running one) how a
// transaction it voted commit for ended, and asks again later.
func (p *participant) inDoubt(id string, inc int) {
	s := p.s
	if p.inc != inc || !p.up {
		return
	}
	r := p.recs[id]
	if r == nil || r.state != pPrepared {
		return
	}
	if s.fault(s.f.CrashParticipant) {
		p.crash("before asking about " + id)
		return
	}
	p.armInDoubt(id, inDoubtEvery+s.between(0, 100*time.Millisecond))
	c := s.upCoordinator()
	if c == nil {
		s.tracef("%s %s in doubt: no coordinator running", p.name, id)
		return
	}
	s.res.Stats.InDoubtQueries++
	req := messages.OutcomeRequest{ID: id, Participant: p.name, DeadlineMs: int64(r.deadline / time.Millisecond)}
	s.tracef("%s %s in doubt: asks %s", p.name, id, c.name)
	s.net("outcome request "+id+" "+p.name+" -> "+c.name, func() {
		c.onOutcome(req, func(resp messages.OutcomeResponse) {
			s.net("outcome "+id+" "+resp.Outcome+" -> "+p.name, func() { p.onOutcome(id, resp) })
		})
	})
}

// onOutcome applies a coordinator's answer if the participant is still in
// doubt.
func (p *participant) onOutcome(id string, resp messages.OutcomeResponse) {
	s := p.s
	if !p.up {
		return
	}
	r := p.recs[id]
	if r == nil || r.state != pPrepared {
		return
	}
	if s.fault(s.f.CrashParticipant) {
		p.crash("before applying the outcome of " + id)
		return
	}
	switch resp.Outcome {
	case messages.OutcomeCommit:
		s.res.Stats.InDoubtResolved++
		s.tracef("%s %s in doubt resolved: commit (%s)", p.name, id, resp.Reason)
		p.set(id, r, pCommitted, "commit (in doubt, "+resp.Reason+")")
	case messages.OutcomeAbort:
		s.res.Stats.InDoubtResolved++
		s.tracef("%s %s in doubt resolved: abort (%s)", p.name, id, resp.Reason)
		p.set(id, r, pAborted, "abort (in doubt, "+resp.Reason+")")
	}
}
