package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/natstx/natstx/messages"
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

// TestBenchReadOnlyParticipantsCommitAndPassTheCheck: with --read-only 1
// the last of three simulated participants votes read-only; every
// transaction still commits, the atomicity check (no apply, no second phase
// for it) passes, and the JSON says "read_only": 1. With -n 1 --read-only 1
// (commit-one-phase, answered ack without a commit) the same holds, and the
// text output names the read-only participant.
func TestBenchReadOnlyParticipantsCommitAndPassTheCheck(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--count", "200", "-n", "3", "--read-only", "1", "--jetstream-msgs", "0", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	s := benchJSON(t, stdout)
	if s["transactions"].(float64) != 200 || s["committed"].(float64) != 200 || s["violations"].(float64) != 0 || s["read_only"] != float64(1) {
		t.Fatalf("--read-only 1: want 200 committed, 0 violations, \"read_only\": 1: %s", stdout)
	}
	stdout, stderr, code = run(t, 2*time.Minute, "bench", "--count", "50", "-n", "1", "--read-only", "1", "--jetstream-msgs", "0", "--no-progress")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"1 simulated participants (1 voting read-only)", "atomicity: 50 transactions, 50 committed, 0 aborted, 0 violations"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("-n 1 --read-only 1: text output lacks %q:\n%s", want, stdout)
		}
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
	if r, ok := s["resends"]; !ok || r != nil {
		t.Fatalf("through the API: want resends null (the server's are its own), got %v: %s", r, stdout)
	}
	if r, ok := s["begins_waited"]; !ok || r != nil {
		t.Fatalf("through the API: want begins_waited null (the server's are its own), got %v: %s", r, stdout)
	}
	if _, n, _ := a.Counts(); n != 100 {
		t.Fatalf("svc-a applied %d transactions, want 100", n)
	}
}

// TestBenchAgainstAServerBoundsOnlyTheWait: bench against a server waits
// for each outcome up to --prepare-timeout plus --quiesce-timeout, and that
// bound is not the transaction's or saga's deadline: a transaction's begin
// request carries --prepare-timeout alone, a saga's no timeout.
func TestBenchAgainstAServerBoundsOnlyTheWait(t *testing.T) {
	_, url := startServer(t)
	startSim(t, url, sim.Config{Name: "svc-a"})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Second subscribers see each begin request the coordinator gets.
	sent := spyOn[messages.BeginRequest](t, nc, messages.APIBegin)
	sagaSent := spyOn[messages.SagaBeginRequest](t, nc, messages.APISagaBegin)
	for _, protocol := range []string{"2pc", "saga"} {
		stdout, stderr, code := run(t, 2*time.Minute, "bench", "--nats", url, "--protocol", protocol, "--participants", "svc-a", "--count", "5",
			"--prepare-timeout", "2s", "--quiesce-timeout", "20s", "--jetstream-msgs", "0", "--json")
		if code != 0 {
			t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", protocol, code, stdout, stderr)
		}
	}
	for range 5 {
		if req := sent(); req.TimeoutMs != 2000 || req.CallerTimeoutMs != 0 {
			t.Fatalf("bench sent timeout_ms %d, caller_timeout_ms %d; want timeout_ms 2000 (--prepare-timeout) and no caller_timeout_ms", req.TimeoutMs, req.CallerTimeoutMs)
		}
	}
	for range 5 {
		if req := sagaSent(); req.TimeoutMs != 0 {
			t.Fatalf("bench --protocol saga sent timeout_ms %d; want none: the 22s wait is not the saga's deadline", req.TimeoutMs)
		}
	}
}

// TestBenchPayloadPerRunningParticipant: --payload gives a running
// service the payload it reads; the inventory service sells what exists
// and refuses what does not, so the outcomes show the payload arrived.
func TestBenchPayloadPerRunningParticipant(t *testing.T) {
	_, url := startServer(t)
	inv := startProc(t, nil, "participant", "inventory", "--db", filepath.Join(t.TempDir(), "inventory.db"), "--nats", url)
	inv.waitLine(t, "ready", 30*time.Second)
	for _, c := range []struct {
		payload            string
		committed, aborted float64
	}{
		{`inventory={"item":"widget","qty":1}`, 20, 0},
		{`inventory={"item":"unobtainium","qty":1}`, 0, 20},
	} {
		stdout, stderr, code := run(t, 2*time.Minute, "bench", "--nats", url, "--participants", "inventory", "--payload", c.payload, "--count", "20", "--jetstream-msgs", "0", "--json")
		if code != 0 {
			t.Fatalf("--payload %s: exit %d\nstdout:\n%s\nstderr:\n%s", c.payload, code, stdout, stderr)
		}
		if s := benchJSON(t, stdout); s["committed"] != c.committed || s["aborted"] != c.aborted {
			t.Fatalf("--payload %s: want %v committed, %v aborted: %s", c.payload, c.committed, c.aborted, stdout)
		}
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
		{`--payload "inventory": want NAME=PAYLOAD, NAME one of --participants (a,b)`, []string{"bench", "--participants", "a,b", "--payload", "inventory"}},
		{`--payload "c={}": want NAME=PAYLOAD, NAME one of --participants (a,b)`, []string{"bench", "--participants", "a,b", "--payload", "c={}"}},
		{"--payload gives a's payload twice", []string{"bench", "--participants", "a,b", "--payload", "a=1", "--payload", "a=2"}},
		{"unknown flag: --bogus", []string{"bench", "--bogus"}},
		{"--read-only must be from 0 to --participant-count (3) (got 4)", []string{"bench", "--read-only", "4"}},
		{"--read-only must be from 0 to --participant-count (2) (got -1)", []string{"bench", "-n", "2", "--read-only", "-1"}},
		{"--read-only applies to bench's own coordinator and simulated participants; not with --nats", []string{"bench", "--nats", "nats://127.0.0.1:4222", "--read-only", "1"}},
		{"--read-only makes some of bench's simulated participants vote read-only; --participants are running participants", []string{"bench", "--participants", "a,b", "--read-only", "1"}},
		{"--read-only is a vote on prepare, which sagas do not have", []string{"bench", "--protocol", "saga", "--read-only", "1"}},
		{"--memory-every must not be negative (got -1)", []string{"bench", "--memory-every", "-1"}},
		{"--memory-metrics needs --memory-every", []string{"bench", "--memory-metrics", "http://127.0.0.1:9464/metrics"}},
		{"--memory-metrics needs --memory-every", []string{"bench", "--memory-every", "0", "--memory-metrics", "http://127.0.0.1:9464/metrics"}},
		{`--memory-metrics "ftp://127.0.0.1/metrics": want an http:// or https:// URL`, []string{"bench", "--memory-every", "10", "--memory-metrics", "ftp://127.0.0.1/metrics"}},
		{`--memory-metrics "127.0.0.1:9464/metrics": want an http:// or https:// URL`, []string{"bench", "--memory-every", "10", "--memory-metrics", "127.0.0.1:9464/metrics"}},
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
	if s["sync"] != "always" || s["group_commit"] != true || s["committed"].(float64) != 100 || s["violations"].(float64) != 0 {
		t.Fatalf("--sync always (group commit on by default with it): %s", stdout)
	}
	stdout, _, code = run(t, 2*time.Minute, "bench", "--count", "100", "-n", "2", "--sync", "always", "--group-commit", "off", "--jetstream-msgs", "0", "--json")
	if s := benchJSON(t, stdout); code != 0 || s["group_commit"] != false || s["committed"].(float64) != 100 {
		t.Fatalf("--sync always --group-commit off: exit %d %s", code, stdout)
	}
	stdout, _, code = run(t, time.Minute, "bench", "--count", "10", "--jetstream-msgs", "0", "--json")
	if s := benchJSON(t, stdout); code != 0 || s["sync"] != "interval" || s["group_commit"] != false {
		t.Fatalf("default sync, no group commit: exit %d %s", code, stdout)
	}
	if _, ok := benchJSON(t, stdout)["memory"]; ok {
		t.Fatalf("no --memory-every, yet a memory key: %s", stdout)
	}
	stdout, _, code = run(t, time.Minute, "bench", "--count", "50", "--group-commit", "on", "--jetstream-msgs", "0")
	if code != 0 || !strings.Contains(stdout, "(sync interval), group commit,") {
		t.Fatalf("--group-commit on says so: exit %d %s", code, stdout)
	}
	_, stderr, code = run(t, time.Minute, "bench", "--group-commit", "maybe")
	if code != 2 || !strings.Contains(stderr, `--group-commit "maybe"`) {
		t.Fatalf("bad --group-commit: exit %d, stderr %s", code, stderr)
	}
	_, stderr, code = run(t, time.Minute, "bench", "--sync", "sometimes")
	if code != 2 || !strings.Contains(stderr, `"sometimes"`) || !strings.Contains(stderr, "always") {
		t.Fatalf("bad --sync: exit %d, stderr %s", code, stderr)
	}
}

// benchMemorySample is one sample of the "memory" key of bench's JSON.
type benchMemorySample struct {
	Transactions int64   `json:"transactions"`
	ElapsedS     float64 `json:"elapsed_s"`
	RSSBytes     *int64  `json:"rss_bytes"`
	HeapBytes    *int64  `json:"heap_bytes"`
	Error        string  `json:"error"`
}

// benchMemoryJSON checks the keys of bench's JSON and returns its "memory"
// key with the samples' transaction counts checked: 0, every, 2*every, ...,
// wantSamples of them.
func benchMemoryJSON(t *testing.T, stdout string, every int64, wantSamples int) (source string, samples []benchMemorySample, growth *float64) {
	t.Helper()
	benchJSON(t, stdout)
	var s struct {
		Memory *struct {
			Every     int64               `json:"every"`
			Source    string              `json:"source"`
			Samples   []benchMemorySample `json:"samples"`
			RSSGrowth *float64            `json:"rss_growth"`
		} `json:"memory"`
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil || s.Memory == nil {
		t.Fatalf("no memory key (%v): %s", err, stdout)
	}
	m := s.Memory
	if m.Every != every || len(m.Samples) != wantSamples {
		t.Fatalf("memory: want every %d and %d samples: %s", every, wantSamples, stdout)
	}
	for i, x := range m.Samples {
		if x.Transactions != int64(i)*every || x.ElapsedS < 0 {
			t.Fatalf("memory sample %d: want %d transactions, elapsed_s not negative: %s", i, int64(i)*every, stdout)
		}
	}
	return m.Source, m.Samples, m.RSSGrowth
}

// TestBenchMemorySamplesItsOwnProcess: --memory-every samples bench's own
// RSS and heap when the load starts and after every N transactions, in the
// JSON and as a table with the growth line in text.
func TestBenchMemorySamplesItsOwnProcess(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--count", "300", "-n", "2", "--memory-every", "100", "--jetstream-msgs", "0", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	source, samples, growth := benchMemoryJSON(t, stdout, 100, 4)
	if source != "self" {
		t.Fatalf("source %q, want self", source)
	}
	for i, x := range samples {
		if x.HeapBytes == nil || *x.HeapBytes <= 0 {
			t.Fatalf("sample %d: no heap: %s", i, stdout)
		}
		if runtime.GOOS == "linux" && (x.RSSBytes == nil || *x.RSSBytes <= 0 || x.Error != "") {
			t.Fatalf("sample %d: no RSS on Linux: %s", i, stdout)
		}
		if runtime.GOOS != "linux" && (x.RSSBytes != nil || !strings.Contains(x.Error, "RSS unavailable")) {
			t.Fatalf("sample %d: an RSS on %s: %s", i, runtime.GOOS, stdout)
		}
	}
	if runtime.GOOS == "linux" && (growth == nil || *growth <= 0 ||
		*growth != float64(*samples[3].RSSBytes)/float64(*samples[1].RSSBytes)) {
		t.Fatalf("rss_growth: want the last RSS over the second's: %s", stdout)
	}

	stdout, stderr, code = run(t, 2*time.Minute, "bench", "--count", "200", "-n", "1", "--memory-every", "100", "--jetstream-msgs", "0")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	_, table, ok := strings.Cut(stdout, "atomicity: 200 transactions")
	if !ok || !strings.Contains(table, "memory of bench's own process") || !strings.Contains(table, "transactions    elapsed") {
		t.Fatalf("no memory table after the summary:\n%s", stdout)
	}
	_, rows, _ := strings.Cut(table, "heap in use\n")
	var counts []string
	for _, l := range strings.Split(rows, "\n") {
		f := strings.Fields(l)
		if runtime.GOOS != "linux" && len(f) == 5 && f[2] == "-" { // RSS unavailable
			f = slices.Insert(f, 3, "MiB")
		}
		if len(f) == 6 && strings.HasSuffix(f[1], "s") && f[3] == "MiB" && f[5] == "MiB" {
			counts = append(counts, f[0])
		}
	}
	if strings.Join(counts, " ") != "0 100 200" {
		t.Fatalf("sample rows: want 0, 100, 200 transactions, each with RSS and heap, got %q:\n%s", counts, stdout)
	}
	if runtime.GOOS == "linux" && (!(strings.Contains(table, "\nRSS grew ") || strings.Contains(table, "\nRSS shrank ")) ||
		!strings.Contains(table, "% (ratio ") || !strings.Contains(table, " from transaction 100 to 200\n")) {
		t.Fatalf("no RSS growth line:\n%s", stdout)
	}
}

// serveRegistry serves reg's /metrics on a free 127.0.0.1 port for the
// test's time, and returns its URL.
func serveRegistry(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("metrics server: %v", err)
		}
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

// TestBenchMemoryFromMetricsEndpoint: with --memory-metrics, bench reads RSS
// and heap from a coordinator's Prometheus endpoint ('natstx server
// --metrics-listen'); a scrape that fails, or lacks a metric, is reported
// with the URL and the metric, the run still reports, and exits 1.
func TestBenchMemoryFromMetricsEndpoint(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the process collector reports process_resident_memory_bytes on Linux")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, url := startServer(t, "--metrics-listen", addr)
	endpoint := "http://" + addr + "/metrics"
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--nats", url, "-n", "2", "--count", "200", "--memory-every", "100",
		"--memory-metrics", endpoint, "--jetstream-msgs", "0", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	source, samples, growth := benchMemoryJSON(t, stdout, 100, 3)
	if source != endpoint {
		t.Fatalf("source %q, want %s", source, endpoint)
	}
	for i, x := range samples {
		if x.RSSBytes == nil || *x.RSSBytes <= 0 || x.HeapBytes == nil || *x.HeapBytes <= 0 || x.Error != "" {
			t.Fatalf("sample %d: want RSS and heap from %s: %s", i, endpoint, stdout)
		}
	}
	if growth == nil || *growth <= 0 {
		t.Fatalf("no rss_growth: %s", stdout)
	}

	// A real registry without the process collector: no RSS there.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	noRSS := serveRegistry(t, reg)
	stdout, stderr, code = run(t, 2*time.Minute, "bench", "-n", "1", "--count", "200", "--memory-every", "100",
		"--memory-metrics", noRSS, "--jetstream-msgs", "0", "--json")
	if code != 1 || !strings.Contains(stderr, "3 of 3 memory samples could not be read") {
		t.Fatalf("a scrape without RSS: want exit 1 and the missing samples counted: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	_, samples, growth = benchMemoryJSON(t, stdout, 100, 3)
	for i, x := range samples {
		if x.RSSBytes != nil || x.HeapBytes == nil || *x.HeapBytes <= 0 ||
			!strings.Contains(x.Error, noRSS) || !strings.Contains(x.Error, "process_resident_memory_bytes") {
			t.Fatalf("sample %d: want the heap, no RSS, and an error naming %s and the metric: %s", i, noRSS, stdout)
		}
	}
	if growth != nil {
		t.Fatalf("rss_growth without RSS: %v", *growth)
	}

	// Nothing listening: every sample missing, the run's figures reported.
	dead := fmt.Sprintf("http://127.0.0.1:%d/metrics", freePort(t))
	stdout, stderr, code = run(t, 2*time.Minute, "bench", "-n", "1", "--count", "100", "--memory-every", "100",
		"--memory-metrics", dead, "--jetstream-msgs", "0")
	if code != 1 || !strings.Contains(stdout, "atomicity: 100 transactions, 100 committed") ||
		!strings.Contains(stdout, "missing (not read, so not shown):") || !strings.Contains(stderr, "could not read process_resident_memory_bytes and go_memstats_heap_inuse_bytes from "+dead) {
		t.Fatalf("a dead endpoint: want exit 1, the run's figures and the missing samples named: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestBenchWritesAnExecutionTraceOfTheLoad: --exec-trace writes a Go
// execution trace (with --cpu-profile beside it) that holds the engine's
// goroutines; a file it cannot create is an error naming the flag.
func TestBenchWritesAnExecutionTraceOfTheLoad(t *testing.T) {
	dir := t.TempDir()
	tr, cpu := filepath.Join(dir, "bench.trace"), filepath.Join(dir, "cpu.prof")
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--count", "200", "-n", "2", "--jetstream-msgs", "0",
		"--exec-trace", tr, "--cpu-profile", cpu)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(tr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("go 1.")) || !bytes.Contains(b[:32], []byte(" trace\x00")) {
		t.Fatalf("%s does not start as a Go execution trace: %q", tr, b[:min(len(b), 32)])
	}
	if !bytes.Contains(b, []byte("natstx/orchestrator.")) {
		t.Fatalf("the trace (%d bytes) names no function of the engine", len(b))
	}
	if fi, err := os.Stat(cpu); err != nil || fi.Size() == 0 {
		t.Fatalf("no CPU profile beside the trace: %v", err)
	}

	_, stderr, code = run(t, time.Minute, "bench", "--count", "10", "-n", "1", "--jetstream-msgs", "0",
		"--exec-trace", filepath.Join(dir, "missing", "bench.trace"))
	if code == 0 || !strings.Contains(stderr, "--exec-trace:") {
		t.Fatalf("a trace file in a missing directory: exit %d, stderr:\n%s", code, stderr)
	}
}

// TestBenchCountsItsCoordinatorsResends: participants slower than the
// coordinator's first resend (500ms) make bench's own coordinator send
// commands again, which the JSON counts and the text names.
func TestBenchCountsItsCoordinatorsResends(t *testing.T) {
	stdout, stderr, code := run(t, 2*time.Minute, "bench", "-n", "2", "--count", "4", "-c", "2",
		"--latency-min", "800ms", "--latency-max", "800ms", "--jetstream-msgs", "0", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	s := benchJSON(t, stdout)
	// Each of the 16 commands takes 800ms to answer: each is sent again at
	// least once.
	if r, ok := s["resends"].(float64); !ok || r < 16 {
		t.Fatalf("resends %v, want at least 16 (each command answered after 800ms): %s", s["resends"], stdout)
	}
	// Two in flight are far under the admission's floor: slow votes hold
	// no begin back.
	if w, ok := s["begins_waited"].(float64); !ok || w != 0 {
		t.Fatalf("begins_waited %v, want 0: %s", s["begins_waited"], stdout)
	}
	stdout, stderr, code = run(t, 2*time.Minute, "bench", "-n", "1", "--count", "2", "-c", "1",
		"--latency-min", "800ms", "--latency-max", "800ms", "--jetstream-msgs", "0")
	if code != 0 || !strings.Contains(stdout, "commands sent again for want of an answer") {
		t.Fatalf("exit %d, no resend line in the text:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
