package txn

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
)

const (
	testPrepareTimeout = 2 * time.Second
	testRetryBase      = 100 * time.Millisecond
	testRetryMax       = time.Second
	testAbortSends     = 3
)

func testSpec(names ...string) Spec {
	s := Spec{
		ID:             "tx1",
		PrepareTimeout: testPrepareTimeout,
		RetryBase:      testRetryBase,
		RetryMax:       testRetryMax,
		AbortSends:     testAbortSends,
	}
	for _, n := range names {
		s.Participants = append(s.Participants, Participant{Name: n, Payload: []byte(n + "-work")})
	}
	return s
}

// harness drives a Tx and remembers the timers it armed last, as a driver
// does.
type harness struct {
	t     *testing.T
	tx    *Tx
	armed map[TimerKind]Timer
	dones int
}

func begin(t *testing.T, spec Spec) (*harness, Ready) {
	t.Helper()
	tx, err := New(spec)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{t: t, tx: tx, armed: map[TimerKind]Timer{}}
	return h, h.note(tx.Start())
}

func (h *harness) note(rd Ready) Ready {
	for _, tr := range rd.Timers {
		h.armed[tr.Timer.Kind] = tr.Timer
	}
	if rd.Done {
		h.dones++
	}
	return rd
}

func (h *harness) step(ev Event) Ready { return h.note(h.tx.Step(ev)) }

func (h *harness) vote(p string, yes bool, reason string) Ready {
	return h.step(Event{Kind: EventVote, Participant: p, Yes: yes, Reason: reason})
}

func (h *harness) ack(p string, op messages.Op) Ready {
	return h.step(Event{Kind: EventAck, Participant: p, Op: op})
}

func (h *harness) fire(kind TimerKind) Ready {
	h.t.Helper()
	tm, ok := h.armed[kind]
	if !ok {
		h.t.Fatalf("no %v timer armed", kind)
	}
	return h.step(Event{Kind: EventTimer, Timer: tm})
}

// allYes votes yes for every participant and returns the last Ready.
func (h *harness) allYes() Ready {
	var rd Ready
	for _, p := range h.tx.Outcome().Participants {
		rd = h.vote(p.Name, true, "")
	}
	return rd
}

func sendsOf(rd Ready) []string {
	var ss []string
	for _, s := range rd.Send {
		ss = append(ss, s.Participant+" "+string(s.Op))
	}
	return ss
}

func names(ns ...string) []string { return ns }

func withOp(op messages.Op, ns ...string) []string {
	var ss []string
	for _, n := range ns {
		ss = append(ss, n+" "+string(op))
	}
	return ss
}

func isEmpty(rd Ready) bool {
	return rd.Persist == nil && len(rd.Send) == 0 && len(rd.Timers) == 0 && !rd.Decided && !rd.Done
}

func TestCommitWhenAllVoteYes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts []string
		order []string // vote order
	}{
		{"single", names("a"), names("a")},
		{"two", names("a", "b"), names("b", "a")},
		{"three in order", names("a", "b", "c"), names("a", "b", "c")},
		{"three reversed", names("a", "b", "c"), names("c", "b", "a")},
		{"five unsorted names", names("e", "c", "a", "d", "b"), names("d", "a", "e", "b", "c")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := begin(t, testSpec(tc.parts...))
			for i, p := range tc.order {
				rd := h.vote(p, true, "")
				if i < len(tc.order)-1 {
					if !isEmpty(rd) || rd.Ignored != "" {
						t.Fatalf("vote %d of %d: got %+v, want nothing", i+1, len(tc.order), rd)
					}
					continue
				}
				// The deciding vote: persist and commit in the same Ready.
				if !rd.Decided || rd.Done {
					t.Fatalf("deciding vote: Decided=%v Done=%v", rd.Decided, rd.Done)
				}
				want := Record{ID: "tx1", State: Committing, Participants: slices.Sorted(slices.Values(tc.parts))}
				if rd.Persist == nil || !reflect.DeepEqual(*rd.Persist, want) {
					t.Fatalf("Persist = %+v, want %+v", rd.Persist, want)
				}
				if got, want := sendsOf(rd), withOp(messages.OpCommit, tc.parts...); !slices.Equal(got, want) {
					t.Fatalf("sends = %v, want %v", got, want)
				}
				for _, s := range rd.Send {
					if s.Attempt != 1 || s.Payload != nil {
						t.Errorf("send %+v: want attempt 1 and no payload", s)
					}
				}
				if len(rd.Timers) != 1 || rd.Timers[0].Timer.Kind != TimerResend || rd.Timers[0].After != testRetryBase {
					t.Errorf("timers = %+v, want one resend after %v", rd.Timers, testRetryBase)
				}
			}
			if o := h.tx.Outcome(); o.State != Committing || o.Reason != "every participant voted commit" || !o.Committed() || o.TimedOut {
				t.Fatalf("outcome %+v", o)
			}
			// Acks in reverse order; only the last ends the transaction.
			for i := len(tc.parts) - 1; i >= 0; i-- {
				rd := h.ack(tc.parts[i], messages.OpCommit)
				if rd.Done != (i == 0) || len(rd.Send) != 0 || rd.Persist != nil || rd.Ignored != "" {
					t.Fatalf("ack %d: %+v", i, rd)
				}
			}
			if h.tx.State() != Committed || h.dones != 1 || !h.tx.Outcome().Committed() {
				t.Fatalf("state %v after %d Done, want committed after 1", h.tx.State(), h.dones)
			}
		})
	}
}

// TestPersistBeforeCommit checks, over every vote order of three
// participants, that no commit is sent before or without the Ready that
// persists the decision, and that the decision is persisted once.
func TestPersistBeforeCommit(t *testing.T) {
	parts := names("a", "b", "c")
	orders := [][]string{
		{"a", "b", "c"}, {"a", "c", "b"}, {"b", "a", "c"},
		{"b", "c", "a"}, {"c", "a", "b"}, {"c", "b", "a"},
	}
	for _, order := range orders {
		h, rd := begin(t, testSpec(parts...))
		persisted, commitReadies := 0, 0
		check := func(rd Ready) {
			if rd.Persist != nil {
				persisted++
			}
			if !slices.ContainsFunc(rd.Send, func(s Send) bool { return s.Op == messages.OpCommit }) {
				return
			}
			// The first commits go out in the Ready that persists the decision.
			if commitReadies++; persisted == 0 || commitReadies == 1 && rd.Persist == nil {
				t.Fatalf("order %v: commit sent without a persisted decision: %+v", order, rd)
			}
		}
		check(rd)
		for _, p := range order {
			check(h.vote(p, true, ""))
			check(h.fire(TimerResend))
		}
		check(h.fire(TimerPrepare))
		if persisted != 1 {
			t.Fatalf("order %v: persisted %d times", order, persisted)
		}
	}
}

func TestAbortOnNoVote(t *testing.T) {
	for _, tc := range []struct {
		name       string
		parts      []string
		yesFirst   []string
		no         string
		reason     string
		wantSend   []string
		wantReason string
	}{
		{"first vote no", names("a", "b", "c"), nil, "a", "out-of-stock", names("b", "c"), "a voted abort: out-of-stock"},
		{"no after yes", names("a", "b", "c"), names("a", "c"), "b", "limit", names("a", "c"), "b voted abort: limit"},
		{"last vote no", names("a", "b", "c"), names("a", "b"), "c", "x", names("a", "b"), "c voted abort: x"},
		{"no reason", names("a", "b"), nil, "b", "", names("a"), "b voted abort: no reason given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := begin(t, testSpec(tc.parts...))
			for _, p := range tc.yesFirst {
				h.vote(p, true, "")
			}
			rd := h.vote(tc.no, false, tc.reason)
			if !rd.Decided || rd.Done || rd.Persist != nil {
				t.Fatalf("Ready %+v: want decided, not done, nothing persisted", rd)
			}
			if got, want := sendsOf(rd), withOp(messages.OpAbort, tc.wantSend...); !slices.Equal(got, want) {
				t.Fatalf("sends = %v, want %v (never to the no voter)", got, want)
			}
			o := h.tx.Outcome()
			if o.State != Aborting || o.Reason != tc.wantReason || o.Committed() || o.TimedOut {
				t.Fatalf("outcome %+v, want aborting %q, not timed out", o, tc.wantReason)
			}
			// The remaining acks finish it; the no voter needs none.
			for i, p := range tc.wantSend {
				rd := h.ack(p, messages.OpAbort)
				if rd.Done != (i == len(tc.wantSend)-1) {
					t.Fatalf("ack from %s: Done=%v", p, rd.Done)
				}
			}
			if h.tx.State() != Aborted || h.dones != 1 {
				t.Fatalf("state %v after %d Done", h.tx.State(), h.dones)
			}
		})
	}
}

func TestSingleParticipant(t *testing.T) {
	t.Run("no", func(t *testing.T) {
		h, _ := begin(t, testSpec("solo"))
		rd := h.vote("solo", false, "nope")
		if !rd.Decided || !rd.Done || len(rd.Send) != 0 || len(rd.Timers) != 0 || rd.Persist != nil {
			t.Fatalf("Ready %+v: want decided and done at once, nothing to send", rd)
		}
		if h.tx.State() != Aborted {
			t.Fatalf("state %v", h.tx.State())
		}
	})
	t.Run("yes", func(t *testing.T) {
		h, _ := begin(t, testSpec("solo"))
		rd := h.vote("solo", true, "")
		if !rd.Decided || rd.Done || rd.Persist == nil || !slices.Equal(sendsOf(rd), names("solo commit")) {
			t.Fatalf("Ready %+v", rd)
		}
		if rd := h.ack("solo", messages.OpCommit); !rd.Done {
			t.Fatalf("ack: %+v", rd)
		}
	})
}

func TestFailedPrepareAborts(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b", "c"))
	h.vote("a", true, "")
	rd := h.step(Event{Kind: EventFailed, Participant: "b", Op: messages.OpPrepare, Reason: "table locked"})
	if !rd.Decided || rd.Persist != nil {
		t.Fatalf("Ready %+v", rd)
	}
	if got, want := sendsOf(rd), withOp(messages.OpAbort, "a", "b", "c"); !slices.Equal(got, want) {
		t.Fatalf("sends = %v, want %v", got, want)
	}
	o := h.tx.Outcome()
	if o.State != Aborting || !strings.Contains(o.Reason, "b") || !strings.Contains(o.Reason, "table locked") {
		t.Fatalf("outcome %v %q", o.State, o.Reason)
	}
	if p := o.Participants[1]; p.Vote != VoteNo || p.Reason != "failed: table locked" {
		t.Fatalf("b: %+v", p)
	}
}

func TestAbortOnPrepareTimeout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		parts   []string
		yes     []string
		missing string
	}{
		{"nobody voted", names("a", "b", "c"), nil, "a, b, c"},
		{"one missing", names("a", "b", "c"), names("a", "c"), "b"},
		{"two missing", names("a", "b", "c"), names("b"), "a, c"},
		{"single", names("solo"), nil, "solo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, rd := begin(t, testSpec(tc.parts...))
			if len(rd.Timers) != 2 || rd.Timers[0].Timer.Kind != TimerPrepare || rd.Timers[0].After != testPrepareTimeout {
				t.Fatalf("start timers = %+v", rd.Timers)
			}
			for _, p := range tc.yes {
				h.vote(p, true, "")
			}
			rd = h.fire(TimerPrepare)
			if !rd.Decided || rd.Persist != nil || rd.Done {
				t.Fatalf("Ready %+v", rd)
			}
			if got, want := sendsOf(rd), withOp(messages.OpAbort, tc.parts...); !slices.Equal(got, want) {
				t.Fatalf("sends = %v, want abort to everyone: %v", got, want)
			}
			want := "timeout: no vote from " + tc.missing + " within 2s"
			if o := h.tx.Outcome(); o.State != Aborting || !strings.HasPrefix(o.Reason, want) || !o.TimedOut || o.Committed() {
				t.Fatalf("outcome %+v, want timed out, reason starting %q", o, want)
			}
			for _, p := range tc.parts {
				h.ack(p, messages.OpAbort)
			}
			if o := h.tx.Outcome(); o.State != Aborted || !o.TimedOut {
				t.Fatalf("after the acks: %+v, want aborted and still timed out", o)
			}
		})
	}
}

// TestATimeoutNamesAParticipantWhoseRepliesWereRejected: a participant
// that answered, but only with replies that could not be read, is named as
// such in the timeout reason, with the first rejection; one that said
// nothing keeps the usual reason; a rejection after a valid vote changes
// nothing.
func TestATimeoutNamesAParticipantWhoseRepliesWereRejected(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b", "c"))
	h.step(Event{Kind: EventRejected, Participant: "b", Reason: `natstx: malformed message: header "Natstx-Version" is "1.0"`})
	h.step(Event{Kind: EventRejected, Participant: "b", Reason: "a later one"})
	h.vote("c", true, "")
	h.step(Event{Kind: EventRejected, Participant: "c", Reason: "after its vote"})
	if rd := h.step(Event{Kind: EventRejected, Participant: "mallory", Reason: "x"}); rd.Ignored == "" {
		t.Fatalf("a rejection for a non-participant was not ignored: %+v", rd)
	}
	h.fire(TimerPrepare)
	want := `timeout: no vote from a within 2s (is a participant of that name running?); no valid vote within 2s: b answered, but its replies were rejected: natstx: malformed message: header "Natstx-Version" is "1.0"`
	if o := h.tx.Outcome(); o.Reason != want || o.State != Aborting {
		t.Fatalf("reason %q\nwant   %q", o.Reason, want)
	}
	if o := h.tx.Outcome(); o.Participants[1].Rejected == "" || o.Participants[0].Rejected != "" {
		t.Fatalf("participants %+v", o.Participants)
	}
}

func TestOperatorAbort(t *testing.T) {
	t.Run("while preparing", func(t *testing.T) {
		h, _ := begin(t, testSpec("a", "b", "c"))
		h.vote("b", true, "")
		rd := h.step(Event{Kind: EventAbort, Reason: "operator"})
		if !rd.Decided || rd.Persist != nil || !slices.Equal(sendsOf(rd), withOp(messages.OpAbort, "a", "b", "c")) {
			t.Fatalf("Ready %+v", rd)
		}
		if o := h.tx.Outcome(); o.State != Aborting || o.Reason != "operator" || o.TimedOut || o.Committed() {
			t.Fatalf("outcome %+v", o)
		}
		rd = h.step(Event{Kind: EventAbort, Reason: "again"})
		if !isEmpty(rd) || !strings.Contains(rd.Ignored, "after the decision to abort") {
			t.Fatalf("second abort: %+v", rd)
		}
	})
	t.Run("after commit decision", func(t *testing.T) {
		h, _ := begin(t, testSpec("a", "b"))
		h.allYes()
		before := h.tx.Outcome()
		rd := h.step(Event{Kind: EventAbort, Reason: "operator"})
		if !isEmpty(rd) || !strings.Contains(rd.Ignored, "after the decision to commit") {
			t.Fatalf("Ready %+v", rd)
		}
		if after := h.tx.Outcome(); !reflect.DeepEqual(before, after) {
			t.Fatalf("outcome changed: %+v -> %+v", before, after)
		}
		// Commit continues.
		if rd := h.fire(TimerResend); !slices.Equal(sendsOf(rd), withOp(messages.OpCommit, "a", "b")) {
			t.Fatalf("resend: %+v", rd)
		}
	})
}

// TestIgnored checks that an event that does not apply is ignored with a
// reason, has no effects, and leaves the transaction as it was.
func TestIgnored(t *testing.T) {
	yes := func(p string) func(*harness) { return func(h *harness) { h.vote(p, true, "") } }
	no := func(p string) func(*harness) { return func(h *harness) { h.vote(p, false, "r") } }
	ack := func(p string, op messages.Op) func(*harness) { return func(h *harness) { h.ack(p, op) } }
	fire := func(k TimerKind) func(*harness) { return func(h *harness) { h.fire(k) } }
	allYes := func(h *harness) { h.allYes() }
	// staleResend fires the resend timer armed before setup ran (seq 2 at start).
	staleResend := Event{Kind: EventTimer, Timer: Timer{Kind: TimerResend, Seq: 2}}
	prepareTimer := Event{Kind: EventTimer, Timer: Timer{Kind: TimerPrepare, Seq: 1}}

	for _, tc := range []struct {
		name  string
		setup []func(*harness)
		ev    Event
		want  string // in Ignored
	}{
		{"duplicate yes", steps(yes("a")), Event{Kind: EventVote, Participant: "a", Yes: true}, "duplicate vote from a"},
		{"yes then no", steps(yes("a")), Event{Kind: EventVote, Participant: "a", Reason: "changed"}, "duplicate vote from a"},
		{"vote from stranger", nil, Event{Kind: EventVote, Participant: "zed", Yes: true}, `"zed", which is not a participant`},
		{"ack from stranger", steps(allYes), Event{Kind: EventAck, Participant: "zed", Op: messages.OpCommit}, `"zed", which is not a participant`},
		{"failure from stranger", nil, Event{Kind: EventFailed, Participant: "zed", Op: messages.OpPrepare}, `"zed", which is not a participant`},
		{"late yes after commit", steps(allYes), Event{Kind: EventVote, Participant: "a", Yes: true}, "after the decision to commit"},
		{"late no after commit", steps(allYes), Event{Kind: EventVote, Participant: "b", Reason: "late"}, "after the decision to commit"},
		{"late vote after abort", steps(no("a")), Event{Kind: EventVote, Participant: "b", Yes: true}, "after the decision to abort"},
		{"late vote after timeout", steps(fire(TimerPrepare)), Event{Kind: EventVote, Participant: "b", Yes: true}, "after the decision to abort"},
		{"failed prepare after vote", steps(yes("a")), Event{Kind: EventFailed, Participant: "a", Op: messages.OpPrepare}, "after its vote or the decision"},
		{"failed prepare after decision", steps(no("a")), Event{Kind: EventFailed, Participant: "b", Op: messages.OpPrepare}, "after its vote or the decision"},
		{"ack commit while preparing", nil, Event{Kind: EventAck, Participant: "a", Op: messages.OpCommit}, "ack of commit from a while the transaction is preparing"},
		{"ack abort while preparing", nil, Event{Kind: EventAck, Participant: "a", Op: messages.OpAbort}, "ack of abort from a while the transaction is preparing"},
		{"ack abort while committing", steps(allYes), Event{Kind: EventAck, Participant: "a", Op: messages.OpAbort}, "ack of abort from a while the transaction is committing"},
		{"ack prepare while committing", steps(allYes), Event{Kind: EventAck, Participant: "a", Op: messages.OpPrepare}, "ack of prepare"},
		{"ack commit while aborting", steps(no("a")), Event{Kind: EventAck, Participant: "b", Op: messages.OpCommit}, "ack of commit from b while the transaction is aborting"},
		{"duplicate commit ack", steps(allYes, ack("a", messages.OpCommit)), Event{Kind: EventAck, Participant: "a", Op: messages.OpCommit}, "duplicate ack from a"},
		{"duplicate abort ack", steps(no("a"), ack("b", messages.OpAbort)), Event{Kind: EventAck, Participant: "b", Op: messages.OpAbort}, "duplicate ack from b"},
		{"abort ack from the no voter", steps(no("a")), Event{Kind: EventAck, Participant: "a", Op: messages.OpAbort}, "duplicate ack from a"},
		{"commit failure while preparing", nil, Event{Kind: EventFailed, Participant: "a", Op: messages.OpCommit}, "commit failure from a"},
		{"abort failure while committing", steps(allYes), Event{Kind: EventFailed, Participant: "a", Op: messages.OpAbort}, "abort failure from a"},
		{"commit failure after ack", steps(allYes, ack("a", messages.OpCommit)), Event{Kind: EventFailed, Participant: "a", Op: messages.OpCommit}, "commit failure from a"},
		{"stale resend while preparing", steps(fire(TimerResend)), staleResend, "stale resend timer"},
		{"stale resend after commit", steps(allYes), staleResend, "stale resend timer"},
		{"stale resend after abort", steps(no("a")), staleResend, "stale resend timer"},
		{"prepare timer after commit", steps(allYes), prepareTimer, "stale prepare timer"},
		{"prepare timer after abort", steps(no("a")), prepareTimer, "stale prepare timer"},
		{"prepare timer of another seq", nil, Event{Kind: EventTimer, Timer: Timer{Kind: TimerPrepare, Seq: 2}}, "stale prepare timer"},
		{"timer of a future seq", nil, Event{Kind: EventTimer, Timer: Timer{Kind: TimerResend, Seq: 99}}, "stale resend timer"},
		{"abort after commit", steps(allYes), Event{Kind: EventAbort, Reason: "op"}, "after the decision to commit"},
		{"abort after abort", steps(no("b")), Event{Kind: EventAbort, Reason: "op"}, "after the decision to abort"},
		{"unknown event kind", nil, Event{Kind: 99}, "unknown event kind 99"},
		{"zero event", nil, Event{}, "unknown event kind 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := begin(t, testSpec("a", "b", "c"))
			for _, f := range tc.setup {
				f(h)
			}
			before := h.tx.Outcome()
			rd := h.step(tc.ev)
			if !isEmpty(rd) {
				t.Fatalf("Ready has effects: %+v", rd)
			}
			if !strings.Contains(rd.Ignored, tc.want) {
				t.Fatalf("Ignored = %q, want it to contain %q", rd.Ignored, tc.want)
			}
			if after := h.tx.Outcome(); !reflect.DeepEqual(before, after) {
				t.Fatalf("outcome changed:\n%+v\n%+v", before, after)
			}
		})
	}
}

// steps makes the setup lists of TestIgnored short.
func steps(fs ...func(*harness)) []func(*harness) { return fs }

// TestFinalIgnoresEverything feeds every kind of event to a committed and an
// aborted transaction.
func TestFinalIgnoresEverything(t *testing.T) {
	committed := func(t *testing.T) *harness {
		h, _ := begin(t, testSpec("a", "b"))
		h.allYes()
		h.ack("a", messages.OpCommit)
		h.ack("b", messages.OpCommit)
		return h
	}
	aborted := func(t *testing.T) *harness {
		h, _ := begin(t, testSpec("a", "b"))
		h.vote("a", false, "no")
		h.ack("b", messages.OpAbort)
		return h
	}
	gaveUp := func(t *testing.T) *harness {
		h, _ := begin(t, testSpec("a", "b"))
		h.vote("a", false, "no")
		for h.dones == 0 {
			h.fire(TimerResend)
		}
		return h
	}
	events := func(h *harness) []Event {
		return []Event{
			{Kind: EventVote, Participant: "a", Yes: true},
			{Kind: EventVote, Participant: "b"},
			{Kind: EventAck, Participant: "a", Op: messages.OpCommit},
			{Kind: EventAck, Participant: "b", Op: messages.OpAbort},
			{Kind: EventFailed, Participant: "a", Op: messages.OpPrepare},
			{Kind: EventFailed, Participant: "b", Op: messages.OpCommit},
			{Kind: EventTimer, Timer: h.armed[TimerResend]},
			{Kind: EventTimer, Timer: h.armed[TimerPrepare]},
			{Kind: EventAbort, Reason: "operator"},
			{Kind: 99},
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(*testing.T) *harness
		state State
	}{
		{"committed", committed, Committed},
		{"aborted", aborted, Aborted},
		{"gave up", gaveUp, Aborted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.setup(t)
			if h.tx.State() != tc.state || h.dones != 1 {
				t.Fatalf("state %v after %d Done", h.tx.State(), h.dones)
			}
			before := h.tx.Outcome()
			for _, ev := range events(h) {
				rd := h.step(ev)
				if !isEmpty(rd) || rd.Ignored != "transaction is "+tc.state.String() {
					t.Errorf("event %+v: %+v", ev, rd)
				}
			}
			if after := h.tx.Outcome(); !reflect.DeepEqual(before, after) {
				t.Fatalf("outcome changed:\n%+v\n%+v", before, after)
			}
			if h.dones != 1 {
				t.Fatalf("Done %d times", h.dones)
			}
		})
	}
}

// TestCommitResentWithoutLimit fires the resend timer many times after a
// commit decision: commit goes to the participants that have not acked, the
// delay doubles up to RetryMax, and the transaction never aborts nor ends
// before every ack.
func TestCommitResentWithoutLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		base, max  time.Duration
		abortSends int
	}{
		{"default", testRetryBase, testRetryMax, testAbortSends},
		{"max is base", time.Second, time.Second, 1},
		{"max not a power of two of base", 30 * time.Millisecond, 500 * time.Millisecond, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec("a", "b", "c")
			spec.RetryBase, spec.RetryMax, spec.AbortSends = tc.base, tc.max, tc.abortSends
			h, _ := begin(t, spec)
			h.allYes()
			h.ack("b", messages.OpCommit)
			gap := tc.base
			const fires = 50
			for i := range fires {
				if i == 10 {
					// A failure and an abort request change nothing.
					if rd := h.step(Event{Kind: EventFailed, Participant: "a", Op: messages.OpCommit, Reason: "disk full"}); !isEmpty(rd) {
						t.Fatalf("failure: %+v", rd)
					}
					if rd := h.step(Event{Kind: EventAbort}); rd.Ignored == "" {
						t.Fatalf("abort: %+v", rd)
					}
				}
				rd := h.fire(TimerResend)
				if rd.Done || rd.Decided || rd.Persist != nil || rd.Ignored != "" {
					t.Fatalf("fire %d: %+v", i+1, rd)
				}
				if got, want := sendsOf(rd), withOp(messages.OpCommit, "a", "c"); !slices.Equal(got, want) {
					t.Fatalf("fire %d: sends = %v, want %v", i+1, got, want)
				}
				for _, s := range rd.Send {
					if s.Attempt != i+2 {
						t.Fatalf("fire %d: attempt %d, want %d", i+1, s.Attempt, i+2)
					}
				}
				gap = min(2*gap, tc.max)
				if len(rd.Timers) != 1 || rd.Timers[0].Timer.Kind != TimerResend || rd.Timers[0].After != gap {
					t.Fatalf("fire %d: timers %+v, want resend after %v", i+1, rd.Timers, gap)
				}
				if h.tx.State() != Committing {
					t.Fatalf("fire %d: state %v", i+1, h.tx.State())
				}
			}
			if p := h.tx.Outcome().Participants[0]; p.Reason != "disk full" || p.Sends != fires+1 {
				t.Fatalf("a: %+v", p)
			}
			if rd := h.ack("a", messages.OpCommit); rd.Done {
				t.Fatal("done with c unacked")
			}
			if rd := h.fire(TimerResend); !slices.Equal(sendsOf(rd), names("c commit")) {
				t.Fatalf("after a acked: %+v", rd)
			}
			if rd := h.ack("c", messages.OpCommit); !rd.Done || h.tx.State() != Committed {
				t.Fatalf("last ack: %+v, state %v", rd, h.tx.State())
			}
		})
	}
}

func TestPrepareResent(t *testing.T) {
	h, rd := begin(t, testSpec("a", "b", "c"))
	if got, want := sendsOf(rd), withOp(messages.OpPrepare, "a", "b", "c"); !slices.Equal(got, want) {
		t.Fatalf("start sends = %v", got)
	}
	for _, s := range rd.Send {
		if string(s.Payload) != s.Participant+"-work" || s.Attempt != 1 {
			t.Fatalf("start send %+v", s)
		}
	}
	h.vote("b", true, "")
	gap := testRetryBase
	for i := range 6 {
		rd := h.fire(TimerResend)
		if got, want := sendsOf(rd), withOp(messages.OpPrepare, "a", "c"); !slices.Equal(got, want) {
			t.Fatalf("fire %d: sends = %v, want %v", i+1, got, want)
		}
		for _, s := range rd.Send {
			if string(s.Payload) != s.Participant+"-work" || s.Attempt != i+2 {
				t.Fatalf("fire %d: send %+v", i+1, s)
			}
		}
		gap = min(2*gap, testRetryMax)
		if rd.Timers[0].After != gap {
			t.Fatalf("fire %d: after %v, want %v", i+1, rd.Timers[0].After, gap)
		}
	}
	// The decision starts the commit phase from attempt 1 and the base delay.
	h.vote("a", true, "")
	rd = h.vote("c", true, "")
	for _, s := range rd.Send {
		if s.Attempt != 1 {
			t.Fatalf("commit send %+v: want attempt 1", s)
		}
	}
	if rd.Timers[0].After != testRetryBase {
		t.Fatalf("commit resend after %v, want %v", rd.Timers[0].After, testRetryBase)
	}
}

func TestAbortGivesUp(t *testing.T) {
	for _, abortSends := range []int{1, 2, 3, 5} {
		for _, ackB := range []bool{false, true} {
			name := map[bool]string{false: "nobody acks", true: "b acks"}[ackB]
			t.Run(fmt.Sprintf("abort-sends=%d/%s", abortSends, name), func(t *testing.T) {
				spec := testSpec("a", "b", "c")
				spec.AbortSends = abortSends
				h, _ := begin(t, spec)
				rd := h.vote("a", false, "out-of-stock")
				if got, want := sendsOf(rd), withOp(messages.OpAbort, "b", "c"); !slices.Equal(got, want) {
					t.Fatalf("decision sends = %v, want %v", got, want)
				}
				if ackB {
					h.ack("b", messages.OpAbort)
				}
				for i := 2; i <= abortSends; i++ {
					rd := h.fire(TimerResend)
					want := withOp(messages.OpAbort, "b", "c")
					if ackB {
						want = names("c abort")
					}
					if got := sendsOf(rd); !slices.Equal(got, want) || rd.Done {
						t.Fatalf("resend %d: %+v, want sends %v", i, rd, want)
					}
					for _, s := range rd.Send {
						if s.Attempt != i {
							t.Fatalf("resend %d: attempt %d", i, s.Attempt)
						}
					}
				}
				rd = h.fire(TimerResend)
				if !rd.Done || len(rd.Send) != 0 || len(rd.Timers) != 0 || rd.Decided {
					t.Fatalf("give up: %+v", rd)
				}
				silent := "b, c"
				if ackB {
					silent = "c"
				}
				o := h.tx.Outcome()
				if o.State != Aborted ||
					!strings.HasPrefix(o.Reason, "a voted abort: out-of-stock") ||
					!strings.Contains(o.Reason, "not acknowledged by "+silent+" after") ||
					!strings.Contains(o.Reason, "stays queued") {
					t.Fatalf("outcome %v %q", o.State, o.Reason)
				}
				if rd := h.fire(TimerResend); !isEmpty(rd) || rd.Ignored == "" {
					t.Fatalf("timer after give up: %+v, want ignored", rd)
				}
			})
		}
	}
}

func TestAbortDoneWhenAllAck(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b", "c"))
	h.fire(TimerPrepare)
	h.ack("c", messages.OpAbort)
	h.fire(TimerResend)
	h.ack("a", messages.OpAbort)
	if rd := h.ack("b", messages.OpAbort); !rd.Done {
		t.Fatalf("last ack: %+v", rd)
	}
	if o := h.tx.Outcome(); o.State != Aborted || strings.Contains(o.Reason, "queued") {
		t.Fatalf("outcome %v %q", o.State, o.Reason)
	}
}

func TestSpecValidate(t *testing.T) {
	good := testSpec("a", "b")
	for _, tc := range []struct {
		name   string
		modify func(*Spec)
		want   error // nil: valid
	}{
		{"valid", func(*Spec) {}, nil},
		{"retry max equals base", func(s *Spec) { s.RetryMax = s.RetryBase }, nil},
		{"one abort send", func(s *Spec) { s.AbortSends = 1 }, nil},
		{"no participants", func(s *Spec) { s.Participants = nil }, ErrNoParticipants},
		{"empty participants", func(s *Spec) { s.Participants = []Participant{} }, ErrNoParticipants},
		{"duplicate participant", func(s *Spec) { s.Participants = append(s.Participants, Participant{Name: "a"}) }, ErrDuplicateParticipant},
		{"empty participant name", func(s *Spec) { s.Participants[1].Name = "" }, messages.ErrInvalidName},
		{"participant name with dot", func(s *Spec) { s.Participants[1].Name = "b.c" }, messages.ErrInvalidName},
		{"participant name with wildcard", func(s *Spec) { s.Participants[0].Name = "*" }, messages.ErrInvalidName},
		{"participant name with space", func(s *Spec) { s.Participants[0].Name = "a b" }, messages.ErrInvalidName},
		{"participant name too long", func(s *Spec) { s.Participants[0].Name = strings.Repeat("a", messages.MaxNameLen+1) }, messages.ErrInvalidName},
		{"empty ID", func(s *Spec) { s.ID = "" }, messages.ErrInvalidName},
		{"bad ID", func(s *Spec) { s.ID = "tx>" }, messages.ErrInvalidName},
		{"zero prepare timeout", func(s *Spec) { s.PrepareTimeout = 0 }, ErrBadTiming},
		{"negative prepare timeout", func(s *Spec) { s.PrepareTimeout = -time.Second }, ErrBadTiming},
		{"zero retry", func(s *Spec) { s.RetryBase = 0 }, ErrBadTiming},
		{"negative retry", func(s *Spec) { s.RetryBase = -time.Millisecond }, ErrBadTiming},
		{"retry max below base", func(s *Spec) { s.RetryMax = s.RetryBase - 1 }, ErrBadTiming},
		{"zero abort sends", func(s *Spec) { s.AbortSends = 0 }, ErrBadTiming},
		{"negative abort sends", func(s *Spec) { s.AbortSends = -1 }, ErrBadTiming},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Participants = slices.Clone(good.Participants)
			tc.modify(&s)
			err := s.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if tx, err := New(s); err != nil || tx == nil {
					t.Fatalf("New: %v, %v", tx, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
			tx, err := New(s)
			if !errors.Is(err, tc.want) || tx != nil {
				t.Fatalf("New = %v, %v; want nil, %v", tx, err, tc.want)
			}
		})
	}
}

func TestRecover(t *testing.T) {
	rec := Record{ID: "tx9", State: Committing, Participants: names("a", "b", "c")}
	// The spec gives the timings; its ID and participants come from the record.
	spec := testSpec("x")
	tx, err := Recover(rec, spec)
	if err != nil {
		t.Fatal(err)
	}
	if o := tx.Outcome(); tx.ID() != "tx9" || tx.State() != Committing || !o.Committed() || o.TimedOut {
		t.Fatalf("recovered %s in %v: %+v", tx.ID(), tx.State(), o)
	}
	h := &harness{t: t, tx: tx, armed: map[TimerKind]Timer{}}
	rd := h.note(tx.Start())
	if rd.Persist != nil || rd.Decided || rd.Done {
		t.Fatalf("start: %+v; the decision is already durable", rd)
	}
	if got, want := sendsOf(rd), withOp(messages.OpCommit, "a", "b", "c"); !slices.Equal(got, want) {
		t.Fatalf("sends = %v, want %v", got, want)
	}
	for _, s := range rd.Send {
		if s.Attempt != 1 || s.Payload != nil {
			t.Fatalf("send %+v", s)
		}
	}
	if len(rd.Timers) != 1 || rd.Timers[0].Timer.Kind != TimerResend || rd.Timers[0].After != testRetryBase {
		t.Fatalf("timers %+v: want a resend timer and no prepare timer", rd.Timers)
	}
	for _, p := range tx.Outcome().Participants {
		if p.Vote != VoteYes || p.Acked {
			t.Fatalf("participant %+v", p)
		}
	}
	h.ack("b", messages.OpCommit)
	if rd := h.step(Event{Kind: EventAbort}); rd.Ignored == "" {
		t.Fatalf("abort: %+v", rd)
	}
	if rd := h.fire(TimerResend); !slices.Equal(sendsOf(rd), withOp(messages.OpCommit, "a", "c")) || rd.Send[0].Attempt != 2 {
		t.Fatalf("resend: %+v", rd)
	}
	h.ack("a", messages.OpCommit)
	if rd := h.ack("c", messages.OpCommit); !rd.Done || tx.State() != Committed {
		t.Fatalf("last ack: %+v", rd)
	}
}

func TestRecoverAnAbort(t *testing.T) {
	tx, err := Recover(Record{ID: "t", State: Aborting, Participants: names("a", "b")}, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	rd := tx.Start()
	if got, want := sendsOf(rd), withOp(messages.OpAbort, "a", "b"); !slices.Equal(got, want) || rd.Persist != nil {
		t.Fatalf("sends = %v, want %v (Ready %+v)", got, want, rd)
	}
	if o := tx.Outcome(); o.State != Aborting || o.Committed() || !strings.Contains(o.Reason, "presumed abort") {
		t.Fatalf("outcome %+v", o)
	}
	tx.Step(Event{Kind: EventAck, Participant: "a", Op: messages.OpAbort})
	if rd := tx.Step(Event{Kind: EventAck, Participant: "b", Op: messages.OpAbort}); !rd.Done || tx.State() != Aborted {
		t.Fatalf("after both acks: %+v, state %v", rd, tx.State())
	}
}

func TestRecoverRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  Record
		spec Spec
		want error // nil: any error
	}{
		{"preparing", Record{ID: "t", State: Preparing, Participants: names("a")}, testSpec(), nil},
		{"committed", Record{ID: "t", State: Committed, Participants: names("a")}, testSpec(), nil},
		{"aborted", Record{ID: "t", State: Aborted, Participants: names("a")}, testSpec(), nil},
		{"zero state", Record{ID: "t", Participants: names("a")}, testSpec(), nil},
		{"no participants", Record{ID: "t", State: Committing}, testSpec(), ErrNoParticipants},
		{"duplicate participant", Record{ID: "t", State: Committing, Participants: names("a", "a")}, testSpec(), ErrDuplicateParticipant},
		{"bad ID", Record{ID: "t.1", State: Committing, Participants: names("a")}, testSpec(), messages.ErrInvalidName},
		{"bad timing", Record{ID: "t", State: Committing, Participants: names("a")}, Spec{}, ErrBadTiming},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := Recover(tc.rec, tc.spec)
			if err == nil || tx != nil {
				t.Fatalf("Recover = %v, %v; want an error", tx, err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Recover: %v, want %v", err, tc.want)
			}
			if tc.want == nil && !strings.Contains(err.Error(), tc.rec.State.String()) {
				t.Fatalf("Recover: %v, want it to name state %v", err, tc.rec.State)
			}
		})
	}
}

func TestParseState(t *testing.T) {
	for _, s := range []State{Preparing, Committing, Aborting, Committed, Aborted} {
		got, err := ParseState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v; want %v", s.String(), got, err, s)
		}
	}
	for _, bad := range []string{"", "unknown", "Committed", "commit", " aborted", "prepared"} {
		if s, err := ParseState(bad); err == nil {
			t.Errorf("ParseState(%q) = %v, want an error", bad, s)
		}
	}
	for _, tc := range []struct {
		s              State
		name           string
		decided, final bool
	}{
		{0, "unknown", false, false},
		{Preparing, "preparing", false, false},
		{Committing, "committing", true, false},
		{Aborting, "aborting", true, false},
		{Committed, "committed", true, true},
		{Aborted, "aborted", true, true},
		{State(200), "unknown", true, false},
	} {
		if tc.s.String() != tc.name || tc.s.Decided() != tc.decided || tc.s.Final() != tc.final {
			t.Errorf("State(%d): %q decided=%v final=%v; want %q %v %v",
				tc.s, tc.s.String(), tc.s.Decided(), tc.s.Final(), tc.name, tc.decided, tc.final)
		}
	}
	for s, want := range map[State]bool{Preparing: false, Committing: true, Aborting: false, Committed: true, Aborted: false} {
		if got := (Outcome{State: s}).Committed(); got != want {
			t.Errorf("Outcome{State: %v}.Committed() = %v, want %v", s, got, want)
		}
	}
	if TimerPrepare.String() != "prepare" || TimerResend.String() != "resend" {
		t.Errorf("timer kinds: %v %v", TimerPrepare, TimerResend)
	}
}

// TestAckOfPrepareIsIgnored: prepare is answered with a vote, never an ack
// (messages.Reply.Validate refuses one), so an EventAck with Op prepare must
// change nothing. Were it accepted, that participant would never be sent the
// decision, and acks of prepare from everyone would end the transaction with
// no decision.
func TestAckOfPrepareIsIgnored(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b"))
	h.vote("a", true, "")
	if rd := h.ack("a", messages.OpPrepare); rd.Ignored == "" {
		t.Errorf("ack of prepare not ignored: %+v", rd)
	}
	rd := h.vote("b", true, "")
	if got, want := sendsOf(rd), withOp(messages.OpCommit, "a", "b"); !slices.Equal(got, want) {
		t.Fatalf("commit sends = %v, want %v: a voted yes and must hear commit", got, want)
	}
}

// TestRandomEvents drives transactions with seeded random inputs, including
// duplicates, strangers, stale timers and aborts, and checks the guarantees
// after every step: Done once, persist before commit, never both commit and
// abort, nothing sent to a participant for a command it answered, and no
// effects from an ignored event.
func TestRandomEvents(t *testing.T) {
	ops := []messages.Op{messages.OpCommit, messages.OpAbort} // see TestAckOfPrepareIsIgnored
	outcomes := map[State]int{}
	refusals, readOnlyCommits := 0, 0
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		n := 1 + rng.IntN(4)
		spec := testSpec([]string{"a", "b", "c", "d"}[:n]...)
		spec.AbortSends = 1 + rng.IntN(4)
		h, rd := begin(t, spec)
		var (
			persisted, decidedCommit, decidedAbort bool
			voted                                  = map[string]bool{}
			// answered[p][op]: p acknowledged op; a no voter has answered
			// abort too (it aborted by itself).
			answered  = map[string]map[messages.Op]bool{}
			abortSent = map[string]int{}
		)
		answer := func(p string, op messages.Op) {
			if answered[p] == nil {
				answered[p] = map[messages.Op]bool{}
			}
			answered[p][op] = true
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
		}
		check := func(ev Event, rd Ready, doneBefore bool) {
			t.Helper()
			if doneBefore && (!isEmpty(rd) || rd.Ignored == "") {
				fail("%+v after Done: %+v", ev, rd)
			}
			if rd.Ignored != "" && !isEmpty(rd) {
				fail("ignored %+v with effects %+v", ev, rd)
			}
			if rd.Persist != nil {
				if persisted {
					fail("persisted twice")
				}
				persisted = true
			}
			if rd.Decided && ev.Kind == EventCommitRefused {
				// The commit record lost to a recorded abort before it was
				// durable: its held commits were never sent.
				if !decidedCommit || decidedAbort || rd.Persist != nil {
					fail("commit refused: decidedCommit=%v decidedAbort=%v %+v", decidedCommit, decidedAbort, rd)
				}
				decidedCommit, decidedAbort, persisted = false, true, false
				refusals++
			} else if rd.Decided {
				if decidedCommit || decidedAbort {
					fail("decided twice")
				}
				decidedCommit = rd.Persist != nil
				decidedAbort = rd.Persist == nil
				if decidedCommit && h.tx.Outcome().ReadOnly {
					readOnlyCommits++
				}
			}
			for _, s := range rd.Send {
				switch s.Op {
				case messages.OpPrepare:
					if decidedCommit || decidedAbort || voted[s.Participant] {
						fail("prepare to %s after its vote or the decision", s.Participant)
					}
				case messages.OpCommit:
					if !persisted || decidedAbort || answered[s.Participant][messages.OpCommit] {
						fail("commit to %s: persisted=%v abort=%v acked=%v", s.Participant, persisted, decidedAbort, answered[s.Participant][messages.OpCommit])
					}
				case messages.OpAbort:
					if decidedCommit || answered[s.Participant][messages.OpAbort] {
						fail("abort to %s after commit or its answer", s.Participant)
					}
					abortSent[s.Participant]++
				}
			}
			if rd.Done {
				if h.dones > 1 {
					fail("Done twice")
				}
				if !decidedCommit && !decidedAbort {
					fail("Done without a decision")
				}
				for _, p := range h.tx.Outcome().Participants {
					switch {
					case decidedCommit && !answered[p.Name][messages.OpCommit]:
						fail("committed, but %s never acknowledged commit", p.Name)
					case decidedAbort && !answered[p.Name][messages.OpAbort] && abortSent[p.Name] < spec.AbortSends:
						fail("aborted, but %s neither acknowledged abort nor was sent it %d times", p.Name, spec.AbortSends)
					}
				}
			}
		}
		check(Event{}, rd, false)
		refuseNext := false
		for range 200 {
			var ev Event
			p := "zed"
			if rng.IntN(10) > 0 {
				p = spec.Participants[rng.IntN(n)].Name
			}
			switch rng.IntN(9) {
			case 0, 1:
				ev = Event{Kind: EventVote, Participant: p, Yes: rng.IntN(8) > 0, Reason: "r"}
			case 2, 3:
				ev = Event{Kind: EventAck, Participant: p, Op: ops[rng.IntN(len(ops))]}
			case 4:
				op := []messages.Op{messages.OpPrepare, messages.OpCommit, messages.OpAbort}[rng.IntN(3)]
				if op == messages.OpPrepare && rng.IntN(4) > 0 {
					op = messages.OpCommit // prepare failures abort; keep them rare
				}
				ev = Event{Kind: EventFailed, Participant: p, Op: op, Reason: "f"}
			case 5, 6:
				ev = Event{Kind: EventTimer, Timer: h.armed[TimerResend]}
			case 7:
				if rng.IntN(3) == 0 {
					ev = Event{Kind: EventTimer, Timer: h.armed[TimerPrepare]}
				} else {
					ev = Event{Kind: EventTimer, Timer: Timer{Kind: TimerKind(1 + rng.IntN(2)), Seq: uint64(rng.IntN(10))}}
				}
			case 8:
				switch rng.IntN(4) {
				case 0:
					ev = Event{Kind: EventAbort, Reason: "op"}
				case 1:
					ev = Event{Kind: EventVote, Participant: p, Yes: true}
				default:
					ev = Event{Kind: EventVote, Participant: p, Yes: true, ReadOnly: true}
				}
			}
			if refuseNext {
				// The driver's write of the decision found an abort recorded:
				// the only event it delivers before anything else.
				ev, refuseNext = Event{Kind: EventCommitRefused, Reason: "abort recorded first"}, false
			} else if rng.IntN(40) == 0 && h.tx.State() != Committing {
				ev = Event{Kind: EventCommitRefused, Reason: "stray"} // ignored: no commit decision is being written
			}
			doneBefore := h.dones > 0
			rd := h.step(ev)
			if ev.Reason == "stray" && rd.Ignored == "" {
				fail("a refusal with no commit decision being written was applied: %+v", rd)
			}
			if rd.Persist != nil && rng.IntN(3) == 0 {
				refuseNext = true
			}
			if rd.Ignored == "" {
				switch {
				case ev.Kind == EventVote:
					voted[ev.Participant] = true
					if !ev.Yes {
						answer(ev.Participant, messages.OpAbort)
					}
					if ev.Yes && ev.ReadOnly {
						// It needs neither: sending it either is a failure.
						answer(ev.Participant, messages.OpAbort)
						answer(ev.Participant, messages.OpCommit)
					}
				case ev.Kind == EventFailed && ev.Op == messages.OpPrepare:
					voted[ev.Participant] = true // still sent abort: it may have prepared
				case ev.Kind == EventAck:
					answer(ev.Participant, ev.Op)
				}
			}
			check(ev, rd, doneBefore)
		}
		outcomes[h.tx.State()]++
	}
	t.Logf("final states over the seeds: %v; commit decisions refused: %d; commits of read-only votes only: %d", outcomes, refusals, readOnlyCommits)
	if refusals == 0 {
		t.Error("no seed had its commit decision refused: keep EventCommitRefused in the generator")
	}
	if readOnlyCommits == 0 {
		t.Error("no seed committed on read-only votes only: keep read-only votes in the generator")
	}
	// The seeds reach every end: keep it so when changing the generator.
	for _, s := range []State{Committed, Aborted} {
		if outcomes[s] == 0 {
			t.Errorf("no seed ended %v: %v", s, outcomes)
		}
	}
}

func TestCommitRefusedBeforeAnyAckAborts(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b"))
	h.vote("a", true, "")
	if rd := h.vote("b", true, ""); rd.Persist == nil {
		t.Fatalf("no commit record to persist: %+v", rd)
	}
	rd := h.step(Event{Kind: EventCommitRefused, Reason: "abort recorded first"})
	if !rd.Decided || rd.Persist != nil || h.tx.State() != Aborting {
		t.Fatalf("Ready %+v, state %v", rd, h.tx.State())
	}
	if got, want := sendsOf(rd), withOp(messages.OpAbort, "a", "b"); !slices.Equal(got, want) {
		t.Fatalf("sends = %v, want %v", got, want)
	}
	if o := h.tx.Outcome(); !strings.Contains(o.Reason, "commit refused: abort recorded first") || o.Committed() {
		t.Fatalf("outcome %+v", o)
	}
}

func TestCommitRefusedIsIgnoredOutsideAnUndurableCommit(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b"))
	if rd := h.step(Event{Kind: EventCommitRefused}); rd.Ignored == "" || h.tx.State() != Preparing {
		t.Fatalf("while preparing: %+v", rd)
	}
	h.vote("a", true, "")
	h.vote("b", true, "")
	h.ack("a", messages.OpCommit)
	if rd := h.step(Event{Kind: EventCommitRefused}); rd.Ignored == "" || h.tx.State() != Committing {
		t.Fatalf("after an ack of commit: %+v, state %v", rd, h.tx.State())
	}
}

// TestAReadOnlyVoterIsSentNoCommit: a read-only vote counts as yes; the
// decision record names every participant and, apart, the read-only ones;
// commit goes only to the participant that prepared, and its ack alone ends
// the transaction.
func TestAReadOnlyVoterIsSentNoCommit(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b"))
	if rd := h.step(Event{Kind: EventVote, Participant: "a", Yes: true, ReadOnly: true}); !isEmpty(rd) || rd.Ignored != "" {
		t.Fatalf("read-only vote of a: %+v, want nothing yet", rd)
	}
	rd := h.vote("b", true, "")
	want := Record{ID: "tx1", State: Committing, Participants: names("a", "b"), ReadOnly: names("a")}
	if !rd.Decided || rd.Persist == nil || !reflect.DeepEqual(*rd.Persist, want) {
		t.Fatalf("deciding vote: %+v, want Persist %+v", rd, want)
	}
	if got, want := sendsOf(rd), withOp(messages.OpCommit, "b"); !slices.Equal(got, want) {
		t.Fatalf("sends = %v, want %v", got, want)
	}
	if o := h.tx.Outcome(); o.Reason != "every participant voted commit" || o.ReadOnly || o.Participants[0].Vote != VoteReadOnly || !o.Participants[0].Acked {
		t.Fatalf("outcome %+v", o)
	}
	if rd := h.fire(TimerResend); !slices.Equal(sendsOf(rd), withOp(messages.OpCommit, "b")) {
		t.Fatalf("re-send = %v, want commit to b only", sendsOf(rd))
	}
	if rd := h.ack("b", messages.OpCommit); !rd.Done || h.tx.State() != Committed {
		t.Fatalf("ack of b: %+v, state %v", rd, h.tx.State())
	}
}

// TestEveryVoteReadOnlyCommitsWithNoSecondPhase: when no participant holds
// anything, the decision is recorded as usual (a coordinator that records
// an abort meanwhile must not be contradicted), nothing is sent, and the
// transaction ends at the timer armed with no delay, which its driver arms
// once the record is durable; a refused record aborts it instead.
func TestEveryVoteReadOnlyCommitsWithNoSecondPhase(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b", "c"))
	h.step(Event{Kind: EventVote, Participant: "c", Yes: true, ReadOnly: true})
	h.step(Event{Kind: EventVote, Participant: "a", Yes: true, ReadOnly: true})
	rd := h.step(Event{Kind: EventVote, Participant: "b", Yes: true, ReadOnly: true})
	want := Record{ID: "tx1", State: Committing, Participants: names("a", "b", "c"), ReadOnly: names("a", "b", "c")}
	if !rd.Decided || rd.Done || rd.Persist == nil || !reflect.DeepEqual(*rd.Persist, want) || len(rd.Send) != 0 {
		t.Fatalf("last read-only vote: %+v, want the decision to persist and nothing to send", rd)
	}
	if len(rd.Timers) != 1 || rd.Timers[0].Timer.Kind != TimerResend || rd.Timers[0].After != 0 {
		t.Fatalf("timers %+v, want one resend at once", rd.Timers)
	}
	if o := h.tx.Outcome(); o.State != Committing || !o.ReadOnly || o.Reason != "every participant voted read-only" {
		t.Fatalf("outcome %+v", o)
	}
	if rd := h.fire(TimerResend); !rd.Done || len(rd.Send) != 0 || h.tx.State() != Committed {
		t.Fatalf("the timer after the record: %+v, state %v; want done, committed", rd, h.tx.State())
	}

	h, _ = begin(t, testSpec("a"))
	h.step(Event{Kind: EventVote, Participant: "a", Yes: true, ReadOnly: true})
	rd = h.step(Event{Kind: EventCommitRefused, Reason: "abort recorded first"})
	if !rd.Decided || !rd.Done || len(rd.Send) != 0 || h.tx.State() != Aborted {
		t.Fatalf("refused record: %+v, state %v; want aborted at once, nothing sent", rd, h.tx.State())
	}
}

// TestAReadOnlyVoterIsSentNoAbort: after a read-only vote, an abort
// decision (another's vote no, or the prepare deadline) goes only to the
// participants whose vote is missing.
func TestAReadOnlyVoterIsSentNoAbort(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b", "c"))
	h.step(Event{Kind: EventVote, Participant: "a", Yes: true, ReadOnly: true})
	rd := h.vote("b", false, "no stock")
	if got, want := sendsOf(rd), withOp(messages.OpAbort, "c"); !rd.Decided || !slices.Equal(got, want) {
		t.Fatalf("vote no of b: %+v, want abort to c only", rd)
	}
	if rd := h.ack("c", messages.OpAbort); !rd.Done || h.tx.State() != Aborted {
		t.Fatalf("ack of c: %+v, state %v", rd, h.tx.State())
	}

	h, _ = begin(t, testSpec("a", "b"))
	h.step(Event{Kind: EventVote, Participant: "a", Yes: true, ReadOnly: true})
	rd = h.fire(TimerPrepare)
	if got, want := sendsOf(rd), withOp(messages.OpAbort, "b"); !rd.Decided || !slices.Equal(got, want) {
		t.Fatalf("prepare timeout: %+v, want abort to b only", rd)
	}
}

// TestACommitRefusedAfterAReadOnlyVoteAborts: a read-only voter counts as
// finished, not as a participant that heard commit, so a commit record
// refused by a recorded abort still turns the transaction to abort.
func TestACommitRefusedAfterAReadOnlyVoteAborts(t *testing.T) {
	h, _ := begin(t, testSpec("a", "b"))
	h.step(Event{Kind: EventVote, Participant: "a", Yes: true, ReadOnly: true})
	if rd := h.vote("b", true, ""); rd.Persist == nil {
		t.Fatalf("no commit record to persist: %+v", rd)
	}
	rd := h.step(Event{Kind: EventCommitRefused, Reason: "abort recorded first"})
	if rd.Ignored != "" || !rd.Decided || h.tx.State() != Aborting {
		t.Fatalf("refusal: %+v, state %v", rd, h.tx.State())
	}
	if got, want := sendsOf(rd), withOp(messages.OpAbort, "b"); !slices.Equal(got, want) {
		t.Fatalf("sends = %v, want %v", got, want)
	}
}

func onePhaseSpec() Spec {
	s := testSpec("a")
	s.OnePhase = true
	return s
}

// TestOnePhaseCommitsOnTheParticipantsAck: commit-one-phase goes out with
// the payload instead of prepare, no prepare timer is armed, nothing is
// persisted, and the participant's ack ends the transaction committed.
func TestOnePhaseCommitsOnTheParticipantsAck(t *testing.T) {
	h, rd := begin(t, onePhaseSpec())
	if len(rd.Send) != 1 || rd.Send[0].Op != messages.OpCommitOnePhase || string(rd.Send[0].Payload) != "a-work" || rd.Send[0].Attempt != 1 {
		t.Fatalf("start: %+v, want commit-one-phase to a with its payload", rd.Send)
	}
	if _, ok := h.armed[TimerPrepare]; ok {
		t.Fatalf("a prepare timer was armed for a one-phase commit: %+v", rd.Timers)
	}
	rd = h.ack("a", messages.OpCommitOnePhase)
	if !rd.Decided || !rd.Done || rd.Persist != nil || len(rd.Send) != 0 {
		t.Fatalf("ack: %+v, want decided and done, nothing persisted or sent", rd)
	}
	if o := h.tx.Outcome(); o.State != Committed || !o.OnePhase || o.Reason != "committed in one phase by a" || !o.Participants[0].Acked {
		t.Fatalf("outcome %+v", o)
	}
}

// TestOnePhaseAbortsOnlyOnTheParticipantsVote: a vote abort ends it aborted
// with nothing sent; neither the caller's abort nor any number of re-sends
// (the deadline passing) aborts it, and a failure is followed by a re-send.
func TestOnePhaseAbortsOnlyOnTheParticipantsVote(t *testing.T) {
	h, _ := begin(t, onePhaseSpec())
	if rd := h.step(Event{Kind: EventAbort, Reason: "client gave up"}); rd.Ignored == "" || h.tx.State() != Preparing {
		t.Fatalf("caller's abort: %+v, state %v; want ignored", rd, h.tx.State())
	}
	if rd := h.step(Event{Kind: EventFailed, Participant: "a", Op: messages.OpCommitOnePhase, Reason: "disk busy"}); rd.Ignored != "" || rd.Decided {
		t.Fatalf("failure: %+v, want noted, undecided", rd)
	}
	for attempt := 2; attempt <= 20; attempt++ {
		rd := h.fire(TimerResend)
		if len(rd.Send) != 1 || rd.Send[0].Op != messages.OpCommitOnePhase || rd.Send[0].Attempt != attempt || string(rd.Send[0].Payload) != "a-work" {
			t.Fatalf("re-send %d: %+v", attempt, rd.Send)
		}
	}
	if rd := h.vote("a", true, ""); rd.Ignored == "" {
		t.Fatalf("a commit vote on a one-phase commit was applied: %+v", rd)
	}
	rd := h.vote("a", false, "out of stock")
	if !rd.Decided || !rd.Done || len(rd.Send) != 0 || h.tx.State() != Aborted {
		t.Fatalf("vote abort: %+v, state %v; want aborted at once, nothing sent", rd, h.tx.State())
	}
	if o := h.tx.Outcome(); !strings.Contains(o.Reason, "a voted abort: out of stock") {
		t.Fatalf("reason %q", o.Reason)
	}
}

// TestOnePhaseNeedsOneParticipant and the takeover: RecoverOnePhase sends
// commit-one-phase without a payload.
func TestOnePhaseNeedsOneParticipantAndItsTakeoverSendsNoPayload(t *testing.T) {
	s := testSpec("a", "b")
	s.OnePhase = true
	if _, err := New(s); !errors.Is(err, ErrOnePhase) {
		t.Fatalf("two participants in one phase: %v", err)
	}
	tx, err := RecoverOnePhase("tx9", "a", testSpec())
	if err != nil {
		t.Fatal(err)
	}
	rd := tx.Start()
	if len(rd.Send) != 1 || rd.Send[0].Op != messages.OpCommitOnePhase || rd.Send[0].Payload != nil || tx.ID() != "tx9" {
		t.Fatalf("takeover start: %+v", rd.Send)
	}
}

// TestOnePhaseRandomEvents feeds one-phase transactions random events and
// checks, at every step, what only its participant may decide: nothing is
// ever persisted, every send is commit-one-phase with the payload, the
// transaction decides and ends in one step, committed only on the
// participant's ack of commit-one-phase and aborted only on its vote abort
// (or a failed prepare, which one-phase never gets), and nothing after the
// end changes anything.
func TestOnePhaseRandomEvents(t *testing.T) {
	ends := map[State]int{}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 11))
		h, rd := begin(t, onePhaseSpec())
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
		}
		check := func(ev Event, rd Ready, doneBefore bool) {
			t.Helper()
			if rd.Persist != nil {
				fail("%+v persisted %+v", ev, rd.Persist)
			}
			for _, s := range rd.Send {
				if s.Op != messages.OpCommitOnePhase || s.Participant != "a" || string(s.Payload) != "a-work" {
					fail("%+v sent %+v", ev, s)
				}
			}
			if doneBefore && (!isEmpty(rd) || rd.Ignored == "") {
				fail("%+v after the end: %+v", ev, rd)
			}
			if rd.Decided != rd.Done {
				fail("%+v: decided %v but done %v", ev, rd.Decided, rd.Done)
			}
			if !rd.Done {
				return
			}
			switch st := h.tx.State(); {
			case st == Committed && ev.Kind == EventAck && ev.Op == messages.OpCommitOnePhase && ev.Participant == "a":
			case st == Aborted && ev.Kind == EventVote && !ev.Yes && ev.Participant == "a":
			default:
				fail("ended %v on %+v", st, ev)
			}
		}
		check(Event{}, rd, false)
		ops := []messages.Op{messages.OpPrepare, messages.OpCommit, messages.OpAbort, messages.OpCommitOnePhase}
		for range 100 {
			p := "a"
			if rng.IntN(10) == 0 {
				p = "zed"
			}
			var ev Event
			switch rng.IntN(8) {
			case 0:
				ev = Event{Kind: EventVote, Participant: p, Yes: rng.IntN(4) > 0, ReadOnly: rng.IntN(2) == 0, Reason: "r"}
			case 1:
				ev = Event{Kind: EventAck, Participant: p, Op: ops[rng.IntN(len(ops))]}
			case 2:
				ev = Event{Kind: EventFailed, Participant: p, Op: ops[1+rng.IntN(len(ops)-1)], Reason: "f"}
			case 3, 4:
				ev = Event{Kind: EventTimer, Timer: h.armed[TimerResend]}
			case 5:
				ev = Event{Kind: EventTimer, Timer: Timer{Kind: TimerPrepare, Seq: uint64(rng.IntN(10))}}
			case 6:
				ev = Event{Kind: EventAbort, Reason: "op"}
			case 7:
				ev = Event{Kind: EventCommitRefused, Reason: "stray"}
			}
			doneBefore := h.dones > 0
			before := h.tx.State()
			rd := h.step(ev)
			if (ev.Kind == EventAbort || ev.Kind == EventCommitRefused || ev.Kind == EventTimer && ev.Timer.Kind == TimerPrepare) && h.tx.State() != before {
				fail("%+v changed the state from %v to %v", ev, before, h.tx.State())
			}
			check(ev, rd, doneBefore)
		}
		ends[h.tx.State()]++
	}
	t.Logf("end states over the seeds: %v", ends)
	for _, s := range []State{Committed, Aborted} {
		if ends[s] == 0 {
			t.Errorf("no seed ended %v: %v", s, ends)
		}
	}
}

// TestARecoveredCommitSendsNoCommitToItsReadOnlyVoters: a commit decision
// recovered from its record sends commit only to the participants that
// did not vote read-only (one whose record is gone by then would reject
// it for good); one whose voters were all read-only ends at its first
// timer.
func TestARecoveredCommitSendsNoCommitToItsReadOnlyVoters(t *testing.T) {
	tx, err := Recover(Record{ID: "tx1", State: Committing, Participants: names("a", "b", "c"), ReadOnly: names("b")}, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, tx: tx, armed: map[TimerKind]Timer{}}
	if got, want := sendsOf(h.note(tx.Start())), withOp(messages.OpCommit, "a", "c"); !slices.Equal(got, want) {
		t.Fatalf("recovered sends %v, want %v", got, want)
	}
	if got := sendsOf(h.fire(TimerResend)); !slices.Equal(got, withOp(messages.OpCommit, "a", "c")) {
		t.Fatalf("re-sends %v", got)
	}
	h.ack("a", messages.OpCommit)
	if rd := h.ack("c", messages.OpCommit); !rd.Done || tx.State() != Committed {
		t.Fatalf("after a and c acknowledged: %+v, state %v", rd, tx.State())
	}

	tx, err = Recover(Record{ID: "tx2", State: Committing, Participants: names("a", "b"), ReadOnly: names("a", "b")}, testSpec())
	if err != nil {
		t.Fatal(err)
	}
	h = &harness{t: t, tx: tx, armed: map[TimerKind]Timer{}}
	if rd := h.note(tx.Start()); len(rd.Send) != 0 {
		t.Fatalf("every voter read-only, recovered: sends %v", sendsOf(rd))
	}
	if rd := h.fire(TimerResend); !rd.Done || tx.State() != Committed {
		t.Fatalf("its first timer: %+v, state %v; want committed", rd, tx.State())
	}
}
