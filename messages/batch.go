package messages

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
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
	items := make([]BatchItem, len(cmds))
	for i, c := range cmds {
		if c.Participant != participant {
			return nil, nil, fmt.Errorf("%w: a batch for %q holds a command for %q", ErrMalformed, participant, c.Participant)
		}
		h := c.Header()
		delete(h, HeaderMsgID) // the batch message carries the one that counts
		items[i] = BatchItem{Header: h, Body: c.Payload}
	}
	return encodeBatch(items, map[string][]string{HeaderParticipant: {participant}, HeaderMsgID: {msgID}})
}

// EncodeReplyBatch encodes replies as one batch message.
func EncodeReplyBatch(replies []Reply) (map[string][]string, []byte, error) {
	items := make([]BatchItem, len(replies))
	for i, r := range replies {
		items[i] = BatchItem{Header: r.Header(), Body: r.Body()}
	}
	return encodeBatch(items, map[string][]string{})
}

func encodeBatch(items []BatchItem, h map[string][]string) (map[string][]string, []byte, error) {
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
	for i := 0; i < n; i++ {
		var it BatchItem
		if it, rest, err = decodeItem(rest); err != nil {
			return nil, fmt.Errorf("%w: batch item %d of %d: %v", ErrMalformed, i+1, n, err)
		}
		items = append(items, it)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the %d items %s announces", ErrMalformed, len(rest), n, HeaderBatch)
	}
	return items, nil
}

// decodeItem decodes the first framed item of b and returns what follows it.
func decodeItem(b []byte) (BatchItem, []byte, error) {
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
