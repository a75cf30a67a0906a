package participants_test

import (
	"context"
	"strings"
	"testing"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/internal/securetest"
)

// securedEnv is an env on a server run as `natstx auth init` configures
// it: the coordinator in the NATSTX account (e.nc, e.js), the participant,
// connecting with its generated credentials, in the participants' account,
// with the permissions of its name: it may not create its consumer.
func securedEnv(t *testing.T) (*env, *securetest.Server) {
	t.Helper()
	s := securetest.Start(t, svc)
	e := &env{t: t, nc: s.Coordinator, js: s.JS, replyFilter: messages.ReplyFilter("test")}
	var err error
	if e.replies, err = e.nc.SubscribeSync(e.replyFilter); err != nil {
		t.Fatal(err)
	}
	return e, s
}

// TestRuntimeWaitsForTheCoordinatorsConsumer: with its generated
// credentials, in the participants' account (which has no JetStream of its
// own and imports natstx's under messages.JetStreamAPIPrefix), a Runtime
// whose consumer is not there starts all the same (its create, under the
// prefix, is refused), and consumes once the coordinator has created the
// consumer; it leaves the coordinator's settings alone.
func TestRuntimeWaitsForTheCoordinatorsConsumer(t *testing.T) {
	e, s := securedEnv(t)
	nc, v := s.Participant(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if imported, err := jsconnect.Imported(ctx, nc); err != nil || !imported {
		t.Fatalf("the participant's account: imported %v, %v; want natstx's JetStream API imported", imported, err)
	}
	log, logs := observed()
	h := newRecorder()
	rt := e.start(nc, testConfig(h, log)) // fails the test if Start fails
	if logs.FilterMessageSnippet("consuming once the coordinator creates it").Len() != 1 {
		t.Errorf("no line says the runtime waits for its consumer: %v", logs.All())
	}

	s.CreateConsumer(t)
	e.expect(e.cmd("tx1", messages.OpPrepare, 1), messages.VoteCommit, "")
	e.expect(e.cmd("tx1", messages.OpCommit, 1), messages.Ack, "")
	if rt.State("tx1") != participants.StateCommitted {
		t.Errorf("tx1 %v, want committed", rt.State("tx1"))
	}
	e.settled()
	if logs.FilterMessageSnippet("consumer found; consuming commands").Len() != 1 {
		t.Errorf("no line says the runtime found its consumer: %v", logs.All())
	}
	if logs.FilterMessageSnippet("consumer used with settings other than this participant's").Len() != 1 {
		t.Errorf("no warning about the coordinator's settings (ack_wait 30s, not the test's 2s): %v", logs.All())
	}
	rt.Stop()
	// Its one violation is the create, under the prefix: every other
	// request went through the imports its permissions allow.
	create := `"` + messages.JetStreamAPIPrefix + `.CONSUMER.CREATE.NATSTX_CMD.natstx-svc.natstx.cmd.svc.>"`
	eventually(t, "the connection's error handler to hear of the violation", func() bool { return len(v.Seen()) > 0 })
	if seen := v.Seen(); len(seen) != 1 || !strings.Contains(seen[0], create) {
		t.Errorf("the participant hit its permissions: %v; want only the create %s", seen, create)
	}
}

// TestRuntimeStopsWhileWaitingForItsConsumer: a Runtime waiting for its
// consumer stops at once (goleak checks that nothing is left).
func TestRuntimeStopsWhileWaitingForItsConsumer(t *testing.T) {
	e, s := securedEnv(t)
	nc, _ := s.Participant(t)
	log, _ := observed()
	rt, err := participants.New(nc, testConfig(newRecorder(), log))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rt.Stop()
	// The consumer appearing afterwards changes nothing: nobody consumes.
	s.CreateConsumer(t)
	e.send(e.cmd("tx1", messages.OpPrepare, 1))
	cons, err := e.js.Consumer(ctx, messages.CommandStream, messages.ConsumerName(svc))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(ctx); err != nil || info.NumPending != 1 || info.NumAckPending != 0 {
		t.Errorf("after Stop: %+v, %v; want the command pending", info, err)
	}
}
