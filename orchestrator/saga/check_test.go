package saga

import (
	"fmt"
	"slices"
)

// checker watches a saga from the outside, as its participants and driver
// see it, and reports every broken guarantee:
//
//   - an ignored event has no effect, and nothing has an effect after Done;
//   - every Ready that sends persists first, the record counting the attempts
//     it sends, with a revision one above the last (a recovered saga re-sends
//     only what its record already counts);
//   - an action goes out only once its dependencies are done, while the saga
//     goes forward, within the step's attempts (without limit after the
//     pivot), and a retry only from its back-off timer or an operator;
//   - a compensation goes out only for a step whose action may have run and
//     was answered or timed out, once every step that depends on it is
//     compensated or never ran, and never past the pivot;
//   - Done comes once, with a final state: completed when every step is done,
//     compensated when every step that may have run is compensated.
type checker struct {
	plan      *plan
	steps     []stepWatch
	rev       uint64
	done      bool
	resending bool // the next Ready is a recovered saga's Start
}

type stepWatch struct {
	actionSent, compSent       int
	actionOut, compOut         bool // the last attempt awaits an answer or its timeout
	mayHaveRun, done, compDone bool
	actionAnswers, compAnswers int
}

func newChecker(p *plan) *checker {
	return &checker{plan: p, steps: make([]stepWatch, len(p.def.Steps))}
}

func (c *checker) clone() *checker {
	d := *c
	d.steps = slices.Clone(c.steps)
	return &d
}

func (c *checker) recovered() { c.resending = true }

func (c *checker) lastSent(step string, op Op) int {
	i, ok := c.plan.index[step]
	if !ok {
		return 1
	}
	if op == OpCompensate {
		return c.steps[i].compSent
	}
	return c.steps[i].actionSent
}

func (c *checker) check(ev Event, rd Ready, s *Saga) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	resending := c.resending
	c.resending = false
	empty := rd.Persist == nil && len(rd.Send) == 0 && len(rd.Timers) == 0 && len(rd.Stuck) == 0 && !rd.Done
	if rd.Ignored != "" && !empty {
		fail("ignored event %+v had effects: %+v", ev, rd)
	}
	if c.done && (!empty || rd.Ignored == "") {
		fail("event %+v after Done was not ignored: %+v", ev, rd)
	}
	rec := s.Record()
	if !rec.State.valid() {
		fail("invalid state %q", rec.State)
	}
	if rd.Ignored != "" {
		return errs
	}

	// What the accepted event settled.
	if i, ok := c.plan.index[ev.Step]; ok || ev.Kind == EventTimer {
		if ev.Kind == EventTimer {
			i, ok = c.plan.index[ev.Timer.Step]
		}
		if ok {
			w := &c.steps[i]
			switch {
			case ev.Kind == EventReply && ev.Op == OpAction:
				w.actionOut, w.actionAnswers = false, w.actionAnswers+1
				w.mayHaveRun = w.mayHaveRun || ev.Result == ResultDone || ev.Result == ResultUnknown
				w.done = ev.Result == ResultDone
			case ev.Kind == EventReply && ev.Op == OpCompensate:
				w.compOut, w.compAnswers = false, w.compAnswers+1
				w.compDone = ev.Result == ResultDone
			case ev.Kind == EventTimer && ev.Timer.Kind == TimerAttempt && w.actionOut:
				w.actionOut, w.mayHaveRun = false, true
			case ev.Kind == EventTimer && ev.Timer.Kind == TimerAttempt && w.compOut:
				w.compOut = false
			case ev.Kind == EventResolve:
				switch rec.Steps[i].Status {
				case StepCompensatedByHand:
					w.compOut, w.compDone = false, true
				case StepDone:
					w.actionOut, w.done, w.mayHaveRun = false, true, true
				default:
					fail("resolve of %s accepted, leaving it %s", ev.Step, rec.Steps[i].Status)
				}
			}
		}
	}

	// Persist before send.
	persisted := rd.Persist
	if persisted != nil {
		if persisted.Revision != c.rev+1 {
			fail("persisted revision %d after %d", persisted.Revision, c.rev)
		}
		c.rev = persisted.Revision
	} else if !resending {
		fail("accepted event %+v persisted nothing", ev)
	}
	if len(rd.Send) > 0 && persisted == nil && !resending {
		fail("sends without a record persisted first: %+v", rd.Send)
	}
	if resending && persisted == nil {
		persisted = &rec
		persisted.Revision = c.rev
	}

	retryEvent := func(i int) bool {
		return (ev.Kind == EventTimer && ev.Timer.Kind == TimerRetry && ev.Timer.Step == c.plan.def.Steps[i].Name) ||
			(ev.Kind == EventRetryNow && (ev.Step == "" || ev.Step == c.plan.def.Steps[i].Name))
	}
	for _, m := range rd.Send {
		i, ok := c.plan.index[m.Step]
		if !ok {
			fail("send to unknown step %q", m.Step)
			continue
		}
		w := &c.steps[i]
		pr := persisted.Steps[i]
		again := resending && ((m.Op == OpAction && w.actionOut && m.Attempt == w.actionSent) || (m.Op == OpCompensate && w.compOut && m.Attempt == w.compSent))
		switch m.Op {
		case OpAction:
			if pr.Attempts != m.Attempt || pr.Status != StepRunning {
				fail("action %s#%d sent, the record says %s#%d", m.Step, m.Attempt, pr.Status, pr.Attempts)
			}
			if again {
				break
			}
			for _, d := range c.plan.deps[i] {
				if !c.steps[d].done {
					fail("action of %s sent before its dependency %s was done", m.Step, c.plan.def.Steps[d].Name)
				}
			}
			switch {
			case !rec.State.forward():
				fail("action of %s sent while the saga is %s", m.Step, rec.State)
			case w.actionOut:
				fail("action %s#%d sent while attempt %d is out", m.Step, m.Attempt, w.actionSent)
			case m.Attempt != w.actionSent+1:
				fail("action %s#%d sent after attempt %d", m.Step, m.Attempt, w.actionSent)
			case m.Attempt > c.plan.def.Steps[i].Retry.MaxAttempts && !c.plan.afterPivot[i]:
				fail("action %s#%d sent: beyond max attempts %d", m.Step, m.Attempt, c.plan.def.Steps[i].Retry.MaxAttempts)
			case m.Attempt > 1 && !retryEvent(i):
				fail("action %s#%d sent by %s, not by its back-off or an operator", m.Step, m.Attempt, ev.Kind)
			case w.done:
				fail("action of %s sent after it was done", m.Step)
			}
			w.actionSent, w.actionOut = m.Attempt, true
		case OpCompensate:
			if pr.CompensationAttempts != m.Attempt || pr.Status != StepCompensating {
				fail("compensation %s#%d sent, the record says %s#%d", m.Step, m.Attempt, pr.Status, pr.CompensationAttempts)
			}
			if again {
				break
			}
			switch {
			case w.actionOut:
				fail("compensation of %s sent while its action attempt %d is out", m.Step, w.actionSent)
			case !w.mayHaveRun:
				fail("compensation of %s sent, though its action never ran", m.Step)
			case rec.PastPivot || c.plan.afterPivot[i]:
				fail("compensation of %s sent past the pivot", m.Step)
			case w.compOut:
				fail("compensation %s#%d sent while attempt %d is out", m.Step, m.Attempt, w.compSent)
			case m.Attempt != w.compSent+1:
				fail("compensation %s#%d sent after attempt %d", m.Step, m.Attempt, w.compSent)
			case m.Attempt > 1 && !retryEvent(i):
				fail("compensation %s#%d sent by %s, not by its back-off or an operator", m.Step, m.Attempt, ev.Kind)
			case w.compDone:
				fail("compensation of %s sent after it was done", m.Step)
			}
			for _, d := range c.plan.dependents[i] {
				if dw := c.steps[d]; dw.actionOut || (dw.mayHaveRun && !dw.compDone) {
					fail("compensation of %s sent before its dependent %s was compensated", m.Step, c.plan.def.Steps[d].Name)
				}
			}
			w.compSent, w.compOut = m.Attempt, true
		default:
			fail("send of unknown op %q", m.Op)
		}
	}
	for _, n := range rd.Stuck {
		if st, ok := rec.Step(n); !ok || !st.Stuck {
			fail("Ready says %s is stuck, its record does not", n)
		}
	}
	if rd.Done {
		c.done = true
		switch rec.State {
		case StateCompleted:
			for i, w := range c.steps {
				if !w.done {
					fail("completed, but %s is not done", c.plan.def.Steps[i].Name)
				}
			}
		case StateCompensated:
			for i, w := range c.steps {
				if w.actionOut || w.compOut || (w.mayHaveRun && !w.compDone) {
					fail("compensated, but %s: %+v", c.plan.def.Steps[i].Name, w)
				}
			}
		default:
			fail("Done in state %s", rec.State)
		}
	} else if rec.State.Final() {
		fail("state %s without Done", rec.State)
	}
	return errs
}
