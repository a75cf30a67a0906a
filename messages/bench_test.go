package messages_test

import (
	"fmt"
	"testing"

	"github.com/natstx/natstx/messages"
)

// The wire encoding's hot paths: what a coordinator does per command and a
// participant per reply, alone and in batches.

func BenchmarkCommandEncodeDecode(b *testing.B) {
	c := validCommand()
	b.ReportAllocs()
	for b.Loop() {
		h := c.Header()
		if _, err := messages.DecodeCommand(h, c.Payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReplyEncodeDecode(b *testing.B) {
	r := messages.Reply{TxID: "tx-0001", Op: messages.OpPrepare, Participant: "orders", Result: messages.VoteCommit, Attempt: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := messages.DecodeReply(r.Header(), r.Body()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommandBatch encodes and decodes a batch of n commands; per
// command it costs what one command alone does, for one message instead of n.
func BenchmarkCommandBatch(b *testing.B) {
	for _, n := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("commands=%d", n), func(b *testing.B) {
			cmds := make([]messages.Command, n)
			for i := range cmds {
				cmds[i] = validCommand()
				cmds[i].TxID = fmt.Sprintf("tx-%04d", i)
			}
			b.ReportAllocs()
			for b.Loop() {
				h, body, err := messages.EncodeCommandBatch("orders", "m", cmds)
				if err != nil {
					b.Fatal(err)
				}
				items, err := messages.DecodeBatch(h, body)
				if err != nil {
					b.Fatal(err)
				}
				for _, it := range items {
					if _, err := messages.DecodeCommand(it.Header, it.Body); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/command")
		})
	}
}

// batchOf64 is a 64-item batch as a busy coordinator sends one participant:
// prepares with a deadline, a payload and a trace context.
func batchOf64() []messages.Command {
	cmds := make([]messages.Command, 64)
	for i := range cmds {
		cmds[i] = validCommand()
		cmds[i].TxID = fmt.Sprintf("4FQ3ZKcJmgxA6pJnS0Q%03d", i)
		cmds[i].Sender = "SxNJm0Dmj5Csn1tbCDNCF1"
		cmds[i].TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	}
	return cmds
}

// repliesOf64 answers batchOf64's commands.
func repliesOf64() []messages.Reply {
	rs := make([]messages.Reply, 64)
	for i, c := range batchOf64() {
		rs[i] = messages.Reply{TxID: c.TxID, Op: c.Op, Participant: c.Participant, Result: messages.VoteCommit, Attempt: 1}
	}
	return rs
}

// BenchmarkEncodeCommandBatch64 is what a coordinator does to send 64
// commands to one participant in one message.
func BenchmarkEncodeCommandBatch64(b *testing.B) {
	cmds := batchOf64()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := messages.EncodeCommandBatch("orders", "m", cmds); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCommandBatch64 is what a participant does to read a batch
// of 64 commands: the framing, then each command.
func BenchmarkDecodeCommandBatch64(b *testing.B) {
	h, body, err := messages.EncodeCommandBatch("orders", "m", batchOf64())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		items, err := messages.DecodeBatch(h, body)
		if err != nil {
			b.Fatal(err)
		}
		for _, it := range items {
			if _, err := messages.DecodeCommand(it.Header, it.Body); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEncodeReplyBatch64 is what a participant does to answer 64
// commands in one message.
func BenchmarkEncodeReplyBatch64(b *testing.B) {
	rs := repliesOf64()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := messages.EncodeReplyBatch(rs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeReplyBatch64 is what a coordinator does to read a batch of
// 64 replies.
func BenchmarkDecodeReplyBatch64(b *testing.B) {
	h, body, err := messages.EncodeReplyBatch(repliesOf64())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		items, err := messages.DecodeBatch(h, body)
		if err != nil {
			b.Fatal(err)
		}
		for _, it := range items {
			if _, err := messages.DecodeReply(it.Header, it.Body); err != nil {
				b.Fatal(err)
			}
		}
	}
}
