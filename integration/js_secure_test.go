package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator"
)

// launchJSParticipant starts the JavaScript example participant as
// startJSParticipant does, with env added, but does not wait for its ready
// line, which comes only once it consumes: under a participant's
// permissions, once the coordinator has created its consumer. ready gets
// true at the ready line, false if the process ends before it. Cleanup kills
// it.
func launchJSParticipant(t *testing.T, node string, env []string, args ...string) (p *proc, ready <-chan bool) {
	t.Helper()
	ensureJSModules(t)
	cmd := exec.Command(node, append([]string{filepath.Join(jsSDK, "examples", "participant.js")}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	p = &proc{cmd: cmd, stderr: &lockedWriter{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := make(chan bool, 1)
	go func() {
		// The seed's Service logs every call on stdout: read it all.
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if !sent && strings.Contains(sc.Text(), "(js) ready") {
				r <- true
				sent = true
			}
		}
		if !sent {
			r <- false
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(p.kill)
	return p, r
}

// runJSExample runs the JavaScript example participant with env added until
// it exits (it must, within a minute) and returns its exit code and
// standard error.
func runJSExample(t *testing.T, node string, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join(jsSDK, "examples", "participant.js")}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("the JavaScript participant %v did not exit within a minute:\n%s", args, out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	case err != nil:
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestJSParticipantSecure runs the JavaScript example participant as
// participant inventory under the identities of `natstx auth init`, on
// `natstx server --config configs/secure-single.yaml` (TLS, credentials;
// only the port changed): with participant-inventory.creds (NATSTX_CREDS)
// and the CA (--tls-ca), its replies on its own inbox prefix. Its identity
// is in the participants' account, which has no JetStream and imports
// natstx's JetStream API under messages.JetStreamAPIPrefix: the participant
// finds that out ($JS.API answers "JetStream not enabled for account"),
// says so, and makes every JetStream request under the prefix. It may not
// create its consumer: it is refused (under the prefix), waits, and
// consumes once the coordinator has created it for the first transaction.
// The operator begins transactions through the API with operator.creds,
// across inventory and the Go example payment service (`natstx participant
// payment` with its own credentials): those payment accepts commit, the one
// it refuses (no such account) aborts, at both; `natstx audit` as the
// operator finds every one alike at both participants. inventory's consumer
// stays the coordinator's, and the JavaScript participant meets no other
// refusal. Without credentials, or without the CA, it fails at start saying
// what to check.
func TestJSParticipantSecure(t *testing.T) {
	node := nodePath(t)
	ensureJSModules(t)
	dir := t.TempDir()
	auth := natstxAuthInit(t, dir, "inventory", "payment")
	creds := func(id string) string { return filepath.Join(auth, id+".creds") }
	ca := filepath.Join(writeTestCerts(t, dir), "ca.pem")
	port := freePorts(t, 1)[0]
	startServerIn(t, dir, 30*time.Second, "--config", repoConfig(t, "secure-single.yaml"), "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port))
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	// Without its identity, or without the CA, the participant cannot
	// start, and says what to check.
	for _, c := range []struct {
		what string
		env  []string
		args []string
		want string
	}{
		{"no credentials", nil, []string{"--tls-ca", ca}, "refused this identity"},
		{"no CA", []string{"NATSTX_CREDS=" + creds("participant-inventory")}, nil, "check --tls-ca"},
		{"a credentials file that is not there", []string{"NATSTX_CREDS=" + filepath.Join(auth, "nobody.creds")}, []string{"--tls-ca", ca}, "--creds (NATSTX_CREDS)"},
	} {
		args := append([]string{"--name", "inventory", "--nats", url, "--store", filepath.Join(dir, "refused.jsonl"), "--log-level", "warn"}, c.args...)
		code, out := runJSExample(t, node, append([]string{"NATSTX_CREDS=", "NATSTX_TLS_CA="}, c.env...), args...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("the JavaScript participant with %s: exit %d, want an error saying %q; output:\n%s", c.what, code, c.want, out)
			continue
		}
		t.Logf("with %s the JavaScript participant exits %d: %s", c.what, code, firstLine(out))
	}

	// The coordinator's view, to look at inventory's consumer.
	cjs, err := jetstream.New(secureClient(t, dir, url, "coordinator", ""))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 3*time.Minute)
	// The participants' account has no JetStream of its own: JetStream's
	// own API does not reach the command stream from there.
	pnc := secureClient(t, dir, url, "participant-inventory", messages.ParticipantInbox("inventory"))
	if imported, err := jsconnect.Imported(ctx, pnc); err != nil || !imported {
		t.Fatalf("participant-inventory's account imports natstx's JetStream API: %v, %v; want true (the accounts of natstx auth init)", imported, err)
	}
	pnc.Close()
	jsp, ready := launchJSParticipant(t, node, []string{"NATSTX_CREDS=" + creds("participant-inventory"), "NATSTX_TLS_CA="},
		"--name", "inventory", "--nats", url, "--tls-ca", ca, "--store", filepath.Join(dir, "inventory.jsonl"),
		"--in-doubt-after", "2000", "--log-level", "info")
	refusal := "creating the durable consumer was refused by the NATS permissions"
	waitFor(t, 30*time.Second, "the JavaScript participant refused its consumer and waiting", func() bool { return strings.Contains(jsp.stderr.String(), refusal) },
		func() string { return "stderr:\n" + jsp.stderr.String() })
	if !strings.Contains(jsp.stderr.String(), `"inbox_prefix":"`+messages.ParticipantInbox("inventory")+`"`) {
		t.Errorf("the JavaScript participant does not log the inbox prefix %s:\n%s", messages.ParticipantInbox("inventory"), jsp.stderr)
	}
	if !strings.Contains(jsp.stderr.String(), `"api_prefix":"`+messages.JetStreamAPIPrefix+`"`) {
		t.Errorf("the JavaScript participant does not log the JetStream API prefix %s:\n%s", messages.JetStreamAPIPrefix, jsp.stderr)
	}
	// Its attempt to create its consumer went under the prefix.
	ownCreate := messages.JetStreamAPIPrefix + ".CONSUMER.CREATE." + messages.CommandStream + "." + messages.ConsumerName("inventory") + "."
	if !strings.Contains(jsp.stderr.String(), ownCreate) {
		t.Errorf("the JavaScript participant's refused create is not under %s:\n%s", ownCreate, jsp.stderr)
	}
	select {
	case ok := <-ready:
		t.Fatalf("the JavaScript participant was ready (%v) before its consumer existed:\n%s", ok, jsp.stderr)
	default:
	}
	if _, err := cjs.Consumer(ctx, messages.CommandStream, messages.ConsumerName("inventory")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("inventory's consumer before any transaction: %v, want not found", err)
	}

	startProc(t, []string{"NATSTX_CREDS=" + creds("participant-payment"), "NATSTX_TLS_CA=" + ca},
		"payment", "--db", filepath.Join(dir, "payment.db"), "--nats", url, "--log-level", "warn")
	client, err := orchestrator.NewClient(secureClient(t, dir, url, "operator", messages.OperatorInbox()))
	if err != nil {
		t.Fatal(err)
	}
	begin := func(id, account string, wait bool) messages.TxStatus {
		t.Helper()
		st, err := client.Begin(ctx, messages.BeginRequest{ID: id, Wait: wait, TimeoutMs: 60_000, Participants: []messages.ParticipantSpec{
			{Name: "inventory", Payload: []byte(`{"item":"widget","qty":1}`)},
			{Name: "payment", Payload: fmt.Appendf(nil, `{"account":%q,"amount":10}`, account)},
		}})
		if err != nil {
			t.Fatalf("begin %s as the operator: %v", id, err)
		}
		return st
	}
	// The first transaction has the coordinator create inventory's consumer;
	// the participant then consumes.
	begin("sec-1", "alice", false)
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("the JavaScript participant exited:\n%s", jsp.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the JavaScript participant not consuming 60s after the first transaction began:\n%s", jsp.stderr)
	}
	want := map[string]string{"sec-1": "committed"}
	for i := 2; i <= 5; i++ {
		id := fmt.Sprintf("sec-%d", i)
		want[id] = "committed"
		if st := begin(id, "bob", true); st.State != "committed" && st.State != "committing" {
			t.Errorf("%s: %s (%s), want committed", id, st.State, st.Reason)
		}
	}
	// payment refuses an account it does not have: the transaction aborts,
	// and inventory, which voted commit, aborts too.
	want["sec-no"] = "aborted"
	if st := begin("sec-no", "nobody", true); st.State != "aborted" && st.State != "aborting" {
		t.Errorf("sec-no: %s (%s), want aborted", st.State, st.Reason)
	}
	final := map[string]messages.TxStatus{}
	waitFor(t, 60*time.Second, "every transaction final", func() bool {
		for id := range want {
			st, err := client.Status(ctx, id)
			if err != nil || (st.State != "committed" && st.State != "aborted") {
				return false
			}
			final[id] = st
		}
		return true
	}, func() string { return fmt.Sprint(final) })
	for id, w := range want {
		st := final[id]
		if st.State != w {
			t.Errorf("%s: %s, want %s", id, st.State, w)
		}
		votes := map[string]string{}
		for _, p := range st.Participants {
			votes[p.Name] = p.Vote
			if !p.Acked {
				t.Errorf("%s: %s did not acknowledge the decision", id, p.Name)
			}
		}
		wantPayment := "yes"
		if w == "aborted" {
			wantPayment = "no"
		}
		// Once payment votes no, the abort may go out before inventory's
		// vote comes in.
		if (votes["inventory"] != "yes" && (w != "aborted" || votes["inventory"] != "pending")) || votes["payment"] != wantPayment {
			t.Errorf("%s: votes %v, want inventory yes and payment %s", id, votes, wantPayment)
		}
		if w == "aborted" && !strings.Contains(st.Reason+fmt.Sprint(st.Participants), "no account") {
			t.Errorf("%s aborted for %q, want payment's refusal (no account)", id, st.Reason)
		}
	}

	// natstx audit, as the operator: both participants' records agree with
	// every outcome.
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	audit := exec.CommandContext(actx, mustNatstx(t), "audit", "--json", "--nats", url, "--timeout", "20s")
	audit.Env = append(os.Environ(), "NATSTX_CREDS="+creds("operator"), "NATSTX_TLS_CA="+ca)
	out, err := audit.Output()
	var rep orchestrator.AuditReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		t.Fatalf("natstx audit --json as the operator: %v, output %q (%v)", jerr, out, err)
	}
	for _, p := range rep.Problems {
		t.Error("audit problem:", p)
	}
	if rep.Transactions != len(want) || rep.Committed != len(want)-1 || rep.Aborted != 1 || rep.InDoubt != 0 || rep.Violations != 0 {
		t.Errorf("audit %+v; want %d transactions, %d committed, 1 aborted, none in doubt, 0 violations", rep, len(want), len(want)-1)
	}

	// inventory's consumer is the coordinator's: a pull consumer with its
	// settings, created by the coordinator only (the participant's one
	// attempt was refused).
	cons, err := cjs.Consumer(ctx, messages.CommandStream, messages.ConsumerName("inventory"))
	if err != nil {
		t.Fatalf("inventory's consumer: %v", err)
	}
	if c, w := cons.CachedInfo().Config, orchestrator.ParticipantConsumerConfig("inventory"); c.DeliverSubject != "" || c.FilterSubject != w.FilterSubject ||
		c.AckWait != w.AckWait || c.MaxAckPending != w.MaxAckPending || c.Description != w.Description {
		t.Errorf("inventory's consumer is not the coordinator's: %+v", c)
	}

	// A graceful stop, with the participant's counts.
	if err := jsp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-jsp.done:
		jsp.done = nil
		if err != nil {
			t.Fatalf("the JavaScript participant did not stop cleanly: %v\n%s", err, jsp.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the JavaScript participant did not stop within 30s after SIGTERM:\n%s", jsp.stderr)
	}
	stderr := jsp.stderr.String()
	if strings.Contains(stderr, "created the durable consumer") {
		t.Errorf("the JavaScript participant created its consumer:\n%s", stderr)
	}
	// The one refusal it meets: creating its own consumer, at start (under
	// the prefix). A JetStream request without it would be refused too.
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(strings.ToLower(line), "permissions violation") && !strings.Contains(line, ownCreate) {
			t.Errorf("the JavaScript participant hit its permissions: %s", line)
		}
	}
	stats := regexp.MustCompile(`participant inventory stopped: (\d+) prepares, (\d+) commits, (\d+) aborts, (\d+) duplicates, (\d+) rejected`).FindStringSubmatch(stderr)
	if stats == nil {
		t.Fatalf("no stop line from the JavaScript participant:\n%s", stderr)
	}
	count := func(i int) int { v, _ := strconv.Atoi(stats[i]); return v }
	if count(1) < len(want) || count(2) < len(want)-1 || count(3) < 1 || count(5) != 0 {
		t.Errorf("the JavaScript participant: %s; want %d prepares, %d commits, 1 abort, none rejected", stats[0], len(want), len(want)-1)
	}
	report.Counts(t, fmt.Sprintf("under natstx auth init over TLS: %s; audit: %d transactions, %d committed, %d aborted, %d in doubt, %d violations",
		strings.TrimPrefix(stats[0], "participant inventory stopped: "), rep.Transactions, rep.Committed, rep.Aborted, rep.InDoubt, rep.Violations))
}

// firstLine is the first line of s.
func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
