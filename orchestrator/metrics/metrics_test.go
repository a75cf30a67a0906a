package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/orchestrator/metrics"
	"github.com/natstx/natstx/participants"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestMetricsCountWhatTheEngineAndTheParticipantsDid runs a committed and an
// aborted transaction on a real embedded NATS server, then scrapes /metrics
// over HTTP: the counters say what happened, labelled by outcome and by
// participant; /healthz answers, /readyz follows the engine.
func TestMetricsCountWhatTheEngineAndTheParticipantsDid(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eng, err := orchestrator.New(nc, orchestrator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rt, err := participants.New(nc, participants.Config{Name: "stock", Handler: participants.HandlerFuncs{
		PrepareFunc: func(_ context.Context, _ participants.Tx, p []byte) error {
			if string(p) == "no" {
				return errors.New("out of stock")
			}
			return nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	reg := metrics.NewRegistry(metrics.NewEngineCollector(eng), metrics.NewParticipantCollector(rt))
	web := httptest.NewServer(metrics.Handler(reg, eng.Ready, false))
	defer web.Close()

	if code, body := get(t, web.URL+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz while running: %d %q", code, body)
	}
	for _, payload := range []string{"yes", "no"} {
		if _, err := eng.Execute(ctx, orchestrator.Request{Participants: []orchestrator.Participant{{Name: "stock", Payload: []byte(payload)}}}); err != nil {
			t.Fatal(err)
		}
	}
	code, body := get(t, web.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"natstx_transactions_begun_total 2",
		`natstx_transactions_ended_total{outcome="committed"} 1`,
		`natstx_transactions_ended_total{outcome="aborted"} 1`,
		"natstx_transactions_in_flight 0",
		"natstx_oldest_in_flight_seconds 0",
		`natstx_phase_seconds_count{phase="decide"} 2`,
		`natstx_phase_seconds_count{phase="complete"} 2`,
		`natstx_participant_commands_total{op="prepare",participant="stock"} 2`,
		`natstx_participant_commands_total{op="commit",participant="stock"} 1`,
		`natstx_participant_handler_errors_total{participant="stock"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want+" ") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "natstx_transactions_begun_total 0") {
		t.Errorf("a counter reads 0")
	}
	if code, body := get(t, web.URL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, _ := get(t, web.URL+"/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof served without asking: %d", code)
	}
	eng.Stop()
	if code, body := get(t, web.URL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not running") {
		t.Fatalf("/readyz after Stop: %d %q", code, body)
	}
}
