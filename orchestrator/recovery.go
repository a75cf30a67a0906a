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
		for _, sub := range append(e.apiSubs, e.sub) {
			_ = sub.Unsubscribe()
		}
	}
	return e.halted.Load()
}

// leases keeps this instance's lease alive and answers whether another's is.
type leases struct {
	kv jetstream.KeyValue
}

func openLeases(ctx context.Context, js jetstream.JetStream, o StreamOptions, ttl time.Duration) (*leases, error) {
	o = o.withDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "natstx live coordinator instances",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("natstx: declaring key-value bucket %s: %w", LeaseBucket, err)
	}
	return &leases{kv: kv}, nil
}

func (l *leases) alive(ctx context.Context, instance string) (bool, error) {
	_, err := l.kv.Get(ctx, instance)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// recoveryLoop renews this instance's lease and, at start and then every
// half lease, takes over the commit records of dead instances (and its own
// from before a restart) and drives them to the end.
func (e *Engine) recoveryLoop() {
	defer e.wg.Done()
	e.recoverCommits()
	e.sweepOrphans(true)
	renew := time.NewTicker(e.cfg.LeaseTTL / 3)
	defer renew.Stop()
	scan := time.NewTicker(e.cfg.LeaseTTL / 2)
	defer scan.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-renew.C:
			if !e.halted.Load() {
				e.renewLease()
			}
		case <-scan.C:
			if !e.halted.Load() {
				e.recoverCommits()
				e.sweepOrphans(false)
			}
		}
	}
}

func (e *Engine) renewLease() {
	ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL/3)
	defer cancel()
	if _, err := e.leases.kv.Put(ctx, e.cfg.Instance, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		e.log.Warn("renewing the coordinator lease failed", zap.Error(err))
	}
}

// recoverCommits claims every commit record whose owner is dead (or is this
// instance but not running it) and starts driving it: commit is re-sent
// until every participant acknowledged. Claims are compare-and-set on the
// record's revision, so two instances never both claim one record.
func (e *Engine) recoverCommits() {
	ctx, cancel := context.WithTimeout(e.base, e.cfg.LeaseTTL)
	defer cancel()
	recs, err := e.records.commits(ctx)
	if err != nil {
		e.log.Warn("listing commit records for recovery failed", zap.Error(err))
		return
	}
	alive := map[string]bool{}
	for _, rec := range recs {
		if rec.Owner != e.cfg.Instance {
			ok, seen := alive[rec.Owner]
			if !seen {
				if ok, err = e.leases.alive(ctx, rec.Owner); err != nil {
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
			continue // finished, or claimed by another instance first
		}
		e.log.Info("recovering a commit decision", zap.String("txid", rec.ID), zap.String("previous_owner", rec.Owner))
		e.stats.Recovered.Add(1)
		e.shardOf(rec.ID).post(recoverReq{rec: claimed})
	}
}

// sweepOrphans finishes what dead instances left undecided. At start, and
// whenever an instance's lease has gone since the last look, it reads the
// status bucket: a transaction still preparing or aborting whose owner is
// dead gets an abort recorded (a create: if a commit record won, commit
// recovery drives it instead) and abort sent to every participant; one whose
// status says committing but whose record is gone has finished, and its
// status is set to committed.
func (e *Engine) sweepOrphans(first bool) {
	if e.status == nil {
		return
	}
	ctx, cancel := context.WithTimeout(e.base, 4*e.cfg.LeaseTTL)
	defer cancel()
	alive, err := e.leases.live(ctx)
	if err != nil {
		return
	}
	died := false
	for inst := range e.lastAlive {
		died = died || !alive[inst]
	}
	e.lastAlive = alive
	if !first && !died {
		return
	}
	w, err := e.status.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return
	}
	defer stopWatch(w)
	var orphans []messages.TxStatus
	for kve := range w.Updates() {
		if kve == nil { // the end of the current entries
			break
		}
		var st messages.TxStatus
		if json.Unmarshal(kve.Value(), &st) == nil && !isFinal(st.State) {
			orphans = append(orphans, st)
		}
	}
	for _, st := range orphans {
		if alive[st.Owner] && st.Owner != e.cfg.Instance || e.knows(st.ID) {
			continue
		}
		switch st.State {
		case Preparing.String(), Aborting.String():
			state, err := e.records.recordAbort(ctx, st.ID)
			switch {
			case err != nil, state == recordCommitting: // commit recovery drives it
				continue
			case state == recordCommitted: // finished; its last status writes were lost
				_ = e.markCommitted(ctx, st.ID)
				continue
			}
			e.log.Info("aborting a transaction its dead coordinator left undecided", zap.String("txid", st.ID), zap.String("previous_owner", st.Owner))
			e.stats.OrphansAborted.Add(1)
			e.shardOf(st.ID).post(orphanReq{st: st})
		case Committing.String():
			// A committing status is written only once the record is
			// durable; the record says committed once every participant
			// acknowledged, and is gone after the retention, like the status.
			if rec, err := e.records.get(ctx, st.ID); err == nil && rec.State == recordCommitted || errors.Is(err, jetstream.ErrKeyNotFound) {
				_ = e.markCommitted(ctx, st.ID)
			}
		}
	}
}

// live returns the instances whose lease is live.
func (l *leases) live(ctx context.Context) (map[string]bool, error) {
	lister, err := l.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	out := map[string]bool{}
	for k := range lister.Keys() {
		out[k] = true
	}
	return out, nil
}

// abortOrphan starts sending abort for a transaction found undecided after
// its coordinator died, its abort now recorded.
func (s *shard) abortOrphan(st messages.TxStatus) {
	if _, ok := s.active[st.ID]; ok {
		return
	}
	if _, ok := s.finished[st.ID]; ok {
		return
	}
	rec := txn.Record{ID: st.ID, State: txn.Aborting}
	for _, p := range st.Participants {
		rec.Participants = append(rec.Participants, p.Name)
	}
	tx, err := txn.Recover(rec, txn.Spec{
		PrepareTimeout: s.e.cfg.PrepareTimeout, RetryBase: s.e.cfg.RetryBase, RetryMax: s.e.cfg.RetryMax, AbortSends: s.e.cfg.AbortSends,
	})
	if err != nil {
		s.e.log.Error("an orphan transaction cannot be aborted", zap.String("txid", st.ID), zap.Error(err))
		return
	}
	en := &entry{tx: tx, started: st.StartedAt, decidedAt: time.Now(), timers: make(map[txn.TimerKind]*time.Timer, 2)}
	s.active[st.ID] = en
	s.e.inFlight.Add(1)
	s.apply(en, tx.Start())
	s.e.publishStatus(en)
}

// knows reports whether this engine runs or remembers transaction id.
func (e *Engine) knows(id string) bool {
	ch := make(chan result, 1)
	r := e.call(id, statusReq{id: id, ch: ch}, ch)
	return r.err == nil
}

// recover starts driving a claimed commit record in this shard.
func (s *shard) recover(rec decisionRecord) {
	if _, ok := s.active[rec.ID]; ok {
		return
	}
	if _, ok := s.finished[rec.ID]; ok {
		return
	}
	tx, err := txn.Recover(txn.Record{ID: rec.ID, State: txn.Committing, Participants: rec.Participants}, txn.Spec{
		PrepareTimeout: s.e.cfg.PrepareTimeout, RetryBase: s.e.cfg.RetryBase, RetryMax: s.e.cfg.RetryMax, AbortSends: s.e.cfg.AbortSends,
	})
	if err != nil {
		s.e.log.Error("a commit record cannot be recovered", zap.String("txid", rec.ID), zap.Error(err))
		return
	}
	en := &entry{tx: tx, started: rec.DecidedAt, decidedAt: rec.DecidedAt, timers: make(map[txn.TimerKind]*time.Timer, 2)}
	s.active[rec.ID] = en
	s.e.inFlight.Add(1)
	s.apply(en, tx.Start())
	s.e.publishStatus(en)
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
	e.stats.InDoubtQueries.Add(1)
	// Work off the subscription goroutine: it may write a record.
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx, cancel := context.WithTimeout(e.base, 5*time.Second)
		defer cancel()
		r := e.resolve(ctx, req)
		e.log.Info("answered a participant in doubt", zap.String("txid", req.ID), zap.String("participant", req.Participant),
			zap.String("outcome", r.Outcome), zap.String("reason", r.Reason), zap.String("error", r.Error))
		answer(r)
	}()
}

func (e *Engine) resolve(ctx context.Context, req messages.OutcomeRequest) messages.OutcomeResponse {
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
	}
	rec, err := e.records.get(ctx, req.ID)
	switch {
	case err == nil && (rec.State == recordCommitting || rec.State == recordCommitted):
		return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "commit decision recorded by " + rec.Owner}
	case err == nil && rec.State == recordAborted:
		return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "abort recorded"}
	case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
		return messages.OutcomeResponse{Error: "reading the decision record: " + err.Error()}
	}
	if req.DeadlineMs > 0 && time.Now().Before(time.UnixMilli(req.DeadlineMs)) {
		return messages.OutcomeResponse{Outcome: messages.OutcomePending, Reason: "undecided and before its deadline"}
	}
	// A transaction that committed everywhere has had its record purged; its
	// status, while retained, still says so (a late question from a
	// participant that has committed since it asked).
	if e.status != nil {
		if en, err := e.status.Get(ctx, req.ID); err == nil {
			var st messages.TxStatus
			if json.Unmarshal(en.Value(), &st) == nil && st.State == Committed.String() {
				return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "committed everywhere"}
			}
		}
	}
	state, err := e.records.recordAbort(ctx, req.ID)
	switch {
	case err != nil:
		return messages.OutcomeResponse{Error: "recording the abort: " + err.Error()}
	case state == recordCommitting || state == recordCommitted:
		return messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "commit decision recorded"}
	}
	if err := e.markAborted(ctx, req.ID, "presumed abort: no commit decision by the deadline"); err != nil {
		e.log.Debug("status not marked aborted", zap.String("txid", req.ID), zap.Error(err))
	}
	return messages.OutcomeResponse{Outcome: messages.OutcomeAbort, Reason: "no commit decision by the deadline (presumed abort, now recorded)"}
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
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx, cancel := context.WithTimeout(e.base, 5*time.Second)
		defer cancel()
		if e.status != nil {
			if en, err := e.status.Get(ctx, req.ID); err == nil {
				var st messages.TxStatus
				if json.Unmarshal(en.Value(), &st) == nil {
					e.respond(m, &st, nil)
					return
				}
			}
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
	}()
}
