package dst

import (
	"fmt"
	"strings"
)

// check runs after quiescence: it counts the transactions and records a
// violation for each broken guarantee of DESIGN.md section 3.
//
//   - Atomicity: every participant of a transaction ended committed, or none
//     did (each ended aborted or never prepared).
//   - Nothing left prepared.
//   - No decision reversed: a transaction with a commit record, or that a
//     coordinator reported committed, ends committed everywhere; one only
//     ever decided abort ends with no participant committed. (An abort
//     recorded after a committed transaction's record was purged, for a late
//     question, is counted in Stats.LateAbortRecords: the participant that
//     asked has committed by then and ignores the answer.) (A participant that
//     commits without a durable commit decision, or that goes from commit to
//     abort, is caught as it happens, in participant.set.)
//   - Every transaction decided: no coordinator still runs it.
func (s *sim) check() {
	for _, w := range s.work {
		s.res.Transactions++
		var committed, aborted, none, prepared []string
		for _, name := range w.parts {
			st := pNone
			if r := s.partBy[name].recs[w.id]; r != nil {
				st = r.state
			}
			switch st {
			case pCommitted:
				committed = append(committed, name)
			case pAborted:
				aborted = append(aborted, name)
			case pPrepared:
				prepared = append(prepared, name)
			default:
				none = append(none, name)
			}
		}
		ends := fmt.Sprintf("committed=[%s] aborted=[%s] prepared=[%s] none=[%s]",
			joinNames(committed), joinNames(aborted), joinNames(prepared), joinNames(none))
		allCommitted := len(committed) == len(w.parts)
		switch {
		case len(committed) > 0 && !allCommitted:
			s.violate("%s: atomicity: mixed outcome %s", w.id, ends)
		case len(prepared) > 0:
			s.violate("%s: left prepared after quiescence: %s", w.id, ends)
		}
		if s.store.everCommit[w.id] && !allCommitted {
			s.violate("%s: decision reversed: a commit decision was recorded, but %s", w.id, ends)
		}
		if w.clientCommitted && !allCommitted {
			s.violate("%s: a coordinator reported it committed, but %s", w.id, ends)
		}
		if w.decidedAbort && !w.decidedCommit && len(committed) > 0 {
			s.violate("%s: only abort was ever decided, yet %s", w.id, ends)
		}
		for _, c := range s.coords {
			if en := c.active[w.id]; en != nil {
				s.violate("%s: undecided: %s still runs it in state %s", w.id, c.name, en.tx.State())
			}
		}
		if allCommitted {
			s.res.Committed++
		} else {
			s.res.Aborted++
		}
	}
	if n := len(s.violations); n > 0 {
		s.tracef("%d violations:\n%s", n, strings.Join(s.violations, "\n"))
	}
}
