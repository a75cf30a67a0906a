package messages

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The encoders and decoders of commands, replies and batches were rewritten
// to allocate less; the wire format must not change by a byte. These tests
// hold them to the algorithms they replaced, kept here as they were (the
// ref* functions), on many random inputs.

// refCommandHeader is Command.Header as it was.
func refCommandHeader(c Command) map[string][]string {
	h := map[string][]string{
		HeaderVersion:     {versionText},
		HeaderTxID:        {c.TxID},
		HeaderOp:          {string(c.Op)},
		HeaderParticipant: {c.Participant},
		HeaderAttempt:     {strconv.Itoa(c.Attempt)},
		HeaderReplyTo:     {c.ReplyTo},
		HeaderMsgID:       {refCommandMsgID(c)},
	}
	if !c.Deadline.IsZero() {
		h[HeaderDeadline] = []string{strconv.FormatInt(c.Deadline.UnixMilli(), 10)}
	}
	if c.Step != "" {
		h[HeaderStep] = []string{c.Step}
	}
	if c.TraceParent != "" {
		h[HeaderTraceParent] = []string{c.TraceParent}
		if c.TraceState != "" {
			h[HeaderTraceState] = []string{c.TraceState}
		}
	}
	return h
}

// refMsgID is MsgID as it was.
func refMsgID(txid string, op Op, participant string, attempt int) string {
	return fmt.Sprintf("%s.%s.%s.%d", txid, op, participant, attempt)
}

// refCommandMsgID is Command.MsgID as it was.
func refCommandMsgID(c Command) string {
	id := refMsgID(c.TxID, c.Op, c.Participant, c.Attempt)
	if c.Step != "" {
		id += "." + c.Step
	}
	if c.Sender != "" {
		id += "." + c.Sender
	}
	return id
}

// refReplyHeader is Reply.Header as it was.
func refReplyHeader(r Reply) map[string][]string {
	h := map[string][]string{
		HeaderVersion:     {versionText},
		HeaderTxID:        {r.TxID},
		HeaderOp:          {string(r.Op)},
		HeaderParticipant: {r.Participant},
		HeaderResult:      {string(r.Result)},
		HeaderAttempt:     {strconv.Itoa(r.Attempt)},
	}
	if r.Step != "" {
		h[HeaderStep] = []string{r.Step}
	}
	if r.Code != "" {
		h[HeaderCode] = []string{r.Code}
	}
	return h
}

// refEncodeCommandBatch is EncodeCommandBatch as it was.
func refEncodeCommandBatch(participant, msgID string, cmds []Command) (map[string][]string, []byte, error) {
	items := make([]BatchItem, len(cmds))
	for i, c := range cmds {
		if c.Participant != participant {
			return nil, nil, fmt.Errorf("%w: a batch for %q holds a command for %q", ErrMalformed, participant, c.Participant)
		}
		h := refCommandHeader(c)
		delete(h, HeaderMsgID)
		items[i] = BatchItem{Header: h, Body: c.Payload}
	}
	return refEncodeBatch(items, map[string][]string{HeaderParticipant: {participant}, HeaderMsgID: {msgID}})
}

// refEncodeReplyBatch is EncodeReplyBatch as it was.
func refEncodeReplyBatch(replies []Reply) (map[string][]string, []byte, error) {
	items := make([]BatchItem, len(replies))
	for i, r := range replies {
		items[i] = BatchItem{Header: refReplyHeader(r), Body: []byte(Truncate(r.Reason, MaxReasonLen))}
	}
	return refEncodeBatch(items, map[string][]string{})
}

// refEncodeBatch is encodeBatch as it was.
func refEncodeBatch(items []BatchItem, h map[string][]string) (map[string][]string, []byte, error) {
	if len(items) == 0 || len(items) > MaxBatch {
		return nil, nil, fmt.Errorf("%w: a batch holds 1 to %d items, not %d", ErrMalformed, MaxBatch, len(items))
	}
	var buf bytes.Buffer
	var head []byte
	for _, it := range items {
		head = head[:0]
		names := make([]string, 0, len(it.Header))
		for name := range it.Header {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			for _, v := range it.Header[name] {
				if strings.ContainsAny(name, ":\r\n") || strings.ContainsAny(v, "\r\n") {
					return nil, nil, fmt.Errorf("%w: header %q of a batch item holds a line break or colon", ErrMalformed, name)
				}
				head = append(append(append(append(head, name...), ": "...), v...), "\r\n"...)
			}
		}
		buf.WriteString(strconv.Itoa(len(head)))
		buf.WriteByte(' ')
		buf.WriteString(strconv.Itoa(len(it.Body)))
		buf.WriteString("\r\n")
		buf.Write(head)
		buf.Write(it.Body)
	}
	h[HeaderVersion] = []string{versionText}
	h[HeaderBatch] = []string{strconv.Itoa(len(items))}
	return h, buf.Bytes(), nil
}

// refDecodeBatch is DecodeBatch as it was.
func refDecodeBatch(h map[string][]string, body []byte) ([]BatchItem, error) {
	if err := checkVersion(h); err != nil {
		return nil, err
	}
	count, err := single(h, HeaderBatch, false)
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 || n > MaxBatch {
		return nil, fmt.Errorf("%w: %s %q is not a count from 1 to %d", ErrMalformed, HeaderBatch, count, MaxBatch)
	}
	items := make([]BatchItem, 0, n)
	rest := body
	for i := 0; i < n; i++ {
		var it BatchItem
		if it, rest, err = refDecodeItem(rest); err != nil {
			return nil, fmt.Errorf("%w: batch item %d of %d: %v", ErrMalformed, i+1, n, err)
		}
		items = append(items, it)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the %d items %s announces", ErrMalformed, len(rest), n, HeaderBatch)
	}
	return items, nil
}

// refDecodeItem is decodeItem as it was.
func refDecodeItem(b []byte) (BatchItem, []byte, error) {
	line, rest, ok := bytes.Cut(b, []byte("\r\n"))
	if !ok {
		return BatchItem{}, nil, errors.New("no framing line")
	}
	hs, bs, ok := bytes.Cut(line, []byte(" "))
	hl, err1 := strconv.Atoi(string(hs))
	bl, err2 := strconv.Atoi(string(bs))
	if !ok || err1 != nil || err2 != nil || hl < 0 || bl < 0 || hl > len(rest) || bl > len(rest)-hl {
		return BatchItem{}, nil, fmt.Errorf("framing line %q is not two lengths within the %d bytes left", line, len(rest))
	}
	it := BatchItem{Header: map[string][]string{}}
	head := rest[:hl]
	for len(head) > 0 {
		var l []byte
		if l, head, ok = bytes.Cut(head, []byte("\r\n")); !ok {
			return BatchItem{}, nil, errors.New("a header line does not end with CRLF")
		}
		name, value, found := bytes.Cut(l, []byte(": "))
		if !found || len(name) == 0 {
			return BatchItem{}, nil, fmt.Errorf("header line %q is not \"Name: value\"", l)
		}
		it.Header[string(name)] = append(it.Header[string(name)], string(value))
	}
	if bl > 0 {
		it.Body = rest[hl : hl+bl]
	}
	return it, rest[hl+bl:], nil
}

// pick returns one of choices.
func pick(r *rand.Rand, choices ...string) string { return choices[r.IntN(len(choices))] }

// randomText is a header value: mostly a plausible one, sometimes empty,
// long, or holding a colon, a CR, an LF or both, or bytes that are not
// UTF-8.
func randomText(r *rand.Rand) string {
	switch r.IntN(12) {
	case 0:
		return ""
	case 1:
		return pick(r, "a\r\nb", "a\nb", "a\rb", "\r", "\n", "a:", ": b", "a: b", "x\r\n")
	case 2:
		return strings.Repeat("y", 100+r.IntN(400))
	case 3:
		return "\xff\xfe" + strconv.Itoa(r.IntN(100))
	}
	const alphabet = "abcXYZ019-_.:é "
	b := make([]byte, 1+r.IntN(30))
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// randomTextOrEmpty is randomText or, half the time, "".
func randomTextOrEmpty(r *rand.Rand) string {
	if r.IntN(2) == 0 {
		return ""
	}
	return randomText(r)
}

func randomAttempt(r *rand.Rand) int {
	switch r.IntN(6) {
	case 0:
		return -r.IntN(1000)
	case 1:
		return math.MaxInt64 - r.IntN(3)
	case 2:
		return math.MinInt64 + r.IntN(3)
	case 3:
		return r.IntN(1 << 20)
	}
	return 1 + r.IntN(12)
}

func randomDeadline(r *rand.Rand) time.Time {
	switch r.IntN(5) {
	case 0:
		return time.Time{}
	case 1:
		return time.UnixMilli(-r.Int64N(1e12))
	case 2:
		return time.Unix(0, 0)
	}
	return time.UnixMilli(r.Int64N(4e12)).Add(time.Duration(r.IntN(1e6)))
}

func randomCommand(r *rand.Rand, participant string) Command {
	c := Command{
		TxID: randomText(r), Op: Op(pick(r, "prepare", "commit", "abort", "action", "compensate", "", "odd")),
		Participant: participant, Deadline: randomDeadline(r), Attempt: randomAttempt(r),
		ReplyTo: randomText(r), Step: randomTextOrEmpty(r), Sender: randomTextOrEmpty(r),
		TraceParent: randomTextOrEmpty(r), TraceState: randomTextOrEmpty(r),
	}
	if r.IntN(3) > 0 {
		c.Payload = []byte(randomText(r))
	}
	return c
}

func randomReply(r *rand.Rand) Reply {
	rp := Reply{
		TxID: randomText(r), Op: Op(pick(r, "prepare", "commit", "abort", "action", "compensate", "")),
		Participant: randomText(r), Result: Result(pick(r, "vote-commit", "vote-abort", "ack", "failed", "refused", "")),
		Attempt: randomAttempt(r), Reason: randomTextOrEmpty(r), Step: randomTextOrEmpty(r), Code: randomTextOrEmpty(r),
	}
	if r.IntN(10) == 0 {
		rp.Reason = strings.Repeat("é", MaxReasonLen) // cut at a character boundary
	}
	return rp
}

// sameResult fails unless the two encodings of a batch are the same: the
// same error, or the same headers and byte-identical bodies.
func sameResult(t *testing.T, what string, gotH map[string][]string, got []byte, gotErr error, wantH map[string][]string, want []byte, wantErr error) {
	t.Helper()
	if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
		t.Fatalf("%s: error %v, want %v", what, gotErr, wantErr)
	}
	if !reflect.DeepEqual(gotH, wantH) {
		t.Fatalf("%s: headers %q, want %q", what, gotH, wantH)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: body\n%q\nwant\n%q", what, got, want)
	}
}

func TestCommandEncodingIsTheOldOneByteForByte(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	errs := 0
	for i := range 3000 {
		c := randomCommand(r, "orders")
		if got, want := c.Header(), refCommandHeader(c); !reflect.DeepEqual(got, want) {
			t.Fatalf("command %d: Header() = %q, want %q", i, got, want)
		}
		if got, want := MsgID(c.TxID, c.Op, c.Participant, c.Attempt), refMsgID(c.TxID, c.Op, c.Participant, c.Attempt); got != want {
			t.Fatalf("command %d: MsgID = %q, want %q", i, got, want)
		}
		cmds := []Command{c}
		for n := r.IntN(70); len(cmds) < n; {
			cmds = append(cmds, randomCommand(r, "orders"))
		}
		if r.IntN(4) > 0 { // most batches hold no line break, to be encoded
			for i := range cmds {
				cmds[i] = withoutBreaks(cmds[i])
			}
		}
		participant, msgID := "orders", randomText(r)
		if r.IntN(20) == 0 {
			participant = "billing"
		}
		h, body, err := EncodeCommandBatch(participant, msgID, cmds)
		wantH, want, wantErr := refEncodeCommandBatch(participant, msgID, cmds)
		sameResult(t, fmt.Sprintf("batch %d", i), h, body, err, wantH, want, wantErr)
		if err != nil {
			errs++
		}
	}
	if errs == 0 || errs > 2500 {
		t.Fatalf("%d of 3000 batches failed: the inputs do not cover both outcomes", errs)
	}
}

func TestReplyEncodingIsTheOldOneByteForByte(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	errs := 0
	for i := range 3000 {
		rp := randomReply(r)
		if got, want := rp.Header(), refReplyHeader(rp); !reflect.DeepEqual(got, want) {
			t.Fatalf("reply %d: Header() = %q, want %q", i, got, want)
		}
		replies := []Reply{rp}
		for n := r.IntN(70); len(replies) < n; {
			replies = append(replies, randomReply(r))
		}
		if r.IntN(4) > 0 { // most batches hold no line break, to be encoded
			for i := range replies {
				replies[i] = replyWithoutBreaks(replies[i])
			}
		}
		h, body, err := EncodeReplyBatch(replies)
		wantH, want, wantErr := refEncodeReplyBatch(replies)
		sameResult(t, fmt.Sprintf("batch %d", i), h, body, err, wantH, want, wantErr)
		if err != nil {
			errs++
		}
	}
	if errs == 0 || errs > 2500 {
		t.Fatalf("%d of 3000 batches failed: the inputs do not cover both outcomes", errs)
	}
}

func TestBatchEncodersRefuseAsManyItemsAsBefore(t *testing.T) {
	for _, n := range []int{0, 1, MaxBatch, MaxBatch + 1} {
		cmds := make([]Command, n)
		replies := make([]Reply, n)
		for i := range cmds {
			cmds[i] = Command{TxID: "t", Op: OpCommit, Participant: "p", Attempt: 1, ReplyTo: "r"}
			replies[i] = Reply{TxID: "t", Op: OpCommit, Participant: "p", Result: Ack, Attempt: 1}
		}
		h, body, err := EncodeCommandBatch("p", "m", cmds)
		wantH, want, wantErr := refEncodeCommandBatch("p", "m", cmds)
		sameResult(t, fmt.Sprintf("%d commands", n), h, body, err, wantH, want, wantErr)
		h, body, err = EncodeReplyBatch(replies)
		wantH, want, wantErr = refEncodeReplyBatch(replies)
		sameResult(t, fmt.Sprintf("%d replies", n), h, body, err, wantH, want, wantErr)
	}
}

// randomBatchBody is the body of a batch: encoded items, hand-framed ones
// (repeated and unknown header names, lines without ": ", a bare CR or LF),
// cut or spoiled at random.
func randomBatchBody(r *rand.Rand) (count string, body []byte) {
	n := 1 + r.IntN(20)
	var b []byte
	for range n {
		switch r.IntN(3) {
		case 0:
			_, body, err := EncodeCommandBatch("orders", "m", []Command{withoutBreaks(randomCommand(r, "orders"))})
			if err != nil {
				panic(err)
			}
			b = append(b, body...)
		case 1:
			_, body, err := EncodeReplyBatch([]Reply{replyWithoutBreaks(randomReply(r))})
			if err != nil {
				panic(err)
			}
			b = append(b, body...)
		default:
			var head []byte
			for range r.IntN(16) {
				name := pick(r, HeaderAttempt, HeaderTxID, HeaderOp, "X-Other", "x", HeaderTraceParent, "Natstx-Txi", "", "A:B")
				value := pick(r, "1", "2", "", "tx-1", ": ", "a\rb", "a\nb", "é", "\xff")
				switch r.IntN(20) {
				case 0:
					head = append(head, name+value+"\r\n"...)
				case 1:
					head = append(head, name+": "+value+"\n"...)
				default:
					head = append(head, name+": "+value+"\r\n"...)
				}
			}
			payload := []byte(randomTextOrEmpty(r))
			b = fmt.Appendf(b, "%d %d\r\n%s%s", len(head), len(payload), head, payload)
		}
	}
	count = strconv.Itoa(n)
	switch r.IntN(10) {
	case 0:
		b = b[:r.IntN(len(b)+1)]
	case 1:
		if len(b) > 0 {
			b[r.IntN(len(b))] = pick(r, "\r", "\n", ":", " ", "9", "x")[0]
		}
	case 2:
		count = strconv.Itoa(n + r.IntN(3) - 1)
	}
	return count, b
}

// noBreak drops CR and LF, which the encoders refuse.
func noBreak(r rune) rune {
	if r == '\r' || r == '\n' {
		return -1
	}
	return r
}

// withoutBreaks is c without CR and LF in its headers.
func withoutBreaks(c Command) Command {
	c.TxID, c.Op, c.ReplyTo = strings.Map(noBreak, c.TxID), Op(strings.Map(noBreak, string(c.Op))), strings.Map(noBreak, c.ReplyTo)
	c.Step, c.TraceParent, c.TraceState = strings.Map(noBreak, c.Step), strings.Map(noBreak, c.TraceParent), strings.Map(noBreak, c.TraceState)
	return c
}

// replyWithoutBreaks is rp without CR and LF in its headers.
func replyWithoutBreaks(rp Reply) Reply {
	rp.TxID, rp.Participant = strings.Map(noBreak, rp.TxID), strings.Map(noBreak, rp.Participant)
	rp.Step, rp.Code = strings.Map(noBreak, rp.Step), strings.Map(noBreak, rp.Code)
	return rp
}

// sameItems fails unless DecodeBatch and the old decoder agree on body.
func sameItems(t *testing.T, count string, body []byte) (ok bool) {
	t.Helper()
	h := map[string][]string{HeaderVersion: {versionText}, HeaderBatch: {count}}
	got, err := DecodeBatch(h, body)
	want, wantErr := refDecodeBatch(h, body)
	if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("%s items in %q: error %v, want %v", count, body, err, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s items in %q:\n%q\nwant\n%q", count, body, got, want)
	}
	return err == nil
}

func TestDecodeBatchDecodesWhatTheOldDecoderDid(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	decoded := 0
	for range 5000 {
		if count, body := randomBatchBody(r); sameItems(t, count, body) {
			decoded++
		}
	}
	if decoded < 500 || decoded > 4500 {
		t.Fatalf("%d of 5000 batches decoded: the inputs do not cover both outcomes", decoded)
	}
}

func FuzzDecodeBatchAsTheOldDecoder(f *testing.F) {
	r := rand.New(rand.NewPCG(11, 12))
	for range 20 {
		count, body := randomBatchBody(r)
		f.Add(count, body)
	}
	f.Add("1", []byte("9 0\r\nA: 1\nB: 2\r\n"))
	f.Add("1", []byte("14 0\r\nA: 1\r\nA: 2\r\nA: 3\r\n"))
	f.Add("1", []byte("4 0\r\nA:: \r\n"))
	f.Fuzz(func(t *testing.T, count string, body []byte) { sameItems(t, count, body) })
}

func FuzzCutsAsBytesCut(f *testing.F) {
	for _, s := range []string{"", "\r", "\n", "\r\n", "\n\r\n", "a\rb\nc\r\n", ":", ": ", "a:b: c", "a::  b", "x:"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []struct {
			sep string
			cut func([]byte) ([]byte, []byte, bool)
		}{{"\r\n", cutCRLF}, {": ", cutColonSpace}} {
			before, after, found := c.cut(b)
			wb, wa, wf := bytes.Cut(b, []byte(c.sep))
			if !bytes.Equal(before, wb) || !bytes.Equal(after, wa) || found != wf || (after == nil) != (wa == nil) {
				t.Fatalf("cut %q at %q: %q, %q, %v; bytes.Cut gives %q, %q, %v", b, c.sep, before, after, found, wb, wa, wf)
			}
		}
	})
}

// TestHeaderValuesDoNotShareWhereAppendsGo: the values of one message's
// headers share one backing array; appending to one must not change
// another.
func TestHeaderValuesDoNotShareWhereAppendsGo(t *testing.T) {
	c := Command{TxID: "tx-1", Op: OpPrepare, Participant: "orders", Attempt: 1, ReplyTo: "r", Deadline: time.UnixMilli(5), Step: "s", TraceParent: "tp", TraceState: "ts"}
	_, body, err := EncodeCommandBatch("orders", "m", []Command{c, c})
	if err != nil {
		t.Fatal(err)
	}
	items, err := DecodeBatch(map[string][]string{HeaderVersion: {versionText}, HeaderBatch: {"2"}}, body)
	if err != nil {
		t.Fatal(err)
	}
	r := Reply{TxID: "tx-1", Op: OpAction, Participant: "orders", Result: Refused, Attempt: 1, Step: "s", Code: "c"}
	for _, h := range []map[string][]string{c.Header(), r.Header(), items[0].Header} {
		want := fmt.Sprint(h)
		for name := range h {
			h[name] = append(h[name], "extra")
			h[name] = h[name][:1]
		}
		if got := fmt.Sprint(h); got != want {
			t.Fatalf("appending changed the headers: %s, was %s", got, want)
		}
	}
	if got, want := fmt.Sprint(items[1].Header), fmt.Sprint(items[0].Header); got != want {
		t.Fatalf("appending to one item's headers changed another's: %s, want %s", got, want)
	}
}

// TestFieldsAreListedInNameOrder: a batch item's headers go out in the
// order fields lists them, which must be the byte order of their names
// (the order of the batches before, and of docs/PROTOCOL.md's examples).
func TestFieldsAreListedInNameOrder(t *testing.T) {
	var buf [maxFields]headerField
	c := Command{Deadline: time.UnixMilli(1), Step: "s", TraceParent: "p", TraceState: "s"}
	r := Reply{Step: "s", Code: "c"}
	for _, fs := range [][]headerField{c.fields(&buf), r.fields(&buf)} {
		for i := 1; i < len(fs); i++ {
			if fs[i-1].name >= fs[i].name {
				t.Errorf("header %s is listed before %s", fs[i-1].name, fs[i].name)
			}
		}
	}
	if got := len(c.fields(&buf)); got != maxFields {
		t.Errorf("a command with every optional header has %d, want maxFields (%d)", got, maxFields)
	}
}
