package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/orchestrator/txn"
)

// openStatusBucket declares the bucket that holds every transaction's
// latest TxStatus. Unlike the decision records, status entries may expire
// with the bucket's MaxAge: they are for people and tools, not for recovery.
func openStatusBucket(ctx context.Context, js jetstream.JetStream, o StreamOptions, retention time.Duration, maxBytes int64) (jetstream.KeyValue, error) {
	o = o.withDefaults()
	kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      messages.StatusBucket,
		Description: "natstx transaction status, latest per transaction",
		History:     1,
		TTL:         retention,
		MaxBytes:    maxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, err
	}
	// A key-value bucket refuses writes once full; statuses are a view, so
	// the oldest make room for new ones instead.
	err = updateBucketStream(ctx, js, messages.StatusBucket, "letting the bucket drop its oldest statuses",
		func(cfg *jetstream.StreamConfig) bool {
			if cfg.Discard == jetstream.DiscardOld {
				return false
			}
			cfg.Discard = jetstream.DiscardOld
			return true
		})
	if err != nil {
		return nil, err
	}
	return kv, nil
}

// statusOf converts an outcome to the status document the bucket and the
// API carry.
func statusOf(out Outcome, owner string, started, decided, updated time.Time) messages.TxStatus {
	st := messages.TxStatus{
		ID: out.ID, State: out.State.String(), Reason: out.Reason, TimedOut: out.TimedOut, OnePhase: out.OnePhase,
		Owner: owner, StartedAt: started.UTC(), UpdatedAt: updated.UTC(), WaitingSince: started.UTC(),
		Participants: make([]messages.ParticipantStatus, len(out.Participants)),
	}
	if out.State.Decided() && !decided.IsZero() {
		st.WaitingSince = decided.UTC()
	}
	for i, p := range out.Participants {
		st.Participants[i] = messages.ParticipantStatus{Name: p.Name, Vote: p.Vote.String(), Reason: p.Reason, Acked: p.Acked, Sends: p.Sends, Rejected: p.Rejected}
		if waitsFor(out, p) {
			st.Waiting = append(st.Waiting, p.Name)
		}
	}
	if out.State.Final() {
		st.WaitingSince = time.Time{}
	}
	return st
}

// waitsFor reports whether out still waits for participant p: for its vote
// while preparing, for its acknowledgement once decided and until final.
func waitsFor(out Outcome, p txn.PartResult) bool {
	switch {
	case out.State.Final():
		return false
	case out.State == Preparing:
		return p.Vote == txn.VotePending
	}
	return out.State.Decided() && !p.Acked
}

// waitingFor names the participants out still waits for (waitsFor),
// comma-separated: the status's Waiting, as one comparable string.
func waitingFor(out Outcome) string {
	var b strings.Builder
	for _, p := range out.Participants {
		if waitsFor(out, p) {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(p.Name)
		}
	}
	return b.String()
}

// statusFlushEvent has a shard write the statuses that changed (Config.StatusLinger).
type statusFlushEvent struct{}

// queueStatus writes en's status: a final one, or an abort decision, at
// once; committing once Config.StatusLinger has passed (unless it is final
// by then, and so written already), or at once when that is negative. An
// abort decision is the outcome its waiters are told at once: a status
// read after it must not still say preparing.
func (s *shard) queueStatus(en *entry) {
	if s.e.status == nil {
		return
	}
	if st := en.tx.State(); s.e.cfg.StatusLinger < 0 || st.Final() || st == txn.Aborting {
		s.e.publishStatus(en)
		return
	}
	if !en.statusQueued {
		en.statusQueued = true
		s.statuses = append(s.statuses, en)
	}
	s.scheduleStatusFlush()
}

// scheduleStatusFlush has the statuses queued written once
// Config.StatusLinger has passed, unless that is scheduled already.
func (s *shard) scheduleStatusFlush() {
	if !s.statusFlush {
		s.statusFlush = true
		s.e.drv.AfterFunc(s.e.cfg.StatusLinger, func() { s.post(statusFlushEvent{}) })
	}
}

// flushStatuses writes the latest status of each transaction and saga
// queued, unless it is final (written when it became so).
func (s *shard) flushStatuses() {
	s.statusFlush = false
	s.flushSagaStatuses()
	for i, en := range s.statuses {
		en.statusQueued = false
		if !en.tx.State().Final() {
			s.e.publishStatus(en)
		}
		s.statuses[i] = nil
	}
	s.statuses = s.statuses[:0]
}

// statusToWrite is en's status as of now, without its history, for a write
// of it: en notes it as the last status written (statusWritten and
// statusWaiting, which tell a resend whether a refresh is due).
func (e *Engine) statusToWrite(en *entry) messages.TxStatus {
	out, now := en.tx.Outcome(), e.now()
	en.statusWritten, en.statusWaiting = now, waitingFor(out)
	return statusOf(out, e.cfg.Instance, en.started, en.decidedAt, now)
}

// publishStatus writes en's status to the status bucket without waiting: a
// put on the bucket's subject, ordered after the earlier ones of this
// engine, so the latest state wins. A final status, a transaction's last, is
// written again until it is stored: writing it late cannot put an older
// state over a newer one.
func (e *Engine) publishStatus(en *entry) {
	if e.status == nil || e.halted.Load() {
		return
	}
	st := e.statusToWrite(en)
	st.History, st.HistoryDropped = en.hist.events, en.hist.dropped // encoded here, on the loop
	data, err := st.Marshal()
	if err != nil {
		return
	}
	id := en.tx.ID()
	var onErr func(error)
	if en.tx.State().Final() {
		onErr = func(err error) { e.retryFinalStatus(id, data, err) }
	}
	e.status.PutAsync(id, data, onErr)
}

// retryFinalStatus writes a final status again until it is stored, or the
// engine stops.
func (e *Engine) retryFinalStatus(id string, data []byte, err error) {
	e.publishTrouble.Store(true)
	e.stats.PublishErrors.Add(1)
	e.log.Warn("writing a final status failed; retrying", zap.String("txid", id), zap.Error(err))
	if e.halted.Load() || e.base.Err() != nil {
		return
	}
	e.spawn(func() {
		wait := 200 * time.Millisecond
		for !e.halted.Load() {
			if !e.sleep(wait) {
				return
			}
			ctx, cancel := e.withTimeout(e.base, 5*time.Second)
			_, err := e.status.Put(ctx, id, data, 0)
			cancel()
			if err == nil {
				return
			}
			wait = min(2*wait, 2*time.Second)
		}
	})
}

// refreshStatus rewrites en's status unless the bucket holds a final state
// or another owner's: a compare-and-set on the entry's revision, off the
// event loop. Used for slow transactions only (on each resend), so that an
// instance that was paused past its lease never writes over the outcome the
// instance that took over recorded.
func (e *Engine) refreshStatus(en *entry) {
	if e.status == nil || e.halted.Load() {
		return
	}
	doc := e.statusToWrite(en)
	en.hist.into(&doc)
	e.spawn(func() {
		ctx, cancel := e.withTimeout(e.base, 5*time.Second)
		defer cancel()
		if err := e.replaceOwnStatus(ctx, doc); err != nil {
			e.log.Debug("status not refreshed", zap.String("txid", doc.ID), zap.Error(err))
		}
	})
}

// replaceOwnStatus writes doc over the status of doc.ID by compare-and-set
// on its revision, if that status is doc.Owner's and not final. It never
// creates an absent status: a refresh may come after a pause, when the
// transaction's status has expired and another instance has finished it.
// Only the owner and the state of the status it replaces are decoded.
func (e *Engine) replaceOwnStatus(ctx context.Context, doc messages.TxStatus) error {
	cur, err := e.status.Get(ctx, doc.ID)
	if errors.Is(err, ErrNoEntry) {
		return nil
	}
	if err != nil {
		return err
	}
	var have struct {
		Owner string `json:"owner"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(cur.Value, &have); err != nil {
		return fmt.Errorf("the status in the bucket: %w", err)
	}
	if have.Owner != doc.Owner || isFinal(have.State) {
		return nil
	}
	data, err := doc.Marshal()
	if err != nil {
		return err
	}
	_, err = e.status.Update(ctx, doc.ID, data, cur.Revision, 0)
	return err
}

// updateStatus rewrites the status of id by compare-and-set on its
// revision: change edits the current entry and says whether to write it. An
// absent entry is created as ifAbsent, or left absent if that is nil.
func (e *Engine) updateStatus(ctx context.Context, id string, ifAbsent *messages.TxStatus, change func(*messages.TxStatus) bool) error {
	en, err := e.status.Get(ctx, id)
	if errors.Is(err, ErrNoEntry) {
		if ifAbsent == nil {
			return nil
		}
		data, err := json.Marshal(ifAbsent)
		if err != nil {
			return err
		}
		_, err = e.status.Create(ctx, id, data, 0)
		return err
	}
	if err != nil {
		return err
	}
	var st messages.TxStatus
	if err := json.Unmarshal(en.Value, &st); err != nil || !change(&st) {
		return err
	}
	data, err := st.Marshal()
	if err != nil {
		return err
	}
	_, err = e.status.Update(ctx, id, data, en.Revision, 0)
	return err
}

// markAborted records in the status bucket that transaction id ended
// aborted, unless its status is already final; with no status yet (its
// coordinator's writes were lost, or it never began anywhere) it creates
// one, so that Status reports the recorded abort.
func (e *Engine) markAborted(ctx context.Context, id, reason string) error {
	if e.status == nil {
		return nil
	}
	now := e.now().UTC()
	ended := messages.TxEvent{At: now, Event: messages.EventEnded, By: e.cfg.Instance, Detail: Aborted.String() + ": " + reason}
	absent := &messages.TxStatus{ID: id, State: Aborted.String(), Reason: reason, Owner: e.cfg.Instance, UpdatedAt: now, History: []messages.TxEvent{ended}}
	return e.updateStatus(ctx, id, absent, func(st *messages.TxStatus) bool {
		if isFinal(st.State) {
			return false
		}
		st.State, st.Reason, st.Waiting, st.WaitingSince, st.UpdatedAt = Aborted.String(), reason, nil, time.Time{}, now
		addToStatus(st, ended)
		return true
	})
}

// markCommitted records in the status bucket that transaction id ended
// committed, unless its status is already final.
func (e *Engine) markCommitted(ctx context.Context, id string) error {
	return e.updateStatus(ctx, id, nil, func(st *messages.TxStatus) bool {
		if isFinal(st.State) {
			return false
		}
		st.State, st.Waiting, st.WaitingSince, st.UpdatedAt = Committed.String(), nil, time.Time{}, e.now().UTC()
		addToStatus(st, messages.TxEvent{At: st.UpdatedAt, Event: messages.EventEnded, By: e.cfg.Instance, Detail: Committed.String()})
		for i := range st.Participants {
			st.Participants[i].Acked = true
		}
		return true
	})
}

// isFinal reports whether a status's state is final, for two-phase
// transactions and sagas alike.
func isFinal(state string) bool {
	return state == Committed.String() || state == Aborted.String() ||
		state == string(saga.StateCompleted) || state == string(saga.StateCompensated)
}

// onPublishError logs a failed asynchronous publish of a command: its
// transaction's retry timer sends it again. (Final statuses are retried by
// publishStatus's own error callback.)
//
// Any failed asynchronous publish also makes the orphan sweep run for a
// while (sweepWindow), including over this instance's own statuses: a
// stream leader lost with writes in flight can apply an older status after
// a newer one, and the sweep writes the final state this instance
// remembers over it.
func (e *Engine) onPublishError(_ jetstream.JetStream, m *nats.Msg, err error) {
	e.publishTrouble.Store(true)
	e.log.Debug("asynchronous publish failed; what it carried is sent again later", zap.String("subject", m.Subject), zap.Error(err))
}
