package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
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
	ID           string   `json:"id"`
	State        string   `json:"state"`
	Participants []string `json:"participants,omitempty"`
	// ReadOnly names the participants that voted read-only: recovery sends
	// them no commit.
	ReadOnly  []string  `json:"read_only,omitempty"`
	Owner     string    `json:"owner,omitempty"`
	DecidedAt time.Time `json:"decided_at"`
	// Revision is the key's revision when read; not stored.
	Revision uint64 `json:"-"`
}

// marshal is json.Marshal(r), byte for byte, without reflection: a
// decision is written twice for every committed transaction (the
// reflective encoder was 1.7% of all CPU at 256 in flight).
func (r decisionRecord) marshal() ([]byte, error) {
	n := 64 + len(r.ID) + len(r.State) + len(r.Owner) + messages.JSONTimeLen(r.DecidedAt)
	for _, p := range r.Participants {
		n += len(p) + 3
	}
	for _, p := range r.ReadOnly {
		n += len(p) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, `{"id":`...)
	b = messages.AppendJSONString(b, r.ID)
	b = append(b, `,"state":`...)
	b = messages.AppendJSONString(b, r.State)
	b = appendNames(b, `,"participants":[`, r.Participants)
	b = appendNames(b, `,"read_only":[`, r.ReadOnly)
	if r.Owner != "" {
		b = append(b, `,"owner":`...)
		b = messages.AppendJSONString(b, r.Owner)
	}
	b = append(b, `,"decided_at":`...)
	b, err := messages.AppendJSONTime(b, r.DecidedAt)
	if err != nil {
		return nil, fmt.Errorf("json: error calling MarshalJSON for type time.Time: %w", err)
	}
	return append(b, '}'), nil
}

// appendNames appends key (`,"name":[`) and the JSON strings of names and
// the closing bracket to b, or nothing when names is empty (omitempty).
func appendNames(b []byte, key string, names []string) []byte {
	if len(names) == 0 {
		return b
	}
	b = append(b, key...)
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = messages.AppendJSONString(b, n)
	}
	return append(b, ']')
}

// errCommitRefused is returned by decide when an abort was recorded first.
var errCommitRefused = errors.New("natstx: an abort is already recorded for this transaction")

// recordStore writes decisions. Under presumed abort the commit decision is
// the only write the protocol waits for: no record means "not committed".
type recordStore struct {
	kv       Store
	instance string
	now      func() time.Time
	// retention is how long a committed record stays once every participant
	// acknowledged; abortTTL how long an abort record stays (see
	// abortRetention).
	retention, abortTTL time.Duration
}

// openRecords declares the record bucket. Its LimitMarkerTTL makes a key
// whose entry expired leave a delete marker for a while, so that watchers
// see the expiry.
func openRecords(ctx context.Context, js jetstream.JetStream, o StreamOptions, retention time.Duration) (jetstream.KeyValue, error) {
	o = o.withDefaults()
	return openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:         RecordBucket,
		Description:    "natstx transaction decisions",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
		LimitMarkerTTL: retention,
	})
}

// decide makes a commit decision durable with a create: a compare-and-set on
// "no record yet". A commit record already there (this instance's write
// whose answer was lost, or the same decision claimed since by another
// instance that took over) counts as success; a recorded abort gives
// errCommitRefused.
func (s *recordStore) decide(ctx context.Context, rec txn.Record) error {
	data, err := decisionRecord{
		ID: rec.ID, State: recordCommitting, Participants: rec.Participants, ReadOnly: rec.ReadOnly, Owner: s.instance, DecidedAt: s.now().UTC(),
	}.marshal()
	if err != nil {
		return err
	}
	_, err = s.kv.Create(ctx, rec.ID, data, 0)
	if !errors.Is(err, ErrEntryExists) {
		return err
	}
	have, gerr := s.get(ctx, rec.ID)
	switch {
	case gerr != nil:
		// errNotARecord included: what is there may have replaced a
		// decision, so none is taken; the write is retried, and an
		// operator sees the error.
		return fmt.Errorf("natstx: a record for %s exists but cannot be read: %w", rec.ID, gerr)
	case have.State == recordAborted:
		return errCommitRefused
	case have.State == recordCommitting, have.State == recordCommitted:
		// Only a commit decision for this very transaction creates a commit
		// record; whoever owns it now drives it to the end.
		return nil
	}
	return fmt.Errorf("natstx: record %s holds an unknown state %q", rec.ID, have.State)
}

// recordAbort records an abort for a transaction that has no record, so that
// no commit can ever be recorded for it while the abort record lasts
// (abortTTL); it returns the state now recorded, which is "committing" or
// "committed" if a commit decision won the race.
func (s *recordStore) recordAbort(ctx context.Context, id string) (string, error) {
	data, err := decisionRecord{ID: id, State: recordAborted, Owner: s.instance, DecidedAt: s.now().UTC()}.marshal()
	if err != nil {
		return "", err
	}
	_, err = s.kv.Create(ctx, id, data, s.abortTTL)
	if err == nil {
		return recordAborted, nil
	}
	if !errors.Is(err, ErrEntryExists) {
		return "", err
	}
	have, err := s.get(ctx, id)
	if err != nil {
		return "", err
	}
	return have.State, nil
}

// get reads the record of id; ErrNoEntry when there is none.
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
	data, err := rec.marshal()
	if err != nil {
		return rec, err
	}
	rev, err := s.kv.Update(ctx, rec.ID, data, rec.Revision, 0)
	rec.Revision = rev
	return rec, err
}

// commits lists the commit records written since revision after (0: all),
// for recovery and takeover, and the highest revision it read (after if
// none). A listing that fails partway (ctx ended) returns what it read up
// to that revision, with the error.
func (s *recordStore) commits(ctx context.Context, after uint64) ([]decisionRecord, uint64, error) {
	es, after, err := s.kv.Entries(ctx, after, func(e StoreEntry) bool {
		rec, err := decode(e)
		return err == nil && rec.State == recordCommitting
	})
	out := make([]decisionRecord, 0, len(es))
	for _, e := range es {
		if rec, err := decode(e); err == nil {
			out = append(out, rec)
		}
	}
	return out, after, err
}

// finish replaces a commit record, once every participant acknowledged, by
// a "committed" record that expires after the retention (a per-message TTL:
// the bucket stays bounded). Until then it proves the commit: an abort can
// never be recorded for the transaction, and a late question about it is
// answered commit.
func (s *recordStore) finish(ctx context.Context, id string) error {
	data, err := decisionRecord{ID: id, State: recordCommitted, Owner: s.instance, DecidedAt: s.now().UTC()}.marshal()
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, id, data, s.retention)
	return err
}

// errNotARecord is what decode says of an entry of the record bucket that
// no coordinator wrote: one that does not decode, names another
// transaction than its key, or holds no decision state. Only a client that
// could write into the bucket, directly or by pointing a request's reply or
// a consumer's delivery at it, puts one there. It is never taken for a
// decision, nor for the absence of one (it may have replaced one: the
// bucket keeps one entry per key): the transaction stays in doubt, its
// writes and answers failing with this error, logged, rather than risk a
// mixed outcome.
var errNotARecord = errors.New("natstx: not a decision record")

// decode reads a record bucket entry.
func decode(e StoreEntry) (decisionRecord, error) {
	var rec decisionRecord
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return rec, fmt.Errorf("%w: the entry of %s is unreadable: %v", errNotARecord, e.Key, err)
	}
	if rec.ID != e.Key || rec.State != recordCommitting && rec.State != recordCommitted && rec.State != recordAborted {
		return rec, fmt.Errorf("%w: the entry of %s names transaction %q, state %q", errNotARecord, e.Key, rec.ID, rec.State)
	}
	rec.Revision = e.Revision
	return rec, nil
}
