package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
)

// TestSecurityOperatorCLIUnderItsPermissions runs the operator's commands
// with operator.creds on the configuration of `natstx auth init`, as an
// operator would: `tx status`, `tx list`, `tx watch` and `tx abort` of a
// transaction held at prepare by a participant that does not answer. Each
// works under the operator's permissions, and the abort ends the
// transaction aborted at every participant. The operator is in an account
// of its own without JetStream: the server answers its $JS.API.INFO with
// "JetStream not enabled for account", and it reads the status bucket under
// messages.JetStreamAPIPrefix, where its account imports those reads, as
// the CLI does. The operator's credentials cannot publish a command, read
// the command stream under either API prefix, nor read the status bucket
// under $JS.API (the acceptance test,
// TestSecurityHostileIdentitiesChangeNothing, covers the other attempts).
func TestSecurityOperatorCLIUnderItsPermissions(t *testing.T) {
	dir := t.TempDir()
	auth := natstxAuthInit(t, dir, "inventory", "payment")
	creds := func(id string) string { return filepath.Join(auth, id+".creds") }
	srv, err := embedded.Start(embedded.Config{ConfigFile: filepath.Join(auth, "nats-auth.conf")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	url := srv.URL()
	ctx := ctxFor(t, 2*time.Minute)

	cnc, _, err := dialAs(url, creds("coordinator"), "")
	if err != nil {
		t.Fatalf("the coordinator's credentials: %v", err)
	}
	defer cnc.Close()
	eng, err := orchestrator.New(cnc, orchestrator.Config{PrepareTimeout: 3 * time.Minute,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("coordinator")})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Stop()

	// payment holds tx-held in its prepare, answering nothing, until
	// release is closed.
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	handlers := map[string]*gatedHandler{
		"inventory": newGatedHandler(release, nil, nil),
		"payment":   newGatedHandler(release, []string{"tx-held"}, nil),
	}
	runtimes := map[string]*participants.Runtime{}
	for _, name := range []string{"inventory", "payment"} {
		pnc, _, err := dialAs(url, creds("participant-"+name), messages.ParticipantInbox(name))
		if err != nil {
			t.Fatalf("participant %s's credentials: %v", name, err)
		}
		defer pnc.Close()
		rt, err := participants.New(pnc, participants.Config{Name: name, Handler: handlers[name], InDoubtAfter: time.Second,
			OpTimeout: 3 * time.Minute, AckWait: 4 * time.Minute, // payment's prepare is held
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctx); err != nil {
			t.Fatalf("participant %s: %v", name, err)
		}
		defer rt.Stop()
		runtimes[name] = rt
	}
	both := func(id string) orchestrator.Request {
		return orchestrator.Request{ID: id, Participants: []orchestrator.Participant{{Name: "inventory", Payload: []byte("1")}, {Name: "payment", Payload: []byte("1")}}}
	}
	if out, err := eng.Execute(ctx, both("tx-done")); err != nil || !out.Committed() {
		t.Fatalf("tx-done: %v, %v", out.State, err)
	}
	if _, err := eng.Begin(ctx, both("tx-held")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handlers["payment"].held:
	case <-ctx.Done():
		t.Fatal("payment never received the prepare of tx-held")
	}
	waitFor(t, 10*time.Second, "inventory prepared tx-held", func() bool {
		return runtimes["inventory"].State("tx-held") == participants.StatePrepared
	})

	// The operator's CLI, with the operator's credentials.
	bin := mustNatstx(t)
	opArgs := []string{"--nats", url, "--creds", creds("operator")}
	cliRuns := 0
	cli := func(args ...string) (string, string, int) {
		t.Helper()
		cliRuns++
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin, append(args, opArgs...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case cctx.Err() != nil:
			t.Fatalf("natstx %v did not finish; stderr:\n%s", args, stderr.String())
		case errors.As(err, &ee):
			return stdout.String(), stderr.String(), ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), 0
	}
	status := func(id string) messages.TxStatus {
		t.Helper()
		stdout, stderr, code := cli("tx", "status", id, "--json")
		var st messages.TxStatus
		if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil {
			t.Fatalf("natstx tx status %s as the operator: exit %d\nstdout:\n%s\nstderr:\n%s", id, code, stdout, stderr)
		}
		return st
	}
	if st := status("tx-done"); st.State != "committed" {
		t.Fatalf("tx status tx-done: %s, want committed", st.State)
	}
	if st := status("tx-held"); st.State != "preparing" || !slices.Contains(st.Waiting, "payment") {
		t.Fatalf("tx status tx-held: %s waiting for %v, want preparing, waiting for payment", st.State, st.Waiting)
	}
	stdout, stderr, code := cli("tx", "list", "--json")
	var list []messages.TxStatus
	if code != 0 || json.Unmarshal([]byte(stdout), &list) != nil {
		t.Fatalf("natstx tx list as the operator: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	listed := map[string]string{}
	for _, st := range list {
		listed[st.ID] = st.State
	}
	if listed["tx-done"] != "committed" || listed["tx-held"] != "preparing" {
		t.Fatalf("tx list: %v, want tx-done committed and tx-held preparing", listed)
	}
	if stdout, stderr, code = cli("tx", "list", "--state", "preparing"); code != 0 || !strings.Contains(stdout, "tx-held") || strings.Contains(stdout, "tx-done") {
		t.Fatalf("natstx tx list --state preparing as the operator: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	// The operator cannot forge a command nor read the command stream; the
	// forged commit of tx-held would show as a commit at inventory.
	onc, ov, err := dialAs(url, creds("operator"), messages.OperatorInbox())
	if err != nil {
		t.Fatalf("the operator's credentials: %v", err)
	}
	defer onc.Close()
	forged := messages.Command{TxID: "tx-held", Op: messages.OpCommit, Participant: "inventory", Attempt: 9, ReplyTo: messages.ReplySubject(eng.Instance(), "inventory")}
	denied := []struct {
		what string
		try  func() (string, error)
	}{
		{"publish a commit of tx-held to inventory", func() (string, error) {
			err := onc.PublishMsg(&nats.Msg{Subject: forged.Subject(), Header: nats.Header(forged.Header()), Data: forged.Payload})
			if err == nil {
				err = onc.Flush()
			}
			return forged.Subject(), err
		}},
		{"subscribe to every command", func() (string, error) {
			sub, err := onc.SubscribeSync(messages.CommandSubjects)
			if err == nil {
				err = onc.Flush()
				defer func() { _ = sub.Unsubscribe() }()
			}
			return messages.CommandSubjects, err
		}},
		{"read a message of the command stream under $JS.API", func() (string, error) {
			subject := "$JS.API.STREAM.MSG.GET." + messages.CommandStream
			_, err := onc.Request(subject, []byte(`{"seq":1}`), time.Second)
			return subject, err
		}},
		{"read a message of the command stream under " + messages.JetStreamAPIPrefix, func() (string, error) {
			subject := messages.JetStreamAPIPrefix + ".STREAM.MSG.GET." + messages.CommandStream
			_, err := onc.Request(subject, []byte(`{"seq":1}`), time.Second)
			return subject, err
		}},
		// Its account has no JetStream, and its permissions allow nothing
		// of the plain API but $JS.API.INFO: the status bucket is read
		// under the prefix only (below).
		{"read tx-held's status under $JS.API", func() (string, error) {
			subject := "$JS.API.DIRECT.GET." + messages.StatusStream + ".$KV." + messages.StatusBucket + ".tx-held"
			_, err := onc.Request(subject, nil, time.Second)
			return subject, err
		}},
	}
	refused := 0
	for _, d := range denied {
		subject, err := d.try()
		if ov.saw(subject, 2*time.Second) {
			refused++
			t.Logf("operator: %-45s refused by NATS", d.what)
			continue
		}
		t.Errorf("operator: %s: not refused by NATS (error %v)", d.what, err)
	}

	// What the CLI does to read the status bucket: $JS.API.INFO, which the
	// server answers itself, in an account without JetStream, with
	// "JetStream not enabled for account" (503, 10039); then the bucket
	// under the prefix.
	if m, err := onc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
		t.Errorf("operator: $JS.API.INFO: %v", err)
	} else {
		var info struct {
			Error *struct {
				Code        int    `json:"code"`
				ErrCode     int    `json:"err_code"`
				Description string `json:"description"`
			} `json:"error"`
		}
		if json.Unmarshal(m.Data, &info) != nil || info.Error == nil || info.Error.Code != 503 || info.Error.ErrCode != 10039 {
			t.Errorf("operator: $JS.API.INFO answered %s, want JetStream not enabled for account (503, 10039)", m.Data)
		} else {
			t.Logf("operator: $JS.API.INFO answered %q by the server: its account has no JetStream", info.Error.Description)
		}
	}
	direct := messages.JetStreamAPIPrefix + ".DIRECT.GET." + messages.StatusStream + ".$KV." + messages.StatusBucket + ".tx-held"
	if m, err := onc.Request(direct, nil, 5*time.Second); err != nil {
		t.Errorf("operator: %s: %v", direct, err)
	} else {
		var st messages.TxStatus
		if json.Unmarshal(m.Data, &st) != nil || st.ID != "tx-held" || st.State != "preparing" {
			t.Errorf("operator: %s answered %q (header %v), want tx-held's status, preparing", direct, m.Data, m.Header)
		}
	}
	if ov.saw(direct, 500*time.Millisecond) || ov.saw("$JS.API.INFO", 0) {
		t.Errorf("operator: reading the status bucket under the prefix hit its permissions: %v", ov.seen)
	}

	// tx watch, bounded by --for, from before the abort to tx-held's end.
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	defer wcancel()
	watch := exec.CommandContext(wctx, bin, append([]string{"tx", "watch", "--tx", "tx-held", "--json", "--for", "60s"}, opArgs...)...)
	wout, werr := &lockedWriter{}, &lockedWriter{}
	watch.Stdout, watch.Stderr = wout, werr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan error, 1)
	go func() { watchDone <- watch.Wait() }()
	defer func() {
		_ = watch.Process.Kill()
		<-watchDone
	}()
	waitFor(t, 30*time.Second, "tx watch started", func() bool { return strings.Contains(werr.String(), "watching transactions") },
		func() string { return "stderr: " + werr.String() })

	// watched is the states of tx-held the watch printed so far.
	watched := func() []string {
		var states []string
		sc := bufio.NewScanner(strings.NewReader(wout.String()))
		for sc.Scan() {
			var w messages.TxStatus
			if json.Unmarshal(sc.Bytes(), &w) == nil && w.ID == "tx-held" {
				states = append(states, w.State)
			}
		}
		return states
	}

	// tx abort of the held transaction: it stays aborting, waiting for
	// payment's acknowledgement, until payment answers.
	stdout, stderr, code = cli("tx", "abort", "tx-held", "--reason", "operator test", "--who", "ops", "--json")
	var ab messages.TxStatus
	if code != 0 || json.Unmarshal([]byte(stdout), &ab) != nil || ab.State != "aborting" {
		t.Fatalf("natstx tx abort tx-held as the operator: exit %d, state %q (want aborting: payment holds its prepare)\nstdout:\n%s\nstderr:\n%s", code, ab.State, stdout, stderr)
	}
	waitFor(t, 30*time.Second, "tx watch printed tx-held aborting", func() bool { return slices.Contains(watched(), "aborting") },
		func() string { return "stdout: " + wout.String() + " stderr: " + werr.String() })
	if st := status("tx-held"); st.State != "aborting" || !slices.Contains(st.Waiting, "payment") {
		t.Fatalf("tx status tx-held after the abort: %s waiting for %v, want aborting, waiting for payment", st.State, st.Waiting)
	}
	releaseOnce.Do(func() { close(release) })
	var st messages.TxStatus
	waitFor(t, 30*time.Second, "tx status says tx-held aborted", func() bool {
		st = status("tx-held")
		return st.State == "aborted"
	}, func() string { return st.State })
	if !strings.Contains(st.Reason, "operator test") {
		t.Errorf("tx-held's reason %q does not give the operator's", st.Reason)
	}
	if st := status("tx-done"); st.State != "committed" {
		t.Errorf("tx-done: %s after the abort of tx-held, want committed", st.State)
	}

	// The watch saw tx-held end aborted; then Ctrl-C stops it.
	waitFor(t, 30*time.Second, "tx watch printed tx-held aborted", func() bool { return slices.Contains(watched(), "aborted") },
		func() string { return "stdout: " + wout.String() + " stderr: " + werr.String() })
	if err := watch.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-watchDone:
		watchDone <- err // for the deferred wait
		if err != nil {
			t.Errorf("tx watch: %v after Ctrl-C; stderr:\n%s", err, werr.String())
		}
	case <-wctx.Done():
		t.Fatal("tx watch did not stop on Ctrl-C")
	}
	if strings.Contains(werr.String(), "Permissions Violation") || strings.Contains(werr.String(), "permissions violation") {
		t.Errorf("tx watch hit the operator's permissions: %s", werr.String())
	}

	waitFor(t, 30*time.Second, "every decision acknowledged", func() bool { return eng.Stats().InFlight == 0 })
	for name, h := range handlers {
		if com, ab := h.applied("tx-held"); com || !ab {
			t.Errorf("tx-held at %s: committed %v, aborted %v; want aborted", name, com, ab)
		}
		if com, _ := h.applied("tx-done"); !com {
			t.Errorf("tx-done at %s: not committed", name)
		}
	}
	t.Logf("operator: %d CLI runs (status, list, watch, abort) worked under operator.creds; watch saw tx-held %v; %d of %d forbidden attempts refused by NATS; tx-held aborted at every participant",
		cliRuns+1, watched(), refused, len(denied))
}
