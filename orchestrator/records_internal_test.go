package orchestrator

import (
	"errors"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator/txn"
)

// TestWhatNoCoordinatorWroteIsNeverTakenForADecision: an entry of the
// record bucket that no coordinator wrote (an empty one, as a pull
// request's reply pointed at the bucket leaves; a coordinator's API answer;
// a record of another transaction; a status document) is neither a
// decision nor the absence of one: a commit is not recorded over it, an
// abort is not recorded over it, and reading it says so. On a real
// embedded server.
func TestWhatNoCoordinatorWroteIsNeverTakenForADecision(t *testing.T) {
	ctx, store, _ := recordsStore(t)
	rs := &recordStore{kv: store, instance: "c1", now: time.Now, retention: time.Minute, abortTTL: time.Minute}
	for key, value := range map[string]string{
		"empty":        ``,
		"api-answer":   `{"status":{"id":"other","state":"committed"}}`,
		"other-record": `{"id":"other","state":"aborted","owner":"c2"}`,
		"status-doc":   `{"id":"status-doc","state":"preparing","owner":"c2"}`,
	} {
		if _, err := store.kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.get(ctx, key); !errors.Is(err, errNotARecord) {
			t.Errorf("%s: get says %v, want errNotARecord", key, err)
		}
		if err := rs.decide(ctx, txn.Record{ID: key, Participants: []string{"a"}}); err == nil || !errors.Is(err, errNotARecord) {
			t.Errorf("%s: a commit decision over it: %v, want refused as not a record", key, err)
		}
		if state, err := rs.recordAbort(ctx, key); err == nil || !errors.Is(err, errNotARecord) {
			t.Errorf("%s: an abort over it: state %q, %v; want refused as not a record", key, state, err)
		}
		if e, err := store.kv.Get(ctx, key); err != nil || string(e.Value()) != value {
			t.Errorf("%s: the entry was changed: %v", key, err)
		}
	}
	// A record this coordinator wrote reads back.
	if err := rs.decide(ctx, txn.Record{ID: "mine", Participants: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if rec, err := rs.get(ctx, "mine"); err != nil || rec.State != recordCommitting || rec.ID != "mine" {
		t.Fatalf("a commit record reads back as %+v, %v", rec, err)
	}
}
