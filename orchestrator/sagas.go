package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
)

// The engine drives sagas (package orchestrator/saga) in the same shards
// as two-phase transactions, over the same command stream and reply
// subject. Each step of a saga's machine asks for its record to be written
// before anything is sent: the record lives in SagaBucket, one key per
// saga, written by compare-and-set on the key's revision, so that one
// instance drives a saga at a time; an instance that takes over a dead
// one's sagas claims each record first, the same way.

// SagaBucket is the key-value bucket that holds sagas' records.
const SagaBucket = "natstx_saga"

// SagaRequest is a saga to run.
type SagaRequest struct {
	// ID is the saga's ID; empty means the engine assigns one (NewID).
	ID string
	// Definition is the saga.
	Definition saga.Definition
	// Timeout, when positive, bounds the saga going forward from its start;
	// the definition's deadline and the caller's context deadline win when
	// sooner.
	Timeout time.Duration
}

// ErrNoSagas is returned by the saga calls of an engine without a saga
// store (a simulated engine given none).
var ErrNoSagas = errors.New("natstx: this engine has no saga store")

// sagaDoc is what SagaBucket holds for one saga: its record and the
// instance driving it.
type sagaDoc struct {
	Owner  string      `json:"owner"`
	Record saga.Record `json:"record"`
}

// sagaEntry is a saga a shard drives.
type sagaEntry struct {
	sg      *saga.Saga
	started time.Time
	// kvRev is the revision of the saga's key; 0 before its first write.
	kvRev uint64
	// persisting: a record is being written; held is its Ready, whose sends
	// and timers wait for it, and queue the events that came meanwhile.
	persisting bool
	held       *saga.Ready
	// persistGen counts the entry's record writes: the answer of a write is
	// applied only to the entry and the write it was made for (a write of
	// an entry dropped since, by a fence, must not release the held sends of
	// the entry that recovered the saga after it).
	persistGen uint64
	queue      []saga.Event
	timers     []Timer
	waiters    []chan sagaResult
	// hist is what happened to it (TxStatus.History).
	hist history
	// trace is its spans; nil when tracing is off.
	trace *txTrace
	// statusWritten: its first status is written (or on its way);
	// statusQueued: a change waits for the next status write
	// (Config.StatusLinger).
	statusWritten, statusQueued bool
}

// queuedSaga is a saga whose status waits for the next status write.
type queuedSaga struct {
	id string
	en *sagaEntry
}

type sagaResult struct {
	rec   saga.Record
	owner string
	// running: the saga is driven here, and rec is its state in memory,
	// which may be ahead of its durable record (a write in flight).
	running bool
	err     error
}

type (
	sagaBeginReq struct {
		id string
		en *sagaEntry
		ch chan sagaResult
	}
	sagaPersistedEvent struct {
		id string
		// en and gen name the entry and the write this answers.
		en  *sagaEntry
		gen uint64
		rev uint64
		// lost: another instance wrote the record since: it drives the saga.
		lost bool
	}
	sagaTimerEvent struct {
		id string
		tm saga.Timer
	}
	sagaActReq struct {
		id string
		ev saga.Event
		ch chan sagaResult
	}
	sagaStatusReq struct {
		id   string
		wait bool
		ch   chan sagaResult
	}
	sagaRecoverReq struct {
		doc sagaDoc
		rev uint64
		// prior is the saga's status before the takeover, if any.
		prior *messages.TxStatus
	}
)

// openSagas declares SagaBucket.
func openSagas(ctx context.Context, js jetstream.JetStream, o StreamOptions, retention time.Duration) (jetstream.KeyValue, error) {
	o = o.withDefaults()
	return openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:         SagaBucket,
		Description:    "natstx saga records",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
		LimitMarkerTTL: retention,
	})
}

// BeginSaga starts a saga and returns its ID at once; SagaStatus and
// WaitSaga tell how it goes.
func (e *Engine) BeginSaga(ctx context.Context, req SagaRequest) (string, error) {
	switch {
	case e.stores.Sagas == nil:
		return req.ID, ErrNoSagas
	case !e.running.Load():
		return req.ID, ErrStopped
	case e.draining.Load():
		return req.ID, ErrDraining
	}
	callerID := req.ID != ""
	if !callerID {
		req.ID = NewID()
	}
	for _, st := range req.Definition.Steps {
		if len(st.Action) > e.cfg.MaxPayload || len(st.Compensation) > e.cfg.MaxPayload {
			return req.ID, fmt.Errorf("%w: step %s, the limit is %d bytes", ErrPayloadTooLarge, st.Name, e.cfg.MaxPayload)
		}
	}
	now := e.now()
	var deadline time.Time
	if req.Timeout > 0 {
		deadline = now.Add(req.Timeout)
	}
	if dl, ok := ctx.Deadline(); ok {
		if !dl.After(now) || ctx.Err() != nil {
			return req.ID, fmt.Errorf("%w: %s", ErrDeadlineExpired, req.ID)
		}
		if deadline.IsZero() || dl.Before(deadline) {
			deadline = dl
		}
	}
	sg, err := saga.New(saga.Params{ID: req.ID, Definition: req.Definition, Deadline: deadline})
	if err != nil {
		return req.ID, err
	}
	if n := e.inFlight.Add(1); n > int64(e.cfg.MaxInFlight) {
		e.inFlight.Add(-1)
		e.stats.Rejected.Add(1)
		return req.ID, fmt.Errorf("%w: the limit is %d", ErrOverloaded, e.cfg.MaxInFlight)
	}
	if callerID {
		if err := e.claimID(ctx, req.ID); err != nil {
			e.inFlight.Add(-1)
			return req.ID, err
		}
	}
	ch := make(chan sagaResult, 1)
	en := &sagaEntry{sg: sg, started: now}
	names := make([]string, 0, len(req.Definition.Steps))
	for _, st := range req.Definition.Steps {
		if !slices.Contains(names, st.Participant) {
			names = append(names, st.Participant)
		}
	}
	e.noteBegun(&en.hist, names)
	en.trace = e.startTrace(ctx, "natstx.saga", req.ID, messages.ProtocolSaga, false, attribute.StringSlice("natstx.participants", names))
	en.trace.enterPhase("forward")
	r := e.callSaga(req.ID, sagaBeginReq{id: req.ID, en: en, ch: ch}, ch)
	if r.err != nil {
		if errors.Is(r.err, ErrStopped) {
			e.inFlight.Add(-1)
		}
		en.trace.end("not begun", r.err.Error())
		return req.ID, r.err
	}
	return req.ID, nil
}

// ExecuteSaga runs a saga until it completed or was compensated, and
// returns its final record; if ctx ends first, it returns the record as it
// stands and ctx's error (the saga goes on).
func (e *Engine) ExecuteSaga(ctx context.Context, req SagaRequest) (saga.Record, error) {
	id, err := e.BeginSaga(ctx, req)
	if err != nil {
		return saga.Record{ID: id}, err
	}
	return e.WaitSaga(ctx, id)
}

// WaitSaga waits until saga id completed or was compensated, or ctx ends;
// it returns the record as it stands then.
func (e *Engine) WaitSaga(ctx context.Context, id string) (saga.Record, error) {
	ch := make(chan sagaResult, 1)
	if !e.shardOf(id).post(sagaStatusReq{id: id, wait: true, ch: ch}) {
		return saga.Record{ID: id}, ErrStopped
	}
	for e.coop && ctx.Err() == nil {
		select {
		case r := <-ch:
			return r.rec, r.err
		default:
		}
		if !e.sleep(0) {
			return saga.Record{ID: id}, ErrStopped
		}
	}
	select {
	case r := <-ch:
		return r.rec, r.err
	case <-e.stop:
		return saga.Record{ID: id}, ErrStopped
	case <-ctx.Done():
	}
	rec, err := e.SagaStatus(id)
	if err == nil {
		err = ctx.Err()
	}
	return rec, err
}

// SagaStatus returns the record of saga id, running or finished within the
// retention, as this engine knows it.
func (e *Engine) SagaStatus(id string) (saga.Record, error) {
	ch := make(chan sagaResult, 1)
	r := e.callSaga(id, sagaStatusReq{id: id, ch: ch}, ch)
	return r.rec, r.err
}

// ActOnSaga applies an operator action (messages.SagaRetry, SagaResolve,
// SagaAbort) to a saga this engine drives; who and why are recorded with
// it. It returns the record after the action.
func (e *Engine) ActOnSaga(req messages.SagaActRequest) (saga.Record, error) {
	ev := saga.Event{Step: req.Step, Who: req.Who, Why: req.Why}
	switch req.Action {
	case messages.SagaRetry:
		ev.Kind = saga.EventRetryNow
	case messages.SagaResolve:
		ev.Kind = saga.EventResolve
	case messages.SagaAbort:
		ev.Kind = saga.EventAbort
	default:
		return saga.Record{ID: req.ID}, fmt.Errorf("%w: unknown saga action %q; want %s, %s or %s", messages.ErrMalformed, req.Action, messages.SagaRetry, messages.SagaResolve, messages.SagaAbort)
	}
	if req.Who == "" || req.Why == "" {
		return saga.Record{ID: req.ID}, fmt.Errorf("%w: an operator action says who acts and why", messages.ErrMalformed)
	}
	ch := make(chan sagaResult, 1)
	r := e.callSaga(req.ID, sagaActReq{id: req.ID, ev: ev, ch: ch}, ch)
	return r.rec, r.err
}

// callSaga hands req to id's shard and waits for its answer on ch.
func (e *Engine) callSaga(id string, req any, ch chan sagaResult) sagaResult {
	return callShard(e, id, req, ch, sagaResult{rec: saga.Record{ID: id}, err: ErrStopped})
}

// handleSaga handles the shard events of sagas; false if v is not one.
func (s *shard) handleSaga(v any) bool {
	switch v := v.(type) {
	case sagaBeginReq:
		if _, dup := s.sagas[v.id]; dup || s.knowsID(v.id) {
			s.e.inFlight.Add(-1)
			v.ch <- sagaResult{err: fmt.Errorf("%w: %s is running or has run", ErrDuplicateTx, v.id)}
			return true
		}
		s.sagas[v.id] = v.en
		s.e.stats.Begun.Add(1)
		s.e.stats.SagasBegun.Add(1)
		v.ch <- sagaResult{rec: v.en.sg.Record(), owner: s.e.cfg.Instance}
		s.sagaApply(v.id, v.en, v.en.sg.Start(s.e.now()))
	case sagaPersistedEvent:
		en := s.sagas[v.id]
		if en == nil || en != v.en || !en.persisting || en.persistGen != v.gen {
			return true // the answer of a write made for an entry dropped since
		}
		if v.lost {
			s.e.log.Warn("another instance wrote this saga's record; it drives the saga now", zap.String("saga", v.id))
			s.dropSaga(v.id, en, fmt.Errorf("natstx: saga %s is driven by another instance now", v.id))
			return true
		}
		en.kvRev, en.persisting = v.rev, false
		rd := *en.held
		en.held = nil
		s.sagaEffects(v.id, en, rd)
		for !en.persisting && len(en.queue) > 0 && s.sagas[v.id] == en {
			ev := en.queue[0]
			en.queue = en.queue[1:]
			s.sagaFeed(v.id, en, ev)
		}
	case sagaTimerEvent:
		if en := s.sagas[v.id]; en != nil {
			s.sagaStep(v.id, en, saga.Event{Kind: saga.EventTimer, At: s.e.now(), Timer: v.tm})
		}
	case sagaActReq:
		en := s.sagas[v.id]
		if en == nil {
			r := s.lookupSaga(v.id)
			if r.err == nil {
				r.err = fmt.Errorf("natstx: saga %s is %s: nothing to act on", v.id, r.rec.State)
			}
			v.ch <- r
			return true
		}
		v.ev.At = s.e.now()
		if en.persisting {
			// Tried at once on a copy of the saga, so that an action it
			// refuses (a step it does not have, an action its state does
			// not allow) is refused now, not acknowledged; the saga takes
			// it once its record is written. (The answer cannot wait for
			// the write: a caller's wait must not outlast the shard's
			// turn.)
			if rd := en.sg.Clone().Step(v.ev); rd.Ignored != "" {
				v.ch <- sagaResult{rec: en.sg.Record(), err: fmt.Errorf("natstx: saga %s: %s", v.id, rd.Ignored)}
				return true
			}
			en.queue = append(en.queue, v.ev)
			v.ch <- sagaResult{rec: en.sg.Record(), owner: s.e.cfg.Instance}
			return true
		}
		s.sagaAct(v.id, en, v.ev, v.ch)
	case sagaStatusReq:
		if en := s.sagas[v.id]; en != nil {
			if v.wait {
				en.waiters = append(en.waiters, v.ch)
				return true
			}
			v.ch <- sagaResult{rec: en.sg.Record(), owner: s.e.cfg.Instance, running: true}
			return true
		}
		v.ch <- s.lookupSaga(v.id)
	case sagaRecoverReq:
		s.recoverSaga(v.doc, v.rev, v.prior)
	default:
		return false
	}
	return true
}

// sagaAct applies an operator's action to a saga whose record is not
// being written, and answers the call on ch: the record after it, or why
// the saga refused it.
func (s *shard) sagaAct(id string, en *sagaEntry, ev saga.Event, ch chan sagaResult) {
	rd := en.sg.Step(ev)
	if rd.Ignored != "" {
		ch <- sagaResult{rec: en.sg.Record(), err: fmt.Errorf("natstx: saga %s: %s", id, rd.Ignored)}
		return
	}
	s.e.noteSagaEvent(&en.hist, en.sg, ev)
	s.sagaApply(id, en, rd)
	ch <- sagaResult{rec: en.sg.Record(), owner: s.e.cfg.Instance}
}

// knowsID reports whether the shard runs or remembers a two-phase
// transaction of that ID.
func (s *shard) knowsID(id string) bool {
	_, active := s.active[id]
	_, finished := s.finished[id]
	return active || finished
}

// lookupSaga answers from the finished sagas this shard remembers.
func (s *shard) lookupSaga(id string) sagaResult {
	if rec, ok := s.finishedSagas[id]; ok {
		return sagaResult{rec: rec, owner: s.e.cfg.Instance}
	}
	return sagaResult{rec: saga.Record{ID: id}, err: fmt.Errorf("%w: %s", ErrUnknownTx, id)}
}

// sagaStep feeds ev to a saga, or queues it while its record is written.
func (s *shard) sagaStep(id string, en *sagaEntry, ev saga.Event) {
	if en.persisting {
		en.queue = append(en.queue, ev)
		return
	}
	s.sagaFeed(id, en, ev)
}

// sagaFeed feeds ev to a saga whose record is not being written, and
// records in its history what an accepted event tells.
func (s *shard) sagaFeed(id string, en *sagaEntry, ev saga.Event) {
	rd := en.sg.Step(ev)
	if rd.Ignored == "" {
		s.e.noteSagaEvent(&en.hist, en.sg, ev)
		if ev.Kind == saga.EventReply {
			en.trace.answered(en.sg.Participant(ev.Step), ev.Step, string(ev.Result), ev.Reason, ev.Result != saga.ResultDone)
		}
	}
	s.sagaApply(id, en, rd)
}

// sagaReply feeds a reply to its saga.
func (s *shard) sagaReply(r messages.Reply) {
	en := s.sagas[r.TxID]
	if en == nil {
		if _, ok := s.finishedSagas[r.TxID]; !ok {
			s.e.stats.StrayReplies.Add(1)
		}
		return
	}
	ev := saga.Event{Kind: saga.EventReply, At: s.e.now(), Step: r.Step, Op: saga.Op(r.Op), Attempt: r.Attempt, Code: r.Code, Reason: r.Reason}
	switch r.Result {
	case messages.Ack:
		ev.Result = saga.ResultDone
	case messages.Refused:
		ev.Result = saga.ResultFailed
	default: // Failed: this time
		ev.Result = saga.ResultRetry
	}
	s.sagaStep(r.TxID, en, ev)
}

// sagaApply carries out a saga's Ready: its record first, then the rest.
func (s *shard) sagaApply(id string, en *sagaEntry, rd saga.Ready) {
	if rd.Ignored != "" {
		s.e.stats.Ignored.Add(1)
		s.e.log.Debug("saga event ignored", zap.String("saga", id), zap.String("why", rd.Ignored))
		return
	}
	if rd.Persist == nil {
		s.sagaEffects(id, en, rd)
		return
	}
	en.persisting, en.held = true, &rd
	en.persistGen++
	doc := sagaDoc{Owner: s.e.cfg.Instance, Record: *rd.Persist}
	rev, gen := en.kvRev, en.persistGen
	s.e.spawn(func() { s.persistSaga(id, en, gen, doc, rev) })
}

// persistSaga writes a saga's record by compare-and-set on the key's
// revision (a create for its first), retrying failures until it is written,
// found written by another instance, found gone, or the engine stops.
//
// Only a final record expires (with the retention), so a record found gone
// was finished by another instance that took the saga over: the write is
// lost. For the same reason the first record is not created once the
// retention has passed since the saga started (the process was paused, or
// the store unavailable, that long): an earlier attempt whose answer was
// lost may have got in, been taken over and finished, and expired since,
// and a create now would run the saga again from its start. If such an
// attempt got in and the saga is not finished, the recovery loop drives
// its record.
func (s *shard) persistSaga(id string, en *sagaEntry, gen uint64, doc sagaDoc, rev uint64) {
	data, err := doc.marshal()
	if err != nil {
		s.e.log.Error("a saga record cannot be encoded", zap.String("saga", id), zap.Error(err))
		return
	}
	// A final record expires after the retention, by the TTL of the write
	// that makes it final.
	var ttl time.Duration
	if doc.Record.State.Final() {
		ttl = s.e.cfg.Retention
	}
	lost := func(why string) {
		s.e.log.Warn("a saga record is not written: "+why, zap.String("saga", id), zap.Uint64("revision", doc.Record.Revision))
		s.post(sagaPersistedEvent{id: id, en: en, gen: gen, lost: true})
	}
	wait := 50 * time.Millisecond
	for !s.e.halted.Load() {
		if rev == 0 && s.e.now().Sub(doc.Record.StartedAt) > s.e.cfg.Retention {
			lost("its first record was not written within the retention of its start")
			return
		}
		ctx, cancel := s.e.withTimeout(s.e.base, 5*time.Second)
		var newRev uint64
		if rev == 0 {
			newRev, err = s.e.stores.Sagas.Create(ctx, id, data, ttl)
		} else {
			newRev, err = s.e.stores.Sagas.Update(ctx, id, data, rev, ttl)
		}
		if errors.Is(err, ErrEntryExists) || errors.Is(err, ErrRevisionChanged) {
			// Our own write whose answer was lost, or another owner's.
			var have StoreEntry
			if have, err = s.e.stores.Sagas.Get(ctx, id); err == nil {
				var got sagaDoc
				if json.Unmarshal(have.Value, &got) == nil && got.Owner == doc.Owner && got.Record.Revision == doc.Record.Revision {
					newRev = have.Revision
				} else {
					cancel()
					s.post(sagaPersistedEvent{id: id, en: en, gen: gen, lost: true})
					return
				}
			} else if errors.Is(err, ErrNoEntry) {
				cancel()
				lost("the record is gone: another instance finished the saga and its final record expired")
				return
			}
		}
		cancel()
		if err == nil {
			s.post(sagaPersistedEvent{id: id, en: en, gen: gen, rev: newRev})
			return
		}
		if s.e.base.Err() != nil {
			return
		}
		s.e.stats.PersistErrors.Add(1)
		s.e.log.Error("writing a saga record failed; retrying", zap.String("saga", id), zap.Error(err))
		if !s.e.sleep(wait) {
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// sagaEffects does the sends and timers of a Ready whose record is
// durable, reports stuck steps, and finishes a saga that is done.
func (s *shard) sagaEffects(id string, en *sagaEntry, rd saga.Ready) {
	for _, snd := range rd.Send {
		s.e.noteSend(&en.hist, snd.Participant, snd.Step, messages.Op(snd.Op), snd.Attempt)
		if snd.Op == saga.OpCompensate {
			en.trace.enterPhase("compensate")
		}
		tp, ts := en.trace.command(snd.Participant, snd.Step, messages.Op(snd.Op), snd.Attempt)
		s.e.publishSaga(snd, tp, ts)
	}
	for _, tr := range rd.Timers {
		tm := tr.Timer
		en.timers = append(en.timers, s.e.drv.AfterFunc(tr.After, func() { s.post(sagaTimerEvent{id: id, tm: tm}) }))
	}
	// Timers of a saga are never cancelled (the machine ignores superseded
	// ones); forget those that fired long ago so the list stays short.
	if len(en.timers) > 64 {
		en.timers = append(en.timers[:0], en.timers[len(en.timers)-32:]...)
	}
	rec := en.sg.Record()
	for _, step := range rd.Stuck {
		st, _ := rec.Step(step)
		s.e.stats.SagasStuck.Add(1)
		s.e.log.Error("saga step stuck: it keeps failing and is still retried; an operator may retry it now or resolve it by hand",
			zap.String("saga", id), zap.String("step", step), zap.String("state", string(rec.State)),
			zap.Int("attempts", st.Attempts), zap.Int("compensation_attempts", st.CompensationAttempts),
			zap.String("last_error", st.LastError), zap.Time("next_retry_at", st.NextRetryAt))
	}
	if rd.Done {
		s.e.noteEnded(&en.hist, string(rec.State))
	}
	s.queueSagaStatus(id, en, rec)
	if rd.Done {
		s.finishSaga(id, en, rec)
	}
}

// finishSaga ends a saga that completed or was compensated.
func (s *shard) finishSaga(id string, en *sagaEntry, rec saga.Record) {
	for _, t := range en.timers {
		t.Stop()
	}
	delete(s.sagas, id)
	s.e.inFlight.Add(-1)
	s.e.stats.sagas.observe(s.e.now().Sub(en.started))
	if rec.State == saga.StateCompleted {
		en.trace.end(string(rec.State), "")
	} else {
		en.trace.end(string(rec.State), rec.Reason)
	}
	if rec.State == saga.StateCompleted {
		s.e.stats.SagasCompleted.Add(1)
	} else {
		s.e.stats.SagasCompensated.Add(1)
	}
	for _, w := range en.waiters {
		w <- sagaResult{rec: rec, owner: s.e.cfg.Instance}
	}
	s.finishedSagas[id] = rec
	now := s.e.now()
	s.sagaExpiry.add(id, now.Add(s.e.cfg.Retention))
	s.sagaExpiry.expire(now, s.rememberLimit(), func(id string) { delete(s.finishedSagas, id) })
}

// dropSaga stops driving a saga another instance took over.
func (s *shard) dropSaga(id string, en *sagaEntry, err error) {
	for _, t := range en.timers {
		t.Stop()
	}
	delete(s.sagas, id)
	s.e.inFlight.Add(-1)
	for _, w := range en.waiters {
		w <- sagaResult{rec: en.sg.Record(), err: err}
	}
	en.trace.end("dropped", err.Error())
}

// publishSaga sends one saga command.
func (e *Engine) publishSaga(snd saga.Send, traceparent, tracestate string) {
	if e.halted.Load() {
		return
	}
	cmd := messages.Command{
		TxID: snd.Saga, Op: messages.Op(snd.Op), Participant: snd.Participant, Attempt: snd.Attempt,
		ReplyTo: messages.ReplySubject(e.cfg.Instance, snd.Participant), Payload: snd.Payload, Step: snd.Step, Deadline: snd.Deadline, Sender: *e.sender.Load(),
		TraceParent: traceparent, TraceState: tracestate,
	}
	if snd.Attempt > 1 {
		e.stats.Resends.Add(1)
	}
	if err := e.cmds.Publish(cmd); err != nil {
		e.stats.PublishErrors.Add(1)
		e.log.Warn("publishing a saga command failed; the step's timeout retries it", zap.String("saga", snd.Saga),
			zap.String("step", snd.Step), zap.String("op", string(snd.Op)), zap.Error(err))
	}
}

// sagaStatusOf converts a saga's record to the status document.
func sagaStatusOf(rec saga.Record, owner string, started, now time.Time) messages.TxStatus {
	st := messages.TxStatus{
		ID: rec.ID, Protocol: messages.ProtocolSaga, State: string(rec.State), Reason: rec.Reason, Owner: owner,
		StartedAt: rec.StartedAt.UTC(), UpdatedAt: now.UTC(), Deadline: rec.Deadline.UTC(),
	}
	if st.StartedAt.IsZero() {
		st.StartedAt = started.UTC()
	}
	if rec.Deadline.IsZero() {
		st.Deadline = time.Time{}
	}
	seen := map[string]bool{}
	for i, sr := range rec.Steps {
		def := rec.Definition.Steps[i]
		st.Steps = append(st.Steps, messages.StepStatus{
			Name: sr.Name, Participant: def.Participant, Status: string(sr.Status), Attempts: sr.Attempts,
			CompensationAttempts: sr.CompensationAttempts, LastError: sr.LastError, LastCode: sr.LastCode,
			NextRetryAt: sr.NextRetryAt.UTC(), Stuck: sr.Stuck, Pivot: def.Pivot, Note: sr.Note,
		})
		if sr.NextRetryAt.IsZero() {
			st.Steps[len(st.Steps)-1].NextRetryAt = time.Time{}
		}
		if !seen[def.Participant] {
			seen[def.Participant] = true
			st.Participants = append(st.Participants, messages.ParticipantStatus{Name: def.Participant, Vote: "-"})
		}
		switch sr.Status {
		case saga.StepRunning, saga.StepCompensating, saga.StepRetrying, saga.StepCompensationRetrying:
			st.Waiting = append(st.Waiting, sr.Name)
		}
	}
	if !rec.State.Final() {
		st.WaitingSince = st.StartedAt
	}
	return st
}

// queueSagaStatus writes the status of a saga whose record rec is durable:
// its first status and its final one at once, the changes between them
// once Config.StatusLinger has passed (or at once, when that is negative).
// A saga that ends within the linger writes two statuses, whatever its
// steps: the status shows its progress to those who look, and is not what
// recovery drives it by (its record is). The status a flush writes is of
// the durable record: one being written then is queued again when it is
// durable.
func (s *shard) queueSagaStatus(id string, en *sagaEntry, rec saga.Record) {
	if s.e.status == nil {
		return
	}
	if s.e.cfg.StatusLinger < 0 || !en.statusWritten || rec.State.Final() {
		en.statusWritten = true
		s.e.publishSagaStatus(rec, en.started, &en.hist)
		return
	}
	if !en.statusQueued {
		en.statusQueued = true
		s.sagaStatuses = append(s.sagaStatuses, queuedSaga{id: id, en: en})
	}
	s.scheduleStatusFlush()
}

// flushSagaStatuses writes the status of each saga queued that this shard
// still drives and whose record is durable.
func (s *shard) flushSagaStatuses() {
	for i, q := range s.sagaStatuses {
		q.en.statusQueued = false
		if s.sagas[q.id] == q.en && !q.en.persisting {
			s.e.publishSagaStatus(q.en.sg.Record(), q.en.started, &q.en.hist)
		}
		s.sagaStatuses[i] = queuedSaga{}
	}
	s.sagaStatuses = s.sagaStatuses[:0]
}

// publishSagaStatus writes a saga's status without waiting; a final one is
// retried until stored.
func (e *Engine) publishSagaStatus(rec saga.Record, started time.Time, h *history) {
	if e.status == nil || e.halted.Load() {
		return
	}
	st := sagaStatusOf(rec, e.cfg.Instance, started, e.now())
	st.History, st.HistoryDropped = h.events, h.dropped // encoded here, on the loop
	data, err := st.Marshal()
	if err != nil {
		return
	}
	var onErr func(error)
	if rec.State.Final() {
		onErr = func(err error) { e.retryFinalStatus(rec.ID, data, err) }
	}
	e.status.PutAsync(rec.ID, data, onErr)
}

// recoverSagas claims the unfinished sagas of dead instances (and this
// instance's own from before a restart) whose records were written since
// revision after (0: every one) and drives them on. It lists for scanSlice
// at most and returns where the next scan starts: after the highest
// revision it read, or just before the first record it could not handle;
// and whether it read every record and handled each.
func (e *Engine) recoverSagas(after uint64) (uint64, bool) {
	if e.stores.Sagas == nil {
		return after, true
	}
	// Most records are final: read their state alone, not their definition
	// and steps, and keep only the others.
	lctx, lcancel := e.withTimeout(e.base, e.cfg.scanSlice())
	entries, read, listErr := e.stores.Sagas.Entries(lctx, after, func(kve StoreEntry) bool {
		var head struct {
			Record struct {
				State saga.State `json:"state"`
			} `json:"record"`
		}
		return json.Unmarshal(kve.Value, &head) == nil && !head.Record.State.Final()
	})
	lcancel()
	if listErr != nil && read == after {
		e.warnUnlessStopping("listing saga records for recovery failed", zap.Error(listErr))
		return after, false
	}
	ctx, cancel := e.withTimeout(e.base, e.cfg.LeaseTTL)
	defer cancel()
	next := read
	retry := func(kve StoreEntry) { next = min(next, kve.Revision-1) }
	alive := map[string]bool{}
	for _, kve := range entries {
		var doc sagaDoc
		if json.Unmarshal(kve.Value, &doc) != nil || doc.Record.State.Final() {
			continue
		}
		if doc.Owner != e.cfg.Instance {
			ok, seen := alive[doc.Owner]
			if !seen {
				var err error
				if ok, err = e.leases.alive(ctx, doc.Owner); err != nil {
					retry(kve)
					continue
				}
				alive[doc.Owner] = ok
			}
			if ok {
				continue
			}
		}
		ch := make(chan sagaResult, 1)
		if r := e.callSaga(doc.Record.ID, sagaStatusReq{id: doc.Record.ID, ch: ch}, ch); r.err == nil {
			continue // running here already
		}
		prev := doc.Owner
		doc.Owner = e.cfg.Instance
		data, err := doc.marshal()
		if err != nil {
			continue
		}
		rev, err := e.stores.Sagas.Update(ctx, doc.Record.ID, data, kve.Revision, 0)
		if err != nil {
			// Changed since, or claimed by another instance first; or the
			// write failed, or applied with its answer lost: the next scan
			// tells.
			retry(kve)
			continue
		}
		e.log.Info("recovering a saga", zap.String("saga", doc.Record.ID), zap.String("previous_owner", prev), zap.String("state", string(doc.Record.State)))
		e.shardOf(doc.Record.ID).post(sagaRecoverReq{doc: doc, rev: rev, prior: e.priorStatus(ctx, doc.Record.ID)})
	}
	return next, listErr == nil && next == read
}

// recoverSaga starts driving a claimed saga in this shard.
func (s *shard) recoverSaga(doc sagaDoc, rev uint64, prior *messages.TxStatus) {
	id := doc.Record.ID
	if _, ok := s.sagas[id]; ok {
		return
	}
	sg, err := saga.Recover(doc.Record)
	if err != nil {
		s.e.log.Error("a saga record cannot be recovered", zap.String("saga", id), zap.Error(err))
		return
	}
	en := &sagaEntry{sg: sg, started: doc.Record.StartedAt, kvRev: rev}
	s.e.noteTaken(&en.hist, prior, "saga")
	en.trace = s.e.startTrace(context.Background(), "natstx.saga", id, messages.ProtocolSaga, true)
	if doc.Record.State == saga.StateRunning || doc.Record.State == saga.StateForwardStuck {
		en.trace.enterPhase("forward")
	} else {
		en.trace.enterPhase("compensate")
	}
	s.sagas[id] = en
	s.e.stats.Recovered.Add(1)
	s.e.inFlight.Add(1)
	s.sagaApply(id, en, sg.Start(s.e.now()))
}

// sagaKnownHere reports whether this instance drives or remembers saga id
// and, if it finished it here, its final status. Only a saga that finished
// here has a durable final record: one still driven here may be final in
// memory with its record's write in flight, and lost (another instance took
// it over meanwhile); its entry writes its final status once the record is
// durable.
func (e *Engine) sagaKnownHere(id string) (bool, *messages.TxStatus) {
	ch := make(chan sagaResult, 1)
	r := e.callSaga(id, sagaStatusReq{id: id, ch: ch}, ch)
	if r.err != nil {
		return false, nil
	}
	if r.running || !r.rec.State.Final() {
		return true, nil
	}
	st := sagaStatusOf(r.rec, e.cfg.Instance, r.rec.StartedAt, e.now())
	return true, &st
}

// sweepSaga makes the status of a saga that is not final, that this
// instance neither drives nor remembers, and whose owner is dead, agree
// with its record: a record that is final has its status rewritten from it
// (the final status write was lost with its coordinator); an unfinished one
// is claimed and driven by recoverSagas. False if it must be tried again.
func (e *Engine) sweepSaga(ctx context.Context, st messages.TxStatus) bool {
	if e.stores.Sagas == nil {
		return true
	}
	kve, err := e.stores.Sagas.Get(ctx, st.ID)
	if errors.Is(err, ErrNoEntry) {
		return true // expired with the retention, like its status will
	}
	if err != nil {
		return false
	}
	var doc sagaDoc
	if err := json.Unmarshal(kve.Value, &doc); err != nil || !doc.Record.State.Final() {
		return true
	}
	return e.rewriteStatus(ctx, sagaStatusOf(doc.Record, doc.Owner, doc.Record.StartedAt, e.now())) == nil
}
