package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/integration/report"
)

// natstxBin is the natstx binary built once for the tests, which run it as a
// user would.
var natstxBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natstx-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	natstxBin = filepath.Join(dir, "natstx")
	build := exec.Command("go", "build", "-race", "-o", natstxBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building natstx:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the binary with args and returns stdout, stderr and the exit code.
func run(t *testing.T, limit time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, natstxBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("natstx %s did not finish within %v; stderr:\n%s", strings.Join(args, " "), limit, stderr.String())
	}
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestDemoJSONReportsAtomicity(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "demo", "--json")
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	for _, k := range []string{"transactions", "committed", "aborted", "violations"} {
		if _, ok := s[k].(float64); !ok {
			t.Fatalf("key %q missing or not a number in %s", k, stdout)
		}
	}
	report.Counts(t, "demo: "+strings.TrimSpace(stdout))
	if s["violations"].(float64) != 0 {
		t.Fatalf("violations: %s", stdout)
	}
	if s["committed"].(float64) == 0 || s["aborted"].(float64) == 0 {
		t.Fatalf("want both commits and aborts at the default settings: %s", stdout)
	}
	if s["committed"].(float64)+s["aborted"].(float64) != s["transactions"].(float64) {
		t.Fatalf("committed + aborted != transactions: %s", stdout)
	}
}

func TestDemoPrintsALinePerTransactionAndTheAtomicityLine(t *testing.T) {
	stdout, stderr, code := run(t, time.Minute, "demo", "--count", "20", "--concurrency", "5")
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	txLines := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "tx ") {
			txLines++
		}
	}
	if txLines != 20 {
		t.Fatalf("want 20 transaction lines, got %d:\n%s", txLines, stdout)
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "atomicity: 20 transactions, ") || !strings.HasSuffix(last, " 0 violations") {
		t.Fatalf("last line %q", last)
	}
}

func TestUsageErrorsExitTwoWithAClearMessage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"demo", "--success-rates", "1,2"}, "--success-rates"},
		{[]string{"demo", "--count", "0"}, "--count"},
		{[]string{"demo", "--log-level", "loud"}, "--log-level"},
		{[]string{"no-such-command"}, "unknown command"},
	} {
		_, stderr, code := run(t, 30*time.Second, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("natstx %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}
}
