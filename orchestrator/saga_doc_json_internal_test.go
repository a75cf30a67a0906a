package orchestrator

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator/saga"
)

// TestSagaDocMarshalGivesTheBytesOfJSONMarshal: what the engine writes to
// SagaBucket is what json.Marshal wrote, for owners and records with
// characters to escape, every optional field set or not, and nil and empty
// lists; and marshal fails where json.Marshal fails. (The saga package
// checks Record.AppendJSON on random records.)
func TestSagaDocMarshalGivesTheBytesOfJSONMarshal(t *testing.T) {
	at := time.Date(2026, 11, 30, 2, 30, 0, 123456789, time.FixedZone("", 5*3600+30*60))
	def := saga.Definition{Name: "order <&>", Steps: []saga.Step{
		{Name: "reserve", Participant: "inventory", Action: []byte(`{"qty":2}`), Compensation: []byte{0xff, 0}},
		{Name: "charge", Participant: "payment", Pivot: true, Retry: &saga.RetryPolicy{MaxAttempts: 5, BackoffFactor: 1.25}},
	}}
	full := saga.Record{ID: "s-1", Revision: 3, Definition: def.WithDefaults(), State: saga.StateCompensationStuck,
		Reason: "step \"charge\" failed:\n\u2028card declined\xff", StartedAt: at, Deadline: at.Add(time.Minute), PastPivot: true,
		Steps: []saga.StepRecord{
			{Name: "reserve", Status: saga.StepCompensationRetrying, Attempts: 1, FirstAttemptAt: at, MayHaveRun: true,
				CompensationAttempts: 12, CompensationStartedAt: at.UTC(), LastError: "<timeout>", LastCode: "E&1",
				NextRetryAt: at.Add(time.Second), Stuck: true},
			{Name: "charge", Status: saga.StepCompensatedByHand, Note: "by hand"},
		},
		Operator: []saga.OperatorAction{{At: at, Kind: saga.EventResolve, Step: "reserve", Who: "ops", Why: "refunded"}},
	}
	docs := []sagaDoc{
		{},
		{Owner: "c1", Record: saga.Record{Steps: []saga.StepRecord{}, Definition: saga.Definition{Steps: []saga.Step{}}}},
		{Owner: "coordinator-\"7\"\t<b>", Record: full},
	}
	for _, owner := range []string{"", "SxNJm0Dmj5Csn1tbCDNCF1", "\x00\xc3\u2029"} {
		for _, rec := range []saga.Record{full, {ID: "s-2", Definition: def, State: saga.StateRunning, StartedAt: at.UTC()}} {
			docs = append(docs, sagaDoc{Owner: owner, Record: rec})
		}
	}
	for i, doc := range docs {
		want, wantErr := json.Marshal(doc)
		got, err := doc.marshal()
		if err != nil || wantErr != nil || !bytes.Equal(got, want) {
			t.Errorf("doc %d: marshal gives %s, %v;\njson.Marshal gives %s, %v", i, got, err, want, wantErr)
		}
	}
	for name, doc := range map[string]sagaDoc{
		"year 10000":         {Record: saga.Record{StartedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		"NaN backoff factor": {Record: saga.Record{Definition: saga.Definition{Retry: saga.RetryPolicy{BackoffFactor: math.NaN()}}}},
	} {
		_, wantErr := json.Marshal(doc)
		if got, err := doc.marshal(); err == nil || wantErr == nil {
			t.Errorf("%s: marshal gives %s, %v; json.Marshal error %v: want both to fail", name, got, err, wantErr)
		}
	}
}

// TestSagaDocMarshalTakesOneBuffer: the document is written in the buffer
// marshal sizes up front.
func TestSagaDocMarshalTakesOneBuffer(t *testing.T) {
	at := time.Date(2026, 11, 30, 2, 30, 0, 123456789, time.UTC)
	def := saga.Definition{Name: "bench"}
	rec := saga.Record{ID: "4FQ3ZKcJmgxA6pJnS0QhZQ", Revision: 4, State: saga.StateCompleted, StartedAt: at}
	for _, p := range []string{"inventory", "payment", "shipping"} {
		def.Steps = append(def.Steps, saga.Step{Name: p, Participant: p, Action: []byte("payload"), Compensation: []byte("payload")})
		rec.Steps = append(rec.Steps, saga.StepRecord{Name: p, Status: saga.StepDone, Attempts: 1, FirstAttemptAt: at, MayHaveRun: true})
	}
	rec.Definition = def.WithDefaults()
	doc := sagaDoc{Owner: "SxNJm0Dmj5Csn1tbCDNCF1", Record: rec}
	if n := testing.AllocsPerRun(100, func() { _, _ = doc.marshal() }); n != 1 {
		t.Errorf("marshal of a bench saga's document allocates %v times, want 1", n)
	}
}
