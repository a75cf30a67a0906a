package dst

import (
	"encoding/json"
	"fmt"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
)

// recordState is the state a decision record's value holds ("committing",
// "committed", "aborted"), or "" for a delete marker or an unreadable one.
func recordState(v []byte) string {
	var rec struct {
		State string `json:"state"`
	}
	if len(v) == 0 || json.Unmarshal(v, &rec) != nil {
		return ""
	}
	return rec.State
}

// statusState is the state a status entry holds ("" if none), read
// without decoding the rest of the document (messages.PeekState: the
// checks read every status written, and decoding each whole was a sixth
// of a run's time).
func statusState(v []byte) string {
	st, ok := messages.PeekState(v)
	if !ok {
		return ""
	}
	return st
}

// finalStatus: a transaction's or a saga's status that is final.
func finalStatus(state string) bool {
	switch saga.State(state) {
	case "committed", "aborted", saga.StateCompleted, saga.StateCompensated:
		return true
	}
	return false
}

// stuckStatus: a saga's status that says it is visibly stuck.
func stuckStatus(state string) bool { return saga.State(state).Stuck() }

// settledStatus: a status that needs no more convergence: final, or a
// saga's stuck status while its latest record is stuck too.
func (s *sim) settledStatus(id, state string) bool {
	if finalStatus(state) || state == "" {
		return true
	}
	w := s.sagaBy[id]
	return stuckStatus(state) && w != nil && w.rec() != nil && w.rec().State == saga.State(state)
}

// onCommand notes how a transaction is run, from the commands coordinators
// publish: in two phases (prepare) or in one (commit-one-phase), never both.
func (s *sim) onCommand(cmd messages.Command) {
	w := s.workBy[cmd.TxID]
	if w == nil {
		return
	}
	switch cmd.Op {
	case messages.OpPrepare:
		w.sentPrepare = true
	case messages.OpCommitOnePhase:
		w.sentOnePhase = true
		if len(w.parts) != 1 {
			s.violate("%s: commit-one-phase sent to %s, one of %d participants", cmd.TxID, cmd.Participant, len(w.parts))
		}
	}
	if w.sentPrepare && w.sentOnePhase {
		s.violate("%s: sent both prepare and commit-one-phase (%s, attempt %d)", cmd.TxID, cmd.Op, cmd.Attempt)
	}
}

// onRecordWrite checks every write to the decision bucket as it is applied:
// never a commit record after an abort record of the same transaction, nor
// an abort record after a commit record (in any order, at any distance in
// time: an expired record does not make the other decision right).
func (s *sim) onRecordWrite(w kvWrite) {
	st := recordState(w.value)
	if st == "committing" {
		s.committing[w.key] = true
	} else {
		delete(s.committing, w.key)
	}
	if tx := s.workBy[w.key]; tx != nil && tx.onePhase() && st != "" {
		s.violate("%s: a decision record (%s, by %s) was written for a one-phase commit, which its participant decides", w.key, st, w.writer)
	}
	switch st {
	case "committing", "committed":
		if s.everAbort[w.key] && !s.everCommit[w.key] {
			s.violate("%s: a commit record (%s, by %s) was written after an abort record", w.key, st, w.writer)
		}
		s.everCommit[w.key] = true
	case "aborted":
		s.st.RecordedAborts++
		s.notePremature(w)
		if s.everCommit[w.key] && !s.everAbort[w.key] {
			s.violate("%s: an abort record was written (by %s) after a commit record", w.key, w.writer)
		}
		s.everAbort[w.key] = true
	}
}

// notePremature notes an abort recorded before the transaction's deadline
// while the coordinator that runs it is alive (its incarnation runs, or is
// paused within its lease) and has not decided abort itself: nobody may decide for a live owner before its
// deadline, and a participant that restarted must not make anyone do so.
func (s *sim) notePremature(wr kvWrite) {
	w := s.workBy[wr.key]
	if w == nil || w.coord == "" || w.ownerAborted || s.s.now >= w.beginAt+w.timeout {
		return
	}
	if s.leaseLapseEnd[w.coord] > w.beginAt {
		return // its lease lapsed meanwhile: others may take it for dead
	}
	for _, c := range s.coords {
		if c.name == w.coord && c.inc == w.inc && c.g.state != gateDead && s.leases.live(c.name) != nil {
			w.premature = fmt.Sprintf("an abort was recorded by %s at %v, before its deadline (%v at the soonest), while its coordinator %s was alive",
				wr.writer, s.s.now, w.beginAt+w.timeout, c.name)
		}
	}
}

// onLeaseWrite notes when each instance's lease lapsed: a renewal that came
// after the previous one expired.
func (s *sim) onLeaseWrite(w kvWrite) {
	if prev, ok := s.leaseLast[w.key]; ok && w.at-prev >= leaseTTL {
		s.leaseLapseEnd[w.key] = w.at
	}
	s.leaseLast[w.key] = w.at
}

// onStatusWrite checks every write to the status bucket: a final status is
// never replaced by the other final state; one replaced by a state that is
// not final is counted (it must converge again, which the quiescence check
// waits for).
func (s *sim) onStatusWrite(w kvWrite) {
	st := statusState(w.value)
	if tx := s.workBy[w.key]; tx != nil && (st == "aborting" || st == "aborted") && w.writer == fmt.Sprintf("%s.%d", tx.coord, tx.inc) {
		tx.ownerAborted = true
	}
	prev := s.lastStatus[w.key]
	if finalStatus(prev) && st != prev {
		if finalStatus(st) {
			s.violate("%s: its status went from %s to %s (written by %s)", w.key, prev, st, w.writer)
		} else if st != "" {
			s.st.StatusRegressions++
			s.tracef("%s status regressed from %s to %s (written by %s)", w.key, prev, st, w.writer)
		}
	}
	s.lastStatus[w.key] = st
	if finalStatus(st) || st == "" {
		delete(s.notFinal, w.key)
	} else {
		s.notFinal[w.key] = true
	}
}

// check runs after quiescence, on what the participants' databases, the
// decision records and the statuses hold, for every transaction:
//
//   - Atomicity: every participant committed, or none did (each aborted or
//     never prepared); the business rows agree with the barrier's records.
//     A participant that voted read-only holds nothing (no business row),
//     whatever the outcome: it counts for neither side. A transaction all
//     of whose participants voted read-only says committed exactly when its
//     commit decision was recorded (or, one-phase, when its participant
//     answered: read-only is an ack).
//   - Nothing left prepared.
//   - No decision reversed: no participant of a transaction with a commit
//     record ends aborted or without its prepare (one still prepared, the
//     commit unfinished, is left prepared); one with an abort record has
//     no participant committed (the checks of onRecordWrite and the ledger handler catch
//     the rest as it happens).
//   - Every status still in the bucket is final and says what happened.
func (s *sim) check() {
	for _, w := range s.work {
		if w.onePhase() {
			s.st.OnePhaseTxs++
		}
		var committed, aborted, prepared, none, readOnly []string
		for _, name := range w.parts {
			p := s.partBy[name]
			st, err := p.check.State(s.ctx, name, w.id)
			if err != nil {
				s.violate("%s: reading %s's barrier: %v", w.id, name, err)
				continue
			}
			row := p.ledgerState(w.id)
			ok := true
			switch st {
			case participants.StateCommitted:
				committed = append(committed, name)
				ok = row == "committed"
			case participants.StateAborted:
				aborted = append(aborted, name)
				ok = row == ""
			case participants.StatePrepared:
				prepared = append(prepared, name)
				ok = row == "staged"
			case participants.StateReadOnly:
				readOnly = append(readOnly, name)
				ok = row == "" && w.readOnly[name]
			default:
				none = append(none, name)
				ok = row == ""
			}
			if !ok {
				s.violate("%s: %s's barrier says %s but its business row says %q", w.id, name, st, row)
			}
		}
		ends := fmt.Sprintf("committed=[%s] aborted=[%s] prepared=[%s] none=[%s] read-only=[%s]",
			joinNames(committed), joinNames(aborted), joinNames(prepared), joinNames(none), joinNames(readOnly))
		all := len(committed) > 0 && len(committed)+len(readOnly) == len(w.parts)
		onlyReadOnly := len(readOnly) == len(w.parts)
		if all {
			w.outcome = outcomeCommitted
		}
		switch {
		case len(committed) > 0 && len(aborted)+len(none) > 0:
			s.violate("%s: atomicity: mixed outcome %s", w.id, ends)
		case len(prepared) > 0:
			// Committed at some and prepared at the others is a commit not
			// finished (the run did not quiesce), not a mixed outcome: the
			// prepared ones can still commit.
			s.violate("%s: left prepared after quiescence: %s", w.id, ends)
		}
		if len(prepared) > 0 {
			w.inDoubt = true
		}
		if s.everCommit[w.id] && len(aborted)+len(none) > 0 {
			s.violate("%s: decision reversed: a commit decision was recorded, but %s", w.id, ends)
		}
		if w.begun && w.premature != "" {
			s.violate("%s: %s: %s", w.id, w.premature, ends)
		}
		if s.everAbort[w.id] && len(committed) > 0 {
			s.violate("%s: an abort was recorded for a transaction that committed: %s", w.id, ends)
		}
		if en, err := s.status.get(w.id); err == nil {
			switch st := statusState(en.Value); {
			case !finalStatus(st):
				w.inDoubt = true
				s.violate("%s: its status is %q after quiescence: %s", w.id, st, ends)
			case onlyReadOnly:
				want := w.onePhase() || s.everCommit[w.id] && !s.everAbort[w.id]
				if (st == "committed") != want {
					s.violate("%s: its status says %s, every vote read-only, a commit decision recorded: %v: %s", w.id, st, s.everCommit[w.id], ends)
				}
				if st == "committed" {
					w.outcome = outcomeCommitted
				}
			case (st == "committed") != all:
				s.violate("%s: its status says %s: %s", w.id, st, ends)
			}
		}
	}
	if n := len(s.violations); n > 0 {
		s.tracef("%d violations:", n)
		for _, v := range s.violations {
			s.tracef("  %s", v)
		}
	}
}
