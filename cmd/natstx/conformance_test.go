package main

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
	"github.com/natstx/natstx/participants/conformance/wire"
	"github.com/natstx/natstx/participants/services"
	"github.com/natstx/natstx/participants/sim"
	"github.com/natstx/natstx/participants/wmparticipant"
)

// caseLines returns the verdict of each case in the command's text output.
func caseLines(out string) map[string]string {
	got := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "PASS" || f[0] == "FAIL" || f[0] == "SKIP") {
			got[f[1]] = f[0]
		}
	}
	return got
}

// wantVerdicts checks that every case has the verdict want names, or PASS.
func wantVerdicts(t *testing.T, out string, want map[string]string) {
	t.Helper()
	got := caseLines(out)
	for _, c := range wire.Cases() {
		w := want[c.Name]
		if w == "" {
			w = "PASS"
		}
		if got[c.Name] != w {
			t.Errorf("case %s: %q, want %s", c.Name, got[c.Name], w)
		}
	}
}

// TestConformanceCommandPassesForTheGoRuntime runs `natstx conformance`
// against `natstx participant sim` as a process: everything passes but the
// crash case, skipped without --start.
func TestConformanceCommandPassesForTheGoRuntime(t *testing.T) {
	url := conformance.StartNATS(t).URL
	p := startProc(t, nil, "participant", "sim", "--name", "loyalty", "--nats", url, "--in-doubt-after", "1s", "--log-level", "warn")
	p.waitLine(t, "ready", 30*time.Second)
	stdout, stderr, code := run(t, 3*time.Minute, "conformance", "--participant", "loyalty", "--nats", url, "--in-doubt-wait", "20s")
	t.Logf("natstx conformance --participant loyalty (natstx participant sim):\n%s", stdout)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	wantVerdicts(t, stdout, map[string]string{"crash-redelivery": "SKIP"})
	if !strings.Contains(stdout, "no way to restart the participant") || !strings.Contains(stdout, "passed, 0 failed, 1 skipped") {
		t.Errorf("no note on the skipped crash case or no summary:\n%s", stdout)
	}
}

// TestConformanceCommandCrashesTheInventoryService runs every case against
// `natstx participant inventory`, started by the command with --start, so
// the crash case kills it with NATSTX_CRASH_AT between applying and
// replying, and restarts it.
func TestConformanceCommandCrashesTheInventoryService(t *testing.T) {
	url := conformance.StartNATS(t).URL
	start := strings.Join([]string{natstxBin, "participant", "inventory", "--db", filepath.Join(t.TempDir(), "inventory.db"),
		"--nats", url, "--ack-wait", "2s", "--in-doubt-after", "1s", "--log-level", "warn"}, " ")
	stdout, stderr, code := run(t, 4*time.Minute, "conformance", "--participant", "inventory", "--nats", url,
		"--payload", string(services.Payload("inventory", 0)), "--start", start, "--in-doubt-wait", "20s", "--crash-wait", "30s")
	t.Logf("natstx conformance --participant inventory --start ...:\n%s", stdout)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	wantVerdicts(t, stdout, nil)
	if !strings.Contains(stderr, "crashing after applying prepare") || !strings.Contains(stderr, "crashing after applying commit") {
		t.Errorf("the participant did not report its crashes; stderr:\n%s", stderr)
	}
}

// TestConformanceCommandPassesForTheWatermillAdapter runs the command
// against a participant mounted on a watermill Router: every case passes,
// the audit case too (Mount answers audits on the reply publisher's
// connection), but the crash case, skipped without --start.
func TestConformanceCommandPassesForTheWatermillAdapter(t *testing.T) {
	url := conformance.StartNATS(t).URL
	svc, err := sim.New(sim.Config{Name: "points", MaxLatency: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	proc, err := participants.NewProcessor(participants.Config{Name: "points", Handler: svc, SagaHandler: svc, InDoubtAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	subConn, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer subConn.Close()
	pubConn, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer pubConn.Close()
	logger := watermill.NopLogger{}
	sub, err := wmparticipant.NewSubscriber(subConn, "points", wmparticipant.Options{AckWait: 5 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := wmparticipant.NewReplyPublisher(pubConn, logger)
	if err != nil {
		t.Fatal(err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		t.Fatal(err)
	}
	wmparticipant.Mount(router, proc, sub, pub)
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	defer func() {
		_ = router.Close()
		<-done
	}()
	select {
	case <-router.Running():
	case <-time.After(15 * time.Second):
		t.Fatal("router not running after 15s")
	}
	stdout, stderr, code := run(t, 3*time.Minute, "conformance", "--participant", "points", "--nats", url, "--in-doubt-wait", "20s")
	t.Logf("natstx conformance --participant points (watermill):\n%s", stdout)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	wantVerdicts(t, stdout, map[string]string{"crash-redelivery": "SKIP", "audit": "PASS"})
}

// broken is a participant written against the wire protocol by hand, as
// one in another language would be, that gets idempotency wrong: it votes
// commit on every prepare (also after an abort, or past the deadline, or
// malformed) and acknowledges every commit, commit-one-phase, abort and
// saga command, even a commit it never prepared. It never asks about
// transactions in doubt.
func startBroken(t *testing.T, url, name string) {
	t.Helper()
	nc, js := connectJS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.ConsumerName(name), FilterSubject: messages.ParticipantFilter(name),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	answer := func(h map[string][]string) {
		get := func(k string) string {
			if v := h[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		attempt, _ := strconv.Atoi(get(messages.HeaderAttempt))
		r := messages.Reply{TxID: get(messages.HeaderTxID), Op: messages.Op(get(messages.HeaderOp)), Participant: name,
			Attempt: max(attempt, 1), Step: get(messages.HeaderStep), Result: messages.Ack}
		if r.Op == messages.OpPrepare {
			r.Result = messages.VoteCommit
		}
		if r.Validate() != nil {
			return
		}
		_ = nc.PublishMsg(&nats.Msg{Subject: get(messages.HeaderReplyTo), Header: nats.Header(r.Header())})
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		h := map[string][]string(m.Headers())
		if messages.IsBatch(h) {
			items, _ := messages.DecodeBatch(h, m.Data())
			for _, it := range items {
				answer(it.Header)
			}
		} else {
			answer(h)
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// TestConformanceCommandFailsABrokenParticipant shows the command naming
// the cases a participant that gets idempotency wrong fails, and exiting 1.
func TestConformanceCommandFailsABrokenParticipant(t *testing.T) {
	url := conformance.StartNATS(t).URL
	startBroken(t, url, "broken")
	stdout, stderr, code := run(t, 3*time.Minute, "conformance", "--participant", "broken", "--nats", url, "--in-doubt-wait", "2s", "--timeout", "3s")
	t.Logf("natstx conformance --participant broken:\n%s\nstderr: %s", stdout, stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantVerdicts(t, stdout, map[string]string{
		"abort-before-prepare":   "FAIL",
		"abort-idempotent":       "FAIL",
		"contradictions":         "FAIL",
		"deadline-passed":        "FAIL",
		"one-phase":              "FAIL",
		"malformed":              "FAIL",
		"batch":                  "FAIL",
		"audit":                  "SKIP",
		"saga-null-compensation": "FAIL",
		"saga-batch":             "FAIL",
		"crash-redelivery":       "SKIP",
		"in-doubt":               "FAIL",
		"in-doubt-after-commit":  "FAIL",
	})
	for _, want := range []string{
		"prepare of " /* abort-before-prepare's late prepare */, "answered vote-commit, want vote-abort",
		"commit of ", "answered ack, want failed",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("no %q in the report", want)
		}
	}
	if !strings.Contains(stderr, "conformance failed: abort-before-prepare, abort-idempotent, contradictions") {
		t.Errorf("stderr does not name the failed cases: %s", stderr)
	}
}

func TestConformanceCommandUsage(t *testing.T) {
	stdout := wantExit(t, 0, "", "conformance", "--list")
	for _, c := range wire.Cases() {
		if !strings.Contains(stdout, c.Name) {
			t.Errorf("--list lacks %s:\n%s", c.Name, stdout)
		}
	}
	wantExit(t, 2, "--participant is required", "conformance")
	wantExit(t, 2, "--participant", "conformance", "--participant", "a.b")
	wantExit(t, 2, "no case matches", "conformance", "--participant", "x", "--run", "nothing-like-this")
	wantExit(t, 1, "cannot reach NATS", "conformance", "--participant", "x", "--nats", deadURL(t))
	url := conformance.StartNATS(t).URL
	wantExit(t, 1, "has no durable consumer natstx-nobody", "conformance", "--participant", "nobody", "--nats", url, "--timeout", "1s")
}
