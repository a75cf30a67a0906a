package txn

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/natstx/natstx/messages"
)

// TestScenarios runs the scripts in testdata/scenarios. Each command prints the
// Ready it produced; `state` prints the Outcome. Regenerate the recorded
// output with
//
//	go test ./orchestrator/txn -run TestScenarios -rewrite
//
// and read the diff: it is the protocol trace.
//
// Commands:
//
//	begin [id=tx1] participants=(a,b,c) [prepare-timeout=2s] [retry=100ms] [retry-max=1s] [abort-sends=3]
//	recover [id=tx1] state=committing participants=(a,b,c) [timings as for begin]
//	vote <participant> yes|no [reason=...]
//	ack <participant> prepare|commit|abort
//	fail <participant> prepare|commit|abort [reason=...]
//	timer prepare|resend [times=N]    fire the timer of that kind armed last
//	timer-stale prepare|resend seq=N   fire an old (or never armed) timer
//	abort [reason=...]
//	state
//
// A reason with spaces is written in parentheses: reason=(disk full).
//
// The driver checks the guarantees of two-phase commit after every step and
// fails the test when one breaks, whatever the recorded output says.
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/scenarios", func(t *testing.T, path string) {
		if filepath.Ext(path) != ".txt" {
			return
		}
		d := &driver{}
		datadriven.RunTest(t, path, d.run)
	})
}

// driver feeds a Tx from a script and watches over what it does as the engine
// would: it keeps the timers the Tx armed, and checks the effects contract.
type driver struct {
	tx    *Tx
	armed map[TimerKind]Timer

	// What the driver has seen, to check the guarantees.
	recovered bool
	persisted bool  // a commit record was persisted
	decision  State // Committing or Aborting once decided
	done      bool
	// answered[p][op]: p answered op (voted on prepare, acknowledged commit or
	// abort); nothing may be sent to p for op afterwards. A no voter has
	// answered abort too: it aborted by itself.
	answered map[string]map[messages.Op]bool
	// abortSends counts the aborts sent to each participant, up to abortLimit
	// (Spec.AbortSends).
	abortSends map[string]int
	abortLimit int
}

func (d *driver) reset(tx *Tx, spec Spec, recovered bool) {
	*d = driver{
		tx:         tx,
		armed:      map[TimerKind]Timer{},
		recovered:  recovered,
		answered:   map[string]map[messages.Op]bool{},
		abortSends: map[string]int{},
		abortLimit: spec.AbortSends,
	}
	if recovered {
		d.persisted, d.decision = tx.State() == Committing, tx.State()
		for _, p := range tx.Outcome().Participants {
			d.answer(p.Name, messages.OpPrepare)
		}
	}
}

func (d *driver) answer(p string, op messages.Op) {
	if d.answered[p] == nil {
		d.answered[p] = map[messages.Op]bool{}
	}
	d.answered[p][op] = true
}

func (d *driver) run(t *testing.T, td *datadriven.TestData) string {
	switch td.Cmd {
	case "begin", "recover":
		spec := Spec{
			ID:             "tx1",
			PrepareTimeout: 2 * time.Second,
			RetryBase:      100 * time.Millisecond,
			RetryMax:       time.Second,
			AbortSends:     3,
		}
		td.MaybeScanArgs(t, "id", &spec.ID)
		if arg, ok := td.Arg("participants"); ok {
			for _, name := range arg.Vals {
				name = strings.TrimSpace(name)
				spec.Participants = append(spec.Participants, Participant{Name: name, Payload: []byte(name + "-work")})
			}
		}
		spec.PrepareTimeout = durationArg(t, td, "prepare-timeout", spec.PrepareTimeout)
		spec.RetryBase = durationArg(t, td, "retry", spec.RetryBase)
		spec.RetryMax = durationArg(t, td, "retry-max", spec.RetryMax)
		td.MaybeScanArgs(t, "abort-sends", &spec.AbortSends)
		var tx *Tx
		var err error
		if td.Cmd == "begin" {
			tx, err = New(spec)
		} else {
			var stateName string
			td.ScanArgs(t, "state", &stateName)
			state, perr := ParseState(stateName)
			if perr != nil {
				td.Fatalf(t, "%v", perr)
			}
			rec := Record{ID: spec.ID, State: state}
			for _, p := range spec.Participants {
				rec.Participants = append(rec.Participants, p.Name)
			}
			tx, err = Recover(rec, spec)
		}
		if err != nil {
			d.tx = nil
			return "error: " + err.Error() + "\n"
		}
		d.reset(tx, spec, td.Cmd == "recover")
		return d.apply(t, td, tx.Start(), "")
	}

	if d.tx == nil {
		td.Fatalf(t, "%s before begin or recover", td.Cmd)
	}
	pos := positional(td)
	switch td.Cmd {
	case "state":
		return formatOutcome(d.tx.Outcome())

	case "vote":
		if len(pos) != 2 || (pos[1] != "yes" && pos[1] != "no") {
			td.Fatalf(t, "usage: vote <participant> yes|no [reason=...]")
		}
		ev := Event{Kind: EventVote, Participant: pos[0], Yes: pos[1] == "yes", Reason: reasonArg(td)}
		return d.step(t, td, ev)

	case "ack", "fail":
		if len(pos) != 2 {
			td.Fatalf(t, "usage: %s <participant> prepare|commit|abort", td.Cmd)
		}
		ev := Event{Kind: EventAck, Participant: pos[0], Op: messages.Op(pos[1])}
		if td.Cmd == "fail" {
			ev.Kind, ev.Reason = EventFailed, reasonArg(td)
		}
		return d.step(t, td, ev)

	case "abort":
		return d.step(t, td, Event{Kind: EventAbort, Reason: reasonArg(td)})

	case "timer", "timer-stale":
		if len(pos) != 1 {
			td.Fatalf(t, "usage: %s prepare|resend", td.Cmd)
		}
		var kind TimerKind
		switch pos[0] {
		case "prepare":
			kind = TimerPrepare
		case "resend":
			kind = TimerResend
		default:
			td.Fatalf(t, "unknown timer %q", pos[0])
		}
		if td.Cmd == "timer-stale" {
			var seq uint64
			td.ScanArgs(t, "seq", &seq)
			tm := Timer{Kind: kind, Seq: seq}
			return d.fire(t, td, tm)
		}
		times := 1
		td.MaybeScanArgs(t, "times", &times)
		var out strings.Builder
		for range times {
			tm, ok := d.armed[kind]
			if !ok {
				fmt.Fprintf(&out, "no %s timer was ever armed\n", kind)
				break
			}
			out.WriteString(d.fire(t, td, tm))
		}
		return out.String()
	}
	td.Fatalf(t, "unknown command %q", td.Cmd)
	return ""
}

func (d *driver) fire(t *testing.T, td *datadriven.TestData, tm Timer) string {
	head := fmt.Sprintf("fire %s#%d\n", tm.Kind, tm.Seq)
	return d.apply(t, td, d.tx.Step(Event{Kind: EventTimer, Timer: tm}), head)
}

func (d *driver) step(t *testing.T, td *datadriven.TestData, ev Event) string {
	rd := d.tx.Step(ev)
	if rd.Ignored == "" {
		switch {
		case ev.Kind == EventVote:
			d.answer(ev.Participant, messages.OpPrepare)
			if !ev.Yes {
				d.answer(ev.Participant, messages.OpAbort)
			}
		case ev.Kind == EventFailed && ev.Op == messages.OpPrepare:
			// Counts as a vote no.
			d.answer(ev.Participant, messages.OpPrepare) // it may have prepared: it is still sent abort
		case ev.Kind == EventAck:
			d.answer(ev.Participant, ev.Op)
		}
	}
	return d.apply(t, td, rd, "")
}

// apply checks rd against the guarantees, records the timers it arms, and
// prints it.
func (d *driver) apply(t *testing.T, td *datadriven.TestData, rd Ready, head string) string {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Errorf("%s: guarantee broken: %s", td.Pos, fmt.Sprintf(format, args...))
	}
	empty := rd.Persist == nil && len(rd.Send) == 0 && len(rd.Timers) == 0 && !rd.Decided && !rd.Done
	if rd.Ignored != "" && !empty {
		fail("ignored event had effects: %+v", rd)
	}
	if d.done && !empty {
		fail("effects after Done: %+v", rd)
	}
	if rd.Persist != nil {
		if d.persisted {
			fail("commit decision persisted twice")
		}
		if rd.Persist.State != Committing || !rd.Decided {
			fail("persisted %+v outside a commit decision", *rd.Persist)
		}
		d.persisted = true
	}
	if rd.Decided {
		if d.decision != 0 {
			fail("decided twice")
		}
		switch d.tx.State() {
		case Committing, Committed:
			d.decision = Committing
		case Aborting, Aborted:
			d.decision = Aborting
		default:
			fail("Decided in state %v", d.tx.State())
		}
		if d.decision == Committing && !d.persisted {
			fail("commit decided without a durable record")
		}
	}
	for _, s := range rd.Send {
		switch {
		case s.Op == messages.OpCommit && !d.persisted:
			fail("commit sent to %s before the decision was persisted", s.Participant)
		case s.Op == messages.OpCommit && d.decision != Committing:
			fail("commit sent to %s, decision is %v", s.Participant, d.decision)
		case s.Op == messages.OpAbort && d.decision != Aborting:
			fail("abort sent to %s, decision is %v", s.Participant, d.decision)
		case s.Op == messages.OpPrepare && d.decision != 0:
			fail("prepare sent to %s after the decision", s.Participant)
		case d.answered[s.Participant][s.Op]:
			fail("%s sent to %s, which already answered it", s.Op, s.Participant)
		}
		if s.Op == messages.OpAbort {
			d.abortSends[s.Participant]++
		}
		if (len(s.Payload) > 0) != (s.Op == messages.OpPrepare) {
			fail("payload %q on %s", s.Payload, s.Op)
		}
	}
	if rd.Done {
		if !d.tx.State().Final() {
			fail("Done in state %v", d.tx.State())
		}
		if d.decision == 0 {
			fail("Done without a decision")
		}
		// Every participant has heard the outcome: committed means all
		// acknowledged commit; aborted means each one voted no, acknowledged
		// abort, or was sent abort as often as allowed (it stays queued).
		for _, p := range d.tx.Outcome().Participants {
			switch d.tx.State() {
			case Committed:
				if !d.answered[p.Name][messages.OpCommit] {
					fail("committed, but %s never acknowledged commit", p.Name)
				}
			case Aborted:
				if !d.answered[p.Name][messages.OpAbort] && d.abortSends[p.Name] < d.abortLimit {
					fail("aborted, but %s never acknowledged abort and was sent it %d times", p.Name, d.abortSends[p.Name])
				}
			}
		}
		d.done = true
	} else if d.tx.State().Final() && !d.done {
		fail("state %v without Done", d.tx.State())
	}
	for _, tr := range rd.Timers {
		d.armed[tr.Timer.Kind] = tr.Timer
	}
	return head + d.formatReady(rd)
}

func (d *driver) formatReady(rd Ready) string {
	var b strings.Builder
	if p := rd.Persist; p != nil {
		fmt.Fprintf(&b, "persist %s %s participants=(%s)\n", p.ID, p.State, strings.Join(p.Participants, ","))
	}
	for _, s := range rd.Send {
		fmt.Fprintf(&b, "send %s %s attempt=%d", s.Participant, s.Op, s.Attempt)
		if len(s.Payload) > 0 {
			fmt.Fprintf(&b, " payload=%s", s.Payload)
		}
		b.WriteString("\n")
	}
	for _, tr := range rd.Timers {
		fmt.Fprintf(&b, "timer %s#%d after %v\n", tr.Timer.Kind, tr.Timer.Seq, tr.After)
	}
	out := d.tx.Outcome()
	if rd.Decided {
		fmt.Fprintf(&b, "decided %s: %s\n", decisionWord(out.State), orEmpty(out.Reason))
	}
	if rd.Done {
		fmt.Fprintf(&b, "done %s\n", out.State)
	}
	if rd.Ignored != "" {
		fmt.Fprintf(&b, "ignored: %s\n", rd.Ignored)
	}
	if b.Len() == 0 {
		b.WriteString("no effects\n")
	}
	return b.String()
}

func formatOutcome(o Outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s\n", o.ID, o.State, orEmpty(o.Reason))
	if o.TimedOut {
		b.WriteString("  timed out\n")
	}
	for _, p := range o.Participants {
		fmt.Fprintf(&b, "  %s vote=%s acked=%t sends=%d", p.Name, p.Vote, p.Acked, p.Sends)
		if p.Reason != "" {
			fmt.Fprintf(&b, " reason=%s", strconv.Quote(p.Reason))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// positional returns the arguments without a value, in order: the words of
// "vote a yes".
func positional(td *datadriven.TestData) []string {
	var words []string
	for _, a := range td.CmdArgs {
		if len(a.Vals) == 0 {
			words = append(words, a.Key)
		}
	}
	return words
}

func reasonArg(td *datadriven.TestData) string {
	if a, ok := td.Arg("reason"); ok {
		return strings.Join(a.Vals, ", ")
	}
	return ""
}

func durationArg(t *testing.T, td *datadriven.TestData, key string, def time.Duration) time.Duration {
	a, ok := td.Arg(key)
	if !ok {
		return def
	}
	v, err := time.ParseDuration(a.SingleVal(t))
	if err != nil {
		td.Fatalf(t, "%s: %v", key, err)
	}
	return v
}

func orEmpty(reason string) string {
	if reason == "" {
		return "(no reason)"
	}
	return reason
}
