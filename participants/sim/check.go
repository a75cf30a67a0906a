package sim

import (
	"fmt"
	"sort"
)

// Result is what the coordinator said of one transaction, for Check.
type Result struct {
	ID           string
	Participants []string
	// Decided is false when the client never learned a decision (it gave up
	// first); Committed is meaningful only when Decided.
	Decided   bool
	Committed bool
}

// Report is the verdict of Check.
type Report struct {
	Transactions, Committed, Aborted int
	// InDoubt counts transactions whose decision the client never learned.
	InDoubt int
	// Violations counts broken guarantees; Problems says what each one was.
	Violations int
	Problems   []string
}

// String is the report's one-line summary.
func (r Report) String() string {
	return fmt.Sprintf("atomicity: %d transactions, %d committed, %d aborted, %d in doubt, %d violations",
		r.Transactions, r.Committed, r.Aborted, r.InDoubt, r.Violations)
}

// Check verifies atomicity after quiescence: a committed transaction is
// applied by every one of its participants that is not read-only, an
// aborted one by none and left staged by none, and no service applied
// anything twice. A read-only service (Config.ReadOnly) must have voted
// read-only on every committed transaction it is in, and must never apply
// or stage any; a Commit or Abort called for a transaction it voted
// read-only on is a violation too (SecondPhaseAfterReadOnly). services maps
// participant names to the simulated services behind them.
func Check(results []Result, services map[string]*Service) Report {
	var r Report
	problem := r.problem
	for _, res := range results {
		r.count(res.Decided, res.Committed)
		for _, name := range res.Participants {
			svc := services[name]
			if svc == nil {
				problem("%s: participant %s has no simulated service to check", res.ID, name)
				continue
			}
			applied, staged := svc.Committed(res.ID), svc.Staged(res.ID)
			switch {
			case svc.ReadOnly() && applied:
				problem("%s: %s votes read-only but applied it", res.ID, name)
			case svc.ReadOnly() && staged:
				problem("%s: %s votes read-only but holds it prepared", res.ID, name)
			case svc.ReadOnly() && res.Decided && res.Committed && !svc.VotedReadOnly(res.ID):
				problem("%s committed but %s, read-only, never voted read-only on it", res.ID, name)
			case svc.ReadOnly():
				// Nothing applied, nothing held: all a read-only vote needs.
			case res.Decided && res.Committed && !applied:
				problem("%s committed but %s did not apply it (staged: %v)", res.ID, name, staged)
			case res.Decided && !res.Committed && applied:
				problem("%s aborted but %s applied it", res.ID, name)
			case res.Decided && !res.Committed && staged:
				problem("%s aborted but %s still holds it prepared", res.ID, name)
			}
		}
	}
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if d := services[n].DoubleApplies(); d > 0 {
			problem("%s applied %d transactions twice", n, d)
		}
		if d := services[n].SecondPhaseAfterReadOnly(); d > 0 {
			problem("%s was sent commit or abort %d times for transactions it voted read-only on", n, d)
		}
	}
	return r
}

// SagaStep is one step of a saga, for CheckSagas.
type SagaStep struct {
	Name        string
	Participant string
}

// SagaResult is how the coordinator said one saga ended, for CheckSagas.
type SagaResult struct {
	ID    string
	Steps []SagaStep
	// Decided is false when the client never learned how it ended;
	// Completed (every step done; else compensated) is meaningful only when
	// Decided.
	Decided   bool
	Completed bool
}

// CheckSagas verifies, after quiescence, that a completed saga has every
// step done by its participant, a compensated one none left done (each
// compensated or never done), and that no service applied anything twice.
// In the Report, Committed counts completed sagas and Aborted compensated
// ones.
func CheckSagas(results []SagaResult, services map[string]*Service) Report {
	var r Report
	problem := r.problem
	for _, res := range results {
		r.count(res.Decided, res.Completed)
		for _, st := range res.Steps {
			svc := services[st.Participant]
			if svc == nil {
				problem("saga %s: participant %s has no simulated service to check", res.ID, st.Participant)
				continue
			}
			done := svc.StepDone(res.ID, st.Name)
			switch {
			case res.Decided && res.Completed && !done:
				problem("saga %s completed but %s has step %s not done (compensated: %v)", res.ID, st.Participant, st.Name, svc.StepCompensated(res.ID, st.Name))
			case res.Decided && !res.Completed && done:
				problem("saga %s compensated but %s still has step %s done", res.ID, st.Participant, st.Name)
			}
		}
	}
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if d := services[n].DoubleApplies(); d > 0 {
			problem("%s applied %d operations twice", n, d)
		}
	}
	return r
}

// problem counts a violation and keeps its description (the first 50).
func (r *Report) problem(format string, args ...any) {
	r.Violations++
	if len(r.Problems) < 50 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// count counts one transaction or saga by how it ended.
func (r *Report) count(decided, committed bool) {
	r.Transactions++
	switch {
	case !decided:
		r.InDoubt++
	case committed:
		r.Committed++
	default:
		r.Aborted++
	}
}
