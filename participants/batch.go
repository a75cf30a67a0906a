package participants

import (
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// ReplyMessage is one message a transport publishes after a batch: a reply
// alone, or a reply batch (messages.EncodeReplyBatch).
type ReplyMessage struct {
	Subject string
	Header  map[string][]string
	Body    []byte
}

// BatchAnswer is what a transport does with a batch message: publish
// Replies, then settle the message as Settle (SettleAck becomes SettleNak if
// a reply cannot be published). Stopped means the transport refused to start
// some commands (it is stopping): it hands the whole message back instead.
type BatchAnswer struct {
	Replies []ReplyMessage
	Settle  Settle
	Stopped bool
}

// HandleBatch processes a batch message (messages.IsBatch): its headers,
// body and subject. Each command in it is handled by Handle exactly as if it
// had come alone, in a function HandleBatch passes to start (which runs it,
// perhaps in a goroutine of its own, and returns false if it will not:
// the transport is stopping); HandleBatch returns once every started command
// is answered. The replies go out as one message per reply subject, in the
// batch's order. The message is acked when every answer says ack or term (a
// malformed command is not worth a redelivery of the others), delivered again
// when any says so (the barrier answers the others' redelivery as before),
// and terminated when the batch itself cannot be read, is not for this
// participant, or holds only malformed commands.
func (p *Processor) HandleBatch(h map[string][]string, body []byte, subject string, start func(func()) bool) BatchAnswer {
	items, err := messages.DecodeBatch(h, body)
	if to := first(h, messages.HeaderParticipant); err == nil && to != p.cfg.Name {
		err = fmt.Errorf("%w: a command batch for participant %q reached participant %q", messages.ErrMalformed, to, p.cfg.Name)
	}
	if bp, ok := messages.BatchParticipant(subject); err == nil && subject != "" && (!ok || bp != p.cfg.Name) {
		err = fmt.Errorf("%w: a command batch for participant %q arrived on subject %q", messages.ErrMalformed, p.cfg.Name, subject)
	}
	if err != nil {
		p.malformed.Add(1)
		p.log.Warn("dropping malformed command batch", zap.String("subject", subject), zap.Error(err))
		return BatchAnswer{Settle: SettleTerm}
	}
	answers := make([]Answer, len(items))
	var wg sync.WaitGroup
	stopped := false
	for i, it := range items {
		wg.Add(1)
		if !start(func() {
			defer wg.Done()
			p.Handle(it.Header, it.Body, "", func(a Answer) { answers[i] = a })
		}) {
			wg.Done()
			stopped = true
			break
		}
	}
	wg.Wait()
	if stopped {
		return BatchAnswer{Stopped: true}
	}
	ba := BatchAnswer{Settle: SettleTerm}
	var group []messages.Reply
	for i, a := range answers {
		switch {
		case a.Settle == SettleNak:
			ba.Settle = SettleNak
		case a.Settle == SettleAck && ba.Settle == SettleTerm:
			ba.Settle = SettleAck
		}
		if a.ReplyTo == "" {
			continue
		}
		group = append(group, a.Reply)
		if i+1 < len(answers) && answers[i+1].ReplyTo == a.ReplyTo {
			continue
		}
		m := ReplyMessage{Subject: a.ReplyTo, Header: group[0].Header(), Body: group[0].Body()}
		if len(group) > 1 {
			if m.Header, m.Body, err = messages.EncodeReplyBatch(group); err != nil {
				// Cannot happen for at most MaxBatch replies; the commands
				// are delivered again rather than left unanswered.
				p.log.Error("encoding a reply batch", zap.Error(err))
				ba.Settle = SettleNak
				group = group[:0]
				continue
			}
		}
		ba.Replies = append(ba.Replies, m)
		group = nil
	}
	return ba
}
