package orchestrator

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
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

// TestDecisionRecordsAreWrittenAsJSONMarshalWritesThem: marshal gives the
// bytes of json.Marshal for random records (strings with what JSON escapes,
// invalid UTF-8, no or many participants, no owner, times with and without
// nanoseconds in other zones), and fails where it fails (a year past 9999).
func TestDecisionRecordsAreWrittenAsJSONMarshalWritesThem(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "tx", "<a&b>", "\"q\"", "back\\slash", "\n\t\x01", "\u2028\u2029", "é漢", "\xff\xfe", "a-b_c"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(4) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	// strs is nil, empty, or 1 to most strings, a third of the time each.
	strs := func(most int) []string {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		var ss []string
		for range 1 + rng.IntN(most) {
			ss = append(ss, str())
		}
		return ss
	}
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+1800), time.FixedZone("y", -7*3600)}
	for i := range 5000 {
		r := decisionRecord{ID: str(), State: str(), Owner: str(), Revision: rng.Uint64(), Participants: strs(5), ReadOnly: strs(3)}
		if rng.IntN(10) > 0 {
			r.DecidedAt = time.Unix(rng.Int64N(1<<34), rng.Int64N(1e9)*int64(rng.IntN(2))).In(zones[rng.IntN(len(zones))])
		}
		if i%500 == 0 {
			r.DecidedAt = time.Date(10000+rng.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC)
		}
		want, wantErr := json.Marshal(r)
		got, err := r.marshal()
		if (err != nil) != (wantErr != nil) || string(got) != string(want) {
			t.Fatalf("record %d %+v:\nmarshal     %s (%v)\njson.Marshal %s (%v)", i, r, got, err, want, wantErr)
		}
	}
}
