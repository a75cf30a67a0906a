package messages_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/natstx/natstx/messages"
)

func batchCommands() []messages.Command {
	a := validCommand()
	b := validCommand()
	b.TxID, b.Payload, b.Attempt = "tx-0002", nil, 3
	c := validCommand()
	c.TxID, c.Op, c.Step = "saga-1", messages.OpCompensate, "charge"
	return []messages.Command{a, b, c}
}

func TestCommandBatchRoundTripsEveryCommand(t *testing.T) {
	cmds := batchCommands()
	h, body, err := messages.EncodeCommandBatch("orders", "c1.m1", cmds)
	if err != nil {
		t.Fatal(err)
	}
	if !messages.IsBatch(h) || h[messages.HeaderBatch][0] != "3" || h[messages.HeaderParticipant][0] != "orders" || h[messages.HeaderMsgID][0] != "c1.m1" {
		t.Fatalf("batch headers %v", h)
	}
	items, err := messages.DecodeBatch(h, body)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != len(cmds) {
		t.Fatalf("%d items, want %d", len(items), len(cmds))
	}
	for i, it := range items {
		if _, dup := it.Header[messages.HeaderMsgID]; dup {
			t.Errorf("item %d keeps its own %s; the batch's counts", i, messages.HeaderMsgID)
		}
		got, err := messages.DecodeCommand(it.Header, it.Body)
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		want := cmds[i]
		if got.TxID != want.TxID || got.Op != want.Op || got.Attempt != want.Attempt || got.Step != want.Step ||
			got.ReplyTo != want.ReplyTo || !got.Deadline.Equal(want.Deadline) || string(got.Payload) != string(want.Payload) {
			t.Errorf("item %d: got %+v, want %+v", i, got, want)
		}
	}
}

func TestReplyBatchRoundTripsEveryReply(t *testing.T) {
	replies := []messages.Reply{
		{TxID: "tx-1", Op: messages.OpPrepare, Participant: "orders", Result: messages.VoteAbort, Attempt: 1, Reason: "out of stock:\r\n2 left"},
		{TxID: "tx-2", Op: messages.OpCommit, Participant: "orders", Result: messages.Ack, Attempt: 2},
		{TxID: "s-1", Op: messages.OpAction, Participant: "orders", Result: messages.Refused, Attempt: 1, Step: "reserve", Code: "no-stock", Reason: "none"},
	}
	h, body, err := messages.EncodeReplyBatch(replies)
	if err != nil {
		t.Fatal(err)
	}
	items, err := messages.DecodeBatch(h, body)
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		got, err := messages.DecodeReply(it.Header, it.Body)
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		if got != replies[i] {
			t.Errorf("item %d: got %+v, want %+v", i, got, replies[i])
		}
	}
}

func TestBatchEncodersRefuseWhatIsNotABatch(t *testing.T) {
	if _, _, err := messages.EncodeReplyBatch(nil); !errors.Is(err, messages.ErrMalformed) {
		t.Errorf("empty batch: %v", err)
	}
	many := make([]messages.Reply, messages.MaxBatch+1)
	for i := range many {
		many[i] = messages.Reply{TxID: "t", Op: messages.OpCommit, Participant: "p", Result: messages.Ack, Attempt: 1}
	}
	if _, _, err := messages.EncodeReplyBatch(many); !errors.Is(err, messages.ErrMalformed) {
		t.Errorf("%d replies: %v", len(many), err)
	}
	if _, _, err := messages.EncodeCommandBatch("billing", "m", batchCommands()); !errors.Is(err, messages.ErrMalformed) {
		t.Errorf("commands for orders in a batch for billing: %v", err)
	}
}

func TestDecodeBatchRejectsMalformedBatches(t *testing.T) {
	h, body, err := messages.EncodeCommandBatch("orders", "m", batchCommands())
	if err != nil {
		t.Fatal(err)
	}
	with := func(name, value string) map[string][]string {
		c := map[string][]string{}
		for k, v := range h {
			c[k] = v
		}
		c[name] = []string{value}
		return c
	}
	for _, tc := range []struct {
		name    string
		h       map[string][]string
		body    []byte
		err     error
		mention string
	}{
		{"version 3", with(messages.HeaderVersion, "3"), body, messages.ErrVersion, `"3"`},
		{"count zero", with(messages.HeaderBatch, "0"), body, messages.ErrMalformed, messages.HeaderBatch},
		{"count over the limit", with(messages.HeaderBatch, "257"), body, messages.ErrMalformed, messages.HeaderBatch},
		{"count not a number", with(messages.HeaderBatch, "three"), body, messages.ErrMalformed, messages.HeaderBatch},
		{"fewer items than the count", with(messages.HeaderBatch, "4"), body, messages.ErrMalformed, "item 4 of 4"},
		{"more items than the count", with(messages.HeaderBatch, "2"), body, messages.ErrMalformed, "bytes after the 2 items"},
		{"truncated", h, body[:len(body)-3], messages.ErrMalformed, "item 3 of 3"},
		{"no framing", h, []byte("hello"), messages.ErrMalformed, "item 1 of 3"},
		{"a length past the end", with(messages.HeaderBatch, "1"), []byte("900 0\r\nA: b\r\n"), messages.ErrMalformed, "within"},
		{"a header line without CRLF", with(messages.HeaderBatch, "1"), []byte("4 0\r\nA: b"), messages.ErrMalformed, "CRLF"},
		{"a header line without a colon", with(messages.HeaderBatch, "1"), []byte("3 0\r\nA\r\n"), messages.ErrMalformed, "Name: value"},
	} {
		_, err := messages.DecodeBatch(tc.h, tc.body)
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, err, tc.err, tc.mention)
		}
	}
}

func TestBatchSubjectNamesItsParticipant(t *testing.T) {
	s := messages.BatchSubject("orders", "abc")
	if !subjectMatches(messages.ParticipantFilter("orders"), s) || subjectMatches(messages.ParticipantFilter("billing"), s) {
		t.Errorf("%q under the wrong filters", s)
	}
	if p, ok := messages.BatchParticipant(s); !ok || p != "orders" {
		t.Errorf("BatchParticipant(%q) = %q, %v", s, p, ok)
	}
	for _, bad := range []string{messages.CommandSubject("orders", "batch"), messages.CommandSubject("batch", "tx-1"), "natstx.cmd.orders.batch.", "natstx.cmd.orders.batch.a.b", "other.orders.batch.x"} {
		if _, ok := messages.BatchParticipant(bad); ok {
			t.Errorf("BatchParticipant(%q) accepted", bad)
		}
	}
}
