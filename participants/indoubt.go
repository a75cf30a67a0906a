package participants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// DefaultInDoubtAfter is Config.InDoubtAfter when zero.
const DefaultInDoubtAfter = 10 * time.Second

// doubtSet tracks the transactions this participant voted commit on and has
// heard neither commit nor abort for: the ones it may have to ask about.
type doubtSet struct {
	mu sync.Mutex
	m  map[string]doubt
}

type doubt struct {
	deadline time.Time // the transaction's deadline from prepare; zero if unknown
	since    time.Time // when it was prepared (or found prepared at start)
}

// track updates the set after a command was answered.
func (d *doubtSet) track(cmd messages.Command, r messages.Result) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case cmd.Op == messages.OpPrepare && r == messages.VoteCommit:
		if _, ok := d.m[cmd.TxID]; !ok {
			if d.m == nil {
				d.m = make(map[string]doubt)
			}
			d.m[cmd.TxID] = doubt{deadline: cmd.Deadline, since: time.Now()}
		}
	case cmd.Op != messages.OpPrepare && r == messages.Ack:
		delete(d.m, cmd.TxID)
	}
}

// add records a transaction found prepared in the barrier at start.
func (d *doubtSet) add(txid string, since time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = make(map[string]doubt)
	}
	if _, ok := d.m[txid]; !ok {
		d.m[txid] = doubt{since: since}
	}
}

// due returns the transactions prepared at least after ago, as of now.
func (d *doubtSet) due(now time.Time, after time.Duration) map[string]doubt {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]doubt)
	for id, v := range d.m {
		if now.Sub(v.since) >= after {
			out[id] = v
		}
	}
	return out
}

// InDoubt returns the IDs of the transactions this participant voted commit
// on and has not yet heard the outcome of.
func (p *Processor) InDoubt() []string {
	p.doubt.mu.Lock()
	defer p.doubt.mu.Unlock()
	ids := make([]string, 0, len(p.doubt.m))
	for id := range p.doubt.m {
		ids = append(ids, id)
	}
	return ids
}

// loadPrepared fills the doubt set from the barrier after a restart: every
// transaction it holds prepared is in doubt until its outcome arrives.
func (p *Processor) loadPrepared(ctx context.Context) error {
	if p.cfg.Barrier == nil {
		return nil
	}
	ids, err := p.cfg.Barrier.Prepared(ctx, p.cfg.Name)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, id := range ids {
		p.doubt.add(id, now)
	}
	if len(ids) > 0 {
		p.log.Info("transactions found prepared at start; they are resolved if no outcome arrives", zap.Int("count", len(ids)))
	}
	return nil
}

// resolveInDoubt asks the coordinators about every transaction in doubt for
// at least InDoubtAfter and applies the answer as if the command had
// arrived: commit or abort through the same record and handler, so a command
// that arrives after all is a duplicate.
func (r *Runtime) resolveInDoubt() {
	for id, d := range r.proc.doubt.due(time.Now(), r.cfg.InDoubtAfter) {
		if r.isStopping() {
			return
		}
		req := messages.OutcomeRequest{ID: id, Participant: r.cfg.Name}
		if !d.deadline.IsZero() {
			req.DeadlineMs = d.deadline.UnixMilli()
		}
		resp, err := askOutcome(r.nc, req, min(r.cfg.OpTimeout, max(r.cfg.InDoubtAfter, time.Second)))
		r.inDoubtQueries.Add(1)
		log := r.log.With(zap.String("txid", id))
		if err != nil {
			log.Warn("in doubt: asking the coordinators for the outcome failed; asking again later", zap.Error(err))
			continue
		}
		var op messages.Op
		switch resp.Outcome {
		case messages.OutcomeCommit:
			op = messages.OpCommit
		case messages.OutcomeAbort:
			op = messages.OpAbort
		default:
			log.Debug("in doubt: outcome still pending", zap.String("reason", resp.Reason))
			continue
		}
		log.Info("in doubt: applying the outcome the coordinator gave", zap.String("op", string(op)), zap.String("reason", resp.Reason))
		cmd := messages.Command{TxID: id, Op: op, Participant: r.cfg.Name, Attempt: 1, ReplyTo: messages.ReplySubject("in-doubt")}
		r.proc.Handle(cmd.Header(), nil, "", func(a Answer) {
			if a.Reply.Result == messages.Ack {
				r.inDoubtResolved.Add(1)
				return
			}
			log.Warn("in doubt: applying the outcome failed; asking again later", zap.String("result", string(a.Reply.Result)), zap.String("reason", a.Reply.Reason))
		})
	}
}

// askOutcome sends one OutcomeRequest to the coordinators' queue group.
func askOutcome(nc *nats.Conn, req messages.OutcomeRequest, timeout time.Duration) (messages.OutcomeResponse, error) {
	var resp messages.OutcomeResponse
	data, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	m, err := nc.Request(messages.APIOutcome, data, timeout)
	if errors.Is(err, nats.ErrNoResponders) {
		return resp, errors.New("no coordinator is running")
	}
	if err != nil {
		return resp, err
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return resp, fmt.Errorf("unreadable answer: %w", err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Prepared returns the IDs of the transactions participant voted commit on
// and has neither committed nor aborted.
func (b *Barrier) Prepared(ctx context.Context, participant string) ([]string, error) {
	rs, err := b.db.QueryContext(ctx, b.q(`SELECT p.txid FROM `+b.table+` p WHERE p.participant = ? AND p.op = ? AND p.result = ?
	AND NOT EXISTS (SELECT 1 FROM `+b.table+` o WHERE o.participant = p.participant AND o.txid = p.txid AND o.op IN (?, ?))`),
		participant, string(messages.OpPrepare), string(messages.VoteCommit), string(messages.OpCommit), string(messages.OpAbort))
	if err != nil {
		return nil, fmt.Errorf("%w: listing prepared transactions: %w", ErrBarrier, err)
	}
	defer rs.Close()
	var ids []string
	for rs.Next() {
		var id string
		if err := rs.Scan(&id); err != nil {
			return nil, fmt.Errorf("%w: listing prepared transactions: %w", ErrBarrier, err)
		}
		ids = append(ids, id)
	}
	return ids, rs.Err()
}
