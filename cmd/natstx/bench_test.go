package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/participants/sim"
)

func benchJSON(t *testing.T, stdout string) map[string]any {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	for _, k := range []string{"participants", "transactions", "committed", "aborted", "txn_per_sec",
		"p50_ms", "p99_ms", "p999_ms", "max_ms", "jetstream_msgs_per_sec"} {
		if _, ok := s[k].(float64); !ok {
			t.Fatalf("key %q missing or not a number in %s", k, stdout)
		}
	}
	if s["protocol"] != "2pc" {
		t.Fatalf("protocol: %v", s["protocol"])
	}
	if _, ok := s["violations"]; !ok {
		t.Fatalf("no violations key: %s", stdout)
	}
	return s
}

func TestBenchOwnParticipantsJSON(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--count", "300", "-n", "3", "--jetstream-msgs", "3000", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	s := benchJSON(t, stdout)
	t.Logf("bench: %s", strings.TrimSpace(stdout))
	if s["transactions"].(float64) != 300 || s["committed"].(float64) != 300 || s["violations"].(float64) != 0 || s["participants"].(float64) != 3 {
		t.Fatalf("no failures configured: want 300 committed, 0 violations: %s", stdout)
	}
	if s["txn_per_sec"].(float64) <= 0 || s["jetstream_msgs_per_sec"].(float64) <= 0 || s["p50_ms"].(float64) > s["p99_ms"].(float64) || s["p99_ms"].(float64) > s["max_ms"].(float64) {
		t.Fatalf("figures out of order: %s", stdout)
	}

	// With failures, some abort, none violates atomicity.
	stdout, stderr, code = run(t, 2*time.Minute, "bench", "--count", "200", "-n", "2", "--failure-rate", "0.3", "--jetstream-msgs", "0", "--json", "--seed", "7")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	s = benchJSON(t, stdout)
	if s["aborted"].(float64) == 0 || s["committed"].(float64) == 0 || s["violations"].(float64) != 0 ||
		s["committed"].(float64)+s["aborted"].(float64) != 200 {
		t.Fatalf("failure rate 0.3: want commits and aborts adding up to 200, no violation: %s", stdout)
	}
}

func TestBenchTextOpenLoopShowsHistogramAndNoProgressBarOffTerminal(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--duration", "1s", "--rate", "200", "-n", "1", "--jetstream-msgs", "2000")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"offered at 200/s", "latency ms: mean", "latency distribution (ms):", "raw JetStream async publish:", "atomicity: ", " 0 violations"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("text output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "\r") {
		t.Fatalf("a progress bar was drawn on a pipe:\n%q", stdout)
	}
}

func TestBenchDrivesRunningParticipants(t *testing.T) {
	_, url := startServer(t)
	a := startSim(t, url, sim.Config{Name: "svc-a"})
	startSim(t, url, sim.Config{Name: "svc-b"})
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--nats", url, "--participants", "svc-a,svc-b", "--count", "100", "--jetstream-msgs", "1000", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	s := benchJSON(t, stdout)
	if s["simulated"] != false || s["violations"] != nil || s["committed"].(float64) != 100 {
		t.Fatalf("running participants: want simulated false, violations null, 100 committed: %s", stdout)
	}
	if _, n, _ := a.Counts(); n != 100 {
		t.Fatalf("svc-a applied %d transactions, want 100", n)
	}
}

func TestBenchWrongInput(t *testing.T) {
	for _, c := range []struct {
		want string
		args []string
	}{
		{"--protocol \"3pc\": want 2pc or saga", []string{"bench", "--protocol", "3pc"}},
		{"give --count or --duration, not both", []string{"bench", "--count", "5", "--duration", "1s"}},
		{"give --concurrency (closed loop) or --rate (open loop), not both", []string{"bench", "--rate", "5", "--concurrency", "2"}},
		{"--failure-rate must be a probability", []string{"bench", "--failure-rate", "1.5"}},
		{"--participant-count must be from 1 to 64", []string{"bench", "-n", "0"}},
		{"--participants: ", []string{"bench", "--participants", "a,b c"}},
		{"unknown flag: --bogus", []string{"bench", "--bogus"}},
	} {
		wantExit(t, 2, c.want, c.args...)
	}
}

func TestBenchSyncAlwaysRunsAndSaysSo(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--count", "100", "-n", "2", "--sync", "always", "--jetstream-msgs", "1000", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	s := benchJSON(t, stdout)
	if s["sync"] != "always" || s["committed"].(float64) != 100 || s["violations"].(float64) != 0 {
		t.Fatalf("--sync always: %s", stdout)
	}
	stdout, _, code = run(t, time.Minute, "bench", "--count", "10", "--jetstream-msgs", "0", "--json")
	if code != 0 || benchJSON(t, stdout)["sync"] != "interval" {
		t.Fatalf("default sync: exit %d %s", code, stdout)
	}
	_, stderr, code = run(t, time.Minute, "bench", "--sync", "sometimes")
	if code != 2 || !strings.Contains(stderr, `"sometimes"`) || !strings.Contains(stderr, "always") {
		t.Fatalf("bad --sync: exit %d, stderr %s", code, stderr)
	}
}
