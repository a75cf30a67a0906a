package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants/sim"
)

// TestHostileInputChangesNothing sends every kind of bad input to the
// coordinator's reply subject and API subjects while transactions run, and
// checks that each is refused or dropped and counted, nothing crashes or
// stalls, and every transaction still ends all-or-nothing.
func TestHostileInputChangesNothing(t *testing.T) {
	c := startCluster(t, orchestrator.Config{Instance: "c1"},
		serviceSpec{"inventory", 0.9, 20 * time.Millisecond},
		serviceSpec{"payment", 0.9, 20 * time.Millisecond},
	)
	reply := messages.ReplySubject(c.eng.Instance(), "inventory")
	valid := func(mut func(h nats.Header)) *nats.Msg {
		r := messages.Reply{TxID: "tx1", Op: messages.OpPrepare, Participant: "inventory", Result: messages.VoteCommit, Attempt: 1}
		h := nats.Header(r.Header())
		mut(h)
		return &nats.Msg{Subject: reply, Header: h}
	}
	// A transaction in flight, to aim forged and late replies at.
	live, err := c.eng.Execute(ctxFor(t, 10*time.Second), orchestrator.Request{Participants: []orchestrator.Participant{{Name: "inventory"}, {Name: "payment"}}})
	if err != nil {
		t.Fatal(err)
	}
	malformed := []struct {
		kind string
		msg  *nats.Msg
	}{
		{"not the protocol at all", &nats.Msg{Subject: reply, Data: []byte("GET / HTTP/1.1")}},
		{"truncated: headers missing", valid(func(h nats.Header) { h.Del(messages.HeaderResult); h.Del(messages.HeaderOp) })},
		{"wrong version", valid(func(h nats.Header) { h.Set(messages.HeaderVersion, "7") })},
		{"unknown operation", valid(func(h nats.Header) { h.Set(messages.HeaderOp, "explode") })},
		{"empty transaction ID", valid(func(h nats.Header) { h.Set(messages.HeaderTxID, "") })},
		{"transaction ID with a wildcard", valid(func(h nats.Header) { h.Set(messages.HeaderTxID, "tx.>") })},
		{"control characters in a header", valid(func(h nats.Header) { h.Set(messages.HeaderParticipant, "inv\x01entory") })},
		{"unknown result", valid(func(h nats.Header) { h.Set(messages.HeaderResult, "maybe") })},
		{"oversized reason", &nats.Msg{Subject: reply, Header: valid(func(nats.Header) {}).Header, Data: []byte(strings.Repeat("x", messages.MaxReasonLen+1))}},
		{"a vote in another participant's name", valid(func(h nats.Header) { h.Set(messages.HeaderParticipant, "payment") })},
	}
	for _, m := range malformed {
		if err := c.nc.PublishMsg(m.msg); err != nil {
			t.Fatalf("%s: %v", m.kind, err)
		}
	}
	wellFormedButWrong := []struct {
		kind string
		r    messages.Reply
	}{
		{"reply for a transaction that does not exist", messages.Reply{TxID: "no-such-tx", Op: messages.OpPrepare, Participant: "inventory", Result: messages.VoteCommit, Attempt: 1}},
		{"vote after the decision", messages.Reply{TxID: live.ID, Op: messages.OpPrepare, Participant: "payment", Result: messages.VoteAbort, Attempt: 9}},
		{"forged ack from a stranger", messages.Reply{TxID: live.ID, Op: messages.OpCommit, Participant: "mallory", Result: messages.Ack, Attempt: 1}},
	}
	for _, w := range wellFormedButWrong {
		if err := c.nc.PublishMsg(&nats.Msg{Subject: messages.ReplySubject(c.eng.Instance(), w.r.Participant), Header: nats.Header(w.r.Header())}); err != nil {
			t.Fatalf("%s: %v", w.kind, err)
		}
	}
	apiCases := []struct {
		kind, subject, body, want string
	}{
		{"begin: not JSON", messages.APIBegin, "\x00\x01binary", "not valid JSON"},
		{"begin: truncated JSON", messages.APIBegin, `{"participants":[{"name":"inventory"`, "not valid JSON"},
		{"begin: empty participant list", messages.APIBegin, `{"participants":[]}`, "no participants"},
		{"begin: unknown-shaped name", messages.APIBegin, `{"participants":[{"name":"a b"}]}`, "invalid name"},
		{"begin: duplicate transaction ID", messages.APIBegin, `{"id":"` + live.ID + `","participants":[{"name":"inventory"}]}`, "duplicate transaction ID"},
		{"begin: negative timeout", messages.APIBegin, `{"participants":[{"name":"inventory"}],"timeout_ms":-5}`, "timeout_ms"},
		{"status: empty ID", messages.APIStatus, `{"id":""}`, "transaction ID is empty"},
		{"status: control characters", messages.APIStatus, `{"id":"a\u0007b"}`, "invalid name"},
		{"outcome: not JSON", messages.APIOutcome, `nope`, "not valid JSON"},
		{"abort: not JSON", messages.APIAbort(c.eng.Instance()), `]`, "not valid JSON"},
	}
	for _, a := range apiCases {
		m, err := c.nc.Request(a.subject, []byte(a.body), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: no answer: %v", a.kind, err)
		}
		if !strings.Contains(string(m.Data), a.want) {
			t.Errorf("%s: answer %s, want it to say %q", a.kind, m.Data, a.want)
		}
	}
	// Oversized: a payload over the engine's limit is refused by name.
	big := messages.BeginRequest{Participants: []messages.ParticipantSpec{{Name: "inventory", Payload: make([]byte, 300<<10)}}}
	client, err := orchestrator.NewClient(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Begin(ctxFor(t, 5*time.Second), big); err == nil || !strings.Contains(err.Error(), "payload too large") {
		t.Errorf("oversized payload: %v", err)
	}

	results, _ := c.load(300, 50, 2*time.Second)
	c.quiesce(30 * time.Second)
	rep := sim.Check(append(results, sim.Result{ID: live.ID, Participants: []string{"inventory", "payment"}, Decided: true, Committed: live.Committed()}), c.services)
	st := c.eng.Stats()
	report.Counts(t, fmt.Sprintf("%s; malformed replies %d, stray %d, ignored %d", rep, st.MalformedReplies, st.StrayReplies, st.Ignored))
	if rep.Violations != 0 || rep.InDoubt != 0 {
		t.Fatalf("%s: %v", rep, rep.Problems)
	}
	if st.MalformedReplies < int64(len(malformed)) || st.StrayReplies < 1 {
		t.Fatalf("want every malformed reply counted (%d) and the stray one; got %+v", len(malformed), st)
	}
}

// TestBeginFloodIsRefusedAndNothingStalls floods the coordinator with begin
// requests beyond MaxInFlight: the excess is refused with a clear error,
// status requests are still answered, and the admitted transactions finish.
func TestBeginFloodIsRefusedAndNothingStalls(t *testing.T) {
	const limit = 40
	c := startCluster(t, orchestrator.Config{MaxInFlight: limit, PrepareTimeout: 3 * time.Second},
		serviceSpec{"inventory", 1, 200 * time.Millisecond})
	client, err := orchestrator.NewClient(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	var admitted, refused atomic.Int64
	var ids sync.Map
	var wg sync.WaitGroup
	for i := 0; i < 400; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := client.Begin(ctxFor(t, 10*time.Second), messages.BeginRequest{Participants: []messages.ParticipantSpec{{Name: "inventory"}}})
			switch {
			case err == nil:
				admitted.Add(1)
				ids.Store(st.ID, true)
			case strings.Contains(err.Error(), "too many transactions in flight"):
				refused.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	// While the flood runs, the coordinator still answers.
	if _, err := client.Status(ctxFor(t, 10*time.Second), "whatever"); !errors.Is(err, orchestrator.ErrUnknownTx) {
		t.Fatalf("status during the flood: %v", err)
	}
	wg.Wait()
	c.quiesce(30 * time.Second)
	t.Logf("flood of 400 begins with a limit of %d in flight: %d admitted, %d refused", limit, admitted.Load(), refused.Load())
	if refused.Load() == 0 || admitted.Load() < limit {
		t.Fatalf("admitted %d, refused %d", admitted.Load(), refused.Load())
	}
	ids.Range(func(k, _ any) bool {
		out, err := c.eng.Status(k.(string))
		if err != nil || out.State != orchestrator.Committed {
			t.Errorf("admitted %s ended %s (%v)", k, out.State, err)
		}
		return true
	})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
