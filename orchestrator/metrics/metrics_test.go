package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/metrics"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
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
	sk := startStock(t, orchestrator.Config{NoOnePhase: true}, nil) // counts prepare, commit and abort
	ctx, eng, rt := sk.ctx, sk.eng, sk.rt
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
		`natstx_transactions_begun_total{protocol="2pc"} 2`,
		`natstx_transactions_begun_total{protocol="saga"} 0`,
		`natstx_transactions_aborted_total{cause="vote"} 1`,
		`natstx_phase_seconds_count{phase="write"} 1`,
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
	if strings.Contains(body, `natstx_transactions_begun_total{protocol="2pc"} 0`) {
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

// scrape reads /metrics into a map from each sample's name and labels, as
// the exposition format writes them, to its value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	code, body := get(t, url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// Scraped while transactions are still running, the counters add up:
// begun = committed + aborted + in flight, for transactions and for sagas,
// and the stall alarm shows the oldest one's age; scraped again once they
// ended, in flight is 0 and they are counted by outcome.
func TestMetricsScrapedDuringARunAddUp(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	sk := startStock(t, orchestrator.Config{PrepareTimeout: time.Minute}, release)
	ctx, eng, rt := sk.ctx, sk.eng, sk.rt
	reg := metrics.NewRegistry(metrics.NewEngineCollector(eng), metrics.NewParticipantCollector(rt))
	web := httptest.NewServer(metrics.Handler(reg, eng.Ready, false))
	defer web.Close()

	run := func(payload string) {
		if _, err := eng.Execute(ctx, orchestrator.Request{Participants: []orchestrator.Participant{{Name: "stock", Payload: []byte(payload)}}}); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		run("yes")
	}
	for range 3 {
		run("no")
	}
	def, err := saga.Parse([]byte("steps:\n  - name: reserve\n    participant: stock\n    action: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.ExecuteSaga(ctx, orchestrator.SagaRequest{Definition: def}); err != nil {
		t.Fatal(err)
	}
	var held []string
	for range 4 {
		id, err := eng.Begin(ctx, orchestrator.Request{Participants: []orchestrator.Participant{{Name: "stock", Payload: []byte("hold")}}})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, id)
	}
	time.Sleep(50 * time.Millisecond) // so that the oldest has an age

	m := scrape(t, web.URL)
	begun := m[`natstx_transactions_begun_total{protocol="2pc"}`] + m[`natstx_transactions_begun_total{protocol="saga"}`]
	ended := m[`natstx_transactions_ended_total{outcome="committed"}`] + m[`natstx_transactions_ended_total{outcome="aborted"}`] +
		m[`natstx_sagas_ended_total{outcome="completed"}`] + m[`natstx_sagas_ended_total{outcome="compensated"}`]
	inFlight := m["natstx_transactions_in_flight"]
	t.Logf("during the run: begun %g, ended %g, in flight %g", begun, ended, inFlight)
	if begun != 13 || inFlight != 4 || begun != ended+inFlight {
		t.Errorf("begun %g, ended %g, in flight %g: want 13 = 9 + 4", begun, ended, inFlight)
	}
	if m[`natstx_transactions_ended_total{outcome="committed"}`] != 5 || m[`natstx_transactions_aborted_total{cause="vote"}`] != 3 ||
		m[`natstx_sagas_ended_total{outcome="completed"}`] != 1 {
		t.Errorf("outcomes: %v", natstxOnly(m))
	}
	if m["natstx_oldest_in_flight_seconds"] < 0.05 {
		t.Errorf("natstx_oldest_in_flight_seconds = %g with 4 transactions held for 50ms", m["natstx_oldest_in_flight_seconds"])
	}

	free()
	for _, id := range held {
		if _, err := eng.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for eng.Stats().InFlight != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	m = scrape(t, web.URL)
	if m["natstx_transactions_in_flight"] != 0 || m[`natstx_transactions_ended_total{outcome="committed"}`] != 9 ||
		m[`natstx_transactions_begun_total{protocol="2pc"}`] != 12 || m[`natstx_transactions_begun_total{protocol="saga"}`] != 1 ||
		m["natstx_oldest_in_flight_seconds"] != 0 || m[`natstx_phase_seconds_count{phase="saga"}`] != 1 {
		t.Errorf("after the run: %v", natstxOnly(m))
	}
}

// natstxOnly keeps the engine's own samples of m, for messages.
func natstxOnly(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, "natstx_") && !strings.HasPrefix(k, "natstx_participant_") && !strings.Contains(k, "_bucket") {
			out[k] = v
		}
	}
	return out
}

// stock is a coordinator and a participant "stock" on a real embedded NATS
// server: stock's prepare votes no on the payload "no", and holds on "hold"
// until release is closed; its saga steps succeed.
type stock struct {
	ctx context.Context
	nc  *nats.Conn
	eng *orchestrator.Engine
	rt  *participants.Runtime
}

// startStock starts a stock for t, with cfg; everything stops when t ends
// (release is closed first).
func startStock(t *testing.T, cfg orchestrator.Config, release chan struct{}) stock {
	t.Helper()
	n := conformance.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	eng := n.StartEngine(t, cfg)
	rt := n.StartRuntime(t, participants.Config{Name: "stock", Handler: participants.HandlerFuncs{
		PrepareFunc: func(ctx context.Context, _ participants.Tx, p []byte) error {
			switch string(p) {
			case "no":
				return errors.New("out of stock")
			case "hold":
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}}, SagaHandler: participants.SagaHandlerFuncs{}})
	return stock{ctx: ctx, nc: n.Conn, eng: eng, rt: rt}
}

// TestRejectedRepliesAreCountedByParticipant: a participant "sloppy" that
// answers every command with a reply header Natstx-Version "1.0", which the
// coordinator cannot read, shows in natstx_replies_rejected_total under its
// name, with as many rejections as the engine counted (at least one, at
// most the replies it sent); "stock", which speaks the protocol right,
// does not show there.
func TestRejectedRepliesAreCountedByParticipant(t *testing.T) {
	sk := startStock(t, orchestrator.Config{PrepareTimeout: time.Second}, nil)
	ctx, nc, eng := sk.ctx, sk.nc, sk.eng
	web := httptest.NewServer(metrics.Handler(metrics.NewRegistry(metrics.NewEngineCollector(eng)), eng.Ready, false))
	defer web.Close()

	sent, stop := conformance.StartMalformedReplier(t, nc, "sloppy", conformance.VersionOneDotZero)

	out, err := eng.Execute(ctx, orchestrator.Request{Participants: []orchestrator.Participant{{Name: "stock", Payload: []byte("yes")}, {Name: "sloppy"}}})
	if err != nil {
		t.Fatal(err)
	}
	if out.Committed() || !out.TimedOut {
		t.Fatalf("outcome %s %q: want a timeout, sloppy's votes being unreadable", out.State, out.Reason)
	}
	stop() // no more replies from sloppy
	// A reply sent just before may still reach the engine: the metric is
	// the engine's count between what it was before and after the scrape.
	before := eng.Stats().RejectedReplies["sloppy"]
	m := scrape(t, web.URL)
	after := eng.Stats().RejectedReplies["sloppy"]
	got := m[`natstx_replies_rejected_total{participant="sloppy"}`]
	if got < 1 || got < float64(before) || got > float64(after) || got > float64(sent()) {
		t.Errorf(`natstx_replies_rejected_total{participant="sloppy"} = %g; want the engine's count (%d to %d), at least 1 and at most the %d replies sloppy sent`, got, before, after, sent())
	}
	if _, ok := m[`natstx_replies_rejected_total{participant="stock"}`]; ok {
		t.Errorf("stock's replies are counted as rejected: %v", natstxOnly(m))
	}
}
