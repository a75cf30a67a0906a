package participants

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// DefaultInDoubtAfter is Config.InDoubtAfter when zero.
const DefaultInDoubtAfter = 10 * time.Second

// AskFunc asks the coordinators how transaction req.ID ended. AskNATS asks
// them over NATS; a simulator asks its own. The context bounds one
// question.
type AskFunc = func(context.Context, messages.OutcomeRequest) (messages.OutcomeResponse, error)

// doubtSet tracks the transactions this participant voted commit on and has
// heard neither commit nor abort for: the ones it may have to ask about.
// Only a transaction whose record is prepared and undecided is in it.
type doubtSet struct {
	mu sync.Mutex
	m  map[string]doubt
}

// doubt is one transaction in doubt.
type doubt struct {
	id       string
	deadline time.Time // the transaction's deadline from prepare; zero if unknown
	since    time.Time // when it was prepared (or found prepared at start)
}

// update brings txid's membership in line with its record after a command:
// in the set while the record is prepared, out of it once it is decided (or
// gone). deadline, when not zero, fills in an unknown deadline.
func (d *doubtSet) update(txid string, after State, deadline, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if after != StatePrepared {
		delete(d.m, txid)
		return
	}
	d.addLocked(txid, deadline, now)
}

// has reports whether txid is still in doubt. A question is asked only
// about a transaction that still is: the list ResolveInDoubt works through
// is taken once, and a command can decide one of them while earlier
// questions wait for their answers.
func (d *doubtSet) has(txid string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.m[txid]
	return ok
}

// add records a transaction found prepared in the barrier at start.
func (d *doubtSet) add(txid string, deadline, since time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addLocked(txid, deadline, since)
}

func (d *doubtSet) addLocked(txid string, deadline, since time.Time) {
	if d.m == nil {
		d.m = make(map[string]doubt)
	}
	v, ok := d.m[txid]
	if !ok {
		d.m[txid] = doubt{id: txid, deadline: deadline, since: since}
		return
	}
	if v.deadline.IsZero() && !deadline.IsZero() {
		v.deadline = deadline
		d.m[txid] = v
	}
}

// due returns the transactions in doubt for at least after as of now,
// ordered by ID (a simulator replays the same questions in the same order).
func (d *doubtSet) due(now time.Time, after time.Duration) []doubt {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []doubt
	for _, v := range d.m {
		if now.Sub(v.since) >= after {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b doubt) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
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

// InDoubtAfter is how long a transaction stays in doubt before
// ResolveInDoubt asks about it (Config.InDoubtAfter with its default);
// negative means never. A transport calls ResolveInDoubt every half of it.
func (p *Processor) InDoubtAfter() time.Duration { return p.cfg.InDoubtAfter }

// LoadPrepared fills the doubt set from the Barrier after a start: every
// transaction it holds prepared and undecided is in doubt, with the deadline
// its prepare carried (zero for rows written before deadlines were kept),
// until its outcome arrives. Without a Barrier it does nothing: the
// in-memory record does not survive a restart. A transport calls it once,
// when it starts.
func (p *Processor) LoadPrepared(ctx context.Context) error {
	if p.cfg.Barrier == nil {
		return nil
	}
	txs, err := p.cfg.Barrier.PreparedTxs(ctx, p.cfg.Name)
	if err != nil {
		return err
	}
	now := p.now()
	for _, tx := range txs {
		p.doubt.add(tx.ID, tx.Deadline, now)
	}
	if len(txs) > 0 {
		p.log.Info("transactions found prepared at start; they are resolved if no outcome arrives", zap.Int("count", len(txs)))
	}
	return nil
}

// ResolveInDoubt asks, with ask, about every transaction in doubt for at
// least InDoubtAfter as of Config.Now (none when InDoubtAfter is negative),
// one question each in the order of their IDs, each with the transaction's
// deadline when known. One that left the doubt set since the list was taken
// (its commit or abort arrived while earlier questions waited), or whose
// outcome the Barrier already holds (another instance sharing the database
// applied it), is not asked about. It applies a commit or abort answer
// through Handle as if the command had arrived: the same record and
// handler, so a command that arrives after all is a duplicate. A pending
// answer or an error leaves the transaction in doubt, to be asked about
// again at a later call. An answer that contradicts the record (abort for a
// transaction the record has committed, commit after abort) takes the
// transaction out of the doubt set with one error line and is counted in
// Stats.InDoubtContradicted: asking again would not change the record, and
// an operator must look. It returns how many questions it asked and how
// many answers it applied; it stops early when ctx ends.
func (p *Processor) ResolveInDoubt(ctx context.Context, ask AskFunc) (asked, resolved int) {
	if p.cfg.InDoubtAfter < 0 || ask == nil {
		return 0, 0
	}
	timeout := min(p.cfg.OpTimeout, max(p.cfg.InDoubtAfter, time.Second))
	for _, d := range p.doubt.due(p.now(), p.cfg.InDoubtAfter) {
		if ctx.Err() != nil {
			return asked, resolved
		}
		if p.decidedMeanwhile(ctx, d.id) {
			continue
		}
		req := messages.OutcomeRequest{ID: d.id, Participant: p.cfg.Name, AskedAtMs: p.now().UnixMilli()}
		if !d.deadline.IsZero() {
			req.DeadlineMs = d.deadline.UnixMilli()
		}
		qctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := ask(qctx, req)
		cancel()
		asked++
		p.inDoubtQueries.Add(1)
		log := p.log.With(zap.String("txid", d.id))
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
		cmd := messages.Command{TxID: d.id, Op: op, Participant: p.cfg.Name, Attempt: 1, ReplyTo: messages.ReplySubject("in-doubt", p.cfg.Name)}
		p.handle(cmd.Header(), nil, "", true, func(a Answer) {
			switch {
			case a.Reply.Result == messages.Ack:
				resolved++
				p.inDoubtResolved.Add(1)
			case a.Settle == SettleTerm:
				p.inDoubtContradicted.Add(1)
				log.Error("in doubt: the coordinators' answer contradicts this participant's record; "+
					"the transaction is no longer asked about and needs an operator (compare the decision record, `natstx tx status`, with this participant's database)",
					zap.String("answer", resp.Outcome), zap.String("answer_reason", resp.Reason), zap.String("record", a.Reply.Reason))
			default:
				log.Warn("in doubt: applying the outcome failed; asking again later", zap.String("result", string(a.Reply.Result)), zap.String("reason", a.Reply.Reason))
			}
		})
	}
	return asked, resolved
}

// decidedMeanwhile reports whether txid's outcome is known here by now: it
// left the doubt set since ResolveInDoubt listed it (its commit or abort
// arrived while earlier questions waited), or the barrier holds an outcome,
// which another instance sharing the database applied (it then leaves the
// doubt set). Asking about it could only get an answer that is a duplicate
// or, worse, a decision recorded against what happened: once a committed
// transaction's records have expired, a coordinator presumes abort.
func (p *Processor) decidedMeanwhile(ctx context.Context, txid string) bool {
	if !p.doubt.has(txid) {
		return true
	}
	b := p.cfg.Barrier
	if b == nil {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
	defer cancel()
	s, err := b.State(rctx, p.cfg.Name, txid)
	if err != nil || s == StatePrepared {
		return false // ask: the answer is applied through the barrier anyway
	}
	p.doubt.update(txid, s, time.Time{}, p.now())
	p.log.Debug("in doubt: the barrier already holds the outcome (applied by another instance); not asking",
		zap.String("txid", txid), zap.Stringer("state", s))
	return true
}

// AskNATS returns an AskFunc that sends each question as a request to the
// coordinators' queue group (messages.APIOutcome) on nc, bounded by the
// question's context.
func AskNATS(nc *nats.Conn) AskFunc {
	return func(ctx context.Context, req messages.OutcomeRequest) (messages.OutcomeResponse, error) {
		var resp messages.OutcomeResponse
		data, err := json.Marshal(req)
		if err != nil {
			return resp, err
		}
		m, err := nc.RequestWithContext(ctx, messages.APIOutcome, data)
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
}

// PreparedTx is a transaction a Barrier holds prepared and undecided.
type PreparedTx struct {
	// ID is the transaction ID.
	ID string
	// Deadline is the transaction's deadline from its prepare command; zero
	// if it had none or the row predates deadlines in the barrier.
	Deadline time.Time
}

// Prepared returns the IDs of the transactions participant voted commit on
// and has neither committed nor aborted.
func (b *Barrier) Prepared(ctx context.Context, participant string) ([]string, error) {
	txs, err := b.PreparedTxs(ctx, participant)
	ids := make([]string, len(txs))
	for i, tx := range txs {
		ids[i] = tx.ID
	}
	return ids, err
}

// PreparedTxs returns the transactions participant voted commit on and has
// neither committed nor aborted, with their deadlines, ordered by ID.
func (b *Barrier) PreparedTxs(ctx context.Context, participant string) ([]PreparedTx, error) {
	rs, err := b.db.QueryContext(ctx, b.q(`SELECT p.txid, p.deadline_ms FROM `+b.table+` p WHERE p.participant = ? AND p.op = ? AND p.result = ?
	AND NOT EXISTS (SELECT 1 FROM `+b.table+` o WHERE o.participant = p.participant AND o.txid = p.txid AND o.op IN (?, ?))
	ORDER BY p.txid`),
		participant, string(messages.OpPrepare), string(messages.VoteCommit), string(messages.OpCommit), string(messages.OpAbort))
	if err != nil {
		return nil, fmt.Errorf("%w: listing prepared transactions: %w", ErrBarrier, err)
	}
	defer rs.Close()
	var txs []PreparedTx
	for rs.Next() {
		var tx PreparedTx
		var dl sql.NullInt64
		if err := rs.Scan(&tx.ID, &dl); err != nil {
			return nil, fmt.Errorf("%w: listing prepared transactions: %w", ErrBarrier, err)
		}
		if dl.Valid {
			tx.Deadline = time.UnixMilli(dl.Int64)
		}
		txs = append(txs, tx)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("%w: listing prepared transactions: %w", ErrBarrier, err)
	}
	return txs, nil
}
