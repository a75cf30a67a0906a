package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants/sim"
)

func TestAuditCountsAndExitCodes(t *testing.T) {
	_, url := startServer(t)
	startSim(t, url, sim.Config{Name: "inventory"})
	startSim(t, url, sim.Config{Name: "payment", SuccessRate: sim.Rate(0.6), Seed: 7})
	for i := 0; i < 12; i++ {
		// Aborts exit 1 from tx begin: that is fine here.
		run(t, 30*time.Second, "tx", "begin", "--nats", url, "--id", fmt.Sprintf("audit-%d", i), "-p", "inventory={}", "-p", "payment={}")
	}
	var rep map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		stdout, stderr, code := run(t, 30*time.Second, "audit", "--nats", url, "--json")
		if code != 0 {
			t.Fatalf("audit: exit %d\n%s\n%s", code, stdout, stderr)
		}
		rep = map[string]float64{}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("audit --json: %v\n%s", err, stdout)
		}
		if rep["in_doubt"] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	report.Counts(t, fmt.Sprintf("audit: %v", rep))
	if rep["transactions"] != 12 || rep["committed"]+rep["aborted"] != 12 || rep["violations"] != 0 || rep["committed"] == 0 || rep["aborted"] == 0 {
		t.Fatalf("audit report %v", rep)
	}
	stdout := wantExit(t, 0, "audit: 12 transactions", "audit", "--nats", url)
	if !strings.Contains(stdout, "0 violations") {
		t.Fatalf("text audit: %s", stdout)
	}
	// A status that says committed where the services aborted: exit 1.
	_, js := connectJS(t, url)
	kv, err := js.KeyValue(context.Background(), messages.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	forged := messages.TxStatus{ID: "audit-forged", State: "committed", StartedAt: time.Now(),
		Participants: []messages.ParticipantStatus{{Name: "inventory"}}}
	data, _ := json.Marshal(forged)
	if _, err := kv.Put(context.Background(), forged.ID, data); err != nil {
		t.Fatal(err)
	}
	wantExit(t, 1, "audit-forged is committed but inventory holds it none", "audit", "--nats", url)
	wantExit(t, 2, "--window must not be negative", "audit", "--nats", url, "--window", "-1s")
	wantExit(t, 2, "unknown flag", "audit", "--nats", url, "--bogus")
	wantExit(t, 1, "", "audit", "--nats", deadURL(t))
}
