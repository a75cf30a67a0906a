package dst

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// sagaLedgerTable is the participants' saga business table: one row per
// (saga, step) whose action took effect, with the simulated time (in
// nanoseconds) its action and its compensation took effect.
const sagaLedgerTable = `CREATE TABLE saga_ledger (saga TEXT NOT NULL, step TEXT NOT NULL, action_at INTEGER, comp_at INTEGER, PRIMARY KEY (saga, step))`

// sagaLedger is a participant's saga business, the participants.
// SQLSagaHandler behind its Barrier: the action inserts the step's row, the
// compensation stamps it. What each does is written in its payload (see
// saga_work.go); failures are counted per (saga, step) in the simulation,
// whichever process of the participant runs them. As it happens, it checks
// that no action takes effect after its step's compensation was answered,
// and that no compensation takes effect while the latest durable record has
// the step's action out.
type sagaLedger struct{ p *part }

var _ participants.SQLSagaHandler = sagaLedger{}

func sagaKey(id, step string) string { return id + "/" + step }

// parsePayload reads "verb" or "verb N".
func parsePayload(payload []byte) (string, int) {
	verb, num, _ := strings.Cut(string(payload), " ")
	n, _ := strconv.Atoi(num)
	return verb, n
}

// Action does the step's action as its payload says.
func (l sagaLedger) Action(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	s := l.p.s
	key := sagaKey(st.SagaID, st.Name)
	s.sagaActionCalls[key]++
	verb, n := parsePayload(payload)
	switch {
	case verb == payloadRefuse:
		return participants.Refuse("out-of-stock", "refused for good")
	case verb == payloadCode:
		return participants.WithCode(codeBadInput, errors.New("bad input"))
	case verb == payloadFail && s.sagaActionCalls[key] <= n:
		return errors.New("busy: try again")
	case s.fault(s.f.HandlerError):
		s.st.HandlerErrors++
		return errors.New("action failed this time")
	}
	if at, ok := s.compAcked[key]; ok {
		s.violate("%s: step %s's action takes effect at %s at %v, after its compensation was answered at %v", st.SagaID, st.Name, l.p.name, s.s.now, at)
	}
	_, err := dbtx.ExecContext(ctx, `INSERT INTO saga_ledger (saga, step, action_at) VALUES (?, ?, ?)`, st.SagaID, st.Name, int64(s.s.now))
	return err
}

// Compensate undoes the step's action as its payload says.
func (l sagaLedger) Compensate(ctx context.Context, dbtx *sql.Tx, st participants.Step, payload []byte) error {
	s := l.p.s
	key := sagaKey(st.SagaID, st.Name)
	s.sagaCompCalls[key]++
	verb, n := parsePayload(payload)
	switch {
	case verb == payloadBroken:
		return errors.New("compensation broken: an operator must act")
	case verb == payloadCFail && s.sagaCompCalls[key] <= n:
		return errors.New("compensation failed for now")
	case s.fault(s.f.HandlerError):
		s.st.HandlerErrors++
		return errors.New("compensation failed this time")
	}
	if w := s.sagaBy[st.SagaID]; w != nil {
		for i, d := range w.def.Steps {
			if d.Name == st.Name && w.steps[i].out {
				s.violate("%s: step %s's compensation takes effect at %s at %v while the latest record has its action out", st.SagaID, st.Name, l.p.name, s.s.now)
			}
		}
	}
	res, err := dbtx.ExecContext(ctx, `UPDATE saga_ledger SET comp_at = ? WHERE saga = ? AND step = ? AND comp_at IS NULL`, int64(s.s.now), st.SagaID, st.Name)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		s.violate("%s: step %s's compensation handler runs at %s at %v without a done, uncompensated action in its database (rows %d, %v)", st.SagaID, st.Name, l.p.name, s.s.now, n, err)
	}
	return nil
}

// stepDB is what a participant's database holds of one saga step: its
// barrier's state and its business row.
type stepDB struct {
	state            participants.StepState
	action, comp     bool
	actionAt, compAt time.Duration
}

func (d stepDB) String() string {
	return fmt.Sprintf("barrier=%s action=%v comp=%v", d.state, d.action, d.comp)
}

// sagaStep reads step of saga id from the participant's database.
func (p *part) sagaStep(id, step string) stepDB {
	st, err := p.check.StepState(p.s.ctx, p.name, id, step)
	if err != nil {
		panic(fmt.Sprintf("dst: reading %s's barrier: %v", p.name, err))
	}
	d := stepDB{state: st}
	var a, c sql.NullInt64
	err = p.db.QueryRow(`SELECT action_at, comp_at FROM saga_ledger WHERE saga = ? AND step = ?`, id, step).Scan(&a, &c)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		panic(fmt.Sprintf("dst: reading %s's saga ledger: %v", p.name, err))
	default:
		d.action, d.actionAt = a.Valid, time.Duration(a.Int64)
		d.comp, d.compAt = c.Valid, time.Duration(c.Int64)
	}
	return d
}

// blindCompensation is the planted bug plantBlindCompensation: the
// participant runs a compensation itself, without its barrier, and answers
// it done. It stamps the business row (creating it when the action never
// ran) and records nothing in the barrier, so a late action is still done.
func (p *part) blindCompensation(m *streamMsg) participants.Answer {
	s := p.s
	now := int64(s.s.now)
	if _, err := p.db.Exec(`INSERT INTO saga_ledger (saga, step, comp_at) VALUES (?, ?, ?) ON CONFLICT (saga, step) DO UPDATE SET comp_at = COALESCE(comp_at, excluded.comp_at)`,
		m.cmd.TxID, m.cmd.Step, now); err != nil {
		panic(fmt.Sprintf("dst: %s's blind compensation: %v", p.name, err))
	}
	return participants.Answer{
		ReplyTo: m.cmd.ReplyTo,
		Reply: messages.Reply{TxID: m.cmd.TxID, Op: m.cmd.Op, Participant: p.name, Result: messages.Ack,
			Attempt: m.cmd.Attempt, Step: m.cmd.Step},
		Settle: participants.SettleAck,
	}
}
