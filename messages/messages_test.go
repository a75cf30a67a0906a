package messages_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/natstx/natstx/messages"
)

// Fixtures shared by the tests: a valid command and a valid reply, from which
// the malformed cases are derived one change at a time.

func validCommand() messages.Command {
	return messages.Command{
		TxID:        "tx-0001",
		Op:          messages.OpPrepare,
		Participant: "orders",
		Deadline:    time.Date(2031, time.May, 6, 7, 8, 9, 123_000_000, time.UTC),
		Attempt:     1,
		ReplyTo:     messages.ReplySubject("coord-1", "orders"),
		Payload:     []byte(`{"sku":"A-1","qty":2}`),
	}
}

func validReply() messages.Reply {
	return messages.Reply{
		TxID:        "tx-0001",
		Op:          messages.OpPrepare,
		Participant: "orders",
		Result:      messages.VoteAbort,
		Attempt:     1,
		Reason:      "out of stock",
	}
}

// diffCommand describes the first field in which got differs from want, or
// returns "" when they are equal. Deadlines are compared as instants and an
// empty payload equals a nil one.
func diffCommand(got, want messages.Command) string {
	switch {
	case got.TxID != want.TxID:
		return fmt.Sprintf("TxID = %q, want %q", got.TxID, want.TxID)
	case got.Op != want.Op:
		return fmt.Sprintf("Op = %q, want %q", got.Op, want.Op)
	case got.Participant != want.Participant:
		return fmt.Sprintf("Participant = %q, want %q", got.Participant, want.Participant)
	case !got.Deadline.Equal(want.Deadline):
		return fmt.Sprintf("Deadline = %v, want %v", got.Deadline, want.Deadline)
	case got.Attempt != want.Attempt:
		return fmt.Sprintf("Attempt = %d, want %d", got.Attempt, want.Attempt)
	case got.ReplyTo != want.ReplyTo:
		return fmt.Sprintf("ReplyTo = %q, want %q", got.ReplyTo, want.ReplyTo)
	case !bytes.Equal(got.Payload, want.Payload):
		return fmt.Sprintf("Payload = %q, want %q", got.Payload, want.Payload)
	case got.TraceParent != want.TraceParent || got.TraceState != want.TraceState:
		return fmt.Sprintf("trace context = %q %q, want %q %q", got.TraceParent, got.TraceState, want.TraceParent, want.TraceState)
	}
	return ""
}

// checkError asserts that err wraps sentinel and that its message contains
// every string in mention (the offending header or field, and its value).
func checkError(t *testing.T, err, sentinel error, mention ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %q", err, sentinel)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

func TestCommandRoundTrip(t *testing.T) {
	prepare := validCommand()

	commit := validCommand()
	commit.Op, commit.Deadline, commit.Payload, commit.Attempt = messages.OpCommit, time.Time{}, nil, 3

	abort := validCommand()
	abort.Op, abort.Payload = messages.OpAbort, nil

	prepareNoPayload := validCommand()
	prepareNoPayload.Payload = nil

	binaryPayload := validCommand()
	binaryPayload.Payload = []byte{0x00, 0xff, '\r', '\n', 0x80}

	traced := validCommand()
	traced.TraceParent, traced.TraceState = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "natstx=1,vendor=x"

	maxNames := validCommand()
	maxNames.TxID = strings.Repeat("t", messages.MaxNameLen)
	maxNames.Participant = strings.Repeat("P_-9", messages.MaxNameLen/4)
	maxNames.ReplyTo = "_INBOX.abc.DEF.123"

	for _, tc := range []struct {
		name string
		cmd  messages.Command
	}{
		{"prepare with payload and deadline", prepare},
		{"prepare without payload", prepareNoPayload},
		{"prepare with binary payload", binaryPayload},
		{"commit without deadline", commit},
		{"abort", abort},
		{"names at the length limit", maxNames},
		{"with a trace context", traced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cmd.Validate(); err != nil {
				t.Fatalf("fixture does not validate: %v", err)
			}
			got, err := messages.DecodeCommand(tc.cmd.Header(), tc.cmd.Payload)
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if d := diffCommand(got, tc.cmd); d != "" {
				t.Error(d)
			}
		})
	}
}

// A broken trace context is dropped (the participant starts a new trace),
// never a reason to refuse the command.
func TestCommandDropsABrokenTraceContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(map[string][]string)
	}{
		{"traceparent repeated", func(h map[string][]string) { h[messages.HeaderTraceParent] = []string{"a", "b"} }},
		{"traceparent too long", func(h map[string][]string) {
			h[messages.HeaderTraceParent] = []string{strings.Repeat("0", messages.MaxTraceHeaderLen+1)}
		}},
		{"tracestate without traceparent", func(h map[string][]string) {
			delete(h, messages.HeaderTraceParent)
			h[messages.HeaderTraceState] = []string{"a=b"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validCommand()
			c.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			h := c.Header()
			tc.edit(h)
			got, err := messages.DecodeCommand(h, c.Payload)
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if got.TraceParent != "" || got.TraceState != "" {
				t.Errorf("trace context = %q %q, want it dropped", got.TraceParent, got.TraceState)
			}
		})
	}
}

func TestCommandWithEmptyBodyHasNoPayload(t *testing.T) {
	c := validCommand()
	c.Op, c.Payload = messages.OpCommit, nil
	got, err := messages.DecodeCommand(c.Header(), []byte{})
	if err != nil {
		t.Fatalf("DecodeCommand of commit with empty body: %v", err)
	}
	if got.Payload != nil {
		t.Errorf("Payload = %q, want nil", got.Payload)
	}
}

func TestCommandDeadlineKeepsMillisecondPrecision(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline time.Time
		want     time.Time
	}{
		{
			name:     "sub-millisecond part is dropped",
			deadline: time.Date(2031, time.May, 6, 7, 8, 9, 123_456_789, time.UTC),
			want:     time.Date(2031, time.May, 6, 7, 8, 9, 123_000_000, time.UTC),
		},
		{
			name:     "whole milliseconds survive exactly",
			deadline: time.Date(2031, time.May, 6, 7, 8, 9, 999_000_000, time.UTC),
			want:     time.Date(2031, time.May, 6, 7, 8, 9, 999_000_000, time.UTC),
		},
		{
			name:     "time zone does not matter",
			deadline: time.Date(2031, time.May, 6, 9, 8, 9, 5_000_000, time.FixedZone("UTC+2", 2*60*60)),
			want:     time.Date(2031, time.May, 6, 7, 8, 9, 5_000_000, time.UTC),
		},
		{
			name:     "one millisecond after the epoch",
			deadline: time.UnixMilli(1),
			want:     time.UnixMilli(1),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validCommand()
			c.Deadline = tc.deadline
			h := c.Header()
			if want := fmt.Sprint(tc.want.UnixMilli()); len(h[messages.HeaderDeadline]) != 1 || h[messages.HeaderDeadline][0] != want {
				t.Errorf("header %s = %q, want [%q]", messages.HeaderDeadline, h[messages.HeaderDeadline], want)
			}
			got, err := messages.DecodeCommand(h, c.Payload)
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if !got.Deadline.Equal(tc.want) {
				t.Errorf("Deadline = %v, want %v", got.Deadline, tc.want)
			}
		})
	}
}

func TestCommandWithoutDeadlineHasNoDeadlineHeader(t *testing.T) {
	c := validCommand()
	c.Deadline = time.Time{}
	if v, ok := c.Header()[messages.HeaderDeadline]; ok {
		t.Errorf("header %s = %q, want it absent", messages.HeaderDeadline, v)
	}
}

func TestCommandHeaderHasOneValuePerHeader(t *testing.T) {
	c := validCommand()
	for name, vs := range c.Header() {
		if len(vs) != 1 {
			t.Errorf("header %s has %d values, want 1", name, len(vs))
		}
	}
	h := c.Header()
	for name, want := range map[string]string{
		messages.HeaderVersion:     fmt.Sprint(messages.Version),
		messages.HeaderTxID:        c.TxID,
		messages.HeaderOp:          string(c.Op),
		messages.HeaderParticipant: c.Participant,
		messages.HeaderAttempt:     "1",
		messages.HeaderReplyTo:     c.ReplyTo,
		messages.HeaderMsgID:       messages.MsgID(c.TxID, c.Op, c.Participant, c.Attempt),
	} {
		if got := h[name]; len(got) != 1 || got[0] != want {
			t.Errorf("header %s = %q, want [%q]", name, got, want)
		}
	}
}

func TestDecodeIgnoresUnknownHeaders(t *testing.T) {
	c := validCommand()
	h := c.Header()
	h["Nats-Expected-Stream"] = []string{messages.CommandStream}
	h["X-Trace"] = []string{"a", "b"}
	if _, err := messages.DecodeCommand(h, c.Payload); err != nil {
		t.Errorf("DecodeCommand with extra headers: %v", err)
	}

	r := validReply()
	rh := r.Header()
	rh["X-Trace"] = []string{"a", "b"}
	if _, err := messages.DecodeReply(rh, r.Body()); err != nil {
		t.Errorf("DecodeReply with extra headers: %v", err)
	}
}

// replyValidity lists every (op, result) pair and whether the protocol allows
// it: prepare is answered with a vote or failed, commit and abort with an ack or
// failed.
var replyValidity = []struct {
	op     messages.Op
	result messages.Result
	valid  bool
}{
	{messages.OpPrepare, messages.VoteCommit, true},
	{messages.OpPrepare, messages.VoteAbort, true},
	{messages.OpPrepare, messages.VoteReadOnly, true},
	{messages.OpPrepare, messages.Failed, true},
	{messages.OpPrepare, messages.Ack, false},
	{messages.OpCommit, messages.Ack, true},
	{messages.OpCommit, messages.Failed, true},
	{messages.OpCommit, messages.VoteCommit, false},
	{messages.OpCommit, messages.VoteAbort, false},
	{messages.OpCommit, messages.VoteReadOnly, false},
	{messages.OpAbort, messages.Ack, true},
	{messages.OpAbort, messages.Failed, true},
	{messages.OpAbort, messages.VoteCommit, false},
	{messages.OpAbort, messages.VoteAbort, false},
	{messages.OpAbort, messages.VoteReadOnly, false},
	{messages.OpCommitOnePhase, messages.Ack, true},
	{messages.OpCommitOnePhase, messages.VoteAbort, true},
	{messages.OpCommitOnePhase, messages.Failed, true},
	{messages.OpCommitOnePhase, messages.VoteCommit, false},
	{messages.OpCommitOnePhase, messages.VoteReadOnly, false},
	{messages.OpAction, messages.VoteReadOnly, false},
	{messages.OpCompensate, messages.VoteReadOnly, false},
}

func TestReplyRoundTripForEveryValidOpResultPair(t *testing.T) {
	for _, p := range replyValidity {
		if !p.valid {
			continue
		}
		for _, reason := range []string{"", "disk full", "zu spät — 遅すぎる 🙁"} {
			t.Run(fmt.Sprintf("%s/%s/reason=%q", p.op, p.result, reason), func(t *testing.T) {
				want := validReply()
				want.Op, want.Result, want.Attempt, want.Reason = p.op, p.result, 7, reason
				if err := want.Validate(); err != nil {
					t.Fatalf("fixture does not validate: %v", err)
				}
				got, err := messages.DecodeReply(want.Header(), want.Body())
				if err != nil {
					t.Fatalf("DecodeReply: %v", err)
				}
				if got != want {
					t.Errorf("DecodeReply = %+v, want %+v", got, want)
				}
			})
		}
	}
}

func TestReplyRejectsEveryInvalidOpResultPair(t *testing.T) {
	for _, p := range replyValidity {
		if p.valid {
			continue
		}
		t.Run(fmt.Sprintf("%s/%s", p.op, p.result), func(t *testing.T) {
			r := validReply()
			r.Op, r.Result = p.op, p.result
			checkError(t, r.Validate(), messages.ErrMalformed, string(p.op), fmt.Sprintf("%q", p.result))
			_, err := messages.DecodeReply(r.Header(), r.Body())
			checkError(t, err, messages.ErrMalformed, string(p.op), fmt.Sprintf("%q", p.result))
		})
	}
}

func TestReplyReasonAtTheLimitRoundTrips(t *testing.T) {
	r := validReply()
	// Exactly MaxReasonLen bytes.
	r.Reason = strings.Repeat("x", messages.MaxReasonLen)
	got, err := messages.DecodeReply(r.Header(), r.Body())
	if err != nil {
		t.Fatalf("DecodeReply: %v", err)
	}
	if got.Reason != r.Reason {
		t.Errorf("reason has %d bytes after the round trip, want %d", len(got.Reason), len(r.Reason))
	}
}

func TestReplyBodyCutsLongReasonAtCharacterBoundary(t *testing.T) {
	r := validReply()
	// 1022 bytes of ASCII then a 3-byte rune that straddles the limit.
	r.Reason = strings.Repeat("x", messages.MaxReasonLen-2) + "€ and more"
	body := r.Body()
	if want := messages.MaxReasonLen - 2; len(body) != want {
		t.Errorf("len(Body()) = %d, want %d", len(body), want)
	}
	if !utf8.Valid(body) {
		t.Errorf("Body() is not valid UTF-8: it ends in %q", body[len(body)-3:])
	}
	got, err := messages.DecodeReply(r.Header(), body)
	if err != nil {
		t.Fatalf("DecodeReply of a cut reason: %v", err)
	}
	if got.Reason != string(body) {
		t.Errorf("Reason = %q, want the body", got.Reason)
	}
}

// set replaces the values of header name; with no values it deletes the
// header.
func set(name string, values ...string) func(map[string][]string) {
	return func(h map[string][]string) {
		if len(values) == 0 {
			delete(h, name)
			return
		}
		h[name] = values
	}
}

// repeat gives header name a second copy of its value.
func repeat(name string) func(map[string][]string) {
	return func(h map[string][]string) { h[name] = append(h[name], h[name]...) }
}

// versionCase is a header edit a decoder must refuse as a protocol version
// it does not speak, with what its error must mention.
type versionCase struct {
	name    string
	edit    func(map[string][]string)
	mention []string
}

// otherVersions are the versions before this build's, each named by what
// the next one added, and the one after it: every decoder refuses them with
// ErrVersion, naming the version it speaks for the older ones.
func otherVersions() []versionCase {
	return []versionCase{
		{name: "version 1 (before sagas)", edit: set(messages.HeaderVersion, "1"), mention: []string{messages.HeaderVersion, `"1"`, "speaks 6"}},
		{name: "version 2 (one reply subject per coordinator)", edit: set(messages.HeaderVersion, "2"), mention: []string{messages.HeaderVersion, `"2"`, "speaks 6"}},
		{name: "version 3 (no batches)", edit: set(messages.HeaderVersion, "3"), mention: []string{messages.HeaderVersion, `"3"`, "speaks 6"}},
		{name: "version 4 (no trace context)", edit: set(messages.HeaderVersion, "4"), mention: []string{messages.HeaderVersion, `"4"`, "speaks 6"}},
		{name: "version 5 (no read-only vote)", edit: set(messages.HeaderVersion, "5"), mention: []string{messages.HeaderVersion, `"5"`, "speaks 6"}},
		{name: "wrong version 7", edit: set(messages.HeaderVersion, "7"), mention: []string{messages.HeaderVersion, `"7"`}},
	}
}

func TestDecodeCommandRejectsMalformedInput(t *testing.T) {
	type testCase struct {
		name     string
		edit     func(map[string][]string)
		body     []byte // nil means the valid prepare's payload
		op       messages.Op
		sentinel error
		mention  []string
	}
	cases := []testCase{
		{name: "missing version", edit: set(messages.HeaderVersion), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderVersion, "missing"}},
		{name: "empty version", edit: set(messages.HeaderVersion, ""), sentinel: messages.ErrVersion, mention: []string{messages.HeaderVersion}},
		{name: "version with padding", edit: set(messages.HeaderVersion, " 1"), sentinel: messages.ErrVersion, mention: []string{messages.HeaderVersion, `" 1"`}},
		{name: "header with no values", edit: func(h map[string][]string) { h[messages.HeaderTxID] = []string{} }, sentinel: messages.ErrMalformed, mention: []string{messages.HeaderTxID, "missing"}},

		{name: "attempt not a number", edit: set(messages.HeaderAttempt, "first"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderAttempt, `"first"`}},
		{name: "attempt empty", edit: set(messages.HeaderAttempt, ""), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderAttempt}},
		{name: "attempt overflows int", edit: set(messages.HeaderAttempt, "99999999999999999999"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderAttempt}},
		{name: "attempt 0", edit: set(messages.HeaderAttempt, "0"), sentinel: messages.ErrMalformed, mention: []string{"attempt 0"}},
		{name: "attempt negative", edit: set(messages.HeaderAttempt, "-1"), sentinel: messages.ErrMalformed, mention: []string{"attempt -1"}},

		{name: "deadline not a number", edit: set(messages.HeaderDeadline, "soon"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderDeadline, `"soon"`}},
		{name: "deadline RFC 3339", edit: set(messages.HeaderDeadline, "2031-05-06T07:08:09Z"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderDeadline}},
		{name: "deadline negative", edit: set(messages.HeaderDeadline, "-5"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderDeadline, `"-5"`}},
		{name: "deadline zero", edit: set(messages.HeaderDeadline, "0"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderDeadline, `"0"`}},
		{name: "deadline overflows int64", edit: set(messages.HeaderDeadline, "9223372036854775808"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderDeadline}},

		{name: "unknown op", edit: set(messages.HeaderOp, "rollback"), sentinel: messages.ErrMalformed, mention: []string{"operation", `"rollback"`}},
		{name: "op in upper case", edit: set(messages.HeaderOp, "PREPARE"), sentinel: messages.ErrMalformed, mention: []string{"operation", `"PREPARE"`}},
		{name: "empty op", edit: set(messages.HeaderOp, ""), sentinel: messages.ErrMalformed, mention: []string{"operation"}},

		{name: "empty participant", edit: set(messages.HeaderParticipant, ""), sentinel: messages.ErrInvalidName, mention: []string{"participant", "empty"}},
		{name: "participant with dot", edit: set(messages.HeaderParticipant, "orders.eu"), sentinel: messages.ErrInvalidName, mention: []string{"participant", `"orders.eu"`, "byte 6"}},
		{name: "participant too long", edit: set(messages.HeaderParticipant, strings.Repeat("p", messages.MaxNameLen+1)), sentinel: messages.ErrInvalidName, mention: []string{"participant", "129 bytes"}},

		{name: "reply-to empty", edit: set(messages.HeaderReplyTo, ""), sentinel: messages.ErrMalformed, mention: []string{"reply subject", "empty"}},
		{name: "reply-to with * wildcard", edit: set(messages.HeaderReplyTo, "natstx.reply.*"), sentinel: messages.ErrMalformed, mention: []string{"reply subject", `"natstx.reply.*"`, "byte 13"}},
		{name: "reply-to with > wildcard", edit: set(messages.HeaderReplyTo, "natstx.>"), sentinel: messages.ErrMalformed, mention: []string{"reply subject", `"natstx.>"`}},
		{name: "reply-to with empty token", edit: set(messages.HeaderReplyTo, "natstx..reply"), sentinel: messages.ErrMalformed, mention: []string{"reply subject", `"natstx..reply"`, "empty token"}},
		{name: "reply-to with leading dot", edit: set(messages.HeaderReplyTo, ".natstx.reply"), sentinel: messages.ErrMalformed, mention: []string{"reply subject", "empty token"}},
		{name: "reply-to with trailing dot", edit: set(messages.HeaderReplyTo, "natstx.reply."), sentinel: messages.ErrMalformed, mention: []string{"reply subject", `"natstx.reply."`, "ends with '.'"}},
		{name: "reply-to only a dot", edit: set(messages.HeaderReplyTo, "."), sentinel: messages.ErrMalformed, mention: []string{"reply subject"}},
		{name: "reply-to with space", edit: set(messages.HeaderReplyTo, "natstx.reply coord"), sentinel: messages.ErrMalformed, mention: []string{"reply subject", "byte 12"}},
		{name: "reply-to with CRLF", edit: set(messages.HeaderReplyTo, "natstx.reply\r\nX-Evil: 1"), sentinel: messages.ErrMalformed, mention: []string{"reply subject", `'\r'`}},
		{name: "reply-to with DEL", edit: set(messages.HeaderReplyTo, "natstx.re\x7fply"), sentinel: messages.ErrMalformed, mention: []string{"reply subject", `'\x7f'`}},
		{name: "reply-to too long", edit: set(messages.HeaderReplyTo, strings.Repeat("r", 4*messages.MaxNameLen+1)), sentinel: messages.ErrMalformed, mention: []string{"reply subject", "513 bytes"}},

		{name: "payload on commit", op: messages.OpCommit, sentinel: messages.ErrMalformed, mention: []string{"commit", "payload"}},
		{name: "payload on abort", op: messages.OpAbort, sentinel: messages.ErrMalformed, mention: []string{"abort", "payload"}},
	}
	for _, v := range otherVersions() {
		cases = append(cases, testCase{name: v.name, edit: v.edit, sentinel: messages.ErrVersion, mention: v.mention})
	}

	for _, name := range []string{messages.HeaderTxID, messages.HeaderOp, messages.HeaderParticipant, messages.HeaderAttempt, messages.HeaderReplyTo} {
		cases = append(cases, testCase{name: "missing " + name, edit: set(name), sentinel: messages.ErrMalformed, mention: []string{"header " + name, "missing"}})
	}
	for _, name := range []string{messages.HeaderVersion, messages.HeaderTxID, messages.HeaderOp, messages.HeaderParticipant, messages.HeaderAttempt, messages.HeaderReplyTo, messages.HeaderDeadline} {
		cases = append(cases, testCase{name: "repeated " + name, edit: repeat(name), sentinel: messages.ErrMalformed, mention: []string{"header " + name, "appears 2 times"}})
	}
	for _, tx := range badTxIDs {
		cases = append(cases, testCase{name: "txid " + tx.name, edit: set(messages.HeaderTxID, tx.value), sentinel: messages.ErrInvalidName, mention: append([]string{"transaction ID"}, tx.mention...)})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validCommand()
			if tc.op != "" {
				c.Op = tc.op // keeps the prepare's payload
			}
			h := c.Header()
			if tc.edit != nil {
				tc.edit(h)
			}
			body := tc.body
			if body == nil {
				body = c.Payload
			}
			_, err := messages.DecodeCommand(h, body)
			checkError(t, err, tc.sentinel, tc.mention...)
		})
	}
}

// badTxIDs are transaction IDs that DecodeCommand, DecodeReply and
// ValidateName must all reject, with what the error must say about them.
var badTxIDs = []struct {
	name    string
	value   string
	mention []string
}{
	{"empty", "", []string{"empty"}},
	{"with '.'", "tx.1", []string{`"tx.1"`, `'.'`, "byte 2"}},
	{"with '*'", "tx*", []string{`'*'`, "byte 2"}},
	{"with '>'", ">", []string{`'>'`, "byte 0"}},
	{"with space", "tx 1", []string{`' '`, "byte 2"}},
	{"with tab", "tx\t1", []string{`'\t'`}},
	{"with NUL", "tx\x001", []string{`'\x00'`}},
	{"with newline", "tx\n", []string{`'\n'`}},
	{"with DEL", "tx\x7f", []string{`'\x7f'`}},
	{"with '/'", "a/b", []string{`'/'`}},
	{"non-ASCII", "tx-é", []string{"byte 3"}},
	{"too long", strings.Repeat("t", messages.MaxNameLen+1), []string{"129 bytes", "limit is 128"}},
}

func TestDecodeReplyRejectsMalformedInput(t *testing.T) {
	type testCase struct {
		name     string
		edit     func(map[string][]string)
		body     []byte // nil means the valid reply's body
		sentinel error
		mention  []string
	}
	cases := []testCase{
		{name: "missing version", edit: set(messages.HeaderVersion), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderVersion, "missing"}},
		{name: "version 0", edit: set(messages.HeaderVersion, "0"), sentinel: messages.ErrVersion, mention: []string{messages.HeaderVersion, `"0"`}},

		{name: "attempt not a number", edit: set(messages.HeaderAttempt, "1st"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderAttempt, `"1st"`}},
		{name: "attempt 0", edit: set(messages.HeaderAttempt, "0"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderAttempt, `"0"`}},
		{name: "attempt negative", edit: set(messages.HeaderAttempt, "-2"), sentinel: messages.ErrMalformed, mention: []string{messages.HeaderAttempt, `"-2"`}},

		{name: "unknown op", edit: set(messages.HeaderOp, "rollback"), sentinel: messages.ErrMalformed, mention: []string{"operation", `"rollback"`}},
		{name: "unknown result", edit: set(messages.HeaderResult, "maybe"), sentinel: messages.ErrMalformed, mention: []string{"result", `"maybe"`}},
		{name: "empty result", edit: set(messages.HeaderResult, ""), sentinel: messages.ErrMalformed, mention: []string{"result"}},
		{name: "prepare answered with ack", edit: set(messages.HeaderResult, string(messages.Ack)), sentinel: messages.ErrMalformed, mention: []string{"prepare", `"ack"`}},
		{
			name: "commit answered with vote",
			edit: func(h map[string][]string) {
				set(messages.HeaderOp, string(messages.OpCommit))(h)
				set(messages.HeaderResult, string(messages.VoteCommit))(h)
			},
			sentinel: messages.ErrMalformed, mention: []string{"commit", `"vote-commit"`},
		},

		{name: "empty participant", edit: set(messages.HeaderParticipant, ""), sentinel: messages.ErrInvalidName, mention: []string{"participant", "empty"}},
		{name: "participant with '>'", edit: set(messages.HeaderParticipant, "orders>"), sentinel: messages.ErrInvalidName, mention: []string{"participant", `'>'`}},

		{name: "non-UTF-8 reason", body: []byte("bad \xff\xfe reason"), sentinel: messages.ErrMalformed, mention: []string{"reason", "UTF-8"}},
		{name: "reason cut inside a character", body: []byte("€")[:2], sentinel: messages.ErrMalformed, mention: []string{"reason", "UTF-8"}},
		{name: "reason over MaxReasonLen", body: bytes.Repeat([]byte("x"), messages.MaxReasonLen+1), sentinel: messages.ErrMalformed, mention: []string{"reason", "1025 bytes", "limit is 1024"}},
	}
	for _, v := range otherVersions() {
		cases = append(cases, testCase{name: v.name, edit: v.edit, sentinel: messages.ErrVersion, mention: v.mention})
	}
	for _, name := range []string{messages.HeaderTxID, messages.HeaderOp, messages.HeaderParticipant, messages.HeaderResult, messages.HeaderAttempt} {
		cases = append(cases, testCase{name: "missing " + name, edit: set(name), sentinel: messages.ErrMalformed, mention: []string{"header " + name, "missing"}})
	}
	for _, name := range []string{messages.HeaderVersion, messages.HeaderTxID, messages.HeaderOp, messages.HeaderParticipant, messages.HeaderResult, messages.HeaderAttempt} {
		cases = append(cases, testCase{name: "repeated " + name, edit: repeat(name), sentinel: messages.ErrMalformed, mention: []string{"header " + name, "appears 2 times"}})
	}
	for _, tx := range badTxIDs {
		cases = append(cases, testCase{name: "txid " + tx.name, edit: set(messages.HeaderTxID, tx.value), sentinel: messages.ErrInvalidName, mention: append([]string{"transaction ID"}, tx.mention...)})
	}
	for _, name := range []string{messages.HeaderVersion, messages.HeaderTxID, messages.HeaderAttempt} {
		lower := strings.ToLower(name)
		cases = append(cases, testCase{name: "lower-case " + name, edit: func(h map[string][]string) { h[lower] = h[name]; delete(h, name) },
			sentinel: messages.ErrMalformed, mention: []string{"header " + name + " is missing", lower + " is there", "case-sensitive"}})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := validReply()
			h := r.Header()
			if tc.edit != nil {
				tc.edit(h)
			}
			body := tc.body
			if body == nil {
				body = r.Body()
			}
			_, err := messages.DecodeReply(h, body)
			checkError(t, err, tc.sentinel, tc.mention...)
		})
	}
}

// TestRejectedTxIDFindsTheTransactionOfAReplyItCannotRead: the ID a
// rejected reply names is found also under a header name in the wrong
// case, so that the rejection reaches its transaction; a missing, repeated
// or invalid ID is none.
func TestRejectedTxIDFindsTheTransactionOfAReplyItCannotRead(t *testing.T) {
	for _, tc := range []struct {
		h    map[string][]string
		want string
	}{
		{map[string][]string{messages.HeaderTxID: {"tx-1"}}, "tx-1"},
		{map[string][]string{"natstx-txid": {"tx-2"}}, "tx-2"},
		{map[string][]string{"NATSTX-TXID": {"tx-3"}}, "tx-3"},
		{map[string][]string{}, ""},
		{map[string][]string{messages.HeaderTxID: {"tx-1", "tx-2"}}, ""},
		{map[string][]string{messages.HeaderTxID: {"a b"}}, ""},
		{map[string][]string{"natstx-txid": {"bad>"}}, ""},
	} {
		if got := messages.RejectedTxID(tc.h); got != tc.want {
			t.Errorf("RejectedTxID(%v) = %q, want %q", tc.h, got, tc.want)
		}
	}
}

// TestCheckRequestReplyAcceptsOnlyInboxes: a request is answered on an
// inbox, never on a JetStream, system or protocol subject.
func TestCheckRequestReplyAcceptsOnlyInboxes(t *testing.T) {
	for _, ok := range []string{"_INBOX.abc.def", messages.OperatorInbox() + ".x1", "myapp.replies.7"} {
		if err := messages.CheckRequestReply(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "$KV.natstx_tx.victim", "$JS.API.STREAM.DELETE.natstx_cmd", "$SYS.x", "natstx.reply.c1.a", "natstx.cmd.a.tx", "_INBOX.*", "_INBOX.>", "a..b", "a b"} {
		if err := messages.CheckRequestReply(bad); !errors.Is(err, messages.ErrMalformed) {
			t.Errorf("%q: %v, want ErrMalformed", bad, err)
		}
	}
}

func TestCommandValidateRejectsBadFields(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(*messages.Command)
		sentinel error
		mention  []string
	}{
		{"empty txid", func(c *messages.Command) { c.TxID = "" }, messages.ErrInvalidName, []string{"transaction ID"}},
		{"bad participant", func(c *messages.Command) { c.Participant = "a.b" }, messages.ErrInvalidName, []string{"participant"}},
		{"unknown op", func(c *messages.Command) { c.Op = "undo" }, messages.ErrMalformed, []string{`"undo"`}},
		{"attempt 0", func(c *messages.Command) { c.Attempt = 0 }, messages.ErrMalformed, []string{"attempt 0"}},
		{"reply-to wildcard", func(c *messages.Command) { c.ReplyTo = "a.*" }, messages.ErrMalformed, []string{"reply subject"}},
		{"payload on commit", func(c *messages.Command) { c.Op = messages.OpCommit }, messages.ErrMalformed, []string{"commit", "payload"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validCommand()
			tc.edit(&c)
			checkError(t, c.Validate(), tc.sentinel, tc.mention...)
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{
		"a",
		"Z",
		"0",
		"-",
		"_",
		"orders-service_2",
		"ABCxyz0123456789",
		strings.Repeat("n", messages.MaxNameLen),
	} {
		if err := messages.ValidateName("participant", ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}

	t.Run("error names the field", func(t *testing.T) {
		for _, what := range []string{"participant", "transaction ID", "instance name"} {
			checkError(t, messages.ValidateName(what, ""), messages.ErrInvalidName, what)
		}
	})
	for _, tc := range badTxIDs {
		t.Run(tc.name, func(t *testing.T) {
			err := messages.ValidateName("transaction ID", tc.value)
			checkError(t, err, messages.ErrInvalidName, append([]string{"transaction ID"}, tc.mention...)...)
		})
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"", 0, ""},
		{"", 5, ""},
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello", 4, "hell"},
		{"hello", 0, ""},
		{"héllo", 1, "h"}, // é is bytes 1-2
		{"héllo", 2, "h"},
		{"héllo", 3, "hé"},
		{"日本語", 2, ""}, // 3-byte runes
		{"日本語", 3, "日"},
		{"日本語", 5, "日"},
		{"日本語", 6, "日本"},
		{"日本語", 8, "日本"},
		{"日本語", 9, "日本語"},
		{"a🙂b", 4, "a"}, // 4-byte rune at bytes 1-4
		{"a🙂b", 5, "a🙂"},
	} {
		if got := messages.Truncate(tc.s, tc.n); got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func TestTruncateNeverSplitsARune(t *testing.T) {
	s := "aé日🙂b€x"
	for n := 0; n <= len(s)+1; n++ {
		got := messages.Truncate(s, n)
		switch {
		case !strings.HasPrefix(s, got):
			t.Errorf("Truncate(%q, %d) = %q, not a prefix", s, n, got)
		case len(got) > n:
			t.Errorf("Truncate(%q, %d) = %q, %d bytes", s, n, got, len(got))
		case !utf8.ValidString(got):
			t.Errorf("Truncate(%q, %d) = %q, splits a character", s, n, got)
		case n < len(s) && len(got) < n-utf8.UTFMax+1:
			t.Errorf("Truncate(%q, %d) = %q, cuts more than one character", s, n, got)
		}
	}
}

func TestMsgIDDiffersPerAttempt(t *testing.T) {
	first := messages.MsgID("tx-1", messages.OpPrepare, "orders", 1)
	second := messages.MsgID("tx-1", messages.OpPrepare, "orders", 2)
	if first == second {
		t.Errorf("attempts 1 and 2 share the message ID %q", first)
	}
	if again := messages.MsgID("tx-1", messages.OpPrepare, "orders", 1); again != first {
		t.Errorf("the same attempt has message IDs %q and %q", first, again)
	}
}

func TestMsgIDDiffersPerTxIDOpAndParticipant(t *testing.T) {
	seen := map[string]string{}
	for _, tx := range []string{"tx-1", "tx-2"} {
		for _, op := range []messages.Op{messages.OpPrepare, messages.OpCommit, messages.OpAbort, messages.OpCommitOnePhase} {
			for _, p := range []string{"orders", "billing"} {
				for _, attempt := range []int{1, 2, 10} {
					what := fmt.Sprintf("%s/%s/%s/%d", tx, op, p, attempt)
					id := messages.MsgID(tx, op, p, attempt)
					if prev, dup := seen[id]; dup {
						t.Errorf("%s and %s share the message ID %q", prev, what, id)
					}
					seen[id] = what
				}
			}
		}
	}
}

func TestMsgIDIsWhatCommandHeaderCarries(t *testing.T) {
	c := validCommand()
	c.Attempt = 4
	want := "tx-0001.prepare.orders.4"
	if got := messages.MsgID(c.TxID, c.Op, c.Participant, c.Attempt); got != want {
		t.Errorf("MsgID = %q, want %q", got, want)
	}
	if got := c.Header()[messages.HeaderMsgID]; len(got) != 1 || got[0] != want {
		t.Errorf("header %s = %q, want [%q]", messages.HeaderMsgID, got, want)
	}
}

func TestSubjectHelpers(t *testing.T) {
	c := validCommand()
	for _, tc := range []struct {
		name, got, want string
	}{
		{"CommandSubject", messages.CommandSubject("orders", "tx-1"), "natstx.cmd.orders.tx-1"},
		{"Command.Subject", c.Subject(), "natstx.cmd.orders.tx-0001"},
		{"ParticipantFilter", messages.ParticipantFilter("orders"), "natstx.cmd.orders.>"},
		{"ReplySubject", messages.ReplySubject("coord-1", "orders"), "natstx.reply.coord-1.orders"},
		{"ReplyFilter", messages.ReplyFilter("coord-1"), "natstx.reply.coord-1.*"},
		{"ConsumerName", messages.ConsumerName("orders"), "natstx-orders"},
		{"CommandSubjects", messages.CommandSubjects, "natstx.cmd.>"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

// subjectMatches reports whether subject matches the NATS subject filter.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

func TestCommandSubjectsFallUnderTheRightFilters(t *testing.T) {
	subject := messages.CommandSubject("orders", "tx-1")
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{messages.CommandSubjects, true},
		{messages.ParticipantFilter("orders"), true},
		{messages.ParticipantFilter("order"), false},
		{messages.ParticipantFilter("orders-eu"), false},
		{messages.ParticipantFilter("billing"), false},
		{messages.ReplyPrefix + ".>", false},
	} {
		if got := subjectMatches(tc.filter, subject); got != tc.want {
			t.Errorf("filter %q matches %q: %v, want %v", tc.filter, subject, got, tc.want)
		}
	}
}

func TestReplySubjectIsAValidReplyTo(t *testing.T) {
	c := validCommand()
	c.ReplyTo = messages.ReplySubject(strings.Repeat("i", messages.MaxNameLen), strings.Repeat("p", messages.MaxNameLen))
	if err := c.Validate(); err != nil {
		t.Errorf("command replying to %q: %v", c.ReplyTo, err)
	}
}

func TestReplySubjectNamesItsParticipantUnderTheInstancesFilter(t *testing.T) {
	subject := messages.ReplySubject("coord-1", "orders")
	if !subjectMatches(messages.ReplyFilter("coord-1"), subject) || subjectMatches(messages.ReplyFilter("coord-2"), subject) {
		t.Errorf("%q under the wrong filters", subject)
	}
	inst, p, ok := messages.ParseReplySubject(subject)
	if !ok || inst != "coord-1" || p != "orders" {
		t.Errorf("ParseReplySubject(%q) = %q, %q, %v", subject, inst, p, ok)
	}
	for _, bad := range []string{"natstx.reply.coord-1", "natstx.reply.coord-1.orders.x", "natstx.reply..orders", "natstx.reply.coord-1.", "other.coord-1.orders", ""} {
		if _, _, ok := messages.ParseReplySubject(bad); ok {
			t.Errorf("ParseReplySubject(%q) accepted", bad)
		}
	}
}

func TestCheckReplySubjectRejectsAReplyInAnotherParticipantsName(t *testing.T) {
	r := messages.Reply{TxID: "tx-1", Op: messages.OpPrepare, Participant: "orders", Result: messages.VoteCommit, Attempt: 1}
	if err := messages.CheckReplySubject(messages.ReplySubject("c1", "orders"), r); err != nil {
		t.Errorf("own subject: %v", err)
	}
	for _, subject := range []string{messages.ReplySubject("c1", "billing"), "natstx.reply.c1"} {
		err := messages.CheckReplySubject(subject, r)
		if !errors.Is(err, messages.ErrMalformed) {
			t.Errorf("reply of orders on %q: %v, want ErrMalformed", subject, err)
		}
	}
}

func TestOpAndResultValid(t *testing.T) {
	for _, op := range []messages.Op{messages.OpPrepare, messages.OpCommit, messages.OpAbort, messages.OpCommitOnePhase} {
		if !op.Valid() {
			t.Errorf("Op(%q).Valid() = false", op)
		}
	}
	for _, op := range []messages.Op{"", "Prepare", "rollback"} {
		if op.Valid() {
			t.Errorf("Op(%q).Valid() = true", op)
		}
	}
	for _, r := range []messages.Result{messages.VoteCommit, messages.VoteAbort, messages.VoteReadOnly, messages.Ack, messages.Failed} {
		if !r.Valid() {
			t.Errorf("Result(%q).Valid() = false", r)
		}
	}
	for _, r := range []messages.Result{"", "ACK", "vote_commit", "nack"} {
		if r.Valid() {
			t.Errorf("Result(%q).Valid() = true", r)
		}
	}
}

func TestSagaCommandsAndRepliesRoundTrip(t *testing.T) {
	c := messages.Command{TxID: "saga-1", Op: messages.OpAction, Participant: "payment", Attempt: 2,
		ReplyTo: "natstx.reply.c1", Payload: []byte(`{"amount":10}`), Step: "charge"}
	got, err := messages.DecodeCommand(c.Header(), c.Payload)
	if err != nil || got.Step != "charge" || got.Op != messages.OpAction || string(got.Payload) != `{"amount":10}` {
		t.Fatalf("action: %+v %v", got, err)
	}
	if id := c.MsgID(); !strings.Contains(id, ".charge") {
		t.Fatalf("the message ID must name the step: %s", id)
	}
	r := messages.Reply{TxID: "saga-1", Op: messages.OpAction, Participant: "payment", Result: messages.Refused,
		Attempt: 2, Reason: "insufficient funds", Step: "charge", Code: "no-funds"}
	back, err := messages.DecodeReply(r.Header(), r.Body())
	if err != nil || back != r {
		t.Fatalf("reply: %+v %v", back, err)
	}
}

func TestSagaMessagesThatBreakTheRules(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		mention string
	}{
		{"action without a step", messages.Command{TxID: "s", Op: messages.OpAction, Participant: "p", Attempt: 1, ReplyTo: "r"}.Validate(), "saga step"},
		{"prepare with a step", messages.Command{TxID: "s", Op: messages.OpPrepare, Participant: "p", Attempt: 1, ReplyTo: "r", Step: "x"}.Validate(), messages.HeaderStep},
		{"commit with a payload", messages.Command{TxID: "s", Op: messages.OpCommit, Participant: "p", Attempt: 1, ReplyTo: "r", Payload: []byte("x")}.Validate(), "payload"},
		{"compensation refused", messages.Reply{TxID: "s", Op: messages.OpCompensate, Participant: "p", Attempt: 1, Result: messages.Refused, Step: "x"}.Validate(), "only an action"},
		{"prepare refused", messages.Reply{TxID: "s", Op: messages.OpPrepare, Participant: "p", Attempt: 1, Result: messages.Refused}.Validate(), "vote"},
		{"reply to an action without its step", messages.Reply{TxID: "s", Op: messages.OpAction, Participant: "p", Attempt: 1, Result: messages.Ack}.Validate(), "saga step"},
		{"a code with a space", messages.Reply{TxID: "s", Op: messages.OpAction, Participant: "p", Attempt: 1, Result: messages.Refused, Step: "x", Code: "no funds"}.Validate(), messages.HeaderCode},
		{"a code too long", messages.Reply{TxID: "s", Op: messages.OpAction, Participant: "p", Attempt: 1, Result: messages.Failed, Step: "x", Code: strings.Repeat("c", messages.MaxCodeLen+1)}.Validate(), "limit"},
	} {
		if !errors.Is(tc.err, messages.ErrMalformed) && !errors.Is(tc.err, messages.ErrInvalidName) || tc.err == nil || !strings.Contains(tc.err.Error(), tc.mention) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, tc.err, tc.mention)
		}
	}
}
