package saga

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// t0 is the start of every scenario's clock; times print as offsets from it.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestScenarios runs the scripts in testdata/scenarios. Each command prints
// the Ready it produced; `state` prints the saga's record. Regenerate the
// recorded output with
//
//	go test ./orchestrator/saga -run TestScenarios -rewrite
//
// and read the diff: it is the protocol trace.
//
// Commands:
//
//	define                  the definition, in YAML, as input
//	start [id=s1] [deadline=5s]           a caller's deadline, from now
//	reply <step> action|compensate done|failed|retry|unknown [attempt=N] [code=C] [reason=(...)]
//	                        attempt defaults to the last one sent
//	tick <duration>         the clock moves on
//	timer <step>|deadline   the clock moves to the timer armed last for it, which fires
//	timer-stale <step>|deadline seq=N   fire a timer that is not the live one
//	abort who=W why=(...)
//	retry-now [step=S] who=W why=(...)
//	resolve <step> who=W why=(...)
//	crash                   the coordinator dies: Recover from the last record
//	                        persisted (through JSON), then Start
//	state
//
// The driver checks the effects contract and the saga's guarantees after
// every step, and fails the test when one breaks, whatever the recorded
// output says.
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/scenarios", func(t *testing.T, path string) {
		if filepath.Ext(path) != ".txt" {
			return
		}
		d := &driver{}
		datadriven.RunTest(t, path, d.run)
	})
}

type driver struct {
	def       Definition
	saga      *Saga
	now       time.Time
	checker   *checker
	armed     map[string]TimerRequest // by step name, "" for the deadline
	persisted *Record                 // the last record persisted
}

func (d *driver) run(t *testing.T, td *datadriven.TestData) string {
	switch td.Cmd {
	case "define":
		def, err := ParseYAML([]byte(td.Input))
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		d.def = def
		p, _ := compile(def)
		var b strings.Builder
		for _, i := range p.topo {
			s := p.def.Steps[i]
			fmt.Fprintf(&b, "step %s at %s", s.Name, s.Participant)
			if len(p.deps[i]) > 0 {
				var ds []string
				for _, j := range p.deps[i] {
					ds = append(ds, p.def.Steps[j].Name)
				}
				fmt.Fprintf(&b, " after %s", strings.Join(ds, ","))
			}
			if s.Pivot {
				b.WriteString(" pivot")
			}
			if p.afterPivot[i] {
				b.WriteString(" forward-only")
			}
			fmt.Fprintf(&b, " timeout=%v attempts=%d\n", s.Timeout, s.Retry.MaxAttempts)
		}
		return b.String()
	case "start":
		params := Params{ID: "s1", Definition: d.def}
		td.MaybeScanArgs(t, "id", &params.ID)
		d.now = t0
		if a, ok := td.Arg("deadline"); ok {
			dl, err := time.ParseDuration(a.SingleVal(t))
			if err != nil {
				td.Fatalf(t, "deadline: %v", err)
			}
			params.Deadline = d.now.Add(dl)
		}
		s, err := New(params)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		d.saga, d.persisted = s, nil
		d.armed = map[string]TimerRequest{}
		d.checker = newChecker(s.plan)
		rd := s.Start(d.now)
		return d.apply(t, td, Event{}, rd, "")
	}
	if d.saga == nil {
		td.Fatalf(t, "%s before start", td.Cmd)
	}
	pos := positional(td)
	switch td.Cmd {
	case "state":
		return formatRecord(d.saga.Record())
	case "tick":
		if len(pos) != 1 {
			td.Fatalf(t, "usage: tick <duration>")
		}
		dur, err := time.ParseDuration(pos[0])
		if err != nil {
			td.Fatalf(t, "tick: %v", err)
		}
		d.now = d.now.Add(dur)
		return "now " + at(d.now) + "\n"
	case "reply":
		if len(pos) != 3 {
			td.Fatalf(t, "usage: reply <step> action|compensate done|failed|retry|unknown")
		}
		ev := Event{Kind: EventReply, At: d.now, Step: pos[0], Op: Op(pos[1]), Result: Result(pos[2]), Reason: arg(td, "reason")}
		ev.Attempt = max(1, d.checker.lastSent(ev.Step, ev.Op))
		td.MaybeScanArgs(t, "attempt", &ev.Attempt)
		td.MaybeScanArgs(t, "code", &ev.Code)
		return d.step(t, td, ev, "")
	case "timer", "timer-stale":
		if len(pos) != 1 {
			td.Fatalf(t, "usage: %s <step>|deadline", td.Cmd)
		}
		name := pos[0]
		if name == "deadline" {
			name = ""
		}
		if td.Cmd == "timer-stale" {
			tm := Timer{Kind: TimerDeadline}
			if name != "" {
				tm = Timer{Kind: TimerKind(arg(td, "kind")), Step: name}
			}
			td.ScanArgs(t, "seq", &tm.Seq)
			return d.step(t, td, Event{Kind: EventTimer, At: d.now, Timer: tm}, fmt.Sprintf("fire %s\n", timerName(tm)))
		}
		tr, ok := d.armed[name]
		if !ok {
			return fmt.Sprintf("no timer armed for %s\n", pos[0])
		}
		if tr.At.After(d.now) {
			d.now = tr.At
		}
		return d.step(t, td, Event{Kind: EventTimer, At: d.now, Timer: tr.Timer}, fmt.Sprintf("fire %s at %s\n", timerName(tr.Timer), at(d.now)))
	case "abort", "retry-now", "resolve":
		ev := Event{Kind: EventKind(td.Cmd), At: d.now, Who: arg(td, "who"), Why: arg(td, "why"), Step: arg(td, "step")}
		if td.Cmd == "resolve" {
			if len(pos) != 1 {
				td.Fatalf(t, "usage: resolve <step> who=W why=(...)")
			}
			ev.Step = pos[0]
		}
		return d.step(t, td, ev, "")
	case "crash":
		if d.persisted == nil {
			td.Fatalf(t, "crash before anything was persisted")
		}
		data, err := json.Marshal(d.persisted)
		if err != nil {
			td.Fatalf(t, "marshal: %v", err)
		}
		var rec Record
		if err := json.Unmarshal(data, &rec); err != nil {
			td.Fatalf(t, "unmarshal: %v", err)
		}
		s, err := Recover(rec)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		d.saga = s
		d.armed = map[string]TimerRequest{}
		d.checker.recovered()
		return d.apply(t, td, Event{}, s.Start(d.now), fmt.Sprintf("recovered at revision %d, %s\n", rec.Revision, rec.State))
	}
	td.Fatalf(t, "unknown command %q", td.Cmd)
	return ""
}

func (d *driver) step(t *testing.T, td *datadriven.TestData, ev Event, head string) string {
	return d.apply(t, td, ev, d.saga.Step(ev), head)
}

func (d *driver) apply(t *testing.T, td *datadriven.TestData, ev Event, rd Ready, head string) string {
	t.Helper()
	for _, err := range d.checker.check(ev, rd, d.saga) {
		t.Errorf("%s: guarantee broken: %v", td.Pos, err)
	}
	if rd.Persist != nil {
		d.persisted = rd.Persist
	}
	for _, tr := range rd.Timers {
		d.armed[tr.Timer.Step] = tr
	}
	return head + formatReady(rd, d.saga)
}

func formatReady(rd Ready, s *Saga) string {
	var b strings.Builder
	if p := rd.Persist; p != nil {
		fmt.Fprintf(&b, "persist rev=%d %s:", p.Revision, p.State)
		for _, st := range p.Steps {
			fmt.Fprintf(&b, " %s=%s", st.Name, st.Status)
			switch st.Status {
			case StepRunning, StepRetrying:
				fmt.Fprintf(&b, "#%d", st.Attempts)
			case StepCompensating, StepCompensationRetrying:
				fmt.Fprintf(&b, "#%d", st.CompensationAttempts)
			}
		}
		b.WriteString("\n")
	}
	for _, m := range rd.Send {
		fmt.Fprintf(&b, "send %s %s#%d to %s", m.Step, m.Op, m.Attempt, m.Participant)
		if len(m.Payload) > 0 {
			fmt.Fprintf(&b, " payload=%s", m.Payload)
		}
		b.WriteString("\n")
	}
	for _, tr := range rd.Timers {
		fmt.Fprintf(&b, "timer %s at %s\n", timerName(tr.Timer), at(tr.At))
	}
	for _, n := range rd.Stuck {
		st, _ := s.rec.Step(n)
		fmt.Fprintf(&b, "stuck %s after %d attempts: %s\n", n, max(st.CompensationAttempts, st.Attempts), st.LastError)
	}
	if rd.Done {
		fmt.Fprintf(&b, "done %s: %s\n", s.State(), s.rec.Reason)
	}
	if rd.Ignored != "" {
		fmt.Fprintf(&b, "ignored: %s\n", rd.Ignored)
	}
	if b.Len() == 0 {
		b.WriteString("no effects\n")
	}
	return b.String()
}

func formatRecord(r Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s rev=%d", r.ID, r.State, r.Revision)
	if r.PastPivot {
		b.WriteString(" past-pivot")
	}
	if !r.Deadline.IsZero() {
		fmt.Fprintf(&b, " deadline=%s", at(r.Deadline))
	}
	if r.Reason != "" {
		fmt.Fprintf(&b, ": %s", r.Reason)
	}
	b.WriteString("\n")
	for _, st := range r.Steps {
		fmt.Fprintf(&b, "  %s %s", st.Name, st.Status)
		if st.Attempts > 0 {
			fmt.Fprintf(&b, " attempts=%d", st.Attempts)
		}
		if st.MayHaveRun && st.Status != StepDone && st.Status != StepCompensated && st.Status != StepCompensatedByHand {
			b.WriteString(" may-have-run")
		}
		if st.CompensationAttempts > 0 {
			fmt.Fprintf(&b, " compensation-attempts=%d", st.CompensationAttempts)
		}
		if !st.NextRetryAt.IsZero() {
			fmt.Fprintf(&b, " next-retry=%s", at(st.NextRetryAt))
		}
		if st.Stuck {
			b.WriteString(" STUCK")
		}
		if st.LastError != "" {
			fmt.Fprintf(&b, " last-error=%s", strconv.Quote(st.LastError))
		}
		if st.LastCode != "" {
			fmt.Fprintf(&b, " code=%s", st.LastCode)
		}
		if st.Note != "" {
			fmt.Fprintf(&b, " note=%s", strconv.Quote(st.Note))
		}
		b.WriteString("\n")
	}
	for _, op := range r.Operator {
		fmt.Fprintf(&b, "  operator %s %s", at(op.At), op.Kind)
		if op.Step != "" {
			fmt.Fprintf(&b, " %s", op.Step)
		}
		fmt.Fprintf(&b, " by %s: %s\n", op.Who, op.Why)
	}
	return b.String()
}

func timerName(tm Timer) string {
	if tm.Kind == TimerDeadline {
		return fmt.Sprintf("deadline#%d", tm.Seq)
	}
	return fmt.Sprintf("%s %s#%d", tm.Step, tm.Kind, tm.Seq)
}

func at(tm time.Time) string { return "+" + tm.Sub(t0).String() }

// positional returns the arguments without a value, in order.
func positional(td *datadriven.TestData) []string {
	var words []string
	for _, a := range td.CmdArgs {
		if len(a.Vals) == 0 {
			words = append(words, a.Key)
		}
	}
	return words
}

func arg(td *datadriven.TestData, key string) string {
	if a, ok := td.Arg(key); ok {
		return strings.Join(a.Vals, ", ")
	}
	return ""
}
