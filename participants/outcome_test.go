package participants_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// TestBarrierCommitAndAbortExcludeEachOther (issue 9, finding 6): the
// participant's own database refuses a commit row and an abort row for one
// transaction, whatever writes them: the barrier's table holds one outcome
// per (participant, transaction).
func TestBarrierCommitAndAbortExcludeEachOther(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		r.barrier(t) // creates (or migrates) the table
		insert := func(txid, op string) error {
			q := `INSERT INTO ` + r.table + ` (participant, txid, op, result, reason, at_ms) VALUES ('` + svc + `', '` + txid + `', '` + op + `', 'ack', '', 1)`
			_, err := r.sqldb.Exec(q)
			return err
		}
		for _, first := range []string{"commit", "abort"} {
			second := map[string]string{"commit": "abort", "abort": "commit"}[first]
			txid := "after-" + first
			if err := insert(txid, first); err != nil {
				t.Fatal(err)
			}
			if err := insert(txid, second); err == nil {
				t.Fatalf("the table took %s after %s for one transaction", second, first)
			}
		}
		// Saga rows and other transactions are not affected.
		if err := insert("other", "commit"); err != nil {
			t.Fatal(err)
		}
		if err := insert("other", "action:reserve"); err != nil {
			t.Fatal(err)
		}
		b := r.barrier(t)
		if s, err := b.State(context.Background(), svc, "after-commit"); err != nil || s != participants.StateCommitted {
			t.Fatalf("after-commit: %s %v", s, err)
		}
	})
}

// gatedLedger is a ledger whose Commit waits, inside the barrier's local
// transaction, until the test opens the gate.
type gatedLedger struct {
	*ledger
	entered, gate chan struct{}
}

func (g *gatedLedger) Commit(ctx context.Context, dbtx *sql.Tx, tx participants.Tx) error {
	close(g.entered)
	<-g.gate
	return g.ledger.Commit(ctx, dbtx, tx)
}

// TestBarrierConcurrentCommitAndAbort (issue 9, finding 6): a commit and an
// abort of one prepared transaction, handled at once by two instances
// sharing the database (a coordinator bug, or two coordinators that
// disagree), cannot both take effect: the abort that runs while the commit's
// local transaction is open is refused once the commit is in.
func TestBarrierConcurrentCommitAndAbort(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newBarrierRig(t, db)
		gated := &gatedLedger{ledger: r.ledger, entered: make(chan struct{}), gate: make(chan struct{})}
		processor := func(h participants.SQLHandler) *participants.Processor {
			b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{
				DB: r.db.open(t), Dialect: r.db.dialect, Table: r.table, Handler: h,
			})
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(nil, nil)
			cfg.Barrier = b
			cfg.OpTimeout = wait
			cfg.AckWait = 2 * wait
			p, err := participants.NewProcessor(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		committer, aborter := processor(gated), processor(r.ledger)
		handle := func(p *participants.Processor, op messages.Op) participants.Answer {
			c := r.cmd("tx1", op, 1)
			var a participants.Answer
			p.Handle(c.Header(), nil, c.Subject(), func(got participants.Answer) { a = got })
			return a
		}
		if a := handle(aborter, messages.OpPrepare); a.Reply.Result != messages.VoteCommit {
			t.Fatalf("prepare: %+v", a)
		}
		commitDone := make(chan participants.Answer, 1)
		go func() { commitDone <- handle(committer, messages.OpCommit) }()
		<-gated.entered // the commit's local transaction holds its claim
		abortDone := make(chan participants.Answer, 1)
		go func() { abortDone <- handle(aborter, messages.OpAbort) }()
		var abort participants.Answer
		if db.dialect == participants.Postgres {
			// Wait until the abort waits for the commit's lock, or is done.
			eventually(t, "the abort to wait for the commit or finish", func() bool {
				select {
				case abort = <-abortDone:
					return true
				default:
				}
				var n int
				err := r.sqldb.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'`).Scan(&n)
				return err == nil && n > 0
			})
		}
		close(gated.gate)
		commit := <-commitDone
		if abort.Reply.Result == "" {
			abort = <-abortDone
		}
		if commit.Reply.Result != messages.Ack || abort.Reply.Result != messages.Failed || abort.Reply.Reason != participants.ReasonAbortAfterCommit {
			t.Fatalf("commit answered %+v, abort %+v; want the commit acknowledged and the abort refused (%s)",
				commit.Reply, abort.Reply, participants.ReasonAbortAfterCommit)
		}
		if s := r.ledger.state(t, r.sqldb, "tx1"); s != "applied" {
			t.Fatalf("effect %s, want applied", s)
		}
		if n := r.ledger.n(messages.OpAbort, "tx1"); n != 0 {
			t.Fatalf("abort applied %d times", n)
		}
	})
}
