package auth_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/auth/authtest"
)

// TestAccountsCarryTheProtocolAndKeepRepliesInTheirAccount runs every path
// between natstx's three accounts on a real server: a participant pulls and
// acknowledges its command, votes, asks about a transaction in doubt, and
// answers an audit; an operator calls the API (the coordinator learns who
// asked), reads and watches the status bucket. And it checks what the
// accounts are for: a pull request whose reply subject names a decision
// record leaves the decision bucket untouched.
func TestAccountsCarryTheProtocolAndKeepRepliesInTheirAccount(t *testing.T) {
	d := authtest.Start(t)
	connect := func(role messages.Role, name string) *nats.Conn { return d.Connect(t, role, name) }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	coord := connect(messages.RoleCoordinator, "")
	cjs, err := jsconnect.New(ctx, coord)
	if err != nil {
		t.Fatal(err)
	}
	if err := orchestrator.EnsureStreams(ctx, cjs, orchestrator.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	records, err := cjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: orchestrator.RecordBucket})
	if err != nil {
		t.Fatal(err)
	}
	status, err := cjs.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: messages.StatusBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cjs.CreateConsumer(ctx, messages.CommandStream, orchestrator.ParticipantConsumerConfig("inventory")); err != nil {
		t.Fatal(err)
	}
	votes, err := coord.SubscribeSync(messages.ReplyFilter("c1"))
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan nats.Header, 4)
	if _, err := coord.Subscribe(messages.APIOutcome, func(m *nats.Msg) {
		asked <- m.Header
		_ = m.Respond([]byte(`{"answer":"ok"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := cjs.Publish(ctx, messages.CommandSubject("inventory", "tx1"), []byte("prepare")); err != nil {
		t.Fatal(err)
	}
	if _, err := status.Put(ctx, "tx1", []byte(`{"id":"tx1"}`)); err != nil {
		t.Fatal(err)
	}

	// The participant.
	part := connect(messages.RoleParticipant, "inventory")
	if _, err := part.Subscribe(messages.AuditSubject("inventory"), func(m *nats.Msg) { _ = m.Respond([]byte("audited")) }); err != nil {
		t.Fatal(err)
	}
	if imported, err := jsconnect.Imported(ctx, part); err != nil || !imported {
		t.Fatalf("participant: imported %v, %v; want true", imported, err)
	}
	pjs, err := jsconnect.New(ctx, part)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := pjs.Consumer(ctx, messages.CommandStream, messages.ConsumerName("inventory"))
	if err != nil {
		t.Fatalf("participant looks up its consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if string(m.Data()) != "prepare" {
			t.Errorf("participant pulled %q, want prepare", m.Data())
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("participant acknowledges: %v", err)
		}
	}
	if got != 1 || batch.Error() != nil {
		t.Fatalf("participant pulled %d commands (%v), want 1", got, batch.Error())
	}
	if err := part.Publish(messages.ReplySubject("c1", "inventory"), []byte("vote")); err != nil {
		t.Fatal(err)
	}
	if m, err := votes.NextMsg(5 * time.Second); err != nil || string(m.Data) != "vote" {
		t.Fatalf("coordinator receives the vote: %v", err)
	}
	if _, err := part.Request(messages.APIOutcome, []byte(`{}`), 5*time.Second); err != nil {
		t.Fatalf("participant asks about a transaction in doubt: %v", err)
	}
	<-asked

	// The attack the accounts close: a pull whose reply subject is a
	// decision record's key.
	if err := part.PublishRequest(messages.JetStreamAPIPrefix+".CONSUMER.MSG.NEXT."+messages.CommandStream+"."+messages.ConsumerName("inventory"),
		"$KV."+orchestrator.RecordBucket+".tx9", []byte(`{"batch":1,"no_wait":true}`)); err != nil {
		t.Fatal(err)
	}
	if err := part.Flush(); err != nil {
		t.Fatal(err)
	}

	// The operator.
	op := connect(messages.RoleOperator, "")
	m := nats.NewMsg(messages.APIOutcome)
	m.Header.Set("Nats-Request-Info", `{"acc":"FORGED","user":"FORGED"}`)
	if _, err := op.RequestMsg(m, 5*time.Second); err != nil {
		t.Fatalf("operator calls the API: %v", err)
	}
	var who struct {
		Account string `json:"acc"`
		User    string `json:"user"`
		Name    string `json:"name_tag"`
	}
	if err := json.Unmarshal([]byte((<-asked).Get("Nats-Request-Info")), &who); err != nil {
		t.Fatal(err)
	}
	if who.User == "" || who.User == "FORGED" || who.Name != "operator" {
		t.Errorf("the coordinator learns who asked: %+v, want the operator's user (not the forged header)", who)
	}
	if _, err := op.Request(messages.AuditSubject("inventory"), []byte(`{}`), 5*time.Second); err != nil {
		t.Fatalf("operator audits the participant: %v", err)
	}
	ojs, err := jsconnect.New(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := ojs.KeyValue(ctx, messages.StatusBucket)
	if err != nil {
		t.Fatalf("operator opens the status bucket: %v", err)
	}
	if e, err := kv.Get(ctx, "tx1"); err != nil || string(e.Value()) != `{"id":"tx1"}` {
		t.Fatalf("operator reads a status: %v", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("operator watches the status bucket: %v", err)
	}
	defer func() { _ = w.Stop() }()
	if _, err := status.Put(ctx, "tx2", []byte(`{"id":"tx2"}`)); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for len(keys) < 2 {
		select {
		case e := <-w.Updates():
			if e != nil {
				keys = append(keys, e.Key())
			}
		case <-ctx.Done():
			t.Fatalf("the watch saw %v, want tx1 and tx2", keys)
		}
	}
	// Refused by the permissions, the publish gets no answer: bound the wait.
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if _, err := kv.Put(pctx, "tx3", []byte("x")); err == nil {
		t.Error("operator wrote the status bucket")
	}

	if e, err := records.Get(ctx, "tx9"); err == nil {
		t.Errorf("a participant's pull request wrote %q under tx9 in the decision bucket", e.Value())
	}
}
