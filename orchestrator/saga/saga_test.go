package saga

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func twoSteps(t *testing.T, f func(*Definition)) *Saga {
	t.Helper()
	d := Definition{Timeout: time.Second, Steps: steps("a", "b"),
		Retry: RetryPolicy{MaxAttempts: 2, InitialInterval: 100 * time.Millisecond, NonRetryable: []string{"fatal"}}}
	if f != nil {
		f(&d)
	}
	s, err := New(Params{ID: "s1", Definition: d})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reply(s *Saga, at time.Time, step string, op Op, res Result, code string) Ready {
	st, _ := s.rec.Step(step)
	n := st.Attempts
	if op == OpCompensate {
		n = st.CompensationAttempts
	}
	return s.Step(Event{Kind: EventReply, At: at, Step: step, Op: op, Attempt: n, Result: res, Code: code, Reason: "r"})
}

// TestResultTable is the step result table of docs/SAGA.md: what each
// result of an action attempt does to the step and the saga.
func TestResultTable(t *testing.T) {
	cases := []struct {
		name       string
		result     Result
		code       string
		lastTry    bool // the attempt is the step's last one allowed
		afterPivot bool
		wantStep   StepStatus
		wantSaga   State
		mayHaveRun bool
	}{
		{"done", ResultDone, "", false, false, StepDone, StateCompleted, true},
		{"failed for good", ResultFailed, "", false, false, StepFailed, StateCompensating, false},
		{"failed for now", ResultRetry, "", false, false, StepRetrying, StateRunning, false},
		{"failed for now, non-retryable code", ResultRetry, "fatal", false, false, StepFailed, StateCompensating, false},
		{"failed for now, last attempt", ResultRetry, "", true, false, StepFailed, StateCompensating, false},
		{"unknown", ResultUnknown, "", false, false, StepRetrying, StateRunning, true},
		{"unknown, last attempt", ResultUnknown, "", true, false, StepCompensating, StateCompensating, true},
		{"after the pivot: done", ResultDone, "", true, true, StepDone, StateCompleted, true},
		{"after the pivot: failed for good", ResultFailed, "", true, true, StepRetrying, StateRunning, false},
		{"after the pivot: non-retryable", ResultRetry, "fatal", true, true, StepRetrying, StateRunning, false},
		{"after the pivot: unknown", ResultUnknown, "", true, true, StepRetrying, StateRunning, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := twoSteps(t, func(d *Definition) {
				d.Steps[0].Pivot = c.afterPivot
				if c.lastTry {
					d.Retry.MaxAttempts = 1
				}
			})
			s.Start(t0)
			reply(s, t0, "a", OpAction, ResultDone, "")
			rd := reply(s, t0, "b", OpAction, c.result, c.code)
			if rd.Ignored != "" {
				t.Fatalf("ignored: %s", rd.Ignored)
			}
			st, _ := s.rec.Step("b")
			if st.Status != c.wantStep || s.State() != c.wantSaga || st.MayHaveRun != c.mayHaveRun {
				t.Errorf("step b %s (may have run %v), saga %s; want %s (%v), %s", st.Status, st.MayHaveRun, s.State(), c.wantStep, c.mayHaveRun, c.wantSaga)
			}
			if c.wantStep == StepRetrying && (len(rd.Send) != 0 || len(rd.Timers) != 1 || rd.Timers[0].Timer.Kind != TimerRetry || rd.Timers[0].After != 100*time.Millisecond) {
				t.Errorf("a retry sends nothing and arms its back-off: %+v", rd)
			}
		})
	}
}

func TestSendCarriesWhatTheParticipantNeeds(t *testing.T) {
	s := twoSteps(t, func(d *Definition) { d.Steps[0].Timeout = 1500 * time.Millisecond })
	rd := s.Start(t0)
	want := []Send{{Saga: "s1", Step: "a", Participant: "svc-a", Op: OpAction, Attempt: 1, Payload: []byte("a-do"), Deadline: t0.Add(1500 * time.Millisecond)}}
	if !reflect.DeepEqual(rd.Send, want) {
		t.Errorf("sends %+v, want %+v", rd.Send, want)
	}
	at := t0.Add(time.Second)
	reply(s, at, "a", OpAction, ResultDone, "")
	rd = s.Step(Event{Kind: EventAbort, At: at, Who: "w", Why: "y"})
	if len(rd.Send) != 0 {
		t.Fatalf("abort while b is out sent %+v", rd.Send)
	}
	rd = reply(s, at, "b", OpAction, ResultFailed, "")
	want = []Send{{Saga: "s1", Step: "a", Participant: "svc-a", Op: OpCompensate, Attempt: 1, Payload: []byte("a-undo"), Deadline: at.Add(1500 * time.Millisecond)}}
	if !reflect.DeepEqual(rd.Send, want) {
		t.Errorf("sends %+v, want %+v", rd.Send, want)
	}
}

func TestStartAndEventsBeforeIt(t *testing.T) {
	s := twoSteps(t, nil)
	if rd := s.Step(Event{Kind: EventAbort, At: t0, Who: "w", Why: "y"}); rd.Ignored == "" {
		t.Error("an event before Start was not ignored")
	}
	if rd := s.Start(t0); rd.Persist == nil || rd.Persist.Revision != 1 || rd.Persist.State != StateRunning || !rd.Persist.StartedAt.Equal(t0) {
		t.Errorf("first Ready %+v", rd)
	}
	if rd := s.Start(t0); rd.Ignored == "" || rd.Persist != nil || len(rd.Send) > 0 {
		t.Errorf("a second Start was not ignored: %+v", rd)
	}
	if rd := s.Step(Event{Kind: EventAbort, Who: "w", Why: "y"}); rd.Ignored == "" {
		t.Error("an event without a time was not ignored")
	}
	if rd := s.Step(Event{Kind: "bogus", At: t0}); !strings.Contains(rd.Ignored, "unknown event kind") {
		t.Errorf("unknown kind: %+v", rd)
	}
}

func TestDeadlineIsTheSoonerAndInMilliseconds(t *testing.T) {
	for _, c := range []struct {
		name   string
		def    time.Duration
		caller time.Time
		want   time.Time
	}{
		{"none", 0, time.Time{}, time.Time{}},
		{"definition", 2 * time.Second, time.Time{}, t0.Add(2 * time.Second)},
		{"caller sooner", 2 * time.Second, t0.Add(1234567 * time.Microsecond), t0.Add(1234 * time.Millisecond)},
		{"caller later", 2 * time.Second, t0.Add(time.Hour), t0.Add(2 * time.Second)},
		{"caller only", 0, t0.Add(time.Minute), t0.Add(time.Minute)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(Params{ID: "s", Definition: Definition{Deadline: c.def, Steps: steps("a")}, Deadline: c.caller})
			if err != nil {
				t.Fatal(err)
			}
			rd := s.Start(t0)
			if !rd.Persist.Deadline.Equal(c.want) {
				t.Errorf("deadline %v, want %v", rd.Persist.Deadline, c.want)
			}
			var armed []TimerRequest
			for _, tr := range rd.Timers {
				if tr.Timer.Kind == TimerDeadline {
					armed = append(armed, tr)
				}
			}
			if c.want.IsZero() != (len(armed) == 0) || (len(armed) == 1 && (!armed[0].At.Equal(c.want) || armed[0].After != c.want.Sub(t0))) {
				t.Errorf("deadline timers %+v, want one at %v", armed, c.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Params{ID: "a b", Definition: Definition{Steps: steps("a")}}); err == nil {
		t.Error("an ID with a space was accepted")
	}
	if _, err := New(Params{ID: "s", Definition: Definition{}}); !errors.Is(err, ErrNoSteps) {
		t.Errorf("no steps: %v", err)
	}
}

// TestRecordRoundTrip: a record read back from JSON recovers the same saga.
func TestRecordRoundTrip(t *testing.T) {
	d := exampleDefinition()
	s, err := New(Params{ID: "s1", Definition: d})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(t0)
	at := t0.Add(1500 * time.Millisecond)
	reply(s, at, "reserve", OpAction, ResultDone, "")
	rd := reply(s, at, "charge", OpAction, ResultRetry, "E1")
	s.Step(Event{Kind: EventRetryNow, At: at, Who: "bob", Why: "now"})
	data, err := json.Marshal(rd.Persist)
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec, *rd.Persist) {
		t.Fatalf("JSON round trip changed the record:\n%+v\n%+v", rec, *rd.Persist)
	}
	r, err := Recover(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Record(), *rd.Persist) {
		t.Errorf("recovered %+v\nwant %+v", r.Record(), *rd.Persist)
	}
	// The back-off ends when recorded, even when that is past.
	later := at.Add(time.Hour)
	rd2 := r.Start(later)
	if rd2.Persist != nil || len(rd2.Send) != 0 || len(rd2.Timers) != 2 || rd2.Timers[0].Timer.Kind != TimerRetry ||
		!rd2.Timers[0].At.Equal(rd.Persist.Steps[1].NextRetryAt) || rd2.Timers[0].After != 0 ||
		rd2.Timers[1].Timer.Kind != TimerDeadline || !rd2.Timers[1].At.Equal(rec.Deadline) || rd2.Timers[1].After != 0 {
		t.Errorf("recovered Start: want the back-off and the deadline at their recorded times, both due: %+v", rd2)
	}
	// The persisted record is a copy: later steps do not change it.
	if s.rec.Revision == rd.Persist.Revision || rd.Persist.Operator != nil {
		t.Errorf("the persisted record shares state with the machine: %+v", rd.Persist)
	}
}

func TestRecoverRejects(t *testing.T) {
	s := twoSteps(t, nil)
	good := *s.Start(t0).Persist
	cases := []struct {
		name string
		edit func(*Record)
		kind error
		text string
	}{
		{"completed", func(r *Record) { r.State = StateCompleted }, ErrBadRecord, "has nothing to drive"},
		{"compensated", func(r *Record) { r.State = StateCompensated }, ErrBadRecord, "has nothing to drive"},
		{"unknown state", func(r *Record) { r.State = "paused" }, ErrBadRecord, `unknown state "paused"`},
		{"bad ID", func(r *Record) { r.ID = "" }, ErrBadRecord, "saga ID is empty"},
		{"step missing", func(r *Record) { r.Steps = r.Steps[:1] }, ErrBadRecord, "1 step records for 2 steps"},
		{"step renamed", func(r *Record) { r.Steps[1].Name = "z" }, ErrBadRecord, `step record 2 is "z"`},
		{"unknown status", func(r *Record) { r.Steps[1].Status = "sleeping" }, ErrBadRecord, `unknown status "sleeping"`},
		{"running without attempt", func(r *Record) { r.Steps[0].Attempts = 0 }, ErrBadRecord, "running without an attempt"},
		{"bad definition", func(r *Record) { r.Definition.Steps = nil }, ErrInvalidDefinition, "no steps"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := good.clone()
			rec.Definition.Steps = append([]Step(nil), good.Definition.Steps...)
			c.edit(&rec)
			_, err := Recover(rec)
			if !errors.Is(err, c.kind) || !strings.Contains(errText(err), c.text) {
				t.Errorf("Recover: %v, want %v containing %q", err, c.kind, c.text)
			}
		})
	}
	if _, err := Recover(good); err != nil {
		t.Errorf("the good record: %v", err)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestStuckIsReportedOnce: the Ready that makes a step stuck names it; later
// failures do not, until it succeeded and is stuck again.
func TestStuckIsReportedOnce(t *testing.T) {
	s := twoSteps(t, func(d *Definition) {
		d.Compensation = CompensationPolicy{StuckAfterAttempts: 2, StuckAfter: -1}
	})
	s.Start(t0)
	reply(s, t0, "a", OpAction, ResultDone, "")
	reply(s, t0, "b", OpAction, ResultFailed, "")
	var stuck []string
	for i := range 5 {
		rd := reply(s, t0, "a", OpCompensate, ResultFailed, "")
		stuck = append(stuck, rd.Stuck...)
		if st, _ := s.rec.Step("a"); st.NextRetryAt.IsZero() || st.Status != StepCompensationRetrying {
			t.Errorf("after failure %d: %+v", i+1, st)
		}
		if i == 0 && s.State() != StateCompensating {
			t.Errorf("after 1 failure: %s", s.State())
		}
		s.Step(Event{Kind: EventTimer, At: t0, Timer: s.timers[0]})
	}
	if got := s.Record().StuckSteps(); len(got) != 1 || got[0].Name != "a" {
		t.Errorf("StuckSteps %+v", got)
	}
	if !reflect.DeepEqual(stuck, []string{"a"}) || s.State() != StateCompensationStuck {
		t.Errorf("stuck reported %v, state %s", stuck, s.State())
	}
	st, _ := s.rec.Step("a")
	if !st.Stuck || st.CompensationAttempts != 6 || st.LastError != "r" || st.Status != StepCompensating {
		t.Errorf("stuck step record %+v", st)
	}
	if rd := reply(s, t0, "a", OpCompensate, ResultDone, ""); !rd.Done || s.State() != StateCompensated {
		t.Errorf("after success: %+v %s", rd, s.State())
	}
}

// TestCloneIsIndependent: an event tried on a clone changes the clone
// only; the saga goes on as if it had never been tried.
func TestCloneIsIndependent(t *testing.T) {
	s := twoSteps(t, nil)
	s.Start(t0)
	before := s.Record()
	c := s.Clone()
	if rd := c.Step(Event{Kind: EventAbort, At: t0.Add(time.Millisecond), Who: "w", Why: "y"}); rd.Ignored != "" {
		t.Fatalf("the abort on the clone was ignored: %s", rd.Ignored)
	}
	if c.State() != StateCompensating && c.State() != StateCompensated {
		t.Fatalf("the clone is %s after the abort", c.State())
	}
	if after := s.Record(); !reflect.DeepEqual(before, after) {
		t.Fatalf("the saga changed with its clone:\nbefore %+v\nafter  %+v", before, after)
	}
	if rd := reply(s, t0.Add(2*time.Millisecond), "a", OpAction, ResultDone, ""); rd.Ignored != "" || s.State() != StateRunning {
		t.Fatalf("the saga after its clone was aborted: %s, ignored %q", s.State(), rd.Ignored)
	}
}
