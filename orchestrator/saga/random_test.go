package saga

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRandomEvents drives sagas of random shapes with seeded random events:
// replies of every result to current, old and future attempts, timers live
// and stale, operator actions with and without who and why, duplicates, and
// crashes before and after a record was persisted. The checker verifies the
// guarantees after every step (see checker). Then the participants recover:
// every command is answered done and every timer fires, and each saga must
// end completed or compensated.
func TestRandomEvents(t *testing.T) {
	seen := map[string]int{}
	for seed := range uint64(400) {
		r := runRandom(t, seed)
		for _, k := range r.reached {
			seen[k]++
		}
	}
	t.Logf("over the seeds: %v", seen)
	// The generator reaches every corner: keep it so when changing it.
	for _, k := range []string{"end completed", "end compensated", string(StateCompensationStuck), string(StateForwardStuck),
		"past pivot", "crash before persist", "crash after persist", "operator abort", "operator retry-now", "operator resolve",
		"deadline", "compensated a step whose action timed out"} {
		if seen[k] == 0 {
			t.Errorf("no seed reached %q: %v", k, seen)
		}
	}
}

// TestRandomEventsDeterministic runs a few seeds twice: same seed, same trace.
func TestRandomEventsDeterministic(t *testing.T) {
	total := 0
	for seed := range uint64(5) {
		a, b := runRandom(t, seed), runRandom(t, seed)
		if a.trace != b.trace {
			t.Errorf("seed %d: two runs differ", seed)
		}
		total += len(a.trace)
	}
	if total < 5000 {
		t.Errorf("implausibly short traces: %d bytes over 5 seeds", total)
	}
}

type randomRun struct {
	reached []string
	trace   string
}

func randomDefinition(rng *rand.Rand) Definition {
	n := 1 + rng.IntN(5)
	d := Definition{
		Timeout: time.Duration(1+rng.IntN(3)) * time.Second,
		Retry: RetryPolicy{InitialInterval: 200 * time.Millisecond, BackoffFactor: 2, MaxInterval: 2 * time.Second,
			MaxAttempts: 1 + rng.IntN(3), NonRetryable: []string{"fatal"}},
		Compensation: CompensationPolicy{InitialInterval: 300 * time.Millisecond, BackoffFactor: 2, MaxInterval: 3 * time.Second,
			StuckAfterAttempts: 2 + rng.IntN(3), StuckAfter: time.Duration(5+rng.IntN(20)) * time.Second},
	}
	if rng.IntN(3) == 0 {
		d.Deadline = time.Duration(2000+rng.IntN(20000)) * time.Millisecond
	}
	if rng.IntN(2) == 0 {
		d.Order = OrderGraph
	}
	for i := range n {
		s := Step{Name: fmt.Sprintf("s%d", i), Participant: fmt.Sprintf("p%d", rng.IntN(3)), Action: []byte("do"), Compensation: []byte("undo")}
		if d.Order == OrderGraph {
			for j := range i {
				if rng.IntN(2) == 0 {
					s.DependsOn = append(s.DependsOn, fmt.Sprintf("s%d", j))
				}
			}
		}
		d.Steps = append(d.Steps, s)
	}
	if rng.IntN(2) == 0 {
		d.Steps[rng.IntN(n)].Pivot = true
		if d.Validate() != nil { // a pivot some step runs in parallel with
			for i := range d.Steps {
				d.Steps[i].Pivot = false
			}
		}
	}
	return d
}

func runRandom(t *testing.T, seed uint64) randomRun {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 11))
	def := randomDefinition(rng)
	var (
		run       randomRun
		trace     strings.Builder
		now       = t0
		armed     = map[string]Timer{}
		timerAt   = map[Timer]time.Time{}
		persisted *Record
		last      Event
	)
	reach := func(k string) {
		if !slices.Contains(run.reached, k) {
			run.reached = append(run.reached, k)
		}
	}
	s, err := New(Params{ID: "r", Definition: def})
	if err != nil {
		t.Fatalf("seed %d: New: %v", seed, err)
	}
	c := newChecker(s.plan)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (definition %+v): %s\ntrace:\n%s", seed, def, fmt.Sprintf(format, args...), trace.String())
	}
	note := func(ev Event, rd Ready, discard bool) {
		t.Helper()
		fmt.Fprintf(&trace, "%s %s %s/%s#%d %s %s who=%q -> %s", at(ev.At), ev.Kind, ev.Step, ev.Op, ev.Attempt, ev.Result,
			timerName(ev.Timer), ev.Who, formatReady(rd, s))
		snapshot := c.clone()
		for _, err := range c.check(ev, rd, s) {
			fail("guarantee broken after %+v: %v", ev, err)
		}
		if discard {
			c = snapshot
			return
		}
		if rd.Persist != nil {
			persisted = rd.Persist
		}
		for _, tr := range rd.Timers {
			armed[tr.Timer.Step] = tr.Timer
			timerAt[tr.Timer] = tr.At
		}
		st := s.State()
		reach(string(st))
		if s.rec.PastPivot {
			reach("past pivot")
		}
		if rd.Done {
			reach("end " + string(st))
		}
	}
	crash := func(from *Record) {
		t.Helper()
		data, err := json.Marshal(from)
		if err != nil {
			fail("marshal: %v", err)
		}
		var rec Record
		if err := json.Unmarshal(data, &rec); err != nil {
			fail("unmarshal: %v", err)
		}
		if s, err = Recover(rec); err != nil {
			fail("Recover: %v", err)
		}
		clear(armed)
		c.recovered()
		note(Event{Kind: "recover", At: now}, s.Start(now), false)
	}
	note(Event{Kind: "start", At: now}, s.Start(now), false)

	names := make([]string, len(def.Steps))
	for i, st := range def.Steps {
		names[i] = st.Name
	}
	results := []Result{ResultDone, ResultDone, ResultDone, ResultRetry, ResultRetry, ResultFailed, ResultUnknown, ResultUnknown}
	for range 120 {
		if c.done {
			break
		}
		now = now.Add(time.Duration(rng.IntN(600)) * time.Millisecond)
		var ev Event
		switch k := rng.IntN(20); {
		case k < 8:
			i := rng.IntN(len(names))
			op := OpAction
			if c.steps[i].compSent > 0 && rng.IntN(4) > 0 {
				op = OpCompensate
			}
			ev = Event{Kind: EventReply, Step: names[i], Op: op, Attempt: c.lastSent(names[i], op) + rng.IntN(5)/4 - rng.IntN(5)/4,
				Result: results[rng.IntN(len(results))]}
			if rng.IntN(4) == 0 {
				ev.Code = "fatal"
			}
			if rng.IntN(30) == 0 {
				ev.Step = "stranger"
			}
		case k < 13:
			tm := armed[names[rng.IntN(len(names))]]
			if rng.IntN(6) == 0 {
				tm = armed[""]
			}
			if rng.IntN(8) == 0 {
				tm.Seq = uint64(rng.IntN(20))
			}
			if at, ok := timerAt[tm]; ok && at.After(now) {
				now = at
			}
			ev = Event{Kind: EventTimer, Timer: tm}
		case k < 15:
			ev = last // a duplicate
		case k < 17:
			ev = Event{Kind: []EventKind{EventAbort, EventRetryNow, EventResolve}[rng.IntN(3)], Who: "op", Why: "test"}
			if rng.IntN(3) == 0 {
				ev.Step = names[rng.IntN(len(names))]
			}
			if ev.Kind == EventAbort && rng.IntN(2) == 0 {
				ev.Kind = EventRetryNow
			}
			if rng.IntN(10) == 0 {
				ev.Who = ""
			}
		case k < 18:
			crash(persisted)
			reach("crash after persist")
			continue
		default:
			// A step whose record is never persisted: the coordinator dies
			// first, and the next one recovers from the record before.
			prev := persisted
			i := rng.IntN(len(names))
			ev = Event{Kind: EventReply, At: now, Step: names[i], Op: OpAction, Attempt: c.lastSent(names[i], OpAction), Result: results[rng.IntN(len(results))]}
			rd := s.Step(ev)
			note(ev, rd, true)
			if rd.Ignored == "" {
				reach("crash before persist")
			}
			crash(prev)
			continue
		}
		ev.At = now
		rd := s.Step(ev)
		if rd.Ignored == "" && (ev.Kind == EventAbort || ev.Kind == EventRetryNow || ev.Kind == EventResolve) {
			reach("operator " + string(ev.Kind))
		}
		if ev.Kind == EventTimer && ev.Timer.Kind == TimerDeadline && rd.Ignored == "" {
			reach("deadline")
		}
		note(ev, rd, false)
		last = ev
	}

	// The participants and the network recover: every command out is
	// answered done, every timer fires, until the saga ends.
	for range 1000 {
		if c.done {
			break
		}
		now = now.Add(10 * time.Millisecond)
		var ev Event
		for i, w := range c.steps {
			switch {
			case w.actionOut:
				ev = Event{Kind: EventReply, Step: names[i], Op: OpAction, Attempt: w.actionSent, Result: ResultDone}
			case w.compOut:
				ev = Event{Kind: EventReply, Step: names[i], Op: OpCompensate, Attempt: w.compSent, Result: ResultDone}
			default:
				continue
			}
			break
		}
		if ev.Kind == "" {
			// Nothing out: the earliest live retry timer fires.
			var next Timer
			for i := range names {
				tm := s.timers[i]
				if tm.Seq != 0 && tm.Kind == TimerRetry && (next.Seq == 0 || timerAt[tm].Before(timerAt[next])) {
					next = tm
				}
			}
			if next.Seq == 0 {
				fail("the saga is %s with nothing out and no retry armed: it would hang\n%s", s.State(), formatRecord(s.Record()))
			}
			if timerAt[next].After(now) {
				now = timerAt[next]
			}
			ev = Event{Kind: EventTimer, Timer: next}
		}
		ev.At = now
		note(ev, s.Step(ev), false)
	}
	if !c.done || !s.State().Final() {
		fail("the saga did not end: %s\n%s", s.State(), formatRecord(s.Record()))
	}
	for _, st := range s.Record().Steps {
		if st.Status == StepCompensated && strings.Contains(st.LastError, "timed out") && !strings.Contains(st.LastError, "compensation") {
			reach("compensated a step whose action timed out")
		}
	}
	run.trace = trace.String()
	return run
}
