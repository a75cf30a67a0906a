package services_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
)

// TestRefusalsSayWhatWasWrong: an unknown item, account or slot is refused
// as unknown, listing the known ones, not as out of stock, insufficient
// funds or no capacity; a payload of the wrong shape names the field. Both
// at a two-phase prepare (vote abort with the reason) and at a saga action
// (refused with the service's code, bad-payload for the shape).
func TestRefusalsSayWhatWasWrong(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		kind, payload, want, code string
	}{
		{"inventory", `{"item": "wodget", "qty": 1}`, `no item "wodget" (items: doohickey, gadget, gizmo, sprocket, widget)`, services.CodeOutOfStock},
		{"inventory", `{"item": "widget", "qty": 1000000000}`, `out of stock: 1000000000 of "widget"`, services.CodeOutOfStock},
		{"inventory", `{"item": "widget"}`, `field "qty" must be a whole number >= 1 (got 0); want {"item": NAME, "qty": N}`, services.CodeBadPayload},
		{"inventory", `{"item": "widget", "qty": "2"}`, `field "qty" is a JSON string, want a whole number`, services.CodeBadPayload},
		{"inventory", `{"sku": "A"}`, `field "item" is missing or empty`, services.CodeBadPayload},
		{"payment", `{"account": "zed", "amount": 10}`, `no account "zed" (accounts: alice, bob, carol, dave)`, services.CodeInsufficientFunds},
		{"payment", `{"account": "alice", "amount": 1000000000}`, `insufficient funds: 1000000000 from "alice"`, services.CodeInsufficientFunds},
		{"payment", `{"account": "merchant", "amount": 10}`, `field "account" is "merchant", which receives the funds and cannot be charged`, services.CodeBadPayload},
		{"payment", `[1]`, `it is a JSON array, want an object`, services.CodeBadPayload},
		{"shipping", `{"slot": "sun"}`, `no slot "sun" (slots: fri, mon, thu, tue, wed)`, services.CodeNoCapacity},
		{"shipping", `{"slot": 3}`, `field "slot" is a JSON number, want a string`, services.CodeBadPayload},
		{"shipping", `not json`, `it is not JSON`, services.CodeBadPayload},
	}
	for _, kind := range services.Kinds {
		svc, err := services.Open(ctx, kind, filepath.Join(t.TempDir(), kind+".db"))
		if err != nil {
			t.Fatal(err)
		}
		defer svc.DB().Close()
		p := proc(t, svc, nil)
		for i, c := range cases {
			if c.kind != kind {
				continue
			}
			// Two-phase commit: prepare votes abort with the reason.
			cmd := messages.Command{TxID: "tx" + string(rune('a'+i)), Op: messages.OpPrepare, Participant: kind, Attempt: 1, ReplyTo: messages.ReplySubject("t", kind), Payload: []byte(c.payload)}
			var rep messages.Reply
			p.Handle(cmd.Header(), cmd.Payload, cmd.Subject(), func(a participants.Answer) { rep = a.Reply })
			if rep.Result != messages.VoteAbort || !strings.Contains(rep.Reason, c.want) {
				t.Errorf("%s prepare %s: %s %q; want vote-abort with %q", kind, c.payload, rep.Result, rep.Reason, c.want)
			}
			// Saga: the action is refused with the code and the reason.
			r := run(t, p, "saga"+string(rune('a'+i)), messages.OpAction, "s", 1, []byte(c.payload))
			if r.Result != messages.Refused || r.Code != c.code || !strings.Contains(r.Reason, c.want) {
				t.Errorf("%s action %s: %s %s %q; want refused %s with %q", kind, c.payload, r.Result, r.Code, r.Reason, c.code, c.want)
			}
		}
	}
}

// TestShapeRefusalsNeverQuoteThePayload: the reason given for a payload of
// the wrong shape (logged at info by the processor, sent to the
// coordinator) names the field, the shape wanted and the payload's length,
// and quotes nothing of the payload: a secret inside it appears in no
// reason, at a prepare or at a saga action.
func TestShapeRefusalsNeverQuoteThePayload(t *testing.T) {
	const secret = "hunter2-SECRET"
	ctx := context.Background()
	cases := []struct{ kind, payload, want string }{
		{"inventory", `{"item": "widget", "qty": "` + secret + `"}`, `field "qty" is a JSON string, want a whole number`},
		{"inventory", `{"item": "widget", "qty": 31337.5, "note": "` + secret + `"}`, `field "qty" is a JSON number, want a whole number`},
		{"payment", `{"card": "` + secret + `", "amount": 10}`, `field "account" is missing or empty`},
		{"payment", `{"account": "alice", "amount": 0, "cvv": "` + secret + `"}`, `field "amount" must be a whole number >= 1`},
		{"payment", `not json ` + secret, `it is not JSON: syntax error at byte`},
		{"shipping", `["` + secret + `"]`, `it is a JSON array, want an object`},
		{"shipping", `{"slot": "` + secret + `"`, `it is not JSON: it ends too soon`},
	}
	checked, quoted := 0, 0
	for _, kind := range services.Kinds {
		svc, err := services.Open(ctx, kind, filepath.Join(t.TempDir(), kind+".db"))
		if err != nil {
			t.Fatal(err)
		}
		defer svc.DB().Close()
		p := proc(t, svc, nil)
		for i, c := range cases {
			if c.kind != kind {
				continue
			}
			length := fmt.Sprintf("%s payload (%d bytes): ", kind, len(c.payload))
			cmd := messages.Command{TxID: "leak" + string(rune('a'+i)), Op: messages.OpPrepare, Participant: kind, Attempt: 1, ReplyTo: messages.ReplySubject("t", kind), Payload: []byte(c.payload)}
			var rep messages.Reply
			p.Handle(cmd.Header(), cmd.Payload, cmd.Subject(), func(a participants.Answer) { rep = a.Reply })
			r := run(t, p, "leaksaga"+string(rune('a'+i)), messages.OpAction, "s", 1, []byte(c.payload))
			for what, reason := range map[string]string{"prepare": rep.Reason, "action": r.Reason} {
				checked++
				if strings.Contains(reason, secret) || strings.Contains(reason, "31337") {
					quoted++
					t.Errorf("%s %s %s: the reason quotes the payload: %q", kind, what, c.payload, reason)
				}
				if !strings.Contains(reason, length) || !strings.Contains(reason, c.want) {
					t.Errorf("%s %s %s: reason %q; want %q and %q", kind, what, c.payload, reason, length, c.want)
				}
			}
			if rep.Result != messages.VoteAbort || r.Result != messages.Refused || r.Code != services.CodeBadPayload {
				t.Errorf("%s %s: prepare %s, action %s %s; want vote-abort and refused %s", kind, c.payload, rep.Result, r.Result, r.Code, services.CodeBadPayload)
			}
		}
	}
	t.Logf("%d refusal reasons checked, %d quote the payload", checked, quoted)
}
