package participants

import (
	"fmt"
	"sync"
	"sync/atomic"

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
// the transport is stopping; every call may pass the same function, which
// handles one more command each time it runs); HandleBatch returns once every
// started command is answered. The replies go out as one message per reply
// subject, in the batch's order. The message is acked when every answer says
// ack or term (a malformed command is not worth a redelivery of the others),
// delivered again when any says so (the barrier answers the others'
// redelivery as before), and terminated when the batch itself cannot be
// read, is not for this participant, or holds only malformed commands.
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
	run := &batchRun{p: p, items: items, answers: make([]Answer, len(items))}
	// Every command gets the same function: each call handles the next
	// command not yet taken, so that a batch makes one function, not one per
	// command. start runs as many as it accepted, and the commands taken are
	// as many.
	handleNext := run.handleNext
	stopped := false
	for range items {
		run.wg.Add(1)
		if !start(handleNext) {
			run.wg.Done()
			stopped = true
			break
		}
	}
	run.wg.Wait()
	if stopped {
		return BatchAnswer{Stopped: true}
	}
	return p.batchAnswer(run.answers)
}

// batchRun is one batch on its way through HandleBatch.
type batchRun struct {
	p       *Processor
	items   []messages.BatchItem
	answers []Answer // by item
	next    atomic.Int64
	wg      sync.WaitGroup // the commands started and not yet answered
}

// handleNext handles the next command of the batch not yet taken.
func (b *batchRun) handleNext() {
	defer b.wg.Done()
	i := b.next.Add(1) - 1
	it := b.items[i]
	b.p.Handle(it.Header, it.Body, "", func(a Answer) { b.answers[i] = a })
}

// batchAnswer makes the BatchAnswer of a batch whose commands were all
// answered, answers in the batch's order.
func (p *Processor) batchAnswer(answers []Answer) BatchAnswer {
	ba := BatchAnswer{Settle: SettleTerm}
	var group []messages.Reply // consecutive replies to one subject
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
		if group == nil {
			group = make([]messages.Reply, 0, len(answers)-i)
		}
		group = append(group, a.Reply)
		if i+1 < len(answers) && answers[i+1].ReplyTo == a.ReplyTo {
			continue
		}
		m := ReplyMessage{Subject: a.ReplyTo}
		if len(group) == 1 {
			m.Header, m.Body = group[0].Header(), group[0].Body()
		} else {
			var err error
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
		group = group[:0] // EncodeReplyBatch keeps nothing of it
	}
	return ba
}
