package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
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

// TestServerNotReadyWithoutItsStreams: natstx server's /readyz answers 200
// while the command stream and the buckets exist, and 503 naming the
// stream once one is deleted behind the coordinator's back.
func TestServerNotReadyWithoutItsStreams(t *testing.T) {
	serverMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, url := startServer(t, "--metrics-listen", serverMetrics)
	if code, body := scrape(t, "http://"+serverMetrics+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("server /readyz with its streams: %d %q", code, body)
	}
	_, js := connectJS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, messages.CommandStream); err != nil {
		t.Fatal(err)
	}
	// The probe looks at the streams again once its cache (5s) runs out.
	deadline := time.Now().Add(orchestrator.DefaultReadyCacheFor + 10*time.Second)
	for {
		code, body := scrape(t, "http://"+serverMetrics+"/readyz")
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, messages.CommandStream) || !strings.Contains(body, "missing") {
				t.Fatalf("/readyz 503 does not name the missing stream: %q", body)
			}
			return
		}
		if code != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("/readyz with %s deleted: %d %q", messages.CommandStream, code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
