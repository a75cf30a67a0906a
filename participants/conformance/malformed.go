package conformance

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
)

// VersionOneDotZero spoils a reply as a peer that got the version wrong
// does: header Natstx-Version "1.0".
func VersionOneDotZero(h nats.Header) nats.Header {
	h.Set(messages.HeaderVersion, "1.0")
	return h
}

// StartMalformedReplier runs, on nc, a participant name that answers every
// command it is sent, voting yes and acknowledging, but with a reply whose
// headers spoil changed, which the coordinator cannot read (a peer in
// another language that speaks the protocol wrongly). It returns how many
// replies it sent so far, and a function that stops it (also called when
// t ends); nc stays open.
func StartMalformedReplier(t testing.TB, nc *nats.Conn, name string, spoil func(nats.Header) nats.Header) (sent func() int64, stop func()) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.ConsumerName(name), FilterSubject: messages.ParticipantFilter(name), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) {
		cmd, err := messages.DecodeCommand(map[string][]string(m.Headers()), m.Data())
		if err != nil {
			_ = m.Term()
			return
		}
		r := messages.Reply{TxID: cmd.TxID, Op: cmd.Op, Participant: cmd.Participant, Result: messages.VoteCommit, Attempt: cmd.Attempt}
		if cmd.Op != messages.OpPrepare {
			r.Result = messages.Ack
		}
		if nc.PublishMsg(&nats.Msg{Subject: cmd.ReplyTo, Header: spoil(nats.Header(r.Header()))}) == nil {
			n.Add(1)
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(cc.Stop) }
	t.Cleanup(stop)
	return n.Load, stop
}
