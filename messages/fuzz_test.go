package messages_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/natstx/natstx/messages"
)

// fuzzHeader builds a message header from one fuzzer string per header: ""
// leaves the header out, and '\n' separates repeated values, so that the
// fuzzer can reach missing, repeated and empty-but-present headers.
func fuzzHeader(values map[string]string) map[string][]string {
	h := map[string][]string{}
	for name, v := range values {
		if v != "" {
			h[name] = strings.Split(v, "\n")
		}
	}
	return h
}

// checkSentinel fails unless err wraps one of the package's sentinel errors.
func checkSentinel(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, messages.ErrMalformed) && !errors.Is(err, messages.ErrVersion) && !errors.Is(err, messages.ErrInvalidName) {
		t.Fatalf("error %q wraps none of ErrMalformed, ErrVersion, ErrInvalidName", err)
	}
}

// checkSingleValues fails unless every header of h has exactly one value.
func checkSingleValues(t *testing.T, h map[string][]string) {
	t.Helper()
	for name, vs := range h {
		if len(vs) != 1 {
			t.Fatalf("encoded header %s has %d values %q, want 1", name, len(vs), vs)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	v := fmt.Sprint(messages.Version)
	type seed struct {
		version, txid, op, participant, attempt, replyTo, deadline string
		body                                                       []byte
	}
	for _, s := range []seed{
		// Valid commands.
		{v, "tx-1", "prepare", "orders", "1", "natstx.reply.coord-1", "1935990489123", []byte(`{"qty":2}`)},
		{v, "tx-1", "prepare", "orders", "2", "natstx.reply.coord-1", "", nil},
		{v, "TX_2", "commit", "billing", "1", "_INBOX.abc.def", "", nil},
		{v, "tx-3", "abort", "b", "17", "r", "1", nil},
		{v, strings.Repeat("t", messages.MaxNameLen), "prepare", strings.Repeat("p", messages.MaxNameLen), "1", "a.b.c", "9223372036854775807", []byte{0, 0xff}},
		{v, "tx-1", "prepare", "orders", "+1", "natstx.reply.coord-1", "+5", nil},
		// Invalid commands.
		{"", "tx-1", "prepare", "orders", "1", "natstx.reply.coord-1", "", nil},
		{"1", "tx-1", "prepare", "orders", "1", "natstx.reply.coord-1", "", nil},
		{"1\n1", "tx-1", "prepare", "orders", "1", "natstx.reply.coord-1", "", nil},
		{v, "", "prepare", "orders", "1", "natstx.reply.coord-1", "", nil},
		{v, "tx.1", "prepare", "orders", "1", "natstx.reply.coord-1", "", nil},
		{v, "tx*", "commit", "orders", "1", "natstx.reply.coord-1", "", nil},
		{v, "tx 1", "abort", "orders", "1", "natstx.reply.coord-1", "", nil},
		{v, strings.Repeat("t", messages.MaxNameLen+1), "prepare", "orders", "1", "natstx.reply.coord-1", "", nil},
		{v, "tx-1", "rollback", "orders", "1", "natstx.reply.coord-1", "", nil},
		{v, "tx-1", "prepare", "\n", "1", "natstx.reply.coord-1", "", nil},
		{v, "tx-1", "prepare", "orders>", "1", "natstx.reply.coord-1", "", nil},
		{v, "tx-1", "prepare", "orders", "0", "natstx.reply.coord-1", "", nil},
		{v, "tx-1", "prepare", "orders", "one", "natstx.reply.coord-1", "", nil},
		{v, "tx-1", "prepare", "orders", "1", "natstx.reply.*", "", nil},
		{v, "tx-1", "prepare", "orders", "1", "natstx..reply", "", nil},
		{v, "tx-1", "prepare", "orders", "1", "natstx.reply.", "", nil},
		{v, "tx-1", "prepare", "orders", "1", "natstx.reply.coord-1", "-5", nil},
		{v, "tx-1", "prepare", "orders", "1", "natstx.reply.coord-1", "0", nil},
		{v, "tx-1", "prepare", "orders", "1", "natstx.reply.coord-1", "later", nil},
		{v, "tx-1", "commit", "orders", "1", "natstx.reply.coord-1", "", []byte("payload")},
	} {
		f.Add(s.version, s.txid, s.op, s.participant, s.attempt, s.replyTo, s.deadline, s.body)
	}

	f.Fuzz(func(t *testing.T, version, txid, op, participant, attempt, replyTo, deadline string, body []byte) {
		h := fuzzHeader(map[string]string{
			messages.HeaderVersion:     version,
			messages.HeaderTxID:        txid,
			messages.HeaderOp:          op,
			messages.HeaderParticipant: participant,
			messages.HeaderAttempt:     attempt,
			messages.HeaderReplyTo:     replyTo,
			messages.HeaderDeadline:    deadline,
		})
		c, err := messages.DecodeCommand(h, body)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if version != fmt.Sprint(messages.Version) {
			t.Fatalf("decoded a command with %s %q", messages.HeaderVersion, version)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded command %+v does not validate: %v", c, err)
		}
		if c.TxID != txid || string(c.Op) != op || c.Participant != participant || c.ReplyTo != replyTo {
			t.Fatalf("decoded command %+v does not carry the header values", c)
		}
		if !bytes.Equal(c.Payload, body) {
			t.Fatalf("Payload = %q, want the body %q", c.Payload, body)
		}

		h2 := c.Header()
		checkSingleValues(t, h2)
		if got, want := h2[messages.HeaderMsgID][0], messages.MsgID(c.TxID, c.Op, c.Participant, c.Attempt); got != want {
			t.Fatalf("header %s = %q, want %q", messages.HeaderMsgID, got, want)
		}
		c2, err := messages.DecodeCommand(h2, c.Payload)
		if err != nil {
			t.Fatalf("re-decoding %+v from %q: %v", c, h2, err)
		}
		if d := diffCommand(c2, c); d != "" {
			t.Fatalf("round trip changed the command: %s", d)
		}
		if h3 := c2.Header(); !reflect.DeepEqual(h3, h2) {
			t.Fatalf("encoding is not stable: %q then %q", h2, h3)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	v := fmt.Sprint(messages.Version)
	type seed struct {
		version, txid, op, participant, result, attempt string
		body                                            []byte
	}
	long := bytes.Repeat([]byte("x"), messages.MaxReasonLen)
	for _, s := range []seed{
		// Valid replies.
		{v, "tx-1", "prepare", "orders", "vote-commit", "1", nil},
		{v, "tx-1", "prepare", "orders", "vote-abort", "2", []byte("out of stock")},
		{v, "tx-1", "prepare", "orders", "failed", "3", []byte("zu spät — 遅すぎる 🙁")},
		{v, "tx-1", "commit", "orders", "ack", "1", nil},
		{v, "tx-1", "commit", "orders", "failed", "1", []byte("disk full")},
		{v, "tx-1", "abort", "orders", "ack", "9", nil},
		{v, "tx-1", "abort", "orders", "failed", "1", long},
		// Invalid replies.
		{"", "tx-1", "prepare", "orders", "vote-commit", "1", nil},
		{"1", "tx-1", "prepare", "orders", "vote-commit", "1", nil},
		{v, "tx-1\ntx-1", "prepare", "orders", "vote-commit", "1", nil},
		{v, "tx.1", "prepare", "orders", "vote-commit", "1", nil},
		{v, "tx-1", "prepare", "", "vote-commit", "1", nil},
		{v, "tx-1", "rollback", "orders", "ack", "1", nil},
		{v, "tx-1", "prepare", "orders", "maybe", "1", nil},
		{v, "tx-1", "prepare", "orders", "ack", "1", nil},
		{v, "tx-1", "commit", "orders", "vote-commit", "1", nil},
		{v, "tx-1", "abort", "orders", "vote-abort", "1", nil},
		{v, "tx-1", "commit", "orders", "ack", "0", nil},
		{v, "tx-1", "commit", "orders", "ack", "x", nil},
		{v, "tx-1", "prepare", "orders", "vote-abort", "1", []byte("bad \xff")},
		{v, "tx-1", "prepare", "orders", "vote-abort", "1", append(long, 'x')},
	} {
		f.Add(s.version, s.txid, s.op, s.participant, s.result, s.attempt, s.body)
	}

	f.Fuzz(func(t *testing.T, version, txid, op, participant, result, attempt string, body []byte) {
		h := fuzzHeader(map[string]string{
			messages.HeaderVersion:     version,
			messages.HeaderTxID:        txid,
			messages.HeaderOp:          op,
			messages.HeaderParticipant: participant,
			messages.HeaderResult:      result,
			messages.HeaderAttempt:     attempt,
		})
		r, err := messages.DecodeReply(h, body)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if version != fmt.Sprint(messages.Version) {
			t.Fatalf("decoded a reply with %s %q", messages.HeaderVersion, version)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded reply %+v does not validate: %v", r, err)
		}
		if r.TxID != txid || string(r.Op) != op || r.Participant != participant || string(r.Result) != result || r.Reason != string(body) {
			t.Fatalf("decoded reply %+v does not carry the header values and body", r)
		}

		h2 := r.Header()
		checkSingleValues(t, h2)
		if !bytes.Equal(r.Body(), body) {
			t.Fatalf("Body() = %q, want the decoded body %q", r.Body(), body)
		}
		r2, err := messages.DecodeReply(h2, r.Body())
		if err != nil {
			t.Fatalf("re-decoding %+v from %q: %v", r, h2, err)
		}
		if r2 != r {
			t.Fatalf("round trip changed the reply: %+v, want %+v", r2, r)
		}
	})
}

// FuzzDecodeBatch: DecodeBatch never panics, fails only with the package's
// errors, and decodes exactly the number of items the header announces.
func FuzzDecodeBatch(f *testing.F) {
	cmd := messages.Command{TxID: "tx-1", Op: messages.OpPrepare, Participant: "orders", Attempt: 1, ReplyTo: "natstx.reply.c1.orders", Payload: []byte("{}")}
	cmd2 := cmd
	cmd2.TxID, cmd2.Payload = "tx-2", nil
	h, body, err := messages.EncodeCommandBatch("orders", "m1", []messages.Command{cmd, cmd2})
	if err != nil {
		f.Fatal(err)
	}
	v := fmt.Sprint(messages.Version)
	f.Add(v, h[messages.HeaderBatch][0], body)
	f.Add(v, "1", []byte("0 0\r\n"))
	f.Add(v, "2", []byte("0 0\r\n"))
	f.Add(v, "1", []byte("5 1\r\nA: b\r\nx"))
	f.Add(v, "1", []byte("99999999999999999999 0\r\n"))
	f.Add(v, "1", []byte("-1 0\r\n"))
	f.Add(v, "0", []byte(nil))
	f.Add("3", "1", []byte("0 0\r\n"))
	f.Fuzz(func(t *testing.T, version, count string, body []byte) {
		items, err := messages.DecodeBatch(fuzzHeader(map[string]string{messages.HeaderVersion: version, messages.HeaderBatch: count}), body)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if fmt.Sprint(len(items)) != count {
			t.Fatalf("decoded %d items, %s says %s", len(items), messages.HeaderBatch, count)
		}
	})
}
