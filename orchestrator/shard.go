package orchestrator

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/orchestrator/txn"
)

// shard is one event loop. It alone touches its maps, so none of them is
// locked; everything reaches it through its inbox.
type shard struct {
	e        *Engine
	in       chan any
	active   map[string]*entry
	finished map[string]finishedTx
	expiry   expiryQueue // finished IDs, oldest first
	// sagas are the sagas the shard drives; finishedSagas those that ended
	// within the retention, sagaExpiry their IDs, oldest first.
	sagas         map[string]*sagaEntry
	finishedSagas map[string]saga.Record
	sagaExpiry    expiryQueue

	// statuses are the transactions whose status changed since the last
	// status write (Config.StatusLinger), in the order they first changed;
	// statusFlush is set while a write of them is scheduled.
	statuses    []*entry
	statusFlush bool
	// sagaStatuses are the sagas whose status changed since the last
	// status write, alike.
	sagaStatuses []queuedSaga

	// queue is a simulated engine's inbox, emptied by Engine.Pump.
	mu    sync.Mutex
	queue []any
}

type finishedTx struct {
	out              Outcome
	started, decided time.Time
}

type expiring struct {
	id string
	at time.Time
}

// expiryQueue holds finished IDs, oldest first. It drops them from the
// front without moving the rest, and compacts once half of it is dropped:
// constant time per ID on average, whatever MaxRemembered is (moving the
// whole queue at every drop cost a tenth of a coordinator's CPU once it was
// full).
type expiryQueue struct {
	items []expiring
	head  int
}

// add appends id, to expire at at.
func (q *expiryQueue) add(id string, at time.Time) {
	q.items = append(q.items, expiring{id: id, at: at})
}

// expire drops from the front every ID whose time is before now, and more
// until at most limit are left, calling forget for each.
func (q *expiryQueue) expire(now time.Time, limit int, forget func(id string)) {
	for q.head < len(q.items) && (q.items[q.head].at.Before(now) || len(q.items)-q.head > limit) {
		forget(q.items[q.head].id)
		q.items[q.head] = expiring{}
		q.head++
	}
	if q.head > 0 && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
}

// entry is a running transaction and what its driver keeps beside it.
type entry struct {
	tx        *txn.Tx
	deadline  time.Time
	started   time.Time
	decidedAt time.Time
	timers    map[txn.TimerKind]Timer
	waiters   []chan result
	// held are the sends and timers of a Ready whose record is being
	// persisted: they wait until it is durable.
	held       *txn.Ready
	persisting bool
	// statusQueued: the shard's statuses list holds it.
	statusQueued bool
	// hist is what happened to it (TxStatus.History).
	hist history
	// trace is its spans; nil when tracing is off.
	trace *txTrace
	// abortCause is why it aborts (an index of AbortCauses), once known;
	// -1 before.
	abortCause int
	// writeStart is when its commit decision's write began.
	writeStart time.Time
	// starting: it holds room in the admission, until its first round ends
	// (its decision or first re-send); voted: its first vote came.
	starting, voted bool
	// statusWritten is when its status was last written (at a change of
	// state, or refreshed at a resend), and statusWaiting whom that status
	// said it waited for.
	statusWritten time.Time
	statusWaiting string
}

// statusRefreshEvery is how often a slow transaction's status is refreshed
// while whom it waits for stays what its last status said: each refresh is
// a read and a compare-and-set write, and refreshing at every resend, or at
// the first resend of every slow transaction, made that work grow with the
// backlog under overload (docs/BENCHMARKS.md).
const statusRefreshEvery = 10 * time.Second

type result struct {
	out              Outcome
	started, decided time.Time
	// persisting: the commit decision is being written and is not durable
	// yet, so it may still be refused.
	persisting bool
	err        error
}

// rejectedEvent: a reply about transaction id on participant's reply
// subject could not be read.
type rejectedEvent struct {
	id, participant string
	err             error
}

type (
	beginReq struct {
		en *entry
		ch chan result
	}
	waitReq struct {
		id string
		ch chan result
	}
	statusReq struct {
		id string
		ch chan result
	}
	// oldestReq asks a shard when its oldest running transaction or saga
	// began (zero: none).
	oldestReq struct{ ch chan time.Time }
	abortReq  struct {
		id, reason string
		// who names the operator who asked; empty for a caller that gave up.
		who string
		ch  chan result
	}
	replyEvent struct{ r messages.Reply }
	timerEvent struct {
		id string
		tm txn.Timer
	}
	persistedEvent struct{ id string }
	refusedEvent   struct {
		id   string
		late bool // the write was given up past the deadline
	}
	recoverReq struct {
		rec decisionRecord
		// prior is the transaction's status before the takeover, if any.
		prior *messages.TxStatus
	}
	orphanReq struct{ st messages.TxStatus }
	// onePhaseOrphanReq takes over a one-phase commit (askOnePhase).
	onePhaseOrphanReq struct{ st messages.TxStatus }
)

// post hands v to the loop; false means the engine stopped. A request that
// lands in the inbox as the engine stops is never answered: callers also wait
// on the engine's stop channel (Engine.call).
func (s *shard) post(v any) bool {
	select {
	case <-s.e.stop:
		return false
	default:
	}
	if s.e.coop {
		s.mu.Lock()
		s.queue = append(s.queue, v)
		s.mu.Unlock()
		return true
	}
	select {
	case s.in <- v:
		return true
	case <-s.e.stop:
		return false
	}
}

// fenceReq makes a shard drop everything it holds (Engine.fence).
type fenceReq struct{}

// dropAll forgets every transaction and saga the shard drives; their
// waiters get ErrFenced.
func (s *shard) dropAll() {
	for _, en := range s.statuses {
		en.statusQueued = false // a fenced instance writes no more statuses
	}
	s.statuses = nil
	for id, en := range s.active {
		for _, t := range en.timers {
			t.Stop()
		}
		for _, w := range en.waiters {
			w <- result{out: en.tx.Outcome(), err: ErrFenced}
		}
		en.trace.end("dropped", ErrFenced.Error())
		delete(s.active, id)
		s.firstRoundOver(en)
		s.e.inFlight.Add(-1)
	}
	for id, en := range s.sagas {
		s.dropSaga(id, en, ErrFenced)
	}
}

// take empties a simulated engine's inbox.
func (s *shard) take() []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

func (s *shard) loop() {
	defer s.e.wg.Done()
	defer s.shutdown()
	for {
		select {
		case <-s.e.stop:
			return
		case v := <-s.in:
			s.handle(v)
		}
	}
}

func (s *shard) handle(v any) {
	if s.e.halted.Load() {
		return // a halted engine is a dead process: it does nothing more
	}
	if _, ok := v.(fenceReq); ok {
		s.dropAll()
		return
	}
	if s.handleSaga(v) {
		return
	}
	switch v := v.(type) {
	case recoverReq:
		s.recover(v.rec, v.prior)
	case orphanReq:
		s.abortOrphan(v.st)
	case onePhaseOrphanReq:
		s.askOnePhase(v.st)
	case refusedEvent:
		if en := s.active[v.id]; en != nil && en.persisting {
			en.persisting, en.held = false, nil
			s.e.stats.CommitsRefused.Add(1)
			en.abortCause = causeRefused
			reason := "an abort was recorded first for a participant in doubt"
			if v.late {
				reason = "the commit decision could not be written within a minute of the deadline; abort recorded"
			}
			s.step(en, txn.Event{Kind: txn.EventCommitRefused, Reason: reason})
		}
	case beginReq:
		s.begin(v)
	case waitReq:
		if en := s.active[v.id]; en != nil {
			en.waiters = append(en.waiters, v.ch)
			s.notify(en, false)
		} else {
			v.ch <- s.lookup(v.id)
		}
	case oldestReq:
		var oldest time.Time
		for _, en := range s.active {
			if oldest.IsZero() || en.started.Before(oldest) {
				oldest = en.started
			}
		}
		for _, en := range s.sagas {
			if st := en.started; !st.IsZero() && (oldest.IsZero() || st.Before(oldest)) {
				oldest = st
			}
		}
		v.ch <- oldest
	case statusReq:
		if en := s.active[v.id]; en != nil {
			v.ch <- result{out: en.tx.Outcome(), started: en.started, decided: en.decidedAt, persisting: en.persisting}
		} else {
			v.ch <- s.lookup(v.id)
		}
	case abortReq:
		en := s.active[v.id]
		if en == nil {
			v.ch <- s.lookup(v.id)
			return
		}
		if out := en.tx.Outcome(); out.OnePhase && out.State == Preparing {
			v.ch <- result{out: out, err: ErrOnePhaseAbort}
			return
		}
		s.stepBy(en, txn.Event{Kind: txn.EventAbort, Reason: v.reason}, v.who)
		v.ch <- result{out: en.tx.Outcome()}
	case replyEvent:
		s.reply(v.r)
	case statusFlushEvent:
		s.flushStatuses()
	case rejectedEvent:
		if en := s.active[v.id]; en != nil {
			s.step(en, txn.Event{Kind: txn.EventRejected, Participant: v.participant, Reason: v.err.Error()})
		}
	case timerEvent:
		if en := s.active[v.id]; en != nil {
			if v.tm.Kind == txn.TimerResend {
				s.firstRoundOver(en) // a silent participant holds no room
			}
			s.step(en, txn.Event{Kind: txn.EventTimer, Timer: v.tm})
			if v.tm.Kind == txn.TimerResend && s.active[v.id] == en && !en.persisting {
				// A slow transaction: refresh its status, so that it shows
				// whom it still waits for (never over a final state another
				// instance wrote), when that changed since its last status
				// or statusRefreshEvery after it.
				if waitingFor(en.tx.Outcome()) != en.statusWaiting || s.e.now().Sub(en.statusWritten) >= statusRefreshEvery {
					s.e.refreshStatus(en)
				}
			}
		}
	case persistedEvent:
		if en := s.active[v.id]; en != nil && en.persisting {
			en.persisting = false
			rd := *en.held
			en.held = nil
			s.e.stats.write.observe(s.e.now().Sub(en.writeStart))
			if s.e.fault(PointCommitDurable, v.id) {
				return
			}
			s.e.noteDecided(&en.hist, en.tx.Outcome())
			en.trace.enterPhase("commit")
			s.queueStatus(en) // committing, now that it is durable
			s.effects(en, rd)
		}
	}
}

func (s *shard) begin(r beginReq) {
	id := r.en.tx.ID()
	if _, dup := s.active[id]; dup {
		s.firstRoundOver(r.en)
		s.e.inFlight.Add(-1)
		r.ch <- result{err: fmt.Errorf("%w: %s is in flight", ErrDuplicateTx, id)}
		return
	}
	if _, dup := s.finished[id]; dup {
		s.firstRoundOver(r.en)
		s.e.inFlight.Add(-1)
		r.ch <- result{err: fmt.Errorf("%w: %s has already run", ErrDuplicateTx, id)}
		return
	}
	r.en.timers = make(map[txn.TimerKind]Timer, 2)
	s.active[id] = r.en
	s.e.stats.Begun.Add(1)
	r.ch <- result{}
	s.apply(r.en, r.en.tx.Start())
	// Written at once, not lingered: the orphan sweep finds a dead
	// instance's undecided transactions by their status.
	s.e.publishStatus(r.en)
	s.e.fault(PointPrepareSent, id)
}

func (s *shard) reply(r messages.Reply) {
	if r.Op.TwoPhase() && (r.Result.Vote() || r.Result == messages.Ack) {
		// It runs, and does two-phase commit: one-phase commit may go to it.
		s.e.noteHeard(r.Participant, s.e.now())
	}
	if r.Op.Saga() {
		s.sagaReply(r)
		return
	}
	en := s.active[r.TxID]
	if en == nil {
		if _, ok := s.finished[r.TxID]; !ok {
			s.e.stats.StrayReplies.Add(1)
			s.e.log.Debug("reply for a transaction this coordinator does not run", zap.String("txid", r.TxID), zap.String("participant", r.Participant))
		}
		return
	}
	ev := txn.Event{Participant: r.Participant, Op: r.Op, Reason: r.Reason}
	switch r.Result {
	case messages.VoteCommit:
		ev.Kind, ev.Yes = txn.EventVote, true
		s.noteVote(en)
	case messages.VoteReadOnly:
		ev.Kind, ev.Yes, ev.ReadOnly = txn.EventVote, true, true
		s.noteVote(en)
	case messages.VoteAbort:
		ev.Kind = txn.EventVote
		s.noteVote(en)
	case messages.Ack:
		ev.Kind = txn.EventAck
		if r.Op == messages.OpCommitOnePhase {
			s.noteVote(en)
		}
	case messages.Failed:
		ev.Kind = txn.EventFailed
		s.e.log.Warn("participant failed a command", zap.String("txid", r.TxID), zap.String("participant", r.Participant),
			zap.String("op", string(r.Op)), zap.String("reason", r.Reason))
	}
	s.step(en, ev)
	switch ev.Kind {
	case txn.EventVote:
		s.e.fault(PointVoteReceived, r.TxID)
	case txn.EventAck:
		switch r.Op {
		case messages.OpCommit:
			s.e.fault(PointCommitAcked, r.TxID)
		case messages.OpCommitOnePhase: // its answer is its vote
			s.e.fault(PointVoteReceived, r.TxID)
		}
	}
}

func (s *shard) step(en *entry, ev txn.Event) { s.stepBy(en, ev, "") }

// stepBy feeds ev to en's state machine and records in its history what
// an accepted event tells; who names the operator of an abort.
func (s *shard) stepBy(en *entry, ev txn.Event, who string) {
	rd := en.tx.Step(ev)
	if rd.Ignored == "" {
		if ev.Kind != txn.EventAbort || who != "" {
			s.e.noteTxEvent(&en.hist, ev, who)
		}
		if ev.Kind == txn.EventAbort && rd.Decided && en.abortCause < 0 {
			en.abortCause = causeCaller
			if who != "" {
				en.abortCause = causeOperator
			}
		}
		switch ev.Kind {
		case txn.EventVote:
			result := messages.VoteCommit
			switch {
			case !ev.Yes:
				result = messages.VoteAbort
			case ev.ReadOnly:
				result = messages.VoteReadOnly
			}
			en.trace.answered(ev.Participant, "", string(result), ev.Reason, false)
		case txn.EventAck:
			en.trace.answered(ev.Participant, "", string(messages.Ack), "", false)
		case txn.EventFailed:
			en.trace.answered(ev.Participant, "", string(messages.Failed), ev.Reason, true)
		}
	}
	s.apply(en, rd)
}

// apply carries out a Ready: persist first, then send, then arm timers.
func (s *shard) apply(en *entry, rd txn.Ready) {
	if rd.Ignored != "" {
		s.e.stats.Ignored.Add(1)
		s.e.log.Debug("event ignored", zap.String("txid", en.tx.ID()), zap.String("why", rd.Ignored))
		return
	}
	if rd.Decided {
		s.decided(en)
	}
	if rd.Persist != nil {
		en.persisting, en.held = true, &rd
		en.writeStart = s.e.now()
		rec, deadline := *rd.Persist, en.deadline
		s.e.spawn(func() { s.persist(rec, deadline) })
		return
	}
	s.effects(en, rd)
}

// effects does the sends and timers of a Ready whose record, if any, is
// durable.
func (s *shard) effects(en *entry, rd txn.Ready) {
	id := en.tx.ID()
	if len(rd.Send) > 0 {
		s.e.noteSends(&en.hist, rd.Send)
	}
	for _, snd := range rd.Send {
		tp, ts := en.trace.command(snd.Participant, "", snd.Op, snd.Attempt)
		s.e.publish(id, en.deadline, snd, tp, ts)
	}
	for _, tr := range rd.Timers {
		if old := en.timers[tr.Timer.Kind]; old != nil {
			old.Stop()
		}
		tm := tr.Timer
		en.timers[tm.Kind] = s.e.drv.AfterFunc(tr.After, func() { s.post(timerEvent{id: id, tm: tm}) })
	}
	if rd.Done {
		s.done(en)
	}
}

// persist writes a commit decision, retrying until it is durable or the
// engine stops: commit cannot be sent before it. Once commitWriteGrace past
// the transaction's deadline it stops trying and records an abort instead
// (or finds that one of its writes got in), so that no commit record is
// written long after the participants may have been told abort.
func (s *shard) persist(rec txn.Record, deadline time.Time) {
	if s.e.fault(PointCommitWriting, rec.ID) {
		return
	}
	giveUp := deadline.Add(commitWriteGrace)
	wait := 50 * time.Millisecond
	for !s.e.halted.Load() {
		ctx, cancel := s.e.withTimeout(s.e.base, 5*time.Second)
		var err error
		late := !deadline.IsZero() && s.e.now().After(giveUp)
		if late {
			var state string
			if state, err = s.e.records.recordAbort(ctx, rec.ID); err == nil && state == recordAborted {
				err = errCommitRefused
			}
		} else {
			err = s.e.records.decide(ctx, rec)
		}
		cancel()
		switch {
		case err == nil:
			s.post(persistedEvent{id: rec.ID})
			return
		case errors.Is(err, errCommitRefused):
			s.post(refusedEvent{id: rec.ID, late: late})
			return
		}
		if s.e.base.Err() != nil {
			return // stopping
		}
		s.e.stats.PersistErrors.Add(1)
		s.e.log.Error("persisting the commit decision failed; retrying", zap.String("txid", rec.ID), zap.Bool("past_deadline", late), zap.Error(err))
		if !s.e.sleep(wait) {
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// noteVote tells the admission when en's first vote came.
func (s *shard) noteVote(en *entry) {
	if en.voted {
		return
	}
	en.voted = true
	now := s.e.now()
	s.e.admission.firstVote(now.Sub(en.started), now)
}

// firstRoundOver hands on the room en held in the admission, if it still
// does.
func (s *shard) firstRoundOver(en *entry) {
	if en.starting {
		en.starting = false
		s.e.admission.leave()
	}
}

func (s *shard) decided(en *entry) {
	s.firstRoundOver(en)
	en.decidedAt = s.e.now()
	s.e.stats.decide.observe(en.decidedAt.Sub(en.started))
	out := en.tx.Outcome()
	switch {
	case out.State == Committed:
		// Committed in one phase, with nothing to record: done writes the
		// final status.
		s.e.noteDecided(&en.hist, out)
	case out.State != Committing:
		// A commit's status is written once its record is durable: a status
		// that says committing always means the commit will happen.
		s.e.noteDecided(&en.hist, out)
		en.trace.enterPhase("abort")
		s.queueStatus(en)
	default:
		en.trace.enterPhase("decision") // the commit record's write
	}
	s.e.log.Debug("decided", zap.String("txid", out.ID), zap.Stringer("state", out.State), zap.String("reason", out.Reason))
	if out.State == Aborting || out.State == Aborted { // aborted at once: no one to tell
		if out.TimedOut {
			s.e.stats.Timeouts.Add(1)
		}
		if en.abortCause < 0 {
			en.abortCause = causeVote
			if out.TimedOut {
				en.abortCause = causeTimeout
			}
		}
		s.notify(en, false)
	}
}

// notify answers waiters: at once for an abort decision, at the end for a
// commit.
func (s *shard) notify(en *entry, final bool) {
	out := en.tx.Outcome()
	if !final && out.State != Aborting {
		return
	}
	for _, w := range en.waiters {
		w <- result{out: out}
	}
	en.waiters = nil
}

func (s *shard) done(en *entry) {
	out := en.tx.Outcome()
	id := out.ID
	for _, t := range en.timers {
		t.Stop()
	}
	delete(s.active, id)
	s.firstRoundOver(en)
	s.e.inFlight.Add(-1)
	if !en.decidedAt.IsZero() {
		s.e.stats.complete.observe(s.e.now().Sub(en.decidedAt))
	}
	if out.State == Committed {
		s.e.stats.Committed.Add(1)
		if !out.OnePhase { // else no decision record was written
			s.e.spawn(func() { s.finishRecord(id) })
		}
	} else {
		s.e.stats.Aborted.Add(1)
		if en.abortCause >= 0 {
			s.e.stats.abortedBy[en.abortCause].Add(1)
		}
	}
	s.e.log.Debug("finished", zap.String("txid", id), zap.Stringer("state", out.State), zap.Duration("took", s.e.now().Sub(en.started)))
	s.e.noteEnded(&en.hist, out.State.String())
	if out.State == Committed {
		en.trace.end(out.State.String(), "")
	} else {
		en.trace.end(out.State.String(), out.Reason)
	}
	s.queueStatus(en)
	s.notify(en, true)
	s.remember(out, en.started, en.decidedAt)
}

// finishRecord marks a finished commit's record committed, retrying while
// NATS is unavailable (a stream electing a leader) until the engine stops. A
// record left committing is driven again by recovery after the retention,
// which only re-sends commits every participant already acknowledged.
func (s *shard) finishRecord(id string) {
	wait := 100 * time.Millisecond
	for !s.e.halted.Load() {
		ctx, cancel := s.e.withTimeout(s.e.base, 5*time.Second)
		err := s.e.records.finish(ctx, id)
		cancel()
		if err == nil {
			return
		}
		s.e.log.Warn("marking a finished commit's record failed; retrying", zap.String("txid", id), zap.Error(err))
		if !s.e.sleep(wait) {
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// remember keeps a finished outcome for Status, Wait and duplicate
// detection, dropping those past the retention or over the count limit.
func (s *shard) remember(out Outcome, started, decided time.Time) {
	now := s.e.now()
	s.finished[out.ID] = finishedTx{out: out, started: started, decided: decided}
	s.expiry.add(out.ID, now.Add(s.e.cfg.Retention))
	s.expiry.expire(now, s.rememberLimit(), func(id string) { delete(s.finished, id) })
}

// rememberLimit is this shard's share of Config.MaxRemembered, for its
// finished transactions and, apart, its finished sagas.
func (s *shard) rememberLimit() int { return max(1, s.e.cfg.MaxRemembered/len(s.e.shards)) }

func (s *shard) lookup(id string) result {
	if f, ok := s.finished[id]; ok {
		return result{out: f.out, started: f.started, decided: f.decided}
	}
	return result{out: Outcome{ID: id}, err: fmt.Errorf("%w: %s", ErrUnknownTx, id)}
}

// shutdown stops every timer and tells every waiter the engine stopped.
func (s *shard) shutdown() {
	s.flushStatuses() // what changed last is written on the way out
	for _, en := range s.active {
		for _, t := range en.timers {
			t.Stop()
		}
		for _, w := range en.waiters {
			w <- result{out: en.tx.Outcome(), err: ErrStopped}
		}
		en.trace.end("unfinished here", ErrStopped.Error())
	}
	for _, en := range s.sagas {
		for _, t := range en.timers {
			t.Stop()
		}
		for _, w := range en.waiters {
			w <- sagaResult{rec: en.sg.Record(), err: ErrStopped}
		}
	}
}
