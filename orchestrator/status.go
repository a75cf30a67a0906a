package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/txn"
)

// openStatusBucket declares the bucket that holds every transaction's
// latest TxStatus. Unlike the decision records, status entries may expire
// with the bucket's MaxAge: they are for people and tools, not for recovery.
func openStatusBucket(ctx context.Context, js jetstream.JetStream, o StreamOptions, retention time.Duration) (jetstream.KeyValue, error) {
	o = o.withDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      messages.StatusBucket,
		Description: "natstx transaction status, latest per transaction",
		History:     1,
		TTL:         retention,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("natstx: declaring key-value bucket %s: %w", messages.StatusBucket, err)
	}
	return kv, nil
}

// statusOf converts an outcome to the status document the bucket and the
// API carry.
func statusOf(out Outcome, owner string, started, decided, updated time.Time) messages.TxStatus {
	st := messages.TxStatus{
		ID: out.ID, State: out.State.String(), Reason: out.Reason, TimedOut: out.TimedOut,
		Owner: owner, StartedAt: started.UTC(), UpdatedAt: updated.UTC(), WaitingSince: started.UTC(),
		Participants: make([]messages.ParticipantStatus, len(out.Participants)),
	}
	if out.State.Decided() && !decided.IsZero() {
		st.WaitingSince = decided.UTC()
	}
	for i, p := range out.Participants {
		st.Participants[i] = messages.ParticipantStatus{Name: p.Name, Vote: p.Vote.String(), Reason: p.Reason, Acked: p.Acked, Sends: p.Sends}
		switch {
		case out.State.Final():
		case out.State == Preparing && p.Vote == txn.VotePending, out.State.Decided() && !p.Acked:
			st.Waiting = append(st.Waiting, p.Name)
		}
	}
	if out.State.Final() {
		st.WaitingSince = time.Time{}
	}
	return st
}

// publishStatus writes en's status to the status bucket without waiting: a
// put on the bucket's subject, ordered after the earlier ones of this
// connection, so the latest state wins.
func (e *Engine) publishStatus(en *entry) {
	if e.cfg.NoStatus {
		return
	}
	data, err := json.Marshal(statusOf(en.tx.Outcome(), e.cfg.Instance, en.started, en.decidedAt, time.Now()))
	if err != nil {
		return
	}
	msg := &nats.Msg{Subject: "$KV." + messages.StatusBucket + "." + en.tx.ID(), Data: data}
	if _, err := e.js.PublishMsgAsync(msg); err != nil {
		e.stats.PublishErrors.Add(1)
		e.log.Warn("writing a transaction's status failed", zap.String("txid", en.tx.ID()), zap.Error(err))
	}
}
