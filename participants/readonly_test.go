package participants_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// TestBarrierReadOnlyVoteHoldsNothing: a prepare whose handler says
// ReadOnly is answered vote-read-only, what the handler wrote is rolled
// back, its duplicates get the same vote without the handler, a commit or
// an abort after it is acknowledged without the handler and changes
// nothing, and a restarted process answers the same from the database.
func TestBarrierReadOnlyVoteHoldsNothing(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		rt := r.startRuntime(t)
		for _, id := range []string{"ro-c", "ro-a"} {
			prep := r.cmd(id, messages.OpPrepare, 1)
			prep.Payload = []byte("read-only")
			r.expect(prep, messages.VoteReadOnly, "")
			prep.Attempt = 2
			r.expect(prep, messages.VoteReadOnly, "")
		}
		r.expect(r.cmd("ro-c", messages.OpCommit, 1), messages.Ack, "")
		r.expect(r.cmd("ro-a", messages.OpAbort, 1), messages.Ack, "")
		r.expect(r.cmd("ro-c", messages.OpPrepare, 3), messages.VoteReadOnly, "")
		for _, id := range []string{"ro-c", "ro-a"} {
			if n := r.ledger.n(messages.OpPrepare, id); n != 1 {
				t.Errorf("%s: Prepare called %d times, want 1", id, n)
			}
			if n := r.ledger.n(messages.OpCommit, id) + r.ledger.n(messages.OpAbort, id); n != 0 {
				t.Errorf("%s: Commit or Abort called %d times after a read-only vote", id, n)
			}
			if s := r.ledger.state(t, r.sqldb, id); s != "none" {
				t.Errorf("%s: effect %s; a read-only vote must leave nothing", id, s)
			}
			if s := rt.State(id); s != participants.StateReadOnly {
				t.Errorf("%s: state %s, want read-only", id, s)
			}
		}
		if got := rt.Stats().Outcomes[participants.OutcomeReadOnly]; got != 2 {
			t.Errorf("read-only outcomes counted %d, want 2", got)
		}
		r.settled()

		// A restarted process: nothing in memory, the same answers.
		b := r.barrier(t)
		if s, err := b.State(context.Background(), svc, "ro-a"); err != nil || s != participants.StateReadOnly {
			t.Fatalf("after a restart: %s %v", s, err)
		}
		cfg := testConfig(nil, nil)
		cfg.Barrier = b
		proc, err := participants.NewProcessor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.LoadPrepared(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			op   messages.Op
			want messages.Result
		}{{messages.OpPrepare, messages.VoteReadOnly}, {messages.OpCommit, messages.Ack}, {messages.OpAbort, messages.Ack}} {
			cmd := r.cmd("ro-a", c.op, 5)
			var got participants.Answer
			proc.Handle(cmd.Header(), nil, cmd.Subject(), func(a participants.Answer) { got = a })
			if got.Reply.Result != c.want || got.Settle != participants.SettleAck {
				t.Errorf("restarted, %s: %s settled %v, want %s and ack", c.op, got.Reply.Result, got.Settle, c.want)
			}
		}
		if ids := proc.InDoubt(); len(ids) != 0 {
			t.Errorf("read-only transactions taken for in doubt after a restart: %v", ids)
		}
		if n := r.ledger.n(messages.OpCommit, "ro-a") + r.ledger.n(messages.OpAbort, "ro-a"); n != 0 {
			t.Errorf("a restarted process called the handler %d times", n)
		}
		// Finished like any other: purged after the retention.
		purged, err := b.Purge(context.Background(), svc, time.Now().Add(time.Hour))
		if err != nil || purged < 2 {
			t.Errorf("purge removed %d rows (%v), want the read-only prepares", purged, err)
		}
	})
}

// TestAReadOnlyVoteInMemory: the same rules with the in-memory record: the
// vote, its duplicates, commit and abort after it acknowledged without the
// handler, never in doubt.
func TestAReadOnlyVoteInMemory(t *testing.T) {
	e := newEnv(t, true)
	rec := newRecorder()
	h := participants.HandlerFuncs{
		PrepareFunc: func(ctx context.Context, tx participants.Tx, payload []byte) error {
			rec.count(messages.OpPrepare, tx.ID)
			return fmt.Errorf("only looked: %w", participants.ReadOnly)
		},
		CommitFunc: func(ctx context.Context, tx participants.Tx) error { rec.count(messages.OpCommit, tx.ID); return nil },
		AbortFunc:  func(ctx context.Context, tx participants.Tx) error { rec.count(messages.OpAbort, tx.ID); return nil },
	}
	rt := e.start(e.nc, testConfig(h, nil))
	e.expect(e.cmd("look", messages.OpPrepare, 1), messages.VoteReadOnly, "")
	e.expect(e.cmd("look", messages.OpPrepare, 2), messages.VoteReadOnly, "")
	e.expect(e.cmd("look", messages.OpCommit, 1), messages.Ack, "")
	e.expect(e.cmd("look", messages.OpAbort, 1), messages.Ack, "")
	if p, c, a := rec.n(messages.OpPrepare, "look"), rec.n(messages.OpCommit, "look"), rec.n(messages.OpAbort, "look"); p != 1 || c != 0 || a != 0 {
		t.Errorf("handler calls: prepare %d, commit %d, abort %d; want 1, 0, 0", p, c, a)
	}
	if s := rt.State("look"); s != participants.StateReadOnly || s.String() != messages.AuditReadOnly {
		t.Errorf("state %q, want %q", s, messages.AuditReadOnly)
	}
	if st := rt.Stats(); st.Duplicates != 3 || st.Outcomes[participants.OutcomeReadOnly] != 1 {
		t.Errorf("stats %+v, want 3 duplicates and 1 read-only", st)
	}
	e.settled()
}
