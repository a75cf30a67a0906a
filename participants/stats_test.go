package participants_test

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// TestStatsCountLatencyAndOutcomes: every well-formed command is timed
// under its operation, and counted under what the record made of it:
// prepared, voted no, read-only, committed, aborted, done, refused,
// compensated, failed, duplicate and rejected; a malformed one is neither.
func TestStatsCountLatencyAndOutcomes(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	h.PrepareFunc = func(_ context.Context, _ participants.Tx, payload []byte) error {
		switch string(payload) {
		case "no":
			return errors.New("out of stock")
		case "look":
			return participants.ReadOnly
		}
		return nil
	}
	mem := &memEffects{counts: newCounts(), effects: map[string]string{}}
	cfg := testConfig(h, nil)
	cfg.SagaHandler = mem
	rt := e.start(e.nc, cfg)

	e.expect(e.cmd("yes", messages.OpPrepare, 1), messages.VoteCommit, "")
	no := e.cmd("no", messages.OpPrepare, 1)
	no.Payload = []byte("no")
	e.expect(no, messages.VoteAbort, "out of stock")
	look := e.cmd("look", messages.OpPrepare, 1)
	look.Payload = []byte("look")
	e.expect(look, messages.VoteReadOnly, "")
	e.expect(e.cmd("yes", messages.OpCommit, 1), messages.Ack, "")
	e.expect(e.cmd("yes", messages.OpCommit, 2), messages.Ack, "")                               // duplicate
	e.expect(e.cmd("early", messages.OpAbort, 1), messages.Ack, "")                              // aborted before prepare
	e.expect(e.cmd("ghost", messages.OpCommit, 1), messages.Failed, participants.ReasonNoRecord) // rejected
	e.expect(sagaCmd("s1", messages.OpAction, "a", 1, "go"), messages.Ack, "")
	e.expect(sagaCmd("s2", messages.OpAction, "a", 1, "no"), messages.Refused, "out of stock: 2 of widget")
	mem.failNext(messages.OpAction, errors.New("try later"))
	e.expect(sagaCmd("s3", messages.OpAction, "a", 1, "go"), messages.Failed, "try later")
	e.expect(sagaCmd("s1", messages.OpCompensate, "a", 1, ""), messages.Ack, "")
	e.publish(&nats.Msg{Subject: messages.CommandSubject(svc, "bad"), Data: []byte("garbage")})
	e.settled()

	st := rt.Stats()
	want := map[string]uint64{
		participants.OutcomePrepared: 1, participants.OutcomeVotedNo: 1, participants.OutcomeCommitted: 1,
		participants.OutcomeAborted: 1, participants.OutcomeDone: 1, participants.OutcomeRefused: 1,
		participants.OutcomeCompensated: 1, participants.OutcomeFailed: 1, participants.OutcomeDuplicate: 1,
		participants.OutcomeRejected: 1, participants.OutcomeReadOnly: 1,
	}
	if !maps.Equal(st.Outcomes, want) {
		t.Errorf("outcomes %v, want %v", st.Outcomes, want)
	}
	if len(participants.Outcomes()) != len(want) {
		t.Errorf("Outcomes() = %v, want the %d names counted", participants.Outcomes(), len(want))
	}
	wantOps := map[messages.Op]uint64{messages.OpPrepare: 3, messages.OpCommit: 3, messages.OpAbort: 1, messages.OpAction: 3, messages.OpCompensate: 1}
	for op, n := range wantOps {
		hist, ok := st.Latency[op]
		if !ok || hist.Count != n {
			t.Errorf("%s latency: %d observations (present %v), want %d", op, hist.Count, ok, n)
			continue
		}
		if len(hist.Buckets) != len(participants.LatencyBuckets()) || len(hist.Cumulative) != len(hist.Buckets) ||
			hist.Cumulative[len(hist.Cumulative)-1] > hist.Count {
			t.Errorf("%s latency histogram %+v is not a histogram of %d observations", op, hist, n)
		}
	}
	if st.Malformed != 1 {
		t.Errorf("%d malformed, want 1", st.Malformed)
	}
}
