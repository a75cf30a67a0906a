package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/orchestrator/txn"
)

// RecordBucket is the JetStream key-value bucket that holds commit
// decisions, one key per transaction ID.
const RecordBucket = "natstx_tx"

// decisionRecord is the durable form of a commit decision.
type decisionRecord struct {
	ID           string    `json:"id"`
	State        string    `json:"state"`
	Participants []string  `json:"participants"`
	DecidedBy    string    `json:"decided_by"`
	DecidedAt    time.Time `json:"decided_at"`
}

// recordStore writes commit decisions. Under presumed abort it is the only
// forced write: no record means "not committed".
type recordStore struct {
	kv        jetstream.KeyValue
	instance  string
	retention time.Duration
}

func openRecords(ctx context.Context, js jetstream.JetStream, o StreamOptions, instance string, retention time.Duration) (*recordStore, error) {
	o = o.withDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         RecordBucket,
		Description:    "natstx transaction decisions",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
		LimitMarkerTTL: retention,
	})
	if err != nil {
		return nil, fmt.Errorf("natstx: declaring key-value bucket %s: %w", RecordBucket, err)
	}
	return &recordStore{kv: kv, instance: instance, retention: retention}, nil
}

// decide makes a commit decision durable. It is idempotent: a record this
// instance already wrote for the same transaction (a write whose answer was
// lost) counts as success.
func (s *recordStore) decide(ctx context.Context, rec txn.Record) error {
	data, err := json.Marshal(decisionRecord{
		ID: rec.ID, State: rec.State.String(), Participants: rec.Participants,
		DecidedBy: s.instance, DecidedAt: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	_, err = s.kv.Create(ctx, rec.ID, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := s.kv.Get(ctx, rec.ID)
		if gerr != nil {
			return fmt.Errorf("natstx: decision for %s exists but cannot be read: %w", rec.ID, gerr)
		}
		var have decisionRecord
		if json.Unmarshal(e.Value(), &have) == nil && have.State == rec.State.String() && have.DecidedBy == s.instance {
			return nil
		}
		return fmt.Errorf("natstx: a different decision for %s is already recorded: %s", rec.ID, e.Value())
	}
	return err
}

// finish removes a finished transaction's record; the purge marker itself
// expires after the retention, so the bucket stays bounded.
func (s *recordStore) finish(ctx context.Context, id string) error {
	return s.kv.Purge(ctx, id, jetstream.PurgeTTL(s.retention))
}
