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

// serveAudit answers audit requests for the runtime's participant.
func (r *Runtime) serveAudit() (*nats.Subscription, error) { return ServeAudit(r.nc, r.proc) }

// ServeAudit answers audit requests on messages.AuditSubject(p.Name()) over
// nc, in the queue group messages.AuditQueue: the local state of each
// transaction asked about, from p's barrier or in-memory record. Runtime
// serves it itself; another transport (the watermill adapter) calls it, and
// unsubscribes the subscription when it stops.
func ServeAudit(nc *nats.Conn, p *Processor) (*nats.Subscription, error) {
	return nc.QueueSubscribe(messages.AuditSubject(p.Name()), messages.AuditQueue, func(m *nats.Msg) {
		if err := messages.CheckRequestReply(m.Reply); err != nil {
			// Answered only on an inbox: an answer sent where the asker
			// points it could pass for this participant's reply.
			p.log.Warn("audit request dropped unanswered", zap.Error(err))
			return
		}
		resp := messages.AuditResponse{Participant: p.Name()}
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
				resp.States[id] = p.State(id).String()
			}
		}
		if resp.Error != "" {
			p.log.Warn("bad audit request", zap.String("error", resp.Error))
		}
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	})
}
