package participants_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// sendBatch publishes cmds as one batch message into the command stream.
func (e *env) sendBatch(participant string, cmds ...messages.Command) {
	e.t.Helper()
	id := nuid.Next()
	h, body, err := messages.EncodeCommandBatch(participant, "test."+id, cmds)
	if err != nil {
		e.t.Fatal(err)
	}
	e.publish(&nats.Msg{Subject: messages.BatchSubject(participant, id), Header: nats.Header(h), Data: body})
}

// nextReplies returns the replies of the next reply message, alone or a batch.
func (e *env) nextReplies() []messages.Reply {
	e.t.Helper()
	msg, err := e.replies.NextMsg(wait)
	if err != nil {
		e.t.Fatalf("waiting for a reply: %v", err)
	}
	h := map[string][]string(msg.Header)
	items := []messages.BatchItem{{Header: h, Body: msg.Data}}
	if messages.IsBatch(h) {
		if items, err = messages.DecodeBatch(h, msg.Data); err != nil {
			e.t.Fatalf("decoding a reply batch: %v", err)
		}
	}
	var out []messages.Reply
	for _, it := range items {
		rep, err := messages.DecodeReply(it.Header, it.Body)
		if err != nil {
			e.t.Fatalf("decoding reply: %v", err)
		}
		if msg.Subject != messages.ReplySubject("test", rep.Participant) {
			e.t.Fatalf("reply of %s on %s", rep.Participant, msg.Subject)
		}
		out = append(out, rep)
	}
	return out
}

// TestABatchIsHandledAsItsCommandsAlone: each command of a batch gets the
// answer it would get alone, the replies come back as one reply batch in the
// batch's order, and a malformed command spoils nothing of the others.
func TestABatchIsHandledAsItsCommandsAlone(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	h.PrepareFunc = func(_ context.Context, tx participants.Tx, _ []byte) error {
		if tx.ID == "b3" {
			return errors.New("out of stock")
		}
		return nil
	}
	rt := e.start(e.nc, testConfig(h, nil))

	bad := e.cmd("b4", messages.OpPrepare, 1)
	bad.Participant = "someone-else"
	e.sendBatch(svc, e.cmd("b1", messages.OpPrepare, 1), e.cmd("b2", messages.OpPrepare, 1), e.cmd("b3", messages.OpPrepare, 1))
	got := e.nextReplies()
	want := []struct {
		txid   string
		result messages.Result
	}{{"b1", messages.VoteCommit}, {"b2", messages.VoteCommit}, {"b3", messages.VoteAbort}}
	if len(got) != len(want) {
		t.Fatalf("%d replies, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].TxID != w.txid || got[i].Result != w.result || got[i].Op != messages.OpPrepare {
			t.Errorf("reply %d: %+v, want %s %s", i, got[i], w.txid, w.result)
		}
	}
	// Commit b1, abort b2, a duplicate prepare of b1 and a command for
	// another participant, in one batch.
	e.sendBatch(svc, e.cmd("b1", messages.OpCommit, 1), e.cmd("b2", messages.OpAbort, 1), e.cmd("b1", messages.OpPrepare, 2))
	got = e.nextReplies()
	if len(got) != 3 || got[0].Result != messages.Ack || got[1].Result != messages.Ack || got[2].Result != messages.VoteCommit || got[2].Attempt != 2 {
		t.Fatalf("second batch replies %+v", got)
	}
	if s := rt.State("b1"); s != participants.StateCommitted {
		t.Errorf("b1 %s, want committed", s)
	}
	if s := rt.State("b2"); s != participants.StateAborted {
		t.Errorf("b2 %s, want aborted", s)
	}
	if h.n(messages.OpPrepare, "b1") != 1 || h.n(messages.OpCommit, "b1") != 1 {
		t.Errorf("handler calls %v: the duplicate prepare in the batch called the handler again", h.calls)
	}
	e.settled()
}

// TestABatchWithAFailedCommitIsDeliveredAgain: one failed commit in a batch
// has the whole batch delivered again; the others are answered again from
// the record without calling the handler twice.
func TestABatchWithAFailedCommitIsDeliveredAgain(t *testing.T) {
	e := newEnv(t, true)
	h := newRecorder()
	var fail atomic.Bool
	fail.Store(true)
	h.CommitFunc = func(_ context.Context, tx participants.Tx) error {
		if tx.ID == "c2" && fail.CompareAndSwap(true, false) {
			return errors.New("database unavailable")
		}
		return nil
	}
	e.start(e.nc, testConfig(h, nil))
	e.sendBatch(svc, e.cmd("c1", messages.OpPrepare, 1), e.cmd("c2", messages.OpPrepare, 1))
	if got := e.nextReplies(); len(got) != 2 {
		t.Fatalf("prepare replies %+v", got)
	}
	e.sendBatch(svc, e.cmd("c1", messages.OpCommit, 1), e.cmd("c2", messages.OpCommit, 1))
	first := e.nextReplies()
	if len(first) != 2 || first[0].Result != messages.Ack || first[1].Result != messages.Failed {
		t.Fatalf("first delivery replies %+v, want ack then failed", first)
	}
	again := e.nextReplies()
	if len(again) != 2 || again[0].Result != messages.Ack || again[1].Result != messages.Ack {
		t.Fatalf("redelivery replies %+v, want two acks", again)
	}
	if h.n(messages.OpCommit, "c1") != 1 || h.n(messages.OpCommit, "c2") != 2 {
		t.Errorf("handler calls %v, want c1 committed once, c2 twice (one failure)", h.calls)
	}
	e.settled()
}

// TestAMalformedBatchIsDroppedAndCounted: a batch that cannot be read, or
// that came for another participant, is terminated unanswered, counted as
// malformed, and the runtime goes on.
func TestAMalformedBatchIsDroppedAndCounted(t *testing.T) {
	e := newEnv(t, true)
	rt := e.start(e.nc, testConfig(newRecorder(), nil))
	c := e.cmd("m1", messages.OpPrepare, 1)
	h, body, err := messages.EncodeCommandBatch(svc, "x", []messages.Command{c, e.cmd("m2", messages.OpPrepare, 1)})
	if err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header(h)
	hdr.Set(messages.HeaderBatch, "3") // more than it holds
	e.publish(&nats.Msg{Subject: messages.BatchSubject(svc, "x1"), Header: hdr, Data: body})
	// Well-formed, but a batch for another participant on this one's subject.
	other := c
	other.Participant = "billing"
	h2, body2, err := messages.EncodeCommandBatch("billing", "y", []messages.Command{other})
	if err != nil {
		t.Fatal(err)
	}
	e.publish(&nats.Msg{Subject: messages.BatchSubject(svc, "x2"), Header: nats.Header(h2), Data: body2})
	e.sendBatch(svc, e.cmd("after", messages.OpPrepare, 1))
	got := e.nextReplies()
	if len(got) != 1 || got[0].TxID != "after" || got[0].Result != messages.VoteCommit {
		t.Fatalf("replies %+v, want only the vote for after", got)
	}
	e.settled()
	if st := rt.Stats(); st.Malformed < 2 {
		t.Errorf("stats %+v, want the two bad batches counted malformed", st)
	}
}

// TestConcurrencyBoundsBatchesAndSingleCommands: the commands of batches and
// the commands that come alone share Config.Concurrency: never more handler
// calls at once, and every command is answered once.
func TestConcurrencyBoundsBatchesAndSingleCommands(t *testing.T) {
	e := newEnv(t, true)
	const limit = 3
	var running, most atomic.Int32
	h := newRecorder()
	h.PrepareFunc = func(context.Context, participants.Tx, []byte) error {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if r <= m || most.CompareAndSwap(m, r) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		return nil
	}
	cfg := testConfig(h, nil)
	cfg.Concurrency = limit
	e.start(e.nc, cfg)

	var batch []messages.Command
	for i := range 12 {
		batch = append(batch, e.cmd(fmt.Sprintf("cb%d", i), messages.OpPrepare, 1))
	}
	e.sendBatch(svc, batch...)
	e.sendBatch(svc, batch[6:]...) // duplicates, in a second batch at once
	for i := range 6 {
		e.send(e.cmd(fmt.Sprintf("cs%d", i), messages.OpPrepare, 1))
	}
	want := map[string]int{}
	for i, c := range batch {
		want[c.TxID] = 1
		if i >= 6 {
			want[c.TxID] = 2 // in both batches
		}
	}
	for i := range 6 {
		want[fmt.Sprintf("cs%d", i)] = 1
	}
	votes, total := map[string]int{}, 0
	for total < 24 {
		for _, rep := range e.nextReplies() {
			if rep.Result != messages.VoteCommit {
				t.Fatalf("reply %+v", rep)
			}
			votes[rep.TxID]++
			total++
		}
	}
	e.settled()
	if m := most.Load(); m > limit {
		t.Errorf("%d handler calls at once, want at most %d", m, limit)
	}
	for id, n := range want {
		if votes[id] != n {
			t.Errorf("%s answered %d times, want %d", id, votes[id], n)
		}
		if c := h.n(messages.OpPrepare, id); c != 1 {
			t.Errorf("%s prepared %d times, want once", id, c)
		}
	}
	t.Logf("at most %d handler calls at once", most.Load())
}
