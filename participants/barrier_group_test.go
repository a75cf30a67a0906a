package participants_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/natstx/natstx/participants"
)

// groupRig is a Barrier on one database, with a table of effects its saga
// actions write.
type groupRig struct {
	db      database
	sqldb   *sql.DB
	b       *participants.Barrier
	effects string
}

func newGroupRig(t *testing.T, db database, mode participants.GroupCommit) *groupRig {
	t.Helper()
	r := &groupRig{db: db, sqldb: db.open(t)}
	l := newLedger(t, r.sqldb, db.dialect)
	r.effects = l.table
	table := "natstx_barrier_" + l.table[len("effects_"):]
	b, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{
		DB: r.sqldb, Dialect: db.dialect, Table: table, Handler: l, GroupCommit: mode,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		_, _ = r.sqldb.Exec(`DROP TABLE ` + table)
	})
	r.b = b
	return r
}

// write is an action that records txid in the effects table.
func (r *groupRig) write(txid string) func(*sql.Tx) error {
	return func(dbtx *sql.Tx) error {
		ph := "?"
		if r.db.dialect == participants.Postgres {
			ph = "$1"
		}
		_, err := dbtx.Exec(fmt.Sprintf(`INSERT INTO %s (txid, state) VALUES (%s, 'done')`, r.effects, ph), txid)
		return err
	}
}

// effects returns how many effect rows there are.
func (r *groupRig) count(t *testing.T) int {
	t.Helper()
	var n int
	if err := r.sqldb.QueryRow(`SELECT COUNT(*) FROM ` + r.effects).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBarrierGroupCommitsWaitingCommandsAsOneTransaction: commands that
// come while another is being written wait and then commit together, in one
// local transaction; one whose work fails is rolled back alone, one whose
// caller gave up never runs, and the others' records and effects are all
// kept.
func TestBarrierGroupCommitsWaitingCommandsAsOneTransaction(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newGroupRig(t, db, participants.GroupCommitOn)
		ctx := context.Background()
		entered, release := make(chan struct{}), make(chan struct{})
		var releaseOnce sync.Once
		releaseFirst := func() { releaseOnce.Do(func() { close(release) }) }
		defer releaseFirst() // a failed wait below must not leave it blocked
		firstDone := make(chan error, 1)
		go func() {
			firstDone <- r.b.Action(ctx, "p", "first", "s", func(dbtx *sql.Tx) error {
				close(entered)
				<-release
				return r.write("first")(dbtx)
			})
		}()
		<-entered

		const n = 10
		errs := make([]error, n)
		ran := make([]bool, n)
		gaveUp, giveUp := context.WithCancel(ctx)
		defer giveUp()
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx := ctx
				if i == 5 {
					cctx = gaveUp
				}
				txid := fmt.Sprintf("tx-%d", i)
				errs[i] = r.b.Action(cctx, "p", txid, "s", func(dbtx *sql.Tx) error {
					ran[i] = true
					if err := r.write(txid)(dbtx); err != nil {
						return err
					}
					if i == 3 {
						return errors.New("refused after writing")
					}
					return nil
				})
			}()
		}
		eventually(t, "ten commands waiting for the group commit", func() bool { return r.b.Stats().Waiting == n })
		giveUp()
		releaseFirst()
		if err := <-firstDone; err != nil {
			t.Fatalf("first: %v", err)
		}
		wg.Wait()

		for i, err := range errs {
			switch i {
			case 3:
				if err == nil || err.Error() != "refused after writing" {
					t.Errorf("tx-3: error %v, want its own", err)
				}
			case 5:
				if !errors.Is(err, context.Canceled) || ran[5] {
					t.Errorf("tx-5 (caller gave up while waiting): error %v, ran %v; want context.Canceled and never run", err, ran[5])
				}
			default:
				if err != nil {
					t.Errorf("tx-%d: %v", i, err)
				}
			}
		}
		st := r.b.Stats()
		t.Logf("stats after the burst: %+v", st)
		if st.Commits != 2 || st.Grouped != n-2 || st.Waiting != 0 {
			t.Errorf("stats %+v, want 2 commits (first alone, then the group), %d grouped, none waiting", st, n-2)
		}
		if got := r.count(t); got != n-1 {
			t.Errorf("%d effect rows, want %d (first and the 8 that succeeded; tx-3's write rolled back)", got, n-1)
		}
		// The group's barrier records are durable: a repeated action does
		// nothing; tx-3's claim was rolled back with its work, so it runs
		// again.
		if err := r.b.Action(ctx, "p", "tx-0", "s", func(*sql.Tx) error {
			t.Error("tx-0's action ran twice")
			return nil
		}); err != nil {
			t.Errorf("tx-0 again: %v", err)
		}
		if err := r.b.Action(ctx, "p", "tx-3", "s", r.write("tx-3")); err != nil {
			t.Errorf("tx-3 again: %v", err)
		}
		if got := r.count(t); got != n {
			t.Errorf("%d effect rows after tx-3 ran again, want %d", got, n)
		}
	})
}

// TestBarrierGroupCommitOffGivesEachCommandItsOwnTransaction: with group
// commit off, concurrent commands each commit alone.
func TestBarrierGroupCommitOffGivesEachCommandItsOwnTransaction(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db database) {
		r := newGroupRig(t, db, participants.GroupCommitOff)
		const n = 20
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				txid := fmt.Sprintf("tx-%d", i)
				errs[i] = r.b.Action(context.Background(), "p", txid, "s", r.write(txid))
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if st := r.b.Stats(); st.Commits != n || st.Grouped != 0 {
			t.Errorf("stats %+v, want %d commits, none grouped", st, n)
		}
		if got := r.count(t); got != n {
			t.Errorf("%d effect rows, want %d", got, n)
		}
	})
}

// TestNewBarrierRefusesAnUnknownGroupCommit names the bad setting.
func TestNewBarrierRefusesAnUnknownGroupCommit(t *testing.T) {
	db := databases(t)[0].open(t)
	_, err := participants.NewBarrier(context.Background(), participants.BarrierConfig{
		DB: db, Handler: newLedger(t, db, participants.SQLite), GroupCommit: participants.GroupCommit(7),
	})
	if !errors.Is(err, participants.ErrInvalidConfig) || err == nil || !strings.Contains(err.Error(), "GroupCommit group-commit(7)") {
		t.Fatalf("NewBarrier with GroupCommit 7: %v", err)
	}
}
