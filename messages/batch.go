package messages

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Batches. Under load a coordinator coalesces the commands it has for one
// participant into one stream message, and the participant answers them with
// one reply message: the broker then stores, delivers and removes one
// message for many commands, as group commit does in a database. A batch is
// only a container: each command in it is handled exactly as if it had come
// alone (same headers, same rules, same idempotency), and each reply in a
// reply batch is read as if it had come alone. A single command still travels
// as a plain command message.
//
// A batch message carries HeaderVersion, HeaderBatch (how many items) and,
// for commands, HeaderParticipant in its headers. Its body is the items one
// after another, each framed as
//
//	<header bytes> <body bytes>\r\n<header lines><body>
//
// two decimal lengths separated by one space, then that many bytes of header
// lines "Name: value\r\n" (one per value, as NATS writes headers), then
// that many bytes of body. Each item's headers and body are exactly those of
// the message it would have been alone.

// HeaderBatch marks a batch message; its value is the number of items in
// the body, from 1 to MaxBatch.
const HeaderBatch = "Natstx-Batch"

// MaxBatch bounds the items of one batch message.
const MaxBatch = 256

// BatchItem is one command or reply of a batch: the headers and body it
// would carry as a message of its own.
type BatchItem struct {
	Header map[string][]string
	Body   []byte
}

// BatchSubject is the subject of a batch of commands for participant; id
// tells batches apart (it is not a transaction ID). It falls under
// ParticipantFilter(participant).
func BatchSubject(participant, id string) string {
	return CommandPrefix + "." + participant + ".batch." + id
}

// IsBatch reports whether a message with headers h is a batch.
func IsBatch(h map[string][]string) bool { return len(h[HeaderBatch]) > 0 }

// EncodeCommandBatch encodes commands, all for participant, as one batch
// message; msgID is its Nats-Msg-Id (JetStream's de-duplication of a
// publish retried by the client).
func EncodeCommandBatch(participant, msgID string, cmds []Command) (map[string][]string, []byte, error) {
	for i := range cmds {
		if cmds[i].Participant != participant {
			return nil, nil, fmt.Errorf("%w: a batch for %q holds a command for %q", ErrMalformed, participant, cmds[i].Participant)
		}
	}
	// Each item carries its command's headers but HeaderMsgID: the batch
	// message carries the one that counts.
	body, err := encodeBatch(cmds, nil)
	if err != nil {
		return nil, nil, err
	}
	vs := []string{participant, msgID, versionText, strconv.Itoa(len(cmds))}
	return map[string][]string{
		HeaderParticipant: vs[0:1:1],
		HeaderMsgID:       vs[1:2:2],
		HeaderVersion:     vs[2:3:3],
		HeaderBatch:       vs[3:4:4],
	}, body, nil
}

// EncodeReplyBatch encodes replies as one batch message.
func EncodeReplyBatch(replies []Reply) (map[string][]string, []byte, error) {
	body, err := encodeBatch(nil, replies)
	if err != nil {
		return nil, nil, err
	}
	vs := []string{versionText, strconv.Itoa(len(replies))}
	return map[string][]string{HeaderVersion: vs[0:1:1], HeaderBatch: vs[1:2:2]}, body, nil
}

// encodeBatch encodes the body of a batch of the commands cmds, or of the
// replies replies (the other is nil). An item's headers go out in the byte
// order of their names, the order in which fields lists them. The body is
// sized before it is written, so that it is allocated once.
func encodeBatch(cmds []Command, replies []Reply) ([]byte, error) {
	n := len(cmds) + len(replies)
	if n == 0 || n > MaxBatch {
		return nil, fmt.Errorf("%w: a batch holds 1 to %d items, not %d", ErrMalformed, MaxBatch, n)
	}
	var buf [maxFields]headerField
	size := 0
	for i := 0; i < n; i++ {
		fs, body, text := batchItem(cmds, replies, i, &buf)
		hl := 0
		for j := range fs {
			f := &fs[j]
			if !f.numeric && hasLineBreak(f.value) {
				return nil, fmt.Errorf("%w: header %q of a batch item holds a line break or colon", ErrMalformed, f.name)
			}
			hl += f.lineLen()
		}
		bl := len(body) + len(text)
		size += decimalLen(hl) + 1 + decimalLen(bl) + 2 + hl + bl
	}
	out := make([]byte, 0, size)
	for i := 0; i < n; i++ {
		fs, body, text := batchItem(cmds, replies, i, &buf)
		hl := 0
		for j := range fs {
			hl += fs[j].lineLen()
		}
		out = strconv.AppendInt(out, int64(hl), 10)
		out = append(out, ' ')
		out = strconv.AppendInt(out, int64(len(body)+len(text)), 10)
		out = append(out, "\r\n"...)
		for j := range fs {
			out = fs[j].appendLine(out)
		}
		out = append(append(out, body...), text...)
	}
	return out, nil
}

// batchItem returns item i of encodeBatch's items: its headers, in *buf,
// and its body, which is body followed by text (one of them is empty, to
// spare a conversion).
func batchItem(cmds []Command, replies []Reply, i int, buf *[maxFields]headerField) (fs []headerField, body []byte, text string) {
	if cmds != nil {
		return cmds[i].fields(buf), cmds[i].Payload, ""
	}
	return replies[i].fields(buf), nil, Truncate(replies[i].Reason, MaxReasonLen) // as Reply.Body
}

// hasLineBreak reports whether s holds a CR or an LF.
func hasLineBreak(s string) bool {
	return strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0
}

// decimalLen is the length of n in decimal.
func decimalLen(n int) int {
	l := 1
	for ; n >= 10; n /= 10 {
		l++
	}
	return l
}

// DecodeBatch decodes a batch message's items. It checks the version, the
// count and the framing, not the items: each is decoded by DecodeCommand or
// DecodeReply on its own, so that one bad item does not spoil the others.
func DecodeBatch(h map[string][]string, body []byte) ([]BatchItem, error) {
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
	var d itemDecoder
	for i := 0; i < n; i++ {
		var it BatchItem
		if it, rest, err = d.decode(rest); err != nil {
			return nil, fmt.Errorf("%w: batch item %d of %d: %v", ErrMalformed, i+1, n, err)
		}
		items = append(items, it)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the %d items %s announces", ErrMalformed, len(rest), n, HeaderBatch)
	}
	return items, nil
}

// itemDecoder decodes the items of one batch. The items of a batch mostly
// carry the same headers in the same order, many with the same values (the
// version, the participant, the reply subject, often the operation): it
// keeps the name and value strings of the previous item's lines by
// position and reuses those that come again, instead of making new ones.
type itemDecoder struct {
	prev [maxFields + 2]struct{ name, value string }
}

// decode decodes the first framed item of b and returns what follows it.
// Each value of the item's headers is a slice of its own, capped, of one
// backing array: appending to one copies it.
func (d *itemDecoder) decode(b []byte) (BatchItem, []byte, error) {
	line, rest, ok := cutCRLF(b)
	if !ok {
		return BatchItem{}, nil, errors.New("no framing line")
	}
	hs, bs, ok := bytes.Cut(line, []byte(" "))
	hl, err1 := strconv.Atoi(string(hs))
	bl, err2 := strconv.Atoi(string(bs))
	if !ok || err1 != nil || err2 != nil || hl < 0 || bl < 0 || hl > len(rest) || bl > len(rest)-hl {
		return BatchItem{}, nil, fmt.Errorf("framing line %q is not two lengths within the %d bytes left", line, len(rest))
	}
	head := rest[:hl]
	lines := bytes.Count(head, []byte("\n")) // at least the lines read below
	it := BatchItem{Header: make(map[string][]string, lines)}
	values := make([]string, 0, lines)
	for i := 0; len(head) > 0; i++ {
		var l []byte
		if l, head, ok = cutCRLF(head); !ok {
			return BatchItem{}, nil, errors.New("a header line does not end with CRLF")
		}
		nb, vb, found := cutColonSpace(l)
		if !found || len(nb) == 0 {
			return BatchItem{}, nil, fmt.Errorf("header line %q is not \"Name: value\"", l)
		}
		name, value := d.strings(i, nb, vb)
		if d.repeated(it.Header, i, name) {
			it.Header[name] = append(it.Header[name], value)
			continue
		}
		values = append(values, value)
		k := len(values)
		it.Header[name] = values[k-1 : k : k]
	}
	if bl > 0 {
		it.Body = rest[hl : hl+bl]
	}
	return it, rest[hl+bl:], nil
}

// repeated reports whether a line before line i of the item being decoded
// into h has header name: strings keeps the names of the first lines in
// d.prev, so it looks there and in h only past them.
func (d *itemDecoder) repeated(h map[string][]string, i int, name string) bool {
	if i > len(d.prev) {
		_, ok := h[name]
		return ok
	}
	for j := range i {
		if d.prev[j].name == name {
			return true
		}
	}
	return false
}

// cutCRLF is bytes.Cut(b, []byte("\r\n")), faster.
func cutCRLF(b []byte) (before, after []byte, found bool) {
	for i := 1; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		if i += j; b[i-1] == '\r' {
			return b[:i-1], b[i+1:], true
		}
		i++
	}
	return b, nil, false
}

// cutColonSpace is bytes.Cut(b, []byte(": ")), faster.
func cutColonSpace(b []byte) (before, after []byte, found bool) {
	for i := 0; i < len(b)-1; {
		j := bytes.IndexByte(b[i:len(b)-1], ':')
		if j < 0 {
			break
		}
		if i += j; b[i+1] == ' ' {
			return b[:i], b[i+2:], true
		}
		i++
	}
	return b, nil, false
}

// strings returns name and value as strings: those of line i of the
// previous item when they are the same, new ones otherwise.
func (d *itemDecoder) strings(i int, name, value []byte) (string, string) {
	if i >= len(d.prev) {
		return string(name), string(value)
	}
	p := &d.prev[i]
	if string(name) != p.name {
		p.name, p.value = headerName(name), string(value)
	} else if string(value) != p.value {
		p.value = string(value)
	}
	return p.name, p.value
}

// headerName returns name as a string: the package's own constant for the
// names of its headers.
func headerName(name []byte) string {
	switch string(name) {
	case HeaderVersion:
		return HeaderVersion
	case HeaderTxID:
		return HeaderTxID
	case HeaderOp:
		return HeaderOp
	case HeaderParticipant:
		return HeaderParticipant
	case HeaderDeadline:
		return HeaderDeadline
	case HeaderAttempt:
		return HeaderAttempt
	case HeaderReplyTo:
		return HeaderReplyTo
	case HeaderResult:
		return HeaderResult
	case HeaderStep:
		return HeaderStep
	case HeaderCode:
		return HeaderCode
	case HeaderTraceParent:
		return HeaderTraceParent
	case HeaderTraceState:
		return HeaderTraceState
	}
	return string(name)
}

// BatchParticipant is the participant a command batch's subject names, for a
// subject of BatchSubject's form; ok is false otherwise.
func BatchParticipant(subject string) (participant string, ok bool) {
	rest, found := strings.CutPrefix(subject, CommandPrefix+".")
	if !found {
		return "", false
	}
	participant, rest, found = strings.Cut(rest, ".batch.")
	if !found || participant == "" || rest == "" || strings.Contains(participant, ".") || strings.Contains(rest, ".") {
		return "", false
	}
	return participant, true
}
