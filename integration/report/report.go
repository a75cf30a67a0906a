// Package report records the counts a test reports for the record: a fault
// run's transactions, committed, aborted, in doubt and violations, a
// security test's attempts and refusals. Every package's tests report them
// through Counts, so that they reach the CI log even when the test passes:
// `make test` runs the tests through gotestsum, whose output shows a passing
// test's log only when verbose, sets $NATSTX_TEST_COUNTS to a file, and
// prints that file after the run, before the "N passed" line.
package report

import (
	"fmt"
	"os"
	"testing"
)

// envCounts names the environment variable that holds the path of the file
// Counts appends to; unset or empty, Counts only logs.
const envCounts = "NATSTX_TEST_COUNTS"

// Counts logs line, one line of counts, with t.Log, and appends it as
// "TestName: line" to the file that $NATSTX_TEST_COUNTS names, if set
// (created if need be). A failure to write that file fails t (t.Errorf); the
// test goes on.
func Counts(t testing.TB, line string) {
	t.Helper()
	t.Log(line)
	path := os.Getenv(envCounts)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("%s: %v", envCounts, err)
		return
	}
	_, err = fmt.Fprintf(f, "%s: %s\n", t.Name(), line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Errorf("%s: %v", envCounts, err)
	}
}
