package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/txn"
)

// LeaseBucket holds one key per live coordinator instance, renewed every
// third of Config.LeaseTTL; a key not renewed expires with the bucket's TTL,
// and the instance's commit records are then claimed by the others.
const LeaseBucket = "natstx_coordinators"

// FaultPoint names a point in the protocol where Config.FaultHook is called.
type FaultPoint string

// The fault points, in protocol order.
const (
	// PointPrepareSent: the transaction began and prepare went out.
	PointPrepareSent FaultPoint = "prepare-sent"
	// PointVoteReceived: a vote was applied.
	PointVoteReceived FaultPoint = "vote-received"
	// PointCommitWriting: every vote is yes and the commit record is about
	// to be written (called off the event loop, so a hook may block here to
	// make the write slow).
	PointCommitWriting FaultPoint = "commit-writing"
	// PointCommitDurable: the commit decision is durable and no commit has
	// been sent yet.
	PointCommitDurable FaultPoint = "commit-durable"
	// PointCommitAcked: a participant acknowledged commit.
	PointCommitAcked FaultPoint = "commit-acked"
)

// fault calls the fault hook; true means the engine halted there.
func (e *Engine) fault(p FaultPoint, id string) bool {
	if e.cfg.FaultHook == nil || e.halted.Load() {
		return e.halted.Load()
	}
	if e.cfg.FaultHook(p, id) {
		e.halted.Store(true)
		e.log.Warn("engine halted by the fault hook", zap.String("point", string(p)), zap.String("txid", id))
		// A dead process's subscriptions go with its connection.
		for _, sub := range append([]*nats.Subscription{e.sub}, e.apiSubs...) {
			_ = sub.Unsubscribe()
		}
	}
	return e.halted.Load()
}

// leases keeps this instance's lease alive and answers whether another's is.
type leases struct {
	kv Store
}

func openLeases(ctx context.Context, js jetstream.JetStream, o StreamOptions, ttl time.Duration) (jetstream.KeyValue, error) {
	o = o.withDefaults()
	return openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "natstx live coordinator instances",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
}

func (l *leases) alive(ctx context.Context, instance string) (bool, error) {
	_, err := l.kv.Get(ctx, instance)
	if errors.Is(err, ErrNoEntry) {
		return false, nil
	}
	return err == nil, err
}

// recoveryLoop looks at the leases at start and then every half lease, and
// takes over what dead instances (and this one, before a restart) left:
// see recoverTick. A look begins half a lease after the last one began,
// however long that one took (a tenth of a lease after it ended at least):
// a look that begins a lease or more after the last may have missed an
// instance, and scans everything, so a look's own scanning must not make
// the next one late.
func (e *Engine) recoveryLoop() {
	first := true
	for !e.halted.Load() {
		began := e.now()
		e.recoverTick(first)
		first = false
		wait := max(e.cfg.LeaseTTL/2-e.now().Sub(began), e.cfg.LeaseTTL/10)
		if !e.sleep(wait) || e.halted.Load() {
			return
		}
	}
}

// recoverTick lists the live instances and, when one may have died since
// the last look, scans the records for what dead instances left: commit
// records and sagas to drive on (recoverCommits, recoverSagas), and
// undecided transactions to abort (sweepOrphans). An instance may have died
// when one live at the last look is gone, at start, after this instance was
// fenced (it dropped what it held), and when the last look began a lease
// or more ago: a lease stays listed for the lease TTL after its last write,
// so looks closer together than that see every instance that ever wrote
// one, however short-lived. After such a look all the records are scanned,
// and at every look for sweepWindow after, what was written since the last
// scan (what the dead instance was writing may land late); what was written
// since, again every scanEvery. Scanning all at every look instead would
// read every record the retention keeps, finished ones included, every half
// lease: millions under load. A scan holds only the records still to act
// on, and reads for scanSlice at most: one that could not finish (it ran
// out of time, a claim failed) goes on at the next look from where it
// stopped, so that a scan of millions is done in slices rather than started
// over, and failing the same way, at every look; a death noticed while a
// scan of all is under way asks for another once it ends (scanCursor).
func (e *Engine) recoverTick(first bool) {
	ctx, cancel := e.withTimeout(e.base, 4*e.cfg.LeaseTTL)
	defer cancel()
	began := e.now()
	alive, err := e.leases.live(ctx)
	if err != nil {
		e.warnUnlessStopping("listing the live coordinator instances failed; trying again at the next look", zap.Error(err))
		return
	}
	died := first || e.fenced.Swap(false) || e.now().Sub(e.lastLook) >= e.cfg.LeaseTTL
	for inst := range e.lastAlive {
		died = died || !alive[inst]
	}
	e.lastAlive, e.lastLook = alive, began
	now := e.now()
	if died {
		e.recoverUntil = now.Add(sweepWindow)
		e.recordsScan.rescan() // all of them
		e.sagasScan.rescan()
	}
	if e.recoverDue || !now.After(e.recoverUntil) || !now.Before(e.nextScan) {
		recordsDue := e.recordsScan.moved(e.recoverCommits(e.recordsScan.read))
		sagasDue := e.sagasScan.moved(e.recoverSagas(e.sagasScan.read))
		e.recoverDue = recordsDue || sagasDue
		if !e.recoverDue {
			e.nextScan = now.Add(scanEvery)
		}
	}
	e.sweepOrphans(ctx, died, alive)
}

// scanCursor is where the recovery scans of one bucket stand.
type scanCursor struct {
	// read: the next listing starts after it (the highest revision the
	// last one read, or just before the first entry it did not handle).
	read uint64
	// full: a scan from the first entry is under way; again: another is
	// due when it ends.
	full, again bool
}

// rescan asks for a scan from the first entry, an instance having maybe
// died: at once, or once the one under way ends. Starting over at once
// would never end on a bucket that takes longer to read than deaths (or
// failed writes, for the status sweep) are apart, and the entries above
// where the scan under way stands it reads anyway.
func (c *scanCursor) rescan() {
	if c.full {
		c.again = true
		return
	}
	c.read, c.full = 0, true
}

// moved records where a listing left off and whether it ended the scan;
// it reports whether a scan is still due (this one, or the one asked for
// while it ran).
func (c *scanCursor) moved(next uint64, ended bool) (due bool) {
	c.read = next
	if !ended {
		return true
	}
	c.full = false
	if c.again {
		c.again = false
		c.read, c.full = 0, true
		return true
	}
	return false
}

// scanEvery is how often recovery reads the records written since its
// last scan although no instance died: a write whose writer gave up on it
// (its answer timed out, the writer died) can land late, a saga's first
// record say, with no instance driving it. For sweepWindow after a death
// such writes are found at every look; this finds those that land later
// still.
const scanEvery = 10 * time.Minute

// scanSlice bounds how long one look lists a bucket: a scan of more than
// that goes on at the next look. A look lists up to three (records, sagas,
// statuses): an eighth of a lease each keeps a look well within the half
// lease before the next, and leaves the orphan sweep, which does not act
// on statuses read a lease ago or more, time to act on what it read.
func (c *Config) scanSlice() time.Duration { return c.LeaseTTL / 8 }

// leaseLoop renews this instance's lease every third of LeaseTTL, on its
// own so that a slow recovery scan never delays a renewal (others would
// take this instance for dead and abort its undecided transactions).
func (e *Engine) leaseLoop() {
	for !e.halted.Load() {
		if !e.sleep(e.cfg.LeaseTTL/3) || e.halted.Load() {
			return
		}
		_ = e.renewLease()
	}
}

func (e *Engine) renewLease() error {
	ctx, cancel := e.withTimeout(e.base, e.cfg.LeaseTTL/3)
	defer cancel()
	if e.leaseLapsed() {
		// Not written for longer than the lease: if its key is gone, others
		// may have taken this instance for dead.
		if _, err := e.leases.kv.Get(ctx, e.cfg.Instance); errors.Is(err, ErrNoEntry) {
			e.fence()
		}
	}
	at := e.now()
	_, err := e.leases.kv.Put(ctx, e.cfg.Instance, []byte(at.UTC().Format(time.RFC3339Nano)), 0)
	if err != nil {
		e.warnUnlessStopping("renewing the coordinator lease failed", zap.Error(err))
		return err
	}
	if !e.fencing.Load() {
		e.leaseAt.Store(at.UnixNano())
	}
	return nil
}

// leaseLapsed reports whether this instance's last lease write known to be
// stored is older than LeaseTTL (the process was paused, starved, or cut
// off from NATS): its lease may have expired, and others may have taken it
// for dead since, taken over its commit decisions and sagas, and aborted
// its undecided transactions.
func (e *Engine) leaseLapsed() bool {
	at := e.leaseAt.Load()
	return at != 0 && e.now().Sub(time.Unix(0, at)) > e.cfg.LeaseTTL
}

// fence makes an instance whose lease lapsed drop every transaction and
// saga it holds in memory, as if it had restarted: what it knew may be
// stale, and acting on it could write an old state over what another
// instance decided. What is durable comes back through recovery: its own
// commit records and sagas are claimed again, and the orphan sweep
// finishes its undecided transactions from the records. Waiters are told
// ErrFenced.
func (e *Engine) fence() {
	if !e.fencing.CompareAndSwap(false, true) {
		return
	}
	e.stats.Fenced.Add(1)
	e.log.Warn("this coordinator's lease lapsed (paused or cut off for longer than the lease); dropping what it held in memory and recovering from the records",
		zap.Duration("since_last_lease_write", e.now().Sub(time.Unix(0, e.leaseAt.Load()))))
	for _, s := range e.shards {
		s.post(fenceReq{})
	}
	e.newSender() // what recovery sends again must not look like a duplicate
	e.leaseAt.Store(e.now().UnixNano())
	e.fenced.Store(true)
	e.fencing.Store(false)
}

// recoverCommits claims every commit record written since revision after
// (0: every one) whose owner is dead (or is this instance but not running
// it) and starts driving it: commit is re-sent until every participant
// acknowledged. Claims are compare-and-set on the record's revision, so two
// instances never both claim one record. It lists for scanSlice at most and
// returns where the next scan starts: after the highest revision it read,
// or just before the first record it could not handle; and whether it read
// every record and handled each.
func (e *Engine) recoverCommits(after uint64) (uint64, bool) {
	lctx, lcancel := e.withTimeout(e.base, e.cfg.scanSlice())
	recs, read, listErr := e.records.commits(lctx, after)
	lcancel()
	if listErr != nil && read == after {
		e.warnUnlessStopping("listing commit records for recovery failed", zap.Error(listErr))
		return after, false
	}
	ctx, cancel := e.withTimeout(e.base, e.cfg.LeaseTTL)
	defer cancel()
	next := read
	retry := func(rec decisionRecord) { next = min(next, rec.Revision-1) }
	alive := map[string]bool{}
	for _, rec := range recs {
		if rec.Owner != e.cfg.Instance {
			ok, seen := alive[rec.Owner]
			if !seen {
				var err error
				if ok, err = e.leases.alive(ctx, rec.Owner); err != nil {
					retry(rec)
					continue
				}
				alive[rec.Owner] = ok
			}
			if ok {
				continue
			}
		}
		if e.knows(rec.ID) {
			continue
		}
		claimed, err := e.records.claim(ctx, rec)
		if err != nil {
			// Finished, or claimed by another instance first; or the write
			// failed, or applied with its answer lost: the next scan tells.
			retry(rec)
			continue
		}
		e.log.Info("recovering a commit decision", zap.String("txid", rec.ID), zap.String("previous_owner", rec.Owner))
		e.shardOf(rec.ID).post(recoverReq{rec: claimed, prior: e.priorStatus(ctx, rec.ID)})
	}
	return next, listErr == nil && next == read
}

// sweepOrphans finishes what dead instances left undecided. When one may
// have died (recoverTick) it reads the status bucket, and at every look for
// sweepWindow after, what was written to it since. A status that is not
// final, of a transaction or saga this instance finished, gets its final
// status again, whoever wrote the stale one. Otherwise a transaction still
// preparing or aborting whose owner is dead (or is this instance, from
// before a restart) gets an abort recorded
// (a create: if a commit record won, commit recovery drives it instead) and
// abort sent to every participant; one whose status says committing but
// whose record is committed or gone has finished, and its status is set to
// committed. It reads for scanSlice at most; a sweep that could not finish
// (it ran out of time, NATS was unavailable, a write failed, it was paused)
// goes on at the next look from just before the first status it did not
// handle, until one completes.
func (e *Engine) sweepOrphans(ctx context.Context, died bool, alive map[string]bool) {
	if e.status == nil {
		return
	}
	if died || e.publishTrouble.Swap(false) {
		e.sweepDue = true
		e.sweepUntil = e.now().Add(sweepWindow)
		e.statusScan.rescan() // all of them; in the window after, what changed since
	}
	if !e.sweepDue && e.now().After(e.sweepUntil) {
		return
	}
	read := e.now()
	// Most statuses are final: read their state alone, not their
	// participants and history, and keep only the others.
	lctx, lcancel := e.withTimeout(ctx, e.cfg.scanSlice())
	entries, highest, listErr := e.status.Entries(lctx, e.statusScan.read, func(kve StoreEntry) bool {
		state, ok := messages.PeekState(kve.Value)
		return ok && !isFinal(state)
	})
	lcancel()
	if listErr != nil && highest == e.statusScan.read {
		e.sweepDue = true
		e.stats.SweepsIncomplete.Add(1)
		e.warnUnlessStopping("reading the status bucket for orphans failed; trying again at the next scan", zap.Error(listErr))
		return
	}
	next := highest
	for _, kve := range entries {
		done, stale := e.sweepEntry(ctx, kve, alive, read)
		if !done {
			next = min(next, kve.Revision-1)
		}
		if stale {
			break
		}
	}
	ended := listErr == nil && next == highest
	e.sweepDue = e.statusScan.moved(next, ended)
	if !ended {
		e.stats.SweepsIncomplete.Add(1)
	}
}

// sweepEntry handles one status that is not final, read at read, for
// sweepOrphans: done is false if it must be tried again, stale true if
// this instance was paused or starved since the statuses were read, and
// none of them may be acted on now.
func (e *Engine) sweepEntry(ctx context.Context, kve StoreEntry, alive map[string]bool, read time.Time) (done, stale bool) {
	var st messages.TxStatus
	if json.Unmarshal(kve.Value, &st) != nil {
		return true, false
	}
	knowsFinal := e.knowsFinal
	if st.Protocol == messages.ProtocolSaga {
		knowsFinal = e.sagaKnownHere
	}
	if known, final := knowsFinal(st.ID); known {
		// Running here, or finished here: a final state this instance
		// remembers is written again over a stale one, whoever wrote
		// that: a dead incarnation, or a live instance that was taken
		// for dead and lost it here, whose write landed late.
		return final == nil || e.rewriteStatus(ctx, *final) == nil, false
	}
	if alive[st.Owner] && st.Owner != e.cfg.Instance {
		return true, false
	}
	if st.Protocol == messages.ProtocolSaga {
		return e.sweepSaga(ctx, st), false
	}
	if st.Owner != e.cfg.Instance {
		// The owner may have started after the leases were listed: look
		// again before taking it for dead.
		if ok, err := e.leases.alive(ctx, st.Owner); err != nil || ok {
			return err == nil, false
		}
	}
	if e.now().Sub(read) > e.cfg.LeaseTTL {
		// Paused or starved since the statuses were read: they may be
		// stale (a transaction committed, its records expired). Read them
		// again at the next scan.
		return false, true
	}
	return e.sweepOne(ctx, st), false
}

// sweepWindow is how long after a start or an instance's death the orphan
// sweep runs at every scan: a dead instance's asynchronous status writes
// still in flight (at most publishAckTimeout) may land after a first sweep
// and put an older state over the final one.
const sweepWindow = 2 * publishAckTimeout

// sweepOne finishes one orphan; false if it must be tried again.
func (e *Engine) sweepOne(ctx context.Context, st messages.TxStatus) bool {
	switch st.State {
	case Preparing.String(), Aborting.String():
		if st.OnePhase && len(st.Participants) == 1 {
			// No decision record: its participant decides, and is asked.
			e.log.Info("asking the participant of a one-phase commit its dead coordinator left undecided",
				zap.String("txid", st.ID), zap.String("previous_owner", st.Owner))
			return e.shardOf(st.ID).post(onePhaseOrphanReq{st: st})
		}
		state, err := e.records.recordAbort(ctx, st.ID)
		switch {
		case err != nil:
			return false
		case state == recordCommitting: // commit recovery drives it
			return true
		case state == recordCommitted: // finished; its last status writes were lost
			return e.markCommitted(ctx, st.ID) == nil
		}
		e.log.Info("aborting a transaction its dead coordinator left undecided", zap.String("txid", st.ID), zap.String("previous_owner", st.Owner))
		e.stats.OrphansAborted.Add(1)
		return e.shardOf(st.ID).post(orphanReq{st: st})
	case Committing.String():
		// A committing status is written only once the record is durable;
		// the record says committed once every participant acknowledged, and
		// is gone after the retention, like the status.
		rec, err := e.records.get(ctx, st.ID)
		switch {
		case err == nil && rec.State == recordCommitting: // commit recovery drives it
			return true
		case err == nil && rec.State == recordCommitted, errors.Is(err, ErrNoEntry):
			return e.markCommitted(ctx, st.ID) == nil
		}
		return false
	}
	return true
}

// live returns the instances whose lease is live.
func (l *leases) live(ctx context.Context) (map[string]bool, error) {
	es, _, err := l.kv.Entries(ctx, 0, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range es {
		out[e.Key] = true
	}
	return out, nil
}

// abortOrphan starts sending abort for a transaction found undecided after
// its coordinator died, its abort now recorded.
func (s *shard) abortOrphan(st messages.TxStatus) {
	if s.knows(st.ID) {
		return
	}
	rec := txn.Record{ID: st.ID, State: txn.Aborting}
	for _, p := range st.Participants {
		rec.Participants = append(rec.Participants, p.Name)
	}
	tx, err := txn.Recover(rec, s.takeoverSpec())
	if err != nil {
		s.e.log.Error("an orphan transaction cannot be aborted", zap.String("txid", st.ID), zap.Error(err))
		return
	}
	en := &entry{tx: tx, started: st.StartedAt, decidedAt: s.e.now(), abortCause: causeOrphan}
	s.e.noteTaken(&en.hist, &st, "undecided transaction (abort recorded)")
	s.drive(en, "abort")
}

// knows reports whether this shard runs or remembers transaction id: one
// found by recovery is taken over only if not.
func (s *shard) knows(id string) bool {
	_, active := s.active[id]
	_, finished := s.finished[id]
	return active || finished
}

// takeoverSpec is the timing of a transaction taken over: the engine's.
func (s *shard) takeoverSpec() txn.Spec {
	return txn.Spec{PrepareTimeout: s.e.cfg.PrepareTimeout, RetryBase: s.e.cfg.RetryBase, RetryMax: s.e.cfg.RetryMax, AbortSends: s.e.cfg.AbortSends}
}

// drive starts driving en, a transaction taken over, traced from phase
// (if any): its first sends, and its status, now owned here.
func (s *shard) drive(en *entry, phase string) {
	id := en.tx.ID()
	en.timers = make(map[txn.TimerKind]Timer, 2)
	en.trace = s.e.startTrace(context.Background(), "natstx.transaction", id, messages.Protocol2PC, true)
	if phase != "" {
		en.trace.enterPhase(phase)
	}
	s.active[id] = en
	s.e.inFlight.Add(1)
	s.apply(en, en.tx.Start())
	s.queueStatus(en)
}

// askOnePhase takes over a one-phase commit found undecided after its
// coordinator died: it sends the participant commit-one-phase without a
// payload and with a deadline long past, re-sent until answered, so that
// the participant answers what it decided or, having seen nothing (the
// original command may still come: it will find the abort recorded),
// votes abort without doing anything. The answer ends the transaction.
func (s *shard) askOnePhase(st messages.TxStatus) {
	if s.knows(st.ID) {
		return
	}
	tx, err := txn.RecoverOnePhase(st.ID, st.Participants[0].Name, s.takeoverSpec())
	if err != nil {
		s.e.log.Error("an orphan one-phase commit cannot be taken over", zap.String("txid", st.ID), zap.Error(err))
		return
	}
	en := &entry{tx: tx, started: st.StartedAt, deadline: onePhaseProbeDeadline, abortCause: -1}
	s.e.noteTaken(&en.hist, &st, "undecided one-phase commit (its participant is asked)")
	s.e.stats.OnePhaseTakeovers.Add(1)
	s.drive(en, "one-phase")
}

// onePhaseProbeDeadline is the deadline of the commit-one-phase a
// coordinator taking a one-phase commit over sends: passed by any clock,
// so that a participant that has not decided votes abort.
var onePhaseProbeDeadline = time.UnixMilli(1)

// knowsFinal reports whether this engine runs or remembers transaction id,
// and, if it finished here, its final status document.
func (e *Engine) knowsFinal(id string) (bool, *messages.TxStatus) {
	ch := make(chan result, 1)
	r := e.call(id, statusReq{id: id, ch: ch}, ch)
	if r.err != nil {
		return false, nil
	}
	if !r.out.State.Final() {
		return true, nil
	}
	st := statusOf(r.out, e.cfg.Instance, r.started, r.decided, e.now())
	return true, &st
}

// rewriteStatus writes a final status over a status that is not final.
func (e *Engine) rewriteStatus(ctx context.Context, final messages.TxStatus) error {
	return e.updateStatus(ctx, final.ID, &final, func(have *messages.TxStatus) bool {
		if isFinal(have.State) {
			return false
		}
		if len(final.History) == 0 {
			final.History, final.HistoryDropped = have.History, have.HistoryDropped
			addToStatus(&final, messages.TxEvent{At: e.now().UTC(), Event: messages.EventEnded, By: e.cfg.Instance, Detail: final.State})
		}
		*have = final
		return true
	})
}

// knows reports whether this engine runs or remembers transaction id.
func (e *Engine) knows(id string) bool {
	ch := make(chan result, 1)
	r := e.call(id, statusReq{id: id, ch: ch}, ch)
	return r.err == nil
}

// recover starts driving a claimed commit record in this shard.
func (s *shard) recover(rec decisionRecord, prior *messages.TxStatus) {
	if s.knows(rec.ID) {
		return
	}
	tx, err := txn.Recover(txn.Record{ID: rec.ID, State: txn.Committing, Participants: rec.Participants, ReadOnly: rec.ReadOnly}, s.takeoverSpec())
	if err != nil {
		s.e.log.Error("a commit record cannot be recovered", zap.String("txid", rec.ID), zap.Error(err))
		return
	}
	en := &entry{tx: tx, started: rec.DecidedAt, decidedAt: rec.DecidedAt, abortCause: -1}
	s.e.noteTaken(&en.hist, prior, "commit decision")
	s.e.stats.Recovered.Add(1)
	s.drive(en, "commit")
}

// onOutcome answers a participant in doubt. The answer is final unless it is
// "pending": commit if a commit is recorded; abort if an abort is recorded or
// can be recorded now, which only happens once the transaction's deadline has
// passed and no commit decision exists (and then none ever can).
func (e *Engine) onOutcome(m *nats.Msg) {
	if e.halted.Load() {
		return // a halted engine is a dead process
	}
	var req messages.OutcomeRequest
	answer := func(r messages.OutcomeResponse) {
		data, _ := json.Marshal(r)
		_ = m.Respond(data)
	}
	if err := json.Unmarshal(m.Data, &req); err != nil {
		answer(messages.OutcomeResponse{Error: fmt.Sprintf("outcome request is not valid JSON: %v", err)})
		return
	}
	if err := messages.ValidateName("transaction ID", req.ID); err != nil {
		answer(messages.OutcomeResponse{Error: err.Error()})
		return
	}
	// Work off the subscription goroutine: it may write a record.
	e.spawn(func() {
		ctx, cancel := e.withTimeout(e.base, 5*time.Second)
		defer cancel()
		r := e.Resolve(ctx, req)
		e.log.Info("answered a participant in doubt", zap.String("txid", req.ID), zap.String("participant", req.Participant),
			zap.String("outcome", r.Outcome), zap.String("reason", r.Reason), zap.String("error", r.Error))
		answer(r)
	})
}

// Resolve answers a participant in doubt about transaction req.ID, as the
// in-doubt API does (the simulator calls it directly). The answer is final
// unless it is "pending": commit if a commit is recorded; abort if an abort
// is recorded or can be recorded now, which only happens once no commit can
// follow: the transaction's deadline has passed, or (when the participant
// does not know the deadline) its coordinator is dead.
func (e *Engine) Resolve(ctx context.Context, req messages.OutcomeRequest) messages.OutcomeResponse {
	e.stats.InDoubtQueries.Add(1)
	received := e.now()
	ch := make(chan result, 1)
	if r := e.call(req.ID, statusReq{id: req.ID, ch: ch}, ch); r.err == nil {
		switch {
		case r.out.Committed() && r.persisting:
			// Not durable yet: the write may still lose to a recorded abort.
			return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "commit decided, its record is being written"}
		case r.out.Committed():
			return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "this coordinator decided commit"}
		case r.out.State.Decided():
			return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: r.out.Reason}
		}
		return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "still collecting votes"}
	} else if errors.Is(r.err, ErrStopped) {
		return messages.OutcomeResponse{Error: "the coordinator is stopping"}
	}
	rec, err := e.records.get(ctx, req.ID)
	switch {
	case err == nil && (rec.State == recordCommitting || rec.State == recordCommitted):
		return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "commit decision recorded by " + rec.Owner}
	case err == nil && rec.State == recordAborted:
		return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "abort recorded"}
	case err != nil && !errors.Is(err, ErrNoEntry):
		return messages.OutcomeResponse{Error: "reading the decision record: " + err.Error()}
	}
	if req.DeadlineMs > 0 && e.now().Before(time.UnixMilli(req.DeadlineMs)) {
		return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "undecided and before its deadline"}
	}
	// A transaction that committed everywhere has had its record purged; its
	// status, while retained, still says so (a late question from a
	// participant that has committed since it asked).
	st, haveStatus := e.readStatus(ctx, req.ID)
	if haveStatus && st.State == Committed.String() {
		return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "committed everywhere"}
	}
	if haveStatus && st.OnePhase {
		// Its participant decides it, and records no abort here: an abort
		// recorded now could contradict its commit.
		return messages.OutcomeResponse{Error: "a one-phase commit is decided by its participant, which is never in doubt about it"}
	}
	why := "no commit decision by the deadline (presumed abort, now recorded)"
	if req.DeadlineMs <= 0 {
		// Without the deadline only the coordinator's death settles it: a
		// live owner may still be collecting votes, however long its
		// deadline is.
		if !haveStatus {
			return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "undecided; the question carries no deadline and no status names its coordinator"}
		}
		if st.Owner != e.cfg.Instance {
			alive, err := e.leases.alive(ctx, st.Owner)
			if err != nil {
				return messages.OutcomeResponse{Error: "reading the lease of " + st.Owner + ": " + err.Error()}
			}
			if alive {
				return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "undecided; its coordinator " + st.Owner + " is alive"}
			}
		}
		why = "its coordinator " + st.Owner + " died before deciding (presumed abort, now recorded)"
	}
	if req.AskedAtMs > 0 && e.now().Sub(time.UnixMilli(req.AskedAtMs)) > e.cfg.maxQuestionAge() {
		return messages.OutcomeResponse{Error: fmt.Sprintf("the question was asked %v ago: too old to record an abort on; ask again",
			e.now().Sub(time.UnixMilli(req.AskedAtMs)).Round(time.Millisecond))}
	}
	if e.now().Sub(received) > e.cfg.LeaseTTL {
		// This instance was paused (or starved) while answering: what it
		// read may be stale by now (the transaction may have committed and
		// its records expired). The participant asks again.
		return messages.OutcomeResponse{Error: "the question went stale while this coordinator answered it; ask again"}
	}
	state, err := e.records.recordAbort(ctx, req.ID)
	switch {
	case err != nil:
		return messages.OutcomeResponse{Error: "recording the abort: " + err.Error()}
	case state == recordCommitting || state == recordCommitted:
		return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "commit decision recorded"}
	}
	if err := e.markAborted(ctx, req.ID, why); err != nil {
		e.log.Debug("status not marked aborted", zap.String("txid", req.ID), zap.Error(err))
	}
	return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: why}
}

// readStatus reads the status of id from the status bucket.
func (e *Engine) readStatus(ctx context.Context, id string) (messages.TxStatus, bool) {
	var st messages.TxStatus
	if e.status == nil {
		return st, false
	}
	en, err := e.status.Get(ctx, id)
	if err != nil {
		return st, false
	}
	return st, json.Unmarshal(en.Value, &st) == nil
}

// onStatus answers a StatusRequest: from this engine's memory, else the
// status bucket, else the decision record.
func (e *Engine) onStatus(m *nats.Msg) {
	if e.halted.Load() {
		return
	}
	var req messages.StatusRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		e.respond(m, nil, fmt.Errorf("%w: status request is not valid JSON: %v", messages.ErrMalformed, err))
		return
	}
	if err := messages.ValidateName("transaction ID", req.ID); err != nil {
		e.respond(m, nil, err)
		return
	}
	if st, err := e.statusDoc(req.ID); err == nil {
		e.respond(m, &st, nil)
		return
	}
	e.spawn(func() {
		ctx, cancel := e.withTimeout(e.base, 5*time.Second)
		defer cancel()
		if st, ok := e.readStatus(ctx, req.ID); ok {
			e.respond(m, &st, nil)
			return
		}
		if rec, err := e.records.get(ctx, req.ID); err == nil {
			st := messages.TxStatus{ID: rec.ID, State: rec.State, Owner: rec.Owner, UpdatedAt: rec.DecidedAt}
			for _, p := range rec.Participants {
				st.Participants = append(st.Participants, messages.ParticipantStatus{Name: p, Vote: "yes"})
			}
			e.respond(m, &st, nil)
			return
		}
		e.respond(m, nil, fmt.Errorf("%w: %s", ErrUnknownTx, req.ID))
	})
}

// warnUnlessStopping logs a failed background call at warn level, unless
// it failed because the engine is stopping (its context was cancelled).
func (e *Engine) warnUnlessStopping(msg string, fields ...zap.Field) {
	if e.base.Err() != nil {
		return
	}
	e.log.Warn(msg, fields...)
}
