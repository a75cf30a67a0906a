package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
)

// AuditReport is the verdict of Client.Audit: the coordinator's records
// cross-checked against what each participant holds.
type AuditReport struct {
	Transactions int `json:"transactions"`
	Committed    int `json:"committed"`
	Aborted      int `json:"aborted"`
	// InDoubt counts transactions not finished yet (or whose participants
	// could not all be asked); they are neither counted right nor wrong.
	InDoubt int `json:"in_doubt"`
	// Violations counts finished transactions where a participant holds
	// something else than the outcome: committed where aborted, not
	// committed where committed, or still prepared after the end.
	Violations int      `json:"violations"`
	Problems   []string `json:"problems,omitempty"`
	// Sagas counts the sagas in the window, which the audit does not check
	// (it asks participants about two-phase transactions only): they are
	// not counted in Transactions.
	Sagas int `json:"sagas,omitempty"`
}

// Audit asks every participant for its local state of each transaction that
// started within the last window (as the status bucket holds them) and
// cross-checks it with the coordinator's status. timeout bounds each
// participant's answer.
func (c *Client) Audit(ctx context.Context, window, timeout time.Duration) (AuditReport, error) {
	var rep AuditReport
	all, err := c.List(ctx)
	if err != nil {
		return rep, err
	}
	since := time.Now().Add(-window)
	var txs []messages.TxStatus
	byParticipant := map[string][]string{}
	for _, st := range all {
		if window > 0 && st.StartedAt.Before(since) {
			continue
		}
		if st.Protocol == messages.ProtocolSaga {
			rep.Sagas++
			continue
		}
		txs = append(txs, st)
		for _, p := range st.Participants {
			byParticipant[p.Name] = append(byParticipant[p.Name], st.ID)
		}
	}
	local := map[string]map[string]string{} // participant -> txid -> state
	unreachable := map[string]string{}
	for name, ids := range byParticipant {
		states, err := c.auditParticipant(ctx, name, ids, timeout)
		if err != nil {
			unreachable[name] = err.Error()
			continue
		}
		local[name] = states
	}
	problem := func(format string, args ...any) {
		rep.Violations++
		if len(rep.Problems) < 100 {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	for _, st := range txs {
		rep.Transactions++
		final := st.State == Committed.String() || st.State == Aborted.String()
		asked := true
		for _, p := range st.Participants {
			if _, ok := local[p.Name]; !ok {
				asked = false
			}
		}
		if !final || !asked {
			rep.InDoubt++
			continue
		}
		committed := st.State == Committed.String()
		if committed {
			rep.Committed++
		} else {
			rep.Aborted++
		}
		for _, p := range st.Participants {
			got := local[p.Name][st.ID]
			switch {
			case got == messages.AuditReadOnly:
				// Voted read-only: it held nothing, so either outcome is right.
			case committed && got != "committed":
				problem("%s is committed but %s holds it %s", st.ID, p.Name, got)
			case !committed && (got == "committed" || got == "prepared"):
				problem("%s is aborted but %s holds it %s", st.ID, p.Name, got)
			}
		}
	}
	if len(unreachable) > 0 && len(txs) > 0 {
		names := make([]string, 0, len(unreachable))
		for n := range unreachable {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			rep.Problems = append(rep.Problems, fmt.Sprintf("participant %s could not be asked: %s", n, unreachable[n]))
		}
	}
	return rep, nil
}

// auditParticipant asks one participant about ids, in chunks.
func (c *Client) auditParticipant(ctx context.Context, name string, ids []string, timeout time.Duration) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for start := 0; start < len(ids); start += 5000 {
		chunk := ids[start:min(start+5000, len(ids))]
		data, err := json.Marshal(messages.AuditRequest{IDs: chunk})
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		m, err := c.nc.RequestWithContext(rctx, messages.AuditSubject(name), data)
		cancel()
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, errors.New("no instance is running")
		}
		if err != nil {
			return nil, err
		}
		var resp messages.AuditResponse
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return nil, fmt.Errorf("unreadable answer: %w", err)
		}
		if resp.Error != "" {
			return nil, errors.New(resp.Error)
		}
		for id, s := range resp.States {
			out[id] = s
		}
	}
	return out, nil
}
