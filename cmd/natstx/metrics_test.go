package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// scrape GETs url, retrying while the endpoint is not up yet (bounded).
func scrape(t *testing.T, url string) (int, string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if rerr != nil {
				t.Fatal(rerr)
			}
			return resp.StatusCode, string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServerAndParticipantServeMetrics: natstx server and natstx
// participant with --metrics-listen serve Prometheus metrics that count a
// transaction run through them, /healthz and /readyz, and pprof only with
// --pprof.
func TestServerAndParticipantServeMetrics(t *testing.T) {
	serverMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, url := startServer(t, "--metrics-listen", serverMetrics, "--pprof")
	partMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startProc(t, nil, "participant", "sim", "--name", "loyalty", "--nats", url, "--metrics-listen", partMetrics)
	wantExit(t, 0, "tx m-1 committed", "tx", "begin", "--nats", url, "--id", "m-1", "-p", `loyalty={"points":5}`)

	if code, body := scrape(t, "http://"+serverMetrics+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("server /readyz: %d %q", code, body)
	}
	_, body := scrape(t, "http://"+serverMetrics+"/metrics")
	for _, want := range []string{`natstx_transactions_begun_total{protocol="2pc"} 1`, `natstx_transactions_ended_total{outcome="committed"} 1`, "natstx_transactions_in_flight 0"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("server /metrics lacks %q", want)
		}
	}
	if code, _ := scrape(t, "http://"+serverMetrics+"/debug/pprof/"); code != http.StatusOK {
		t.Errorf("server with --pprof: /debug/pprof/ %d", code)
	}
	_, body = scrape(t, "http://"+partMetrics+"/metrics")
	if !strings.Contains(body, `natstx_participant_commands_total{op="commit",participant="loyalty"} 1`+"\n") {
		t.Errorf("participant /metrics lacks its commit:\n%s", body)
	}
	if code, _ := scrape(t, "http://"+partMetrics+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("participant without --pprof: /debug/pprof/ %d", code)
	}
	if code, body := scrape(t, "http://"+partMetrics+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("participant /healthz: %d %q", code, body)
	}
	wantExit(t, 2, "--pprof needs --metrics-listen", "server", "--nats", url, "--pprof")
}
