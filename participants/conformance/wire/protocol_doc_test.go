package wire

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
)

// The examples of docs/PROTOCOL.md are generated here from package messages;
// TestProtocolExamples fails when the document and the code disagree, and
// -update-protocol-doc rewrites the examples in the document.
var updateDoc = flag.Bool("update-protocol-doc", false, "rewrite the examples in docs/PROTOCOL.md from the code")

const protocolDoc = "../../../docs/PROTOCOL.md"

// example is one message of the document: a command or reply (alone or a
// batch) on a subject, or a JSON body of the APIs.
type example struct {
	name    string
	subject string
	header  map[string][]string
	body    []byte
	// check decodes the message as the document shows it and compares it
	// with what it was made from.
	check func(h map[string][]string, body []byte) error
}

var (
	exDeadline = time.Date(2026, 1, 15, 10, 0, 5, 0, time.UTC)
	exSender   = "nyc-1-188ad1f2c3b4a000"
)

func exPrepare() messages.Command {
	return messages.Command{TxID: "order-1042", Op: messages.OpPrepare, Participant: "inventory", Deadline: exDeadline, Attempt: 1,
		ReplyTo: messages.ReplySubject("nyc-1", "inventory"), Payload: []byte(`{"item":"widget","qty":2}`), Sender: exSender}
}

func exOnePhase() messages.Command {
	return messages.Command{TxID: "refund-77", Op: messages.OpCommitOnePhase, Participant: "payment", Deadline: exDeadline, Attempt: 1,
		ReplyTo: messages.ReplySubject("nyc-1", "payment"), Payload: []byte(`{"refund":"12.50"}`), Sender: exSender}
}

func exCommit() messages.Command {
	return messages.Command{TxID: "order-1042", Op: messages.OpCommit, Participant: "inventory", Attempt: 2,
		ReplyTo: messages.ReplySubject("nyc-1", "inventory"), Sender: exSender}
}

func exAction() messages.Command {
	return messages.Command{TxID: "trip-77", Op: messages.OpAction, Participant: "payment", Step: "charge", Attempt: 1,
		Deadline: exDeadline, ReplyTo: messages.ReplySubject("nyc-1", "payment"), Payload: []byte(`{"account":"alice","amount":30}`), Sender: exSender}
}

func commandExample(name string, c messages.Command) example {
	return example{name: name, subject: c.Subject(), header: c.Header(), body: c.Payload, check: func(h map[string][]string, body []byte) error {
		got, err := messages.DecodeCommand(h, body)
		if err != nil {
			return err
		}
		want := c
		want.Sender = "" // travels only in Nats-Msg-Id
		if h[messages.HeaderMsgID][0] != c.MsgID() {
			return fmt.Errorf("Nats-Msg-Id %q, the code makes %q", h[messages.HeaderMsgID][0], c.MsgID())
		}
		return sameCommand(got, want)
	}}
}

func sameCommand(got, want messages.Command) error {
	if !got.Deadline.Equal(want.Deadline) {
		return fmt.Errorf("deadline %v, want %v", got.Deadline, want.Deadline)
	}
	got.Deadline, want.Deadline = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("decodes to %+v, want %+v", got, want)
	}
	return nil
}

func replyExample(name string, r messages.Reply) example {
	return example{name: name, subject: messages.ReplySubject("nyc-1", r.Participant), header: r.Header(), body: r.Body(), check: func(h map[string][]string, body []byte) error {
		got, err := messages.DecodeReply(h, body)
		if err != nil {
			return err
		}
		if err := messages.CheckReplySubject(messages.ReplySubject("nyc-1", r.Participant), got); err != nil {
			return err
		}
		if !reflect.DeepEqual(got, r) {
			return fmt.Errorf("decodes to %+v, want %+v", got, r)
		}
		return nil
	}}
}

func jsonExample(name string, v any) example {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return example{name: name, body: data, check: func(_ map[string][]string, body []byte) error {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		got := reflect.New(reflect.TypeOf(v))
		if err := dec.Decode(got.Interface()); err != nil {
			return err
		}
		if !reflect.DeepEqual(got.Elem().Interface(), v) {
			return fmt.Errorf("decodes to %+v, want %+v", got.Elem().Interface(), v)
		}
		return nil
	}}
}

func examples() []example {
	prep, commit, action := exPrepare(), exCommit(), exAction()
	next := messages.Command{TxID: "order-1043", Op: messages.OpPrepare, Participant: "inventory", Deadline: exDeadline.Add(time.Second), Attempt: 1,
		ReplyTo: messages.ReplySubject("nyc-1", "inventory"), Payload: []byte(`{"item":"gadget","qty":1}`), Sender: exSender}
	batchID := "NZ2Hb7IgOjA3C7XkVGEXUf"
	bh, bbody, err := messages.EncodeCommandBatch("inventory", exSender+"."+batchID, []messages.Command{commit, next})
	if err != nil {
		panic(err)
	}
	replies := []messages.Reply{
		{TxID: "order-1042", Op: messages.OpCommit, Participant: "inventory", Result: messages.Ack, Attempt: 2},
		{TxID: "order-1043", Op: messages.OpPrepare, Participant: "inventory", Result: messages.VoteAbort, Attempt: 1, Reason: `out of stock: 1 of "gadget"`},
	}
	rh, rbody, err := messages.EncodeReplyBatch(replies)
	if err != nil {
		panic(err)
	}
	return []example{
		commandExample("prepare", prep),
		replyExample("vote-commit", messages.Reply{TxID: "order-1042", Op: messages.OpPrepare, Participant: "inventory", Result: messages.VoteCommit, Attempt: 1}),
		replyExample("vote-abort", messages.Reply{TxID: "order-1042", Op: messages.OpPrepare, Participant: "inventory", Result: messages.VoteAbort, Attempt: 1,
			Reason: `out of stock: 2 of "widget"`}),
		replyExample("vote-read-only", messages.Reply{TxID: "order-1042", Op: messages.OpPrepare, Participant: "pricing", Result: messages.VoteReadOnly, Attempt: 1}),
		commandExample("commit-one-phase", exOnePhase()),
		commandExample("commit", commit),
		replyExample("ack", messages.Reply{TxID: "order-1042", Op: messages.OpCommit, Participant: "inventory", Result: messages.Ack, Attempt: 2}),
		replyExample("failed", messages.Reply{TxID: "order-1042", Op: messages.OpCommit, Participant: "inventory", Result: messages.Failed, Attempt: 2,
			Reason: "commit after abort"}),
		commandExample("action", action),
		replyExample("refused", messages.Reply{TxID: "trip-77", Op: messages.OpAction, Participant: "payment", Step: "charge", Result: messages.Refused, Attempt: 1,
			Reason: `insufficient funds: 30 from "alice"`, Code: "insufficient-funds"}),
		{name: "command-batch", subject: messages.BatchSubject("inventory", batchID), header: bh, body: bbody, check: func(h map[string][]string, body []byte) error {
			items, err := messages.DecodeBatch(h, body)
			if err != nil {
				return err
			}
			if len(items) != 2 || h[messages.HeaderParticipant][0] != "inventory" {
				return fmt.Errorf("%d items for %v", len(items), h[messages.HeaderParticipant])
			}
			for i, want := range []messages.Command{commit, next} {
				got, err := messages.DecodeCommand(items[i].Header, items[i].Body)
				if err != nil {
					return fmt.Errorf("item %d: %w", i+1, err)
				}
				want.Sender = ""
				if err := sameCommand(got, want); err != nil {
					return fmt.Errorf("item %d: %w", i+1, err)
				}
			}
			return nil
		}},
		{name: "reply-batch", subject: messages.ReplySubject("nyc-1", "inventory"), header: rh, body: rbody, check: func(h map[string][]string, body []byte) error {
			items, err := messages.DecodeBatch(h, body)
			if err != nil {
				return err
			}
			if len(items) != len(replies) {
				return fmt.Errorf("%d items, want %d", len(items), len(replies))
			}
			for i, want := range replies {
				got, err := messages.DecodeReply(items[i].Header, items[i].Body)
				if err != nil {
					return fmt.Errorf("item %d: %w", i+1, err)
				}
				if !reflect.DeepEqual(got, want) {
					return fmt.Errorf("item %d decodes to %+v, want %+v", i+1, got, want)
				}
			}
			return nil
		}},
		jsonExample("outcome-request", messages.OutcomeRequest{ID: "order-1042", Participant: "inventory", DeadlineMs: exDeadline.UnixMilli(),
			AskedAtMs: exDeadline.Add(12 * time.Second).UnixMilli()}),
		jsonExample("outcome-response", messages.OutcomeResponse{Outcome: messages.OutcomeCommit, Reason: "commit record found"}),
		jsonExample("audit-request", messages.AuditRequest{IDs: []string{"order-1042", "order-1043", "order-9999"}}),
		jsonExample("audit-response", messages.AuditResponse{Participant: "inventory",
			States: map[string]string{"order-1042": stateCommitted, "order-1043": stateAborted, "order-9999": stateNone}}),
	}
}

// render is the text of an example in the document: "PUB <subject>", the
// headers sorted one per line, a blank line, and the body, where "\r\n"
// stands for the bytes CR LF and line breaks are only for reading.
func render(ex example) string {
	if ex.subject == "" {
		return string(ex.body)
	}
	var b strings.Builder
	b.WriteString("PUB " + ex.subject + "\n")
	names := make([]string, 0, len(ex.header))
	for n := range ex.header {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, v := range ex.header[n] {
			b.WriteString(n + ": " + v + "\n")
		}
	}
	b.WriteString("\n")
	body := string(ex.body)
	if messages.IsBatch(ex.header) {
		// A line break after each framing line and header line, and before
		// each framing line that follows a body.
		body = strings.ReplaceAll(body, "\r\n", `\r\n`+"\n")
		body = regexp.MustCompile(`([^\n\d])(\d+ \d+\\r\\n)`).ReplaceAllString(body, "$1\n$2")
	}
	b.WriteString(body)
	return strings.TrimRight(b.String(), "\n")
}

// parse reads an example back from the document's text.
func parse(text string, isMessage bool) (map[string][]string, []byte, error) {
	if !isMessage {
		return nil, []byte(text), nil
	}
	head, body, _ := strings.Cut(text, "\n\n")
	lines := strings.Split(head, "\n")
	if !strings.HasPrefix(lines[0], "PUB ") {
		return nil, nil, fmt.Errorf("first line %q is not PUB <subject>", lines[0])
	}
	h := map[string][]string{}
	for _, l := range lines[1:] {
		n, v, ok := strings.Cut(l, ": ")
		if !ok {
			return nil, nil, fmt.Errorf("header line %q", l)
		}
		h[n] = append(h[n], v)
	}
	body = strings.ReplaceAll(body, "\n", "")
	body = strings.ReplaceAll(body, `\r\n`, "\r\n")
	return h, []byte(body), nil
}

func TestProtocolExamples(t *testing.T) {
	raw, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, ex := range examples() {
		re := regexp.MustCompile("(?s)(<!-- example: " + regexp.QuoteMeta(ex.name) + " -->\n```text\n)(.*?)(\n```)")
		m := re.FindStringSubmatchIndex(doc)
		if m == nil {
			t.Errorf("docs/PROTOCOL.md has no example %q (<!-- example: %s --> before a text block)", ex.name, ex.name)
			continue
		}
		want := render(ex)
		shown := doc[m[4]:m[5]]
		if strings.Contains(shown, "```") {
			t.Errorf("docs/PROTOCOL.md example %q: its text block is empty or not closed", ex.name)
			continue
		}
		if *updateDoc {
			doc = doc[:m[4]] + want + doc[m[5]:]
			continue
		}
		if shown != want {
			t.Errorf("docs/PROTOCOL.md example %q differs from what the code sends (go test ./participants/conformance/wire -run ProtocolExamples -update-protocol-doc rewrites it):\n--- document\n%s\n--- code\n%s", ex.name, shown, want)
		}
		h, body, err := parse(shown, ex.subject != "")
		if err == nil {
			err = ex.check(h, body)
		}
		if err != nil {
			t.Errorf("docs/PROTOCOL.md example %q does not decode with the code: %v", ex.name, err)
		}
	}
	if *updateDoc {
		if err := os.WriteFile(protocolDoc, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestProtocolDocNamesTheVersion checks that the document is about the
// protocol version the code speaks.
func TestProtocolDocNamesTheVersion(t *testing.T) {
	raw, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("Protocol version: **%d**", messages.Version)
	if !strings.Contains(string(raw), want) {
		t.Errorf("docs/PROTOCOL.md does not say %q", want)
	}
}
