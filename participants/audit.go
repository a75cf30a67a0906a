package participants

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// MaxAuditIDs bounds the transactions one audit request may ask about.
const MaxAuditIDs = 10_000

// serveAudit answers audit requests on messages.AuditSubject(name): the
// local state of each transaction asked about, from the barrier or the
// in-memory record.
func (r *Runtime) serveAudit() (*nats.Subscription, error) {
	return r.nc.QueueSubscribe(messages.AuditSubject(r.cfg.Name), messages.AuditQueue, func(m *nats.Msg) {
		resp := messages.AuditResponse{Participant: r.cfg.Name}
		var req messages.AuditRequest
		switch err := json.Unmarshal(m.Data, &req); {
		case err != nil:
			resp.Error = fmt.Sprintf("audit request is not valid JSON: %v", err)
		case len(req.IDs) > MaxAuditIDs:
			resp.Error = fmt.Sprintf("audit request asks about %d transactions; the limit is %d", len(req.IDs), MaxAuditIDs)
		default:
			resp.States = make(map[string]string, len(req.IDs))
			for _, id := range req.IDs {
				if messages.ValidateName("transaction ID", id) != nil {
					continue
				}
				resp.States[id] = r.proc.State(id).String()
			}
		}
		if resp.Error != "" {
			r.log.Warn("bad audit request", zap.String("error", resp.Error))
		}
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	})
}
