package dst

import (
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/txn"
	"time"
)

// coordinator is one coordinator instance, driving txn.Tx machines as the
// engine's shards do. Its memory (active and finished transactions) is lost
// when it crashes; the store is what survives.
type coordinator struct {
	s    *sim
	name string
	up   bool
	// inc is the incarnation: it grows at each crash, so that timers and
	// store answers meant for an earlier life are dropped.
	inc       int
	downSince time.Duration
	active    map[string]*centry
	finished  map[string]bool // committed (true) or aborted (false), in memory
	finishOut map[string]txn.Outcome
}

// centry is a running transaction and what the driver keeps beside it.
type centry struct {
	tx       *txn.Tx
	deadline time.Duration
	// held is the Ready whose commit record is being written: its sends and
	// timers wait until the record is durable.
	held       *txn.Ready
	persisting bool
}

// crashes reports, and carries out, a crash of probability CrashCoordinator.
func (c *coordinator) crashes(where string) bool {
	if !c.s.fault(c.s.f.CrashCoordinator) {
		return false
	}
	c.crash(where)
	return true
}

func (c *coordinator) crash(where string) {
	s := c.s
	s.res.Stats.CoordCrashes++
	s.tracef("%s CRASH %s (%d transactions in memory lost)", c.name, where, len(c.active))
	c.up = false
	c.inc++
	c.downSince = s.now
	c.active = map[string]*centry{}
	c.finished = map[string]bool{}
	c.finishOut = nil
	s.after(s.between(50*time.Millisecond, 3*time.Second), func() {
		if !c.up {
			c.restart()
		}
	})
}

// restart starts the instance again with only the durable records, and
// recovers the commit decisions it finds.
func (c *coordinator) restart() {
	c.up = true
	c.s.tracef("%s restart", c.name)
	c.recoverCommits()
}

// scanLoop runs the recovery scan every scanEvery, as the engine's
// recoveryLoop does; it stops once the run is healed and quiescent (the
// main loop stops first).
func (c *coordinator) scanLoop() {
	if c.up {
		c.recoverCommits()
	}
	c.s.after(scanEvery, c.scanLoop)
}

// alive is the lease check: an instance counts as alive until leaseTTL after
// it went down.
func (c *coordinator) alive() bool {
	return c.up || c.s.now-c.downSince < leaseTTL
}

// recoverCommits claims every commit record whose owner is dead, or is this
// instance but not running it, and drives it to the end (the engine's
// recoverCommits).
func (c *coordinator) recoverCommits() {
	s := c.s
	for _, id := range sortedKeys(s.store.recs) {
		if !c.up {
			return // crashed while starting a recovered transaction
		}
		rec := s.store.recs[id]
		if rec == nil || rec.state != recCommitting {
			continue
		}
		if rec.owner != c.name && s.coordBy[rec.owner].alive() {
			continue
		}
		if c.knows(id) {
			continue
		}
		s.store.revision++
		prev := rec.owner
		rec.owner, rec.revision = c.name, s.store.revision
		tx, err := txn.Recover(txn.Record{ID: id, State: txn.Committing, Participants: rec.participants},
			txn.Spec{PrepareTimeout: maxPrepareTimeout, RetryBase: retryBase, RetryMax: retryMax, AbortSends: abortSends})
		if err != nil {
			s.violate("%s: recovering the commit record of %s: %v", c.name, id, err)
			continue
		}
		s.res.Stats.Recovered++
		s.tracef("%s %s recover commit record (owner was %s)", c.name, id, prev)
		en := &centry{tx: tx}
		c.active[id] = en
		c.apply(en, tx.Start())
	}
}

func (c *coordinator) knows(id string) bool {
	if _, ok := c.active[id]; ok {
		return true
	}
	_, ok := c.finished[id]
	return ok
}

// begin starts a transaction of the workload, as Engine.Begin and the
// shard's begin do: prepare goes out, the prepare timer is armed.
func (c *coordinator) begin(w *workTx) {
	s := c.s
	spec := txn.Spec{ID: w.id, PrepareTimeout: w.timeout, RetryBase: retryBase, RetryMax: retryMax, AbortSends: abortSends}
	for _, p := range w.parts {
		spec.Participants = append(spec.Participants, txn.Participant{Name: p})
	}
	tx, err := txn.New(spec)
	if err != nil {
		s.violate("%s: txn.New: %v", w.id, err)
		return
	}
	s.tracef("%s %s begin participants=%s timeout=%v", c.name, w.id, joinNames(w.parts), w.timeout)
	en := &centry{tx: tx, deadline: s.now + w.timeout}
	c.active[w.id] = en
	c.apply(en, tx.Start())
	if c.up {
		c.crashes("after sending prepare")
	}
}

// onReply routes a vote or acknowledgement to its transaction.
func (c *coordinator) onReply(r messages.Reply) {
	s := c.s
	if !c.up {
		return // plain NATS: nobody listens
	}
	if c.crashes("before handling a reply") {
		return
	}
	en := c.active[r.TxID]
	if en == nil {
		s.tracef("%s %s stray reply from %s", c.name, r.TxID, r.Participant)
		return
	}
	ev := txn.Event{Participant: r.Participant, Op: r.Op, Reason: r.Reason}
	switch r.Result {
	case messages.VoteCommit:
		ev.Kind, ev.Yes = txn.EventVote, true
	case messages.VoteAbort:
		ev.Kind = txn.EventVote
	case messages.Ack:
		ev.Kind = txn.EventAck
	case messages.Failed:
		ev.Kind = txn.EventFailed
	}
	c.step(en, ev)
	if c.up {
		c.crashes("after handling a reply")
	}
}

func (c *coordinator) onTimer(id string, inc int, tm txn.Timer) {
	if c.inc != inc || !c.up {
		return
	}
	en := c.active[id]
	if en == nil {
		return
	}
	if c.crashes("before a " + tm.Kind.String() + " timer") {
		return
	}
	c.step(en, txn.Event{Kind: txn.EventTimer, Timer: tm})
	if c.up {
		c.crashes("after a " + tm.Kind.String() + " timer")
	}
}

func (c *coordinator) step(en *centry, ev txn.Event) {
	c.apply(en, en.tx.Step(ev))
}

// apply carries out a Ready: persist first, then send, then arm timers.
func (c *coordinator) apply(en *centry, rd txn.Ready) {
	s := c.s
	id := en.tx.ID()
	if rd.Ignored != "" {
		s.tracef("%s %s ignored: %s", c.name, id, rd.Ignored)
		return
	}
	if rd.Decided {
		c.decided(en)
	}
	if rd.Persist != nil {
		if s.cfg.bug == bugSendBeforePersist {
			// Planted bug: commit goes out first, and the driver may die
			// before the record is written.
			early := rd
			early.Done, early.Timers = false, nil
			c.effects(en, early)
			if !c.up {
				return
			}
			if s.rng.IntN(3) == 0 {
				c.crash("after sending commit, before persisting it (planted bug)")
				return
			}
			rd.Send = nil
		}
		en.persisting, en.held = true, &rd
		c.persist(id, *rd.Persist, persistFirstWait)
		return
	}
	c.effects(en, rd)
}

// decided notes a decision for the checker.
func (c *coordinator) decided(en *centry) {
	s := c.s
	out := en.tx.Outcome()
	w := s.workBy[out.ID]
	s.tracef("%s %s decided %s: %s", c.name, out.ID, out.State, out.Reason)
	if out.Committed() {
		w.decidedCommit = true
		return
	}
	w.decidedAbort = true
	if s.store.everCommit[out.ID] {
		s.violate("%s: %s decided abort after a commit decision was recorded (%s)", out.ID, c.name, out.Reason)
	}
}

// effects does the sends and timers of a Ready whose record, if any, is
// durable. The coordinator may crash between two sends.
func (c *coordinator) effects(en *centry, rd txn.Ready) {
	s := c.s
	id := en.tx.ID()
	for i, snd := range rd.Send {
		if i > 0 && c.crashes("between two sends") {
			return
		}
		cmd := &command{tx: id, op: snd.Op, part: snd.Participant, attempt: snd.Attempt, replyTo: c.name}
		if snd.Op == messages.OpPrepare {
			cmd.deadline = en.deadline.Truncate(time.Millisecond)
		}
		s.publish(cmd)
	}
	inc := c.inc
	for _, tr := range rd.Timers {
		tm := tr.Timer
		s.after(tr.After+s.timerLate(), func() { c.onTimer(id, inc, tm) })
	}
	if rd.Done {
		c.done(en)
	}
}

// done forgets a finished transaction (remembering its outcome in memory)
// and purges a commit record.
func (c *coordinator) done(en *centry) {
	s := c.s
	out := en.tx.Outcome()
	id := out.ID
	delete(c.active, id)
	c.finished[id] = out.State == txn.Committed
	s.tracef("%s %s done %s", c.name, id, out.State)
	if out.State != txn.Committed {
		return
	}
	s.workBy[id].clientCommitted = true
	s.pendingStore++
	s.after(s.between(time.Millisecond, 10*time.Millisecond), func() {
		s.pendingStore--
		if s.fault(s.f.StoreError) {
			s.res.Stats.StoreErrors++
			s.tracef("%s %s purge failed (the record stays)", c.name, id)
			return
		}
		delete(s.store.recs, id)
		s.tracef("%s %s record purged", c.name, id)
	})
}

// persistResult is the answer of one attempt to write a commit decision.
type persistResult uint8

const (
	persistOK persistResult = iota
	persistRefused
	persistError
)

// persist writes the commit decision with a create, as recordStore.decide
// does: a record this instance wrote counts as success (a write whose answer
// was lost), a recorded abort refuses the commit. The write is in flight for
// a while; it lands even if the coordinator crashes meanwhile.
func (c *coordinator) persist(id string, rec txn.Record, wait time.Duration) {
	s := c.s
	inc := c.inc
	s.pendingStore++
	s.after(s.storeLatency(), func() {
		s.pendingStore--
		res := persistError
		lost := false
		if s.fault(s.f.StoreError) {
			s.res.Stats.StoreErrors++
			if s.rng.IntN(2) == 0 {
				s.tracef("%s %s commit record write failed", c.name, id)
				c.persisted(id, inc, res, wait)
				return
			}
			lost = true
		}
		have, created := s.store.create(id, record{state: recCommitting, participants: rec.Participants, owner: c.name})
		switch {
		case created:
			res = persistOK
		case have.state == recAborted:
			res = persistRefused
		case have.state == recCommitting && have.owner == c.name:
			res = persistOK
		}
		s.tracef("%s %s commit record create: created=%v have=%s/%s", c.name, id, created, have.state, have.owner)
		if lost {
			s.tracef("%s %s commit record write applied, its answer lost", c.name, id)
			res = persistError
		}
		c.persisted(id, inc, res, wait)
	})
}

// persisted delivers the store's answer to the coordinator after a latency.
func (c *coordinator) persisted(id string, inc int, res persistResult, wait time.Duration) {
	s := c.s
	s.after(s.storeLatency(), func() {
		if c.inc != inc || !c.up {
			return
		}
		en := c.active[id]
		if en == nil || !en.persisting {
			return
		}
		switch res {
		case persistOK:
			if c.crashes("before handling the durable commit record") {
				return
			}
			en.persisting = false
			rd := *en.held
			en.held = nil
			if c.crashes("with the commit record durable, before sending commit") {
				return
			}
			c.effects(en, rd)
		case persistRefused:
			en.persisting, en.held = false, nil
			s.res.Stats.CommitsRefused++
			c.step(en, txn.Event{Kind: txn.EventCommitRefused, Reason: "an abort was recorded first for a participant in doubt"})
		case persistError:
			rec := *en.held.Persist
			s.after(wait, func() {
				if c.inc == inc && c.up && c.active[id] == en && en.persisting {
					c.persist(id, rec, min(2*wait, persistMaxWait))
				}
			})
		}
	})
}

// onOutcome answers a participant in doubt with recovery.go's resolve rules.
func (c *coordinator) onOutcome(req messages.OutcomeRequest, answer func(messages.OutcomeResponse)) {
	if !c.up {
		return
	}
	if c.crashes("before answering a participant in doubt") {
		return
	}
	r := c.resolve(req)
	c.s.tracef("%s %s in doubt from %s: %s (%s)", c.name, req.ID, req.Participant, r.Outcome, r.Reason)
	if c.crashes("after resolving, before answering a participant in doubt") {
		return
	}
	answer(r)
}

// resolve is the engine's resolve: the coordinator's memory first, then the
// record; with neither, pending before the deadline, else an abort recorded
// by create (or commit, if a commit decision won the race).
func (c *coordinator) resolve(req messages.OutcomeRequest) messages.OutcomeResponse {
	s := c.s
	if en := c.active[req.ID]; en != nil {
		out := en.tx.Outcome()
		switch {
		case out.Committed() && en.persisting && !s.cfg.EarlyCommitAnswer:
			// The decision is not durable yet and may still be refused (the
			// engine's rule since the fix; Config.EarlyCommitAnswer is the old one).
			return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "commit decision not durable yet"}
		case out.Committed():
			return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "this coordinator decided commit"}
		case out.State.Decided():
			return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: out.Reason}
		}
		return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "still collecting votes"}
	}
	if committed, ok := c.finished[req.ID]; ok {
		if committed {
			return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "this coordinator decided commit"}
		}
		return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "this coordinator aborted it"}
	}
	if rec := s.store.recs[req.ID]; rec != nil {
		if rec.state == recCommitting {
			return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "commit decision recorded by " + rec.owner}
		}
		return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "abort recorded"}
	}
	if s.cfg.bug == bugAnswerAbortWhenUnknown {
		return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "unknown here (planted bug: not recorded)"}
	}
	if req.DeadlineMs > 0 && s.now < time.Duration(req.DeadlineMs)*time.Millisecond {
		return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "undecided and before its deadline"}
	}
	have, created := s.store.create(req.ID, record{state: recAborted})
	if created {
		s.res.Stats.RecordedAborts++
		if s.store.everCommit[req.ID] {
			s.res.Stats.LateAbortRecords++
		}
		return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "no commit decision by the deadline (presumed abort, now recorded)"}
	}
	if have.state == recCommitting {
		return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "commit decision recorded"}
	}
	return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "abort recorded"}
}
