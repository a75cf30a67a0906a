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
