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
// applied by every one of its participants, an aborted one by none and left
// staged by none, and no service applied anything twice. services maps
// participant names to the simulated services behind them.
func Check(results []Result, services map[string]*Service) Report {
	var r Report
	problem := func(format string, args ...any) {
		r.Violations++
		if len(r.Problems) < 50 {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	for _, res := range results {
		r.Transactions++
		switch {
		case !res.Decided:
			r.InDoubt++
		case res.Committed:
			r.Committed++
		default:
			r.Aborted++
		}
		for _, name := range res.Participants {
			svc := services[name]
			if svc == nil {
				problem("%s: participant %s has no simulated service to check", res.ID, name)
				continue
			}
			applied, staged := svc.Committed(res.ID), svc.Staged(res.ID)
			switch {
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
	}
	return r
}
