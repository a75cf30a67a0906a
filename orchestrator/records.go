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

// RecordBucket is the JetStream key-value bucket that holds decisions, one
// key per transaction ID. A commit decision lives there from the moment it
// is made until every participant acknowledged it; an abort is recorded only
// to answer a participant in doubt, and expires after the retention.
const RecordBucket = "natstx_tx"

// Record states as stored.
const (
	recordCommitting = "committing"
	recordCommitted  = "committed"
	recordAborted    = "aborted"
)

// decisionRecord is the durable form of a decision.
type decisionRecord struct {
	ID           string    `json:"id"`
	State        string    `json:"state"`
	Participants []string  `json:"participants,omitempty"`
	Owner        string    `json:"owner,omitempty"`
	DecidedAt    time.Time `json:"decided_at"`
	// Revision is the key's revision when read; not stored.
	Revision uint64 `json:"-"`
}

// errCommitRefused is returned by decide when an abort was recorded first.
var errCommitRefused = errors.New("natstx: an abort is already recorded for this transaction")

// recordStore writes decisions. Under presumed abort the commit decision is
// the only write the protocol waits for: no record means "not committed".
type recordStore struct {
	js        jetstream.JetStream
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
	return &recordStore{js: js, kv: kv, instance: instance, retention: retention}, nil
}

// decide makes a commit decision durable with a create: a compare-and-set on
// "no record yet". A record this instance already wrote (a write whose answer
// was lost) counts as success; a recorded abort gives errCommitRefused.
func (s *recordStore) decide(ctx context.Context, rec txn.Record) error {
	data, err := json.Marshal(decisionRecord{
		ID: rec.ID, State: recordCommitting, Participants: rec.Participants, Owner: s.instance, DecidedAt: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	_, err = s.kv.Create(ctx, rec.ID, data)
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	have, gerr := s.get(ctx, rec.ID)
	switch {
	case gerr != nil:
		return fmt.Errorf("natstx: a record for %s exists but cannot be read: %w", rec.ID, gerr)
	case have.State == recordAborted:
		return errCommitRefused
	case have.State == recordCommitting && have.Owner == s.instance, have.State == recordCommitted:
		return nil
	}
	return fmt.Errorf("natstx: a different decision for %s is already recorded: %s by %s", rec.ID, have.State, have.Owner)
}

// recordAbort records an abort for a transaction that has no record, so that
// no commit can ever be recorded for it; it returns the state now recorded,
// which is "committing" or "committed" if a commit decision won the race.
func (s *recordStore) recordAbort(ctx context.Context, id string) (string, error) {
	data, err := json.Marshal(decisionRecord{ID: id, State: recordAborted, DecidedAt: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	_, err = s.kv.Create(ctx, id, data, jetstream.KeyTTL(s.retention))
	if err == nil {
		return recordAborted, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return "", err
	}
	have, err := s.get(ctx, id)
	if err != nil {
		return "", err
	}
	return have.State, nil
}

// get reads the record of id; jetstream.ErrKeyNotFound when there is none.
func (s *recordStore) get(ctx context.Context, id string) (decisionRecord, error) {
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		return decisionRecord{}, err
	}
	return decode(e)
}

// claim makes this instance the owner of a commit record, by compare-and-set
// on the revision it was read at; it fails if anyone changed it since.
func (s *recordStore) claim(ctx context.Context, rec decisionRecord) (decisionRecord, error) {
	rec.Owner = s.instance
	data, err := json.Marshal(rec)
	if err != nil {
		return rec, err
	}
	rev, err := s.kv.Update(ctx, rec.ID, data, rec.Revision)
	rec.Revision = rev
	return rec, err
}

// commits lists every commit record, for recovery and takeover.
func (s *recordStore) commits(ctx context.Context) ([]decisionRecord, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer stopWatch(w)
	var out []decisionRecord
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return out, nil
			}
			if rec, err := decode(e); err == nil && rec.State == recordCommitting {
				out = append(out, rec)
			}
		}
	}
}

// finish replaces a commit record, once every participant acknowledged, by
// a "committed" record that expires after the retention (a per-message TTL:
// the bucket stays bounded). Until then it proves the commit: an abort can
// never be recorded for the transaction, and a late question about it is
// answered commit.
func (s *recordStore) finish(ctx context.Context, id string) error {
	data, err := json.Marshal(decisionRecord{ID: id, State: recordCommitted, Owner: s.instance, DecidedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	_, err = s.js.Publish(ctx, "$KV."+RecordBucket+"."+id, data, jetstream.WithMsgTTL(s.retention))
	return err
}

func decode(e jetstream.KeyValueEntry) (decisionRecord, error) {
	var rec decisionRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, fmt.Errorf("natstx: record %s is unreadable: %w", e.Key(), err)
	}
	rec.Revision = e.Revision()
	return rec, nil
}

// stopWatch stops a key-value watcher and drains what it still delivers: a
// delivery blocked on the full updates channel would otherwise hold the
// watcher's lock for ever, and its goroutine would never end. The channel
// is closed once the subscription is, which ends the drain.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}
