package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/metrics"
	"github.com/natstx/natstx/participants"
)

// TestParticipantLatencyAndOutcomesMatchARealRun runs a committed and an
// aborted transaction through a coordinator and a participant on a real
// embedded NATS server, then sends the participant a duplicate commit and a
// commit it never prepared, and scrapes /metrics: the command latency
// histograms count each operation's commands and the barrier outcomes
// count what the record made of them, as the participant's Stats say.
func TestParticipantLatencyAndOutcomesMatchARealRun(t *testing.T) {
	sk := startStock(t, orchestrator.Config{NoOnePhase: true}, nil) // prepare, commit and abort
	ctx, nc, eng, rt := sk.ctx, sk.nc, sk.eng, sk.rt
	web := httptest.NewServer(metrics.Handler(metrics.NewRegistry(metrics.NewParticipantCollector(rt)), eng.Ready, false))
	defer web.Close()

	var committed string
	for _, payload := range []string{"yes", "no"} {
		out, err := eng.Execute(ctx, orchestrator.Request{Participants: []orchestrator.Participant{{Name: "stock", Payload: []byte(payload)}}})
		if err != nil {
			t.Fatal(err)
		}
		if payload == "yes" {
			committed = out.ID
		}
	}
	// Straight into the command stream: a commit sent again (answered from
	// the record) and a commit of a transaction never prepared (rejected).
	replies, err := nc.SubscribeSync(messages.ReplyFilter("test"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{committed, "ghost"} {
		c := messages.Command{TxID: id, Op: messages.OpCommit, Participant: "stock", Attempt: 9, ReplyTo: messages.ReplySubject("test", "stock")}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: c.Subject(), Header: nats.Header(c.Header())}); err != nil {
			t.Fatal(err)
		}
		if _, err := replies.NextMsg(15 * time.Second); err != nil {
			t.Fatalf("reply to the commit of %s: %v", id, err)
		}
	}

	code, body := get(t, web.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	want := []string{
		`natstx_participant_command_seconds_count{op="prepare",participant="stock"} 2`,
		`natstx_participant_command_seconds_count{op="commit",participant="stock"} 3`,
		`natstx_participant_command_seconds_count{op="action",participant="stock"} 0`,
		`natstx_participant_command_seconds_bucket{op="prepare",participant="stock",le="+Inf"} 2`,
		`natstx_participant_barrier_outcomes_total{outcome="prepared",participant="stock"} 1`,
		`natstx_participant_barrier_outcomes_total{outcome="voted-no",participant="stock"} 1`,
		`natstx_participant_barrier_outcomes_total{outcome="committed",participant="stock"} 1`,
		`natstx_participant_barrier_outcomes_total{outcome="duplicate",participant="stock"} 1`,
		`natstx_participant_barrier_outcomes_total{outcome="rejected",participant="stock"} 1`,
		`natstx_participant_barrier_outcomes_total{outcome="done",participant="stock"} 0`,
	}
	// Whether the coordinator also sends abort to the participant that
	// voted abort is the engine's business: here the metrics say what
	// Stats says.
	st := rt.Stats()
	want = append(want,
		`natstx_participant_barrier_outcomes_total{outcome="aborted",participant="stock"} `+strconv.FormatUint(st.Outcomes[participants.OutcomeAborted], 10),
		`natstx_participant_command_seconds_count{op="abort",participant="stock"} `+strconv.FormatUint(st.Latency[messages.OpAbort].Count, 10))
	for _, w := range want {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if n := strings.Count(body, "natstx_participant_barrier_outcomes_total{"); n != len(participants.Outcomes()) {
		t.Errorf("%d barrier outcome series, want %d", n, len(participants.Outcomes()))
	}
}
