package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

func TestAuditCrossChecksParticipants(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.participant("a", yes)
	f.participant("b", participants.HandlerFuncs{PrepareFunc: func(_ context.Context, tx participants.Tx, p []byte) error {
		if string(p) == "refuse" {
			return errors.New("refused")
		}
		return nil
	}})
	ctx := ctxT(t, 30*time.Second)
	var aborted string
	for i := 0; i < 10; i++ {
		req := orchestrator.Request{Participants: parts("a", "b")}
		if i%3 == 0 {
			req.Participants[1].Payload = []byte("refuse")
		}
		out, err := f.eng.Execute(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if !out.Committed() {
			aborted = out.ID
		}
	}
	waitFor(t, func() bool { return f.eng.Stats().InFlight == 0 }, "quiescence")
	c := newClient(t, f)
	var rep orchestrator.AuditReport
	waitFor(t, func() bool {
		var err error
		rep, err = c.Audit(ctx, time.Hour, 5*time.Second)
		return err == nil && rep.Committed+rep.Aborted == 10
	}, "the audit to see all ten finished")
	if rep.Transactions != 10 || rep.Committed != 6 || rep.Aborted != 4 || rep.Violations != 0 || rep.InDoubt != 0 {
		t.Fatalf("clean run: %+v", rep)
	}

	// A status that contradicts what the participants hold is a violation.
	kv := statusBucket(t, f)
	st, err := c.Status(ctx, aborted)
	if err != nil {
		t.Fatal(err)
	}
	st.State = "committed"
	data, _ := json.Marshal(st)
	if _, err := kv.Put(ctx, aborted, data); err != nil {
		t.Fatal(err)
	}
	// A transaction naming a participant nobody runs cannot be checked.
	ghost := messages.TxStatus{ID: "ghost-tx", State: "committed", StartedAt: time.Now(), Participants: []messages.ParticipantStatus{{Name: "ghost"}}}
	data, _ = json.Marshal(ghost)
	if _, err := kv.Put(ctx, ghost.ID, data); err != nil {
		t.Fatal(err)
	}
	rep, err = c.Audit(ctx, time.Hour, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Violations != 2 || rep.InDoubt != 1 || !strings.Contains(strings.Join(rep.Problems, "\n"), aborted+" is committed but a holds it aborted") ||
		!strings.Contains(strings.Join(rep.Problems, "\n"), "participant ghost could not be asked") {
		t.Fatalf("forged status: %+v", rep)
	}
}

// TestAuditAsTheOperatorOfASecureDeployment audits as the operator identity
// of `natstx auth init`: the operator (NATSTX_OPERATORS) begins
// transactions through the API, the audit reads them from the status bucket
// (imported under messages.JetStreamAPIPrefix) and asks the participants,
// which run as themselves in NATSTX_PARTICIPANTS, across the accounts; a
// clean run counts every transaction right and meets no permission
// violation.
func TestAuditAsTheOperatorOfASecureDeployment(t *testing.T) {
	d := secureDeployment(t)
	for _, name := range []string{"a", "b"} {
		h := yes
		if name == "b" {
			h = participants.HandlerFuncs{PrepareFunc: func(_ context.Context, _ participants.Tx, p []byte) error {
				if string(p) == "refuse" {
					return errors.New("refused")
				}
				return nil
			}}
		}
		rt, err := participants.New(d.Connect(t, messages.RoleParticipant, name), participants.Config{Name: name, Handler: h})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rt.Stop)
	}
	op, errs := operatorConn(t, d)
	c, err := orchestrator.NewClient(op)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 60*time.Second)
	for i := 0; i < 6; i++ {
		ps := specs("a", "b")
		if i%3 == 0 {
			ps[1].Payload = []byte("refuse")
		}
		if _, err := c.Begin(ctx, messages.BeginRequest{Participants: ps, Wait: true}); err != nil {
			t.Fatal(err)
		}
	}
	var rep orchestrator.AuditReport
	waitFor(t, func() bool {
		rep, err = c.Audit(ctx, time.Hour, 5*time.Second)
		return err == nil && rep.Committed+rep.Aborted == 6
	}, "the operator's audit to see all six finished")
	if rep.Transactions != 6 || rep.Committed != 4 || rep.Aborted != 2 || rep.Violations != 0 || rep.InDoubt != 0 || len(rep.Problems) != 0 {
		t.Fatalf("audit as the operator: %+v", rep)
	}
	if err := op.Flush(); err != nil {
		t.Fatal(err)
	}
	if e := errs(); len(e) > 0 {
		t.Errorf("the operator's connection met errors: %v", e)
	}
}
