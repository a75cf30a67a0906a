package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/participants/sim"
)

func TestDemoSagaJSONReportsCompletedAndCompensatedSagas(t *testing.T) {
	stdout, stderr, code := run(t, 3*time.Minute, "demo", "--saga", "--json")
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	// The keys of the two-phase commit demo, all of them.
	var plain map[string]any
	out2pc, _, _ := run(t, 2*time.Minute, "demo", "--json", "--count", "20")
	if err := json.Unmarshal([]byte(out2pc), &plain); err != nil {
		t.Fatalf("2pc demo: %v\n%s", err, out2pc)
	}
	for k := range plain {
		if k == "problems" {
			continue
		}
		if _, ok := s[k]; !ok {
			t.Fatalf("the saga demo lacks key %q of the 2pc demo: %s", k, stdout)
		}
	}
	report.Counts(t, "demo --saga: "+strings.TrimSpace(stdout))
	if s["violations"].(float64) != 0 || s["in_doubt"].(float64) != 0 {
		t.Fatalf("violations: %s", stdout)
	}
	if s["committed"].(float64) == 0 || s["aborted"].(float64) == 0 {
		t.Fatalf("want both completed and compensated sagas at the default settings: %s", stdout)
	}
	if s["committed"].(float64)+s["aborted"].(float64) != s["transactions"].(float64) {
		t.Fatalf("completed + compensated != sagas: %s", stdout)
	}

	// As text: a head line, a line per saga, and last the 2PC demo's
	// summary line, completed sagas counted as committed and compensated
	// ones as aborted.
	stdout, stderr, code = run(t, 2*time.Minute, "demo", "--saga", "--count", "20", "--concurrency", "5")
	if code != 0 {
		t.Fatalf("text: exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if !strings.HasPrefix(lines[0], "natstx demo: 20 sagas (reserve, charge, ship), 5 at once") {
		t.Fatalf("head line %q", lines[0])
	}
	var completed, compensated int
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "saga ") && strings.Contains(l, " completed in "):
			completed++
		case strings.HasPrefix(l, "saga ") && strings.Contains(l, " compensated in "):
			compensated++
		}
	}
	if completed+compensated != 20 {
		t.Fatalf("%d saga lines, want 20:\n%s", completed+compensated, stdout)
	}
	var n, committed, aborted, violations int
	last := lines[len(lines)-1]
	if _, err := fmt.Sscanf(last, "atomicity: %d transactions, %d committed, %d aborted, %d violations", &n, &committed, &aborted, &violations); err != nil ||
		n != 20 || committed != completed || aborted != compensated || violations != 0 {
		t.Fatalf("last line %q (%v); want 20 transactions, %d committed and %d aborted as the saga lines say, 0 violations:\n%s", last, err, completed, compensated, stdout)
	}
}

func TestParseStepFlag(t *testing.T) {
	for _, c := range []struct {
		in                 string
		name, participant  string
		action, compensate string
		err                string
	}{
		{in: "a=inv", name: "a", participant: "inv"},
		{in: `a=inv:{"x":"1:2"}`, name: "a", participant: "inv", action: `{"x":"1:2"}`},
		{in: `a=inv:{"x":1}:{"y":"a:b"}`, name: "a", participant: "inv", action: `{"x":1}`, compensate: `{"y":"a:b"}`},
		{in: `a=inv:"text":7`, name: "a", participant: "inv", action: `"text"`, compensate: `7`},
		{in: "a", err: "no '='"},
		{in: "a=", err: "participant"},
		{in: "a=inv:{", err: "action is not a JSON value"},
		{in: `a=inv:{"x":1}x`, err: "unexpected"},
		{in: `a=inv:1:2:3`, err: "unexpected"},
	} {
		st, err := parseStepFlag(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		got := []string{st.Name, st.Participant, string(st.Action), string(st.Compensation)}
		if want := []string{c.name, c.participant, c.action, c.compensate}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q, want %q", c.in, got, want)
		}
	}
}

func TestTxSagaBeginStatusListRetryResolveAbort(t *testing.T) {
	_, url := startServer(t)
	loyalty := startSim(t, url, sim.Config{Name: "loyalty"})

	// Steps by flags: completed, each step applied.
	stdout, stderr, code := run(t, 30*time.Second, "tx", "begin", "--nats", url, "--saga", "--id", "saga-1",
		"--step", `grant=loyalty:{"points":5}:{"points":5}`, "--step", `note=loyalty:"hello: world"`)
	if code != 0 || !strings.HasPrefix(stdout, "saga saga-1 completed") || !strings.Contains(stdout, "grant  loyalty  done  attempts 1") {
		t.Fatalf("begin: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// --timeout bounds the wait, not the saga: without --deadline it has none.
	if strings.Contains(stdout, ", deadline ") {
		t.Fatalf("saga-1, begun without --deadline, has a deadline:\n%s", stdout)
	}
	if !loyalty.StepDone("saga-1", "grant") || !loyalty.StepDone("saga-1", "note") {
		t.Fatal("saga-1 reported completed but its steps are not done at loyalty")
	}

	// A saga file whose second step has no participant running: the
	// compensation of that step never answers, the saga is stuck, visibly.
	dir := t.TempDir()
	file := filepath.Join(dir, "stuck.yaml")
	if err := os.WriteFile(file, []byte(`name: stuck
timeout: 200ms
retry: {max_attempts: 1}
compensation: {initial_interval: 100ms, max_interval: 1s, stuck_after_attempts: 2}
steps:
  - {name: grant, participant: loyalty, action: {points: 1}, compensation: {points: 1}}
  - {name: pick, participant: warehouse, action: {bin: 7}, compensation: {bin: 7}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = run(t, 30*time.Second, "tx", "begin", "--nats", url, "--saga", "--id", "saga-2", "--file", file, "--json")
	st := decodeStatus(t, stdout)
	if code != 1 || st.State != "compensation-stuck" || len(st.Steps) != 2 || !st.Steps[1].Stuck || st.Steps[1].CompensationAttempts < 2 ||
		st.Steps[1].LastError == "" || !strings.Contains(stderr, "saga saga-2 is compensation-stuck") {
		t.Fatalf("stuck saga: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// tx status answers from the coordinator's memory; tx list reads the
	// status bucket, which the coordinator writes without waiting: the
	// stuck state reaches it a write later.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		stdout, stderr, code := run(t, 30*time.Second, "tx", "list", "--nats", url, "--state", "compensation-stuck")
		if code == 0 && strings.Contains(stdout, "saga-2  compensation-stuck") {
			if strings.Contains(stdout, "saga-1") {
				t.Fatalf("list --state compensation-stuck shows the completed saga-1:\n%s", stdout)
			}
			break
		}
		if code != 0 || time.Now().After(deadline) {
			t.Fatalf("list --state compensation-stuck: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	}
	stdout = wantExit(t, 0, "saga saga-2", "tx", "status", "--nats", url, "saga-2")
	if !strings.Contains(stdout, "STUCK") || !strings.Contains(stdout, "last error") {
		t.Fatalf("status of a stuck saga:\n%s", stdout)
	}
	// Between two attempts, the stuck step's line says when it is retried
	// next: a time to the nanosecond, within its back-off (at most 1s).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		stdout = wantExit(t, 0, "saga saga-2", "tx", "status", "--nats", url, "saga-2")
		var pick string
		for _, l := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "pick ") {
				pick = l
			}
		}
		if _, next, ok := strings.Cut(pick, ", next retry "); ok {
			next, _, _ = strings.Cut(next, ",")
			at, err := time.Parse(time.RFC3339Nano, next)
			if err != nil || !strings.Contains(pick, "STUCK") || at.Before(time.Now().Add(-5*time.Second)) || at.After(time.Now().Add(5*time.Second)) {
				t.Fatalf("the stuck step's next retry %q (%v) in:\n%s", next, err, stdout)
			}
			break
		}
		if pick == "" || time.Now().After(deadline) {
			t.Fatalf("no step line of pick with a next retry in tx status:\n%s", stdout)
		}
	}
	// The stuck step alternates between an attempt out (nothing to retry
	// now: exit 1 saying so) and waiting for its back-off (retried at once).
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		stdout, stderr, code := run(t, 30*time.Second, "tx", "retry", "--nats", url, "saga-2", "--who", "ops", "--why", "warehouse is back")
		if code == 0 && strings.Contains(stdout, "saga saga-2") {
			break
		}
		if code != 1 || !strings.Contains(stderr, "no step is waiting to retry") || time.Now().After(deadline) {
			t.Fatalf("tx retry: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	}
	wantExit(t, 1, `saga saga-2 has no step "pack" (steps: grant, pick)`, "tx", "resolve", "--nats", url, "saga-2", "--step", "pack", "--note", "x")
	wantExit(t, 2, "--note", "tx", "resolve", "--nats", url, "saga-2", "--step", "pick")
	wantExit(t, 0, "compensated by hand, by ops: bin 7 put back", "tx", "resolve", "--nats", url, "saga-2", "--step", "pick", "--note", "bin 7 put back", "--who", "ops")
	deadline := time.Now().Add(20 * time.Second)
	for {
		stdout, _, _ = run(t, 30*time.Second, "tx", "status", "--nats", url, "saga-2", "--json")
		if st = decodeStatus(t, stdout); st.State == "compensated" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("saga-2 not compensated after the resolve: %s", stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Steps[1].Status != "compensated-by-hand" || !loyalty.StepCompensated("saga-2", "grant") {
		t.Fatalf("after the resolve: %s", stdout)
	}
	wantExit(t, 1, "saga saga-2 already finished: it is compensated; nothing to retry", "tx", "retry", "--nats", url, "saga-2")

	// abort: a saga going forward compensates; a 2PC transaction is not a
	// saga for retry.
	wantExit(t, 0, "saga saga-3 running", "tx", "begin", "--nats", url, "--saga", "--id", "saga-3", "--async",
		"--step", `grant=loyalty:{"points":2}:{"points":2}`, "--step", `pick=warehouse:{"bin":1}`)
	wantExit(t, 0, "aborted by ops: customer cancelled", "tx", "abort", "--nats", url, "saga-3", "--who", "ops", "--reason", "customer cancelled")
	wantExit(t, 0, "tx tx-1 committed", "tx", "begin", "--nats", url, "--id", "tx-1", "-p", "loyalty")
	wantExit(t, 1, "tx-1 is a two-phase commit transaction (committed), not a saga", "tx", "retry", "--nats", url, "tx-1")
	wantExit(t, 1, "no saga nope", "tx", "retry", "--nats", url, "nope")
	wantExit(t, 2, "--step and --deadline are for sagas", "tx", "begin", "--nats", url, "--step", "a=b")
	wantExit(t, 2, "--participant is for two-phase commit", "tx", "begin", "--nats", url, "--saga", "-p", "a")
	wantExit(t, 2, `step "b" depends on "c", which is not a step`, "tx", "begin", "--nats", url, "--saga", "--file", writeFile(t, dir, "bad.json",
		`{"name":"x","order":"graph","steps":[{"name":"b","participant":"p","depends_on":["c"]}]}`))
	wantExit(t, 2, `--state "stuck"`, "tx", "list", "--nats", url, "--state", "stuck")
}

// writeFile writes text to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBenchSagaOwnParticipantsJSON(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--protocol", "saga", "-n", "3", "--count", "300", "--jetstream-msgs", "1000", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	for _, k := range []string{"participants", "transactions", "committed", "aborted", "in_doubt", "timeouts", "seconds", "txn_per_sec",
		"mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "jetstream_msgs", "jetstream_msgs_per_sec", "jetstream_publish_errors"} {
		if _, ok := s[k].(float64); !ok {
			t.Fatalf("key %q missing or not a number in %s", k, stdout)
		}
	}
	t.Logf("bench --protocol saga: %s", strings.TrimSpace(stdout))
	if s["protocol"] != "saga" || s["transactions"].(float64) != 300 || s["committed"].(float64) != 300 || s["violations"].(float64) != 0 ||
		s["coordinator"] != "bench" || s["cut_short"] != false {
		t.Fatalf("no failures configured: want 300 completed sagas, 0 violations: %s", stdout)
	}

	// With failures, some sagas are compensated, none violates.
	stdout, stderr, code = run(t, 2*time.Minute, "bench", "--protocol", "saga", "-n", "2", "--count", "200", "--failure-rate", "0.2", "--seed", "7", "--jetstream-msgs", "0", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if s["committed"].(float64) == 0 || s["aborted"].(float64) == 0 || s["violations"].(float64) != 0 || s["committed"].(float64)+s["aborted"].(float64) != 200 {
		t.Fatalf("failure rate 0.2: want completed and compensated sagas adding up to 200, no violation: %s", stdout)
	}
	wantExit(t, 2, `--protocol "3pc": want 2pc or saga`, "bench", "--protocol", "3pc")
}

func TestCrashAtNamesSagaPoints(t *testing.T) {
	for _, ok := range []string{"after-prepare-apply:1", "after-commit-apply:2", "after-abort-apply:3", "after-action-apply:1", "after-compensate-apply:4"} {
		if f, err := crashAt(ok); err != nil || f == nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"after-action-apply:0", "after-refund-apply:1", "action:1", "after-action-apply"} {
		if _, err := crashAt(bad); err == nil || !strings.Contains(err.Error(), "after-compensate-apply:N") {
			t.Errorf("%s: err %v, want one naming the crash points", bad, err)
		}
	}
	wantExit(t, 2, "--in-doubt-after must not be 0", "participant", "sim", "--name", "x", "--in-doubt-after", "0", "--nats", deadURL(t))
	stdout, _, _ := run(t, 30*time.Second, "participant", "--help")
	for _, want := range []string{"after-action-apply:N", "after-compensate-apply:N", "--in-doubt-after"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("participant --help lacks %q", want)
		}
	}
}
