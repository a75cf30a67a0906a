package orchestrator_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
)

// A prepare that times out is in the history: a timeout event naming the
// participant whose vote was missing, then at once the abort decision, then
// the end.
func TestHistoryOfAPrepareTimeout(t *testing.T) {
	f := newFixture(t, orchestrator.Config{PrepareTimeout: 300 * time.Millisecond})
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	f.participant("a", yes)
	f.participant("slow", holding(release, nil))
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a", "slow")})
	if err != nil {
		t.Fatal(err)
	}
	if out.State == orchestrator.Committed || out.State == orchestrator.Committing || !out.TimedOut {
		t.Fatalf("want an abort for the timeout, got %s (timed out %v) %q", out.State, out.TimedOut, out.Reason)
	}
	once.Do(func() { close(release) }) // slow votes late, then takes the abort
	h := finalStatus(t, newClient(t, f), out.ID).History
	if n := count(h, messages.EventTimeout, "", ""); n != 1 {
		t.Fatalf("%d timeout events, want 1:%s", n, events(h))
	}
	at := -1
	for i, ev := range h {
		if ev.Event == messages.EventTimeout {
			at = i
		}
	}
	ev := h[at]
	if !strings.Contains(ev.Detail, "slow") || strings.Contains(ev.Detail, "a,") {
		t.Errorf("the timeout event says %q; want it to name slow, whose vote was missing", ev.Detail)
	}
	if at+1 >= len(h) || h[at+1].Event != messages.EventDecided || !strings.HasPrefix(h[at+1].Detail, "abort") {
		t.Fatalf("the timeout is not followed by the abort decision:%s", events(h))
	}
	if count(h[:at], messages.EventDecided, "", "") != 0 {
		t.Errorf("a decision before the timeout:%s", events(h))
	}
	if count(h[:at], messages.EventVote, "a", "yes") != 1 || count(h[:at], messages.EventVote, "slow", "") != 0 {
		t.Errorf("before the timeout, want a's yes and no vote of slow:%s", events(h))
	}
	if h[len(h)-1].Event != messages.EventEnded || h[len(h)-1].Detail != "aborted" {
		t.Errorf("the last event is %+v, want ended aborted", h[len(h)-1])
	}
}

// An operator's retry now of a saga step waiting to retry is in the
// history: an operator event with who and why, then the step's
// next attempt sent at once (its back-off was an hour).
func TestHistoryOfASagaRetryNow(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	var mu sync.Mutex
	tries := 0
	f.sagaParticipant("a", func(cmd messages.Command) (messages.Result, string) {
		mu.Lock()
		defer mu.Unlock()
		if cmd.Op != messages.OpAction {
			return messages.Ack, ""
		}
		tries++
		if tries == 1 {
			return messages.Failed, "busy"
		}
		return messages.Ack, ""
	})
	def := saga.Definition{Name: "retry-now", Timeout: 5 * time.Second,
		Retry: saga.RetryPolicy{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxAttempts: 3},
		Steps: []saga.Step{{Name: "step1", Participant: "a", Action: []byte("do a"), Compensation: []byte("undo a")}}}
	ctx := ctxT(t, 30*time.Second)
	id, err := f.eng.BeginSaga(ctx, orchestrator.SagaRequest{Definition: def})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		rec, err := f.eng.SagaStatus(id)
		return err == nil && len(rec.Steps) == 1 && rec.Steps[0].Status == saga.StepRetrying
	}, "step1 to wait for its retry")
	c := newClient(t, f)
	if _, err := c.ActOnSaga(ctx, messages.SagaActRequest{ID: id, Action: messages.SagaRetry, Who: "bob", Why: "the ledger is back"}); err != nil {
		t.Fatal(err)
	}
	st := finalStatus(t, c, id)
	if st.State != string(saga.StateCompleted) {
		t.Fatalf("the saga ended %s, want completed (its retry came at once)", st.State)
	}
	h := st.History
	op := -1
	for i, ev := range h {
		if ev.Event == messages.EventOperator {
			if op >= 0 {
				t.Errorf("more than one operator event:%s", events(h))
			}
			op = i
			if ev.By != "bob" || ev.Detail != "retry: the ledger is back" {
				t.Errorf("operator event %+v, want by bob, retry: the ledger is back", ev)
			}
		}
	}
	if op < 0 {
		t.Fatalf("no operator event:%s", events(h))
	}
	if count(h[:op], messages.EventFailed, "a", "action failed") != 1 || count(h[:op], messages.EventResent, "", "") != 0 {
		t.Errorf("before the retry, want step1's failure and no re-send:%s", events(h))
	}
	if count(h[op:], messages.EventResent, "a", "action") != 1 || count(h[op:], messages.EventAck, "a", "action") != 1 {
		t.Errorf("after the retry, want step1's action sent again and acknowledged:%s", events(h))
	}
}
