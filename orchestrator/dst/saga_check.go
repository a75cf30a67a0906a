package dst

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
)

// onSagaWrite follows every write to the saga bucket as it is applied: the
// latest record of each saga and, per step, when a record last had its
// action out and when one said it was answered or timed out, and when one
// first said it was compensating. It checks that a final record is never
// replaced by another state and that revisions never go back, and counts
// retries, stuck steps and takeovers.
func (s *sim) onSagaWrite(wr kvWrite) {
	w := s.sagaBy[wr.key]
	if w == nil {
		s.violate("%s: a saga record (by %s) of a saga the workload never began", wr.key, wr.writer)
		return
	}
	var doc sagaDoc
	if wr.op == "delete" || json.Unmarshal(wr.value, &doc) != nil || len(doc.Record.Steps) != len(w.steps) {
		s.violate("%s: an unreadable saga record (%s by %s)", wr.key, wr.op, wr.writer)
		return
	}
	prev := w.doc
	if prev != nil {
		switch {
		case prev.Record.State.Final() && doc.Record.State != prev.Record.State:
			s.violate("%s: its record went from %s to %s (written by %s)", wr.key, prev.Record.State, doc.Record.State, wr.writer)
		case doc.Record.Revision < prev.Record.Revision:
			s.violate("%s: its record went back from revision %d to %d (written by %s)", wr.key, prev.Record.Revision, doc.Record.Revision, wr.writer)
		}
		if prev.Owner != doc.Owner {
			s.st.SagaTakeovers++
			s.tracef("%s saga taken over by %s from %s (%s)", wr.key, doc.Owner, prev.Owner, doc.Record.State)
		}
	}
	for i, st := range doc.Record.Steps {
		var ps saga.StepRecord
		if prev != nil {
			ps = prev.Record.Steps[i]
		}
		if st.Attempts > ps.Attempts && st.Attempts > 1 {
			s.st.SagaRetries++
		}
		if st.CompensationAttempts > ps.CompensationAttempts && st.CompensationAttempts > 1 {
			s.st.SagaCompRetries++
		}
		if st.Stuck && !ps.Stuck {
			s.st.SagaStuckSteps++
		}
		h := &w.steps[i]
		switch {
		case st.Status == saga.StepRunning:
			h.everOut, h.out = true, true
		case h.out:
			h.out, h.settled, h.settledAt = false, true, wr.at
		}
		if st.Status == saga.StepCompensating && !h.compSent {
			h.compSent, h.compSentAt = true, wr.at
		}
	}
	w.doc = &doc
	w.writes++
}

// sagaOutcome is how a saga ended.
type sagaOutcome uint8

const (
	sagaNotStarted  sagaOutcome = iota // no record was ever written: nothing ran
	sagaCompleted                      // every step done
	sagaCompensated                    // every step that may have run compensated
	sagaStuck                          // visibly stuck: the record names the failing step
	sagaInBetween                      // a violation: neither, silently
)

// sagaEnd is everything the end-of-run check looks at for one saga: its
// definition, its latest durable record (nil if none was written), what the
// records said of each step over time, and what each step's participant's
// database holds.
type sagaEnd struct {
	id   string
	def  saga.Definition
	rec  *saga.Record
	hist []stepHist
	db   []stepDB
}

// checkSagaEnd checks one saga after the run, following docs/SAGA.md:
//
//   - Each step's business row agrees with its participant's barrier.
//   - Nothing took effect for a saga without a durable record.
//   - No compensation took effect before a record said the step was
//     compensating, nor before the coordinator had its action answered or
//     timed out (the write that took the action out of running), nor while
//     the latest record still has the action out; none after the pivot was
//     passed.
//   - The saga ended completed (every step done in the record and on its
//     participant's database, but a step done by hand), compensated (not
//     past its pivot; every step that may have run compensated in the
//     record, and none left done on its participant's database but one
//     compensated by hand), or visibly stuck (its record names a stuck
//     step that is being compensated, or retried forward past the pivot);
//     anything else is left in between.
func checkSagaEnd(v sagaEnd) (sagaOutcome, []string) {
	var bad []string
	add := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	for i, st := range v.def.Steps {
		d := v.db[i]
		var ok bool
		switch d.state {
		case participants.StepDone:
			ok = d.action && !d.comp
		case participants.StepCompensated:
			ok = d.action && d.comp
		default:
			ok = !d.action && !d.comp
		}
		if !ok {
			add("step %s at %s: the barrier says %s but the business row says action=%v compensation=%v", st.Name, st.Participant, d.state, d.action, d.comp)
		}
	}
	if v.rec == nil {
		for i, st := range v.def.Steps {
			if d := v.db[i]; d.action || d.comp || d.state != participants.StepNone {
				add("step %s at %s has %s although the saga never had a durable record", st.Name, st.Participant, d)
			}
		}
		return sagaNotStarted, bad
	}
	rec := v.rec
	for i, st := range v.def.Steps {
		d, h := v.db[i], v.hist[i]
		if d.action && !h.everOut {
			add("step %s: its action took effect at %s at %v although no record ever had it out", st.Name, st.Participant, d.actionAt)
		}
		if !d.comp {
			continue
		}
		switch {
		case !h.everOut:
			add("step %s: its compensation took effect at %s at %v although no record ever had its action out", st.Name, st.Participant, d.compAt)
		case h.out:
			add("step %s: its compensation took effect at %s at %v while the latest record still has its action out", st.Name, st.Participant, d.compAt)
		case d.compAt < h.settledAt:
			add("step %s: its compensation took effect at %s at %v, before the coordinator had its action answered or timed out (recorded at %v)", st.Name, st.Participant, d.compAt, h.settledAt)
		}
		if !h.compSent || d.compAt < h.compSentAt {
			add("step %s: its compensation took effect at %s at %v before any record said it was compensating", st.Name, st.Participant, d.compAt)
		}
		if rec.PastPivot {
			add("step %s: its compensation took effect at %s at %v although the saga passed its pivot", st.Name, st.Participant, d.compAt)
		}
	}
	steps := func() string {
		var b []string
		for i, sr := range rec.Steps {
			b = append(b, fmt.Sprintf("%s=%s(%s)", sr.Name, sr.Status, v.db[i]))
		}
		return strings.Join(b, " ")
	}
	stuckStep := func(statuses ...saga.StepStatus) bool {
		for _, sr := range rec.Steps {
			for _, want := range statuses {
				if sr.Stuck && sr.Status == want {
					return true
				}
			}
		}
		return false
	}
	switch rec.State {
	case saga.StateCompleted:
		for i, sr := range rec.Steps {
			byHand := strings.Contains(sr.Note, "done by hand")
			if sr.Status != saga.StepDone || !byHand && v.db[i].state != participants.StepDone {
				add("completed, but step %s is %s in the record and %s at %s: %s", sr.Name, sr.Status, v.db[i], v.def.Steps[i].Participant, steps())
			}
		}
		return sagaCompleted, bad
	case saga.StateCompensated:
		if rec.PastPivot {
			add("compensated although it passed its pivot: %s", steps())
		}
		for i, sr := range rec.Steps {
			switch {
			case sr.Status == saga.StepPending, sr.Status == saga.StepCompensated, sr.Status == saga.StepCompensatedByHand:
			case sr.Status == saga.StepFailed && !sr.MayHaveRun:
			default:
				add("compensated, but step %s is %s in the record (may have run: %v): %s", sr.Name, sr.Status, sr.MayHaveRun, steps())
			}
			if v.db[i].state == participants.StepDone && sr.Status != saga.StepCompensatedByHand {
				add("compensated, but step %s's action took effect at %s and was never compensated: %s", sr.Name, v.def.Steps[i].Participant, steps())
			}
		}
		return sagaCompensated, bad
	case saga.StateCompensationStuck:
		if !stuckStep(saga.StepCompensating, saga.StepCompensationRetrying) {
			add("compensation-stuck, but no stuck step is being compensated: %s", steps())
		}
		for i, sr := range rec.Steps {
			if sr.Status == saga.StepCompensated && v.db[i].state == participants.StepDone {
				add("step %s is compensated in the record but its action stands at %s: %s", sr.Name, v.def.Steps[i].Participant, steps())
			}
		}
		return sagaStuck, bad
	case saga.StateForwardStuck:
		if !rec.PastPivot || !stuckStep(saga.StepRunning, saga.StepRetrying) {
			add("forward-stuck, but not past its pivot with a stuck step retried forward (past pivot: %v): %s", rec.PastPivot, steps())
		}
		return sagaStuck, bad
	}
	add("left %s at the end of the run, neither completed, compensated nor stuck: %s", rec.State, steps())
	return sagaInBetween, bad
}

// checkSagas checks every saga of the workload after quiescence
// (checkSagaEnd) and that each saga's status, if still in the bucket, says
// what its record says.
func (s *sim) checkSagas() {
	for _, w := range s.sagaList {
		v := sagaEnd{id: w.id, def: w.def, rec: w.rec(), hist: w.steps}
		for _, st := range w.def.Steps {
			v.db = append(v.db, s.partBy[st.Participant].sagaStep(w.id, st.Name))
		}
		out, bad := checkSagaEnd(v)
		w.outcome = out
		for _, b := range bad {
			s.violate("%s: %s", w.id, b)
		}
		rec := v.rec
		if en, err := s.status.get(w.id); err == nil && rec != nil {
			st := statusState(en.Value)
			switch {
			case rec.State.Final() && st != string(rec.State) && s.sagas.live(w.id) == nil:
				// A process paused past the retention wrote the status of what
				// it held in memory when it went on, before it fenced itself;
				// the final record it contradicts has expired, so the sweep
				// cannot tell, and the status expires with the retention.
				s.st.SagaStaleStatuses++
				s.tracef("%s: its status says %q but its record, expired since, said %s", w.id, st, rec.State)
			case rec.State.Final() && st != string(rec.State):
				s.violate("%s: its status says %q but its record says %s", w.id, st, rec.State)
			case !rec.State.Final() && finalStatus(st):
				s.violate("%s: its status says %s but its record says %s", w.id, st, rec.State)
			}
		}
	}
}

// sagasBusy counts the sagas whose latest record is neither final nor
// stuck: still going.
func (s *sim) sagasBusy() int {
	n := 0
	for _, w := range s.sagaList {
		if rec := w.rec(); rec != nil && !rec.State.Final() && !rec.State.Stuck() {
			n++
		}
	}
	return n
}

// stuckSagas returns the IDs of the sagas whose latest record is stuck and,
// per instance, how many of them it owns: they are retried for ever, so
// their commands and their place in the instance's in-flight count do not
// keep the run from quiescence.
func (s *sim) stuckSagas() (map[string]bool, map[string]int) {
	ids, owned := map[string]bool{}, map[string]int{}
	for _, w := range s.sagaList {
		if rec := w.rec(); rec != nil && rec.State.Stuck() {
			ids[w.id] = true
			owned[w.doc.Owner]++
		}
	}
	return ids, owned
}
