package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/participants/sim"
)

func TestPublishDrivesAParticipantByHand(t *testing.T) {
	_, url := startServer(t)
	svc := startSim(t, url, sim.Config{Name: "inventory"})
	startSim(t, url, sim.Config{Name: "refuser", SuccessRate: sim.Rate(0)})

	stdout := wantExit(t, 0, "reply from inventory", "publish", "--nats", url, "-p", "inventory", "--tx", "hand-1", "--op", "prepare", "--payload", `{"sku":"A"}`)
	if !strings.Contains(stdout, "published prepare for hand-1 to natstx.cmd.inventory.hand-1 (stream NATSTX_CMD") || !strings.Contains(stdout, ": vote-commit") {
		t.Fatalf("prepare:\n%s", stdout)
	}
	if !svc.Staged("hand-1") {
		t.Fatal("the participant voted commit but did not stage hand-1")
	}
	stdout = wantExit(t, 0, "", "publish", "--nats", url, "-p", "inventory", "--tx", "hand-1", "--op", "commit", "--json")
	var r map[string]any
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("--json: %v\n%s", err, stdout)
	}
	if r["result"] != "ack" || r["op"] != "commit" || r["participant"] != "inventory" || r["stream"] != "NATSTX_CMD" {
		t.Fatalf("commit --json: %v", r)
	}
	if !svc.Committed("hand-1") {
		t.Fatal("acked commit, but hand-1 is not committed")
	}
	// The same command again is dropped by JetStream's de-duplication; a new
	// attempt goes through and is answered from the participant's record.
	wantExit(t, 1, "send it again with --attempt 2", "publish", "--nats", url, "-p", "inventory", "--tx", "hand-1", "--op", "commit")
	wantExit(t, 0, ": ack", "publish", "--nats", url, "-p", "inventory", "--tx", "hand-1", "--op", "commit", "--attempt", "2")

	// A payload from a file; a participant that refuses votes abort, with a
	// reason, and that is still a reply: exit 0.
	payload := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(payload, []byte(`{"qty":3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	wantExit(t, 0, ": vote-abort: ", "publish", "--nats", url, "-p", "refuser", "--tx", "hand-2", "--op", "prepare", "--payload-file", payload)

	// Nobody consumes commands for "ghost": no reply within --timeout.
	start := time.Now()
	wantExit(t, 1, "no reply within 1s: is participant ghost running", "publish", "--nats", url, "-p", "ghost", "--tx", "hand-3", "--op", "prepare", "--timeout", "1s")
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("a missing reply took %v to report", el)
	}
}

func TestPublishWithoutCoordinatorAndWrongInput(t *testing.T) {
	port := freePort(t)
	n := startProc(t, nil, "nats", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", t.TempDir())
	n.waitLine(t, "listening on", 20*time.Second)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	wantExit(t, 1, "no JetStream stream stores natstx.cmd.inventory.x1", "publish", "--nats", url, "-p", "inventory", "--tx", "x1", "--op", "abort")

	for _, c := range []struct {
		want string
		args []string
	}{
		{"required flag(s) \"op\", \"participant\", \"tx\" not set", []string{"publish"}},
		{"--op \"rollback\": want prepare, commit, abort or commit-one-phase", []string{"publish", "-p", "a", "--tx", "t", "--op", "rollback"}},
		{"only prepare and commit-one-phase carry a payload", []string{"publish", "-p", "a", "--tx", "t", "--op", "commit", "--payload", "{}"}},
		{"transaction ID \"t.1\" has '.'", []string{"publish", "-p", "a", "--tx", "t.1", "--op", "commit"}},
		{"--payload-file: open", []string{"publish", "-p", "a", "--tx", "t", "--op", "prepare", "--payload-file", "/nonexistent/p.json"}},
		{"--attempt 0", []string{"publish", "-p", "a", "--tx", "t", "--op", "commit", "--attempt", "0"}},
		{"unknown flag: --bogus", []string{"publish", "--bogus"}},
	} {
		wantExit(t, 2, c.want, append(c.args, "--nats", url)...)
	}
}
