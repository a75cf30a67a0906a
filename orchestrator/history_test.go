package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
)

// events returns a history as one "event participant detail" line each,
// for messages.
func events(h []messages.TxEvent) string {
	var b strings.Builder
	for _, ev := range h {
		fmt.Fprintf(&b, "\n  %s %s %s#%d %q by %q", ev.At.Format("15:04:05.000"), ev.Event, ev.Participant+ev.Step, ev.Attempt, ev.Detail, ev.By)
	}
	return b.String()
}

// count returns how many events of h are of kind for participant (any
// participant when empty) and whose detail starts with detail.
func count(h []messages.TxEvent, kind, participant, detail string) int {
	n := 0
	for _, ev := range h {
		if ev.Event == kind && (participant == "" || ev.Participant == participant) && strings.HasPrefix(ev.Detail, detail) {
			n++
		}
	}
	return n
}

// finalStatus waits until the status bucket holds a final status for id
// and returns it.
func finalStatus(t *testing.T, c *orchestrator.Client, id string) messages.TxStatus {
	t.Helper()
	var st messages.TxStatus
	waitFor(t, func() bool {
		var err error
		st, err = c.Status(ctxT(t, 5*time.Second), id)
		return err == nil && (st.State == "committed" || st.State == "aborted" || st.State == string(saga.StateCompleted) || st.State == string(saga.StateCompensated))
	}, "a final status of "+id)
	return st
}

// A committed transaction's status tells its whole story in order: begun,
// the prepares sent (one event naming the participants), each vote, the
// decision, the commits sent, each ack, the end; times never go backwards.
func TestHistoryOfACommittedTransaction(t *testing.T) {
	f := newFixture(t, orchestrator.Config{Instance: "c1"})
	f.participant("a", yes)
	f.participant("b", yes)
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("%v %v", out.State, err)
	}
	st := finalStatus(t, newClient(t, f), out.ID)
	h := st.History
	want := []struct{ kind, participant, detail string }{
		{messages.EventBegun, "", "participants: a, b"},
		{messages.EventSent, "", "prepare to a, b"},
		{messages.EventVote, "a", "yes"}, {messages.EventVote, "b", "yes"},
		{messages.EventDecided, "", "commit"},
		{messages.EventSent, "", "commit to a, b"},
		{messages.EventAck, "a", "commit"}, {messages.EventAck, "b", "commit"},
		{messages.EventEnded, "", "committed"},
	}
	for _, w := range want {
		if n := count(h, w.kind, w.participant, w.detail); n != 1 {
			t.Errorf("%d events %s %s %q, want 1; history:%s", n, w.kind, w.participant, w.detail, events(h))
		}
	}
	if len(h) != len(want) || st.HistoryDropped != 0 {
		t.Errorf("%d events (%d dropped), want %d:%s", len(h), st.HistoryDropped, len(want), events(h))
	}
	if h[0].Event != messages.EventBegun || h[0].By != "c1" || h[len(h)-1].Event != messages.EventEnded {
		t.Errorf("history does not run from begun (by c1) to ended:%s", events(h))
	}
	for i := 1; i < len(h); i++ {
		if h[i].At.Before(h[i-1].At) {
			t.Errorf("event %d is before event %d:%s", i, i-1, events(h))
		}
	}
	// Each vote after its prepare; the decision after every vote; each ack
	// after the decision.
	pos := func(kind, participant, detail string) int {
		for i, ev := range h {
			if ev.Event == kind && ev.Participant == participant && strings.HasPrefix(ev.Detail, detail) {
				return i
			}
		}
		return -1
	}
	decided := pos(messages.EventDecided, "", "commit")
	prepared, committed := pos(messages.EventSent, "", "prepare to"), pos(messages.EventSent, "", "commit to")
	for _, p := range []string{"a", "b"} {
		if !(prepared < pos(messages.EventVote, p, "yes") && pos(messages.EventVote, p, "yes") < decided &&
			decided < committed && committed < pos(messages.EventAck, p, "commit")) {
			t.Errorf("events of %s out of order:%s", p, events(h))
		}
	}
}

// A no vote, with its reason, decides abort; the history says who voted no
// and why.
func TestHistoryOfAnAbortSaysWhoVotedNoAndWhy(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.participant("a", yes)
	f.participant("b", participants.HandlerFuncs{PrepareFunc: func(context.Context, participants.Tx, []byte) error {
		return errors.New("out of stock")
	}})
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a", "b")})
	if err != nil || out.Committed() {
		t.Fatalf("%v %v", out.State, err)
	}
	h := finalStatus(t, newClient(t, f), out.ID).History
	for _, w := range []struct{ kind, participant, detail string }{
		{messages.EventVote, "b", "no: out of stock"},
		{messages.EventDecided, "", "abort"},
		{messages.EventEnded, "", "aborted"},
	} {
		if count(h, w.kind, w.participant, w.detail) != 1 {
			t.Errorf("no event %s %s %q in:%s", w.kind, w.participant, w.detail, events(h))
		}
	}
	if h[len(h)-1].Event != messages.EventEnded {
		t.Errorf("history does not end with the end:%s", events(h))
	}
}

// A participant that does not vote: its prepare is re-sent (the history
// shows each re-send with its attempt); an operator's abort through the API
// is recorded with who asked and why.
func TestHistoryShowsResendsAndTheOperatorsAbort(t *testing.T) {
	f := newFixture(t, orchestrator.Config{RetryBase: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond, PrepareTimeout: time.Minute,
		NoOnePhase: true}) // prepare, and an abort: a one-phase commit cannot be aborted
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	f.participant("slow", holding(release, nil))
	id, err := f.eng.Begin(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("slow")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.eng.Stats().Resends >= 2 }, "two re-sends of the prepare")
	data, _ := json.Marshal(messages.AbortRequest{ID: id, Reason: "customer cancelled", Who: "alice"})
	m, err := f.nc.Request(messages.APIAbort(f.eng.Instance()), data, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var resp messages.StatusResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil || resp.Error != "" {
		t.Fatalf("abort answered %s (%v)", m.Data, err)
	}
	once.Do(func() { close(release) }) // slow votes late, then takes the abort
	h := finalStatus(t, newClient(t, f), id).History
	if n := count(h, messages.EventResent, "slow", "prepare"); n < 2 {
		t.Errorf("%d re-sends of prepare in the history, want 2 or more:%s", n, events(h))
	}
	for _, ev := range h {
		if ev.Event == messages.EventResent && ev.Attempt < 2 {
			t.Errorf("a re-send of attempt %d:%s", ev.Attempt, events(h))
		}
	}
	op := -1
	for i, ev := range h {
		if ev.Event == messages.EventOperator {
			op = i
			if ev.By != "alice" || ev.Detail != "abort: customer cancelled" {
				t.Errorf("operator event %+v, want by alice, abort: customer cancelled", ev)
			}
		}
	}
	if op < 0 || count(h[op:], messages.EventDecided, "", "abort: customer cancelled") != 1 {
		t.Errorf("no operator abort followed by its decision:%s", events(h))
	}
}

// A long-running transaction keeps its first events and its latest ones,
// messages.MaxHistory in all, and counts those dropped between them.
func TestHistoryIsBounded(t *testing.T) {
	f := newFixture(t, orchestrator.Config{RetryBase: time.Millisecond, RetryMax: 2 * time.Millisecond, PrepareTimeout: time.Minute,
		NoOnePhase: true}) // prepare, and an abort: a one-phase commit cannot be aborted
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	f.participant("slow", holding(release, nil))
	id, err := f.eng.Begin(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("slow")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.eng.Stats().Resends >= 2*messages.MaxHistory }, "many re-sends")
	if _, err := f.eng.Abort(id, "enough"); err != nil {
		t.Fatal(err)
	}
	once.Do(func() { close(release) })
	st := finalStatus(t, newClient(t, f), id)
	h := st.History
	if len(h) != messages.MaxHistory || st.HistoryDropped == 0 {
		t.Fatalf("%d events, %d dropped; want %d and some dropped", len(h), st.HistoryDropped, messages.MaxHistory)
	}
	if h[0].Event != messages.EventBegun || h[1].Event != messages.EventSent {
		t.Errorf("the first events are lost:%s", events(h[:3]))
	}
	if h[len(h)-1].Event != messages.EventEnded {
		t.Errorf("the last event is %+v, want ended", h[len(h)-1])
	}
	// The events kept after the head are the latest: their attempts run
	// without a gap up to the last re-send.
	var attempts []int
	for _, ev := range h {
		if ev.Event == messages.EventResent && ev.Detail == "prepare" {
			attempts = append(attempts, ev.Attempt)
		}
	}
	for i := 1; i < len(attempts); i++ {
		if attempts[i] <= attempts[i-1] {
			t.Fatalf("re-send attempts out of order: %v", attempts)
		}
	}
	if last := attempts[len(attempts)-1]; last-attempts[0] < messages.MaxHistory/2 {
		t.Errorf("attempts %v do not reach the latest re-sends", attempts)
	}
}

// A saga's history: each step's action sent and answered, a failure with
// its reason and the retry, the operator's resolve with who and why.
func TestHistoryOfASagaWithARetryAndAnOperator(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.sagaParticipant("a", func(cmd messages.Command) (messages.Result, string) {
		if cmd.Op == messages.OpCompensate {
			return messages.Failed, "ledger-down"
		}
		return messages.Ack, ""
	})
	var mu sync.Mutex
	tries := 0
	f.sagaParticipant("b", func(cmd messages.Command) (messages.Result, string) {
		mu.Lock()
		defer mu.Unlock()
		tries++
		if tries == 1 {
			return messages.Failed, "busy"
		}
		return messages.Refused, "no-stock"
	})
	ctx := ctxT(t, 30*time.Second)
	id, err := f.eng.BeginSaga(ctx, orchestrator.SagaRequest{Definition: threeSteps("a", "b")})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, f)
	waitFor(t, func() bool {
		st, err := c.Status(ctx, id)
		return err == nil && st.State == string(saga.StateCompensationStuck)
	}, "the saga to be compensation-stuck")
	if _, err := c.ActOnSaga(ctx, messages.SagaActRequest{ID: id, Action: messages.SagaResolve, Step: "step1", Who: "alice", Why: "refunded by hand"}); err != nil {
		t.Fatal(err)
	}
	st := finalStatus(t, c, id)
	h := st.History
	for _, w := range []struct{ kind, participant, detail string }{
		{messages.EventBegun, "", "participants: a, b"},
		{messages.EventSent, "a", "action"},
		{messages.EventAck, "a", "action"},
		{messages.EventSent, "b", "action"},
		{messages.EventFailed, "b", "action failed: failed action of step2 (code busy)"},
		{messages.EventResent, "b", "action"},
		{messages.EventFailed, "b", "action refused: refused action of step2 (code no-stock)"},
		{messages.EventSent, "a", "compensate"},
		{messages.EventFailed, "a", "compensate failed: failed compensate of step1 (code ledger-down)"},
		{messages.EventOperator, "", "resolve: refunded by hand"},
		{messages.EventEnded, "", string(saga.StateCompensated)},
	} {
		if count(h, w.kind, w.participant, w.detail) == 0 {
			t.Errorf("no event %s %s %q in:%s", w.kind, w.participant, w.detail, events(h))
		}
	}
	for _, ev := range h {
		if ev.Event == messages.EventOperator && (ev.By != "alice" || ev.Step != "step1") {
			t.Errorf("operator event %+v, want by alice on step1", ev)
		}
		if (ev.Event == messages.EventSent || ev.Event == messages.EventResent) && ev.Step == "" {
			t.Errorf("a saga command event without its step: %+v", ev)
		}
	}
}

// A saga taken over by another instance keeps the history its first
// coordinator wrote, and says who took it over from whom.
func TestHistorySurvivesASagaTakeover(t *testing.T) {
	f, id := sagaOwnerAboutToDie(t)
	c := newClient(t, f)
	// c1's status of step 2 sent is written before it dies.
	waitFor(t, func() bool {
		st, err := c.Status(ctxT(t, 5*time.Second), id)
		return err == nil && count(st.History, messages.EventSent, "b", "action") == 1
	}, "c1's status with b's action sent")
	f.eng.Halt()
	f.engine(orchestrator.Config{Instance: "c2", LeaseTTL: lease})
	h := finalStatus(t, c, id).History
	if len(h) == 0 || h[0].Event != messages.EventBegun || h[0].By != "c1" {
		t.Fatalf("the history does not start with c1's begin:%s", events(h))
	}
	taken := -1
	for i, ev := range h {
		if ev.Event == messages.EventRecovered {
			taken = i
			if ev.By != "c2" || !strings.Contains(ev.Detail, "from c1") {
				t.Errorf("takeover event %+v, want by c2 from c1", ev)
			}
		}
	}
	if taken < 0 || count(h[:taken], messages.EventAck, "a", "action") != 1 || count(h[taken:], messages.EventEnded, "", string(saga.StateCompleted)) != 1 {
		t.Errorf("want c1's events, then the takeover, then the end:%s", events(h))
	}
}
