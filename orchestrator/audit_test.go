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
