package wire

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
)

// CodeCompensatedFirst is the code of the refusal of an action whose
// compensation came first (docs/PROTOCOL.md).
const CodeCompensatedFirst = "compensated-first"

// The audit states.
const (
	stateNone      = "none"
	statePrepared  = "prepared"
	stateCommitted = "committed"
	stateAborted   = "aborted"
)

var (
	voteCommit = Want{Result: messages.VoteCommit, Reason: "*"}
	voteAbort  = Want{Result: messages.VoteAbort, Reason: "*"}
	ack        = Want{Result: messages.Ack, Reason: "*"}
	failed     = Want{Result: messages.Failed, Reason: "*"}
)

// Cases returns every conformance case, in the order they run.
func Cases() []Case {
	return []Case{
		{Name: "vote", Doc: "prepare is answered with a vote on the command's reply subject, in the participant's own name", run: caseVote},
		{Name: "duplicate-prepare", Doc: "a prepare sent again (new attempt, or the same redelivered) gets the same vote; the work is staged once", run: caseDuplicatePrepare},
		{Name: "abort-before-prepare", Doc: "an abort that arrives before its prepare is acknowledged and makes the late prepare, and its duplicates, vote abort", run: caseAbortBeforePrepare},
		{Name: "commit-idempotent", Doc: "commit sent again is acknowledged again and applied once", run: caseCommitIdempotent},
		{Name: "abort-idempotent", Doc: "abort sent again is acknowledged again and applied once; a prepare after it votes abort", run: caseAbortIdempotent},
		{Name: "contradictions", Doc: "commit never prepared, commit after abort and abort after commit are answered failed (never ack) and not delivered again", run: caseContradictions},
		{Name: "deadline-passed", Doc: "a prepare whose deadline has passed votes abort, and so do its duplicates", run: caseDeadlinePassed},
		{Name: "one-phase", Doc: "commit-one-phase (protocol 6) with the accepted payload and a future deadline is answered ack, committed with one prepare and one commit call, and answered ack again when sent again (new attempt, or the same redelivered) without new calls; one whose deadline has passed (1 ms after the epoch, no payload: a coordinator's takeover probe) votes abort without calls, and so does the same transaction's commit-one-phase with payload after it; one of a transaction prepared by prepare is answered failed (never ack) and not delivered again", run: caseOnePhase},
		{Name: "malformed", Doc: "malformed commands are answered failed or not at all, are terminated, change nothing, and the participant goes on working", run: caseMalformed},
		{Name: "batch", Doc: "a batch message of commands gets each command's own answer (single replies or a reply batch)", run: caseBatch},
		{Name: "audit", Doc: "the audit API reports none, prepared, committed and aborted as the participant holds them", run: caseAudit},
		{Name: "saga-action-duplicate", Doc: "a saga action sent again gets the same answer and is done once", Saga: true, run: caseSagaActionDuplicate},
		{Name: "saga-compensation", Doc: "a compensation after its action is done once, its duplicates acknowledged, and the action is not done again", Saga: true, run: caseSagaCompensation},
		{Name: "saga-null-compensation", Doc: "a compensation before its action is acknowledged without effect, and the late action is refused with code compensated-first", Saga: true, run: caseSagaNullCompensation},
		{Name: "saga-batch", Doc: "a batch message of saga commands gets each command's own answer", Saga: true, run: caseSagaBatch},
		{Name: "crash-redelivery", Doc: "a prepare and a commit delivered again after a crash between applying them and replying are answered as before", run: caseCrash},
		{Name: "in-doubt", Doc: "a participant that voted commit and hears nothing asks natstx.api.v1.outcome with the deadline, and applies the answer", run: caseInDoubt},
		{Name: "in-doubt-after-commit", Doc: "a transaction whose commit arrives while the participant waits for the answer to another in-doubt question is not asked about any more", run: caseInDoubtAfterCommit},
	}
}

func caseVote(e *Env) {
	tx := e.TxID("t")
	e.Send(e.Cmd(tx, messages.OpPrepare, 1))
	r := e.Await(tx, messages.OpPrepare, "", e.p.wait()).Reply
	if r.Result != messages.VoteCommit {
		e.Fatalf("prepare of %s: answered %s%s, want vote-commit; give a prepare payload the participant accepts", tx, r.Result, reasonText(r))
	}
	e.WantStates(map[string]string{tx: statePrepared})
	e.Expect(e.Cmd(tx, messages.OpAbort, 1), ack)
	e.WantStates(map[string]string{tx: stateAborted})
	e.WantCalls(messages.OpPrepare, tx, 1)
	e.WantCalls(messages.OpAbort, tx, 1)
}

func caseDuplicatePrepare(e *Env) {
	tx := e.TxID("t")
	prep := e.Cmd(tx, messages.OpPrepare, 1)
	e.Expect(prep, voteCommit)
	e.Expect(e.Cmd(tx, messages.OpPrepare, 2), voteCommit)
	e.Expect(prep, voteCommit) // attempt 1 again, as a redelivery looks
	e.WantCalls(messages.OpPrepare, tx, 1)
	e.WantStates(map[string]string{tx: statePrepared})
	e.Expect(e.Cmd(tx, messages.OpCommit, 1), ack)
	e.Expect(e.Cmd(tx, messages.OpPrepare, 3), voteCommit) // a late duplicate after the commit
	e.WantCalls(messages.OpPrepare, tx, 1)
	e.WantStates(map[string]string{tx: stateCommitted})
}

func caseAbortBeforePrepare(e *Env) {
	tx := e.TxID("t")
	e.Expect(e.Cmd(tx, messages.OpAbort, 1), ack)
	e.Expect(e.Cmd(tx, messages.OpPrepare, 1), voteAbort)
	e.Expect(e.Cmd(tx, messages.OpPrepare, 2), voteAbort)
	e.Expect(e.Cmd(tx, messages.OpAbort, 2), ack)
	e.WantStates(map[string]string{tx: stateAborted})
	e.WantCalls(messages.OpPrepare, tx, 0)
	e.WantCalls(messages.OpAbort, tx, 0)
}

func caseCommitIdempotent(e *Env) {
	tx := e.TxID("t")
	e.Expect(e.Cmd(tx, messages.OpPrepare, 1), voteCommit)
	commit := e.Cmd(tx, messages.OpCommit, 1)
	e.Expect(commit, ack)
	e.Expect(e.Cmd(tx, messages.OpCommit, 2), ack)
	e.Expect(commit, ack)
	e.WantCalls(messages.OpCommit, tx, 1)
	e.WantStates(map[string]string{tx: stateCommitted})
}

func caseAbortIdempotent(e *Env) {
	tx := e.TxID("t")
	e.Expect(e.Cmd(tx, messages.OpPrepare, 1), voteCommit)
	abort := e.Cmd(tx, messages.OpAbort, 1)
	e.Expect(abort, ack)
	e.Expect(e.Cmd(tx, messages.OpAbort, 2), ack)
	e.Expect(abort, ack)
	e.Expect(e.Cmd(tx, messages.OpPrepare, 2), voteAbort)
	e.WantCalls(messages.OpAbort, tx, 1)
	e.WantCalls(messages.OpPrepare, tx, 1)
	e.WantStates(map[string]string{tx: stateAborted})
}

func caseContradictions(e *Env) {
	never, committed, aborted := e.TxID("never"), e.TxID("committed"), e.TxID("aborted")
	e.Expect(e.Cmd(never, messages.OpCommit, 1), failed)
	e.Quietly(never, messages.OpCommit, "", "a contradiction is terminated, not delivered again")
	e.WantCalls(messages.OpCommit, never, 0)

	e.Expect(e.Cmd(committed, messages.OpPrepare, 1), voteCommit)
	e.Expect(e.Cmd(committed, messages.OpCommit, 1), ack)
	e.Expect(e.Cmd(committed, messages.OpAbort, 1), failed)
	e.Quietly(committed, messages.OpAbort, "", "a contradiction is terminated, not delivered again")

	e.Expect(e.Cmd(aborted, messages.OpPrepare, 1), voteCommit)
	e.Expect(e.Cmd(aborted, messages.OpAbort, 1), ack)
	e.Expect(e.Cmd(aborted, messages.OpCommit, 1), failed)
	e.Quietly(aborted, messages.OpCommit, "", "a contradiction is terminated, not delivered again")
	e.WantCalls(messages.OpCommit, committed, 1)
	e.WantCalls(messages.OpAbort, committed, 0)
	e.WantCalls(messages.OpCommit, aborted, 0)
	e.WantStates(map[string]string{never: stateNone, committed: stateCommitted, aborted: stateAborted})
}

func caseDeadlinePassed(e *Env) {
	tx := e.TxID("t")
	prep := e.Cmd(tx, messages.OpPrepare, 1)
	prep.Deadline = time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	e.Expect(prep, voteAbort)
	prep.Attempt = 2
	e.Expect(prep, voteAbort)
	e.WantCalls(messages.OpPrepare, tx, 0)
	e.WantStates(map[string]string{tx: stateAborted})
	e.Expect(e.Cmd(tx, messages.OpAbort, 1), ack)
}

// caseOnePhase: commit-one-phase, sent instead of prepare to the only
// participant of a transaction, which decides the outcome alone: it
// prepares and commits at once and answers ack, or votes abort.
func caseOnePhase(e *Env) {
	committed, probe, prepared := e.TxID("committed"), e.TxID("probe"), e.TxID("prepared")
	future := time.Now().Add(time.Hour).Truncate(time.Millisecond)

	one := e.Cmd(committed, messages.OpCommitOnePhase, 1)
	one.Deadline = future
	e.Send(one)
	r := e.Await(committed, messages.OpCommitOnePhase, "", e.p.wait()).Reply
	if r.Result != messages.Ack || r.Attempt != one.Attempt {
		e.Fatalf("%s: answered %s%s attempt %d, want ack attempt %d; give a prepare payload the participant accepts", describe(one), r.Result, reasonText(r), r.Attempt, one.Attempt)
	}
	e.WantCalls(messages.OpPrepare, committed, 1)
	e.WantCalls(messages.OpCommit, committed, 1)
	e.WantStates(map[string]string{committed: stateCommitted})
	again := one
	again.Attempt = 2
	e.Expect(again, ack)
	e.Expect(one, ack) // attempt 1 again, as a redelivery looks
	e.WantCalls(messages.OpPrepare, committed, 1)
	e.WantCalls(messages.OpCommit, committed, 1)
	e.WantStates(map[string]string{committed: stateCommitted})

	// A coordinator taking over a one-phase transaction whose owner died
	// asks with a deadline always passed and no payload: the participant
	// answers what it holds, or, holding nothing, aborts for good.
	ask := e.Cmd(probe, messages.OpCommitOnePhase, 2)
	ask.Payload, ask.Deadline = nil, time.UnixMilli(1)
	e.Expect(ask, voteAbort)
	e.WantCalls(messages.OpPrepare, probe, 0)
	e.WantStates(map[string]string{probe: stateAborted})
	late := e.Cmd(probe, messages.OpCommitOnePhase, 1) // the dead owner's command, arriving after
	late.Deadline = future
	e.Expect(late, voteAbort)
	e.WantCalls(messages.OpPrepare, probe, 0)
	e.WantCalls(messages.OpCommit, probe, 0)
	e.WantStates(map[string]string{probe: stateAborted})

	e.Expect(e.Cmd(prepared, messages.OpPrepare, 1), voteCommit)
	contra := e.Cmd(prepared, messages.OpCommitOnePhase, 1)
	contra.Deadline = future
	e.Expect(contra, failed)
	e.Quietly(prepared, messages.OpCommitOnePhase, "", "a contradiction is terminated, not delivered again")
	e.WantCalls(messages.OpPrepare, prepared, 1)
	e.WantCalls(messages.OpCommit, prepared, 0)
	e.WantStates(map[string]string{prepared: statePrepared})
	e.Expect(e.Cmd(prepared, messages.OpAbort, 1), ack)
	e.WantStates(map[string]string{prepared: stateAborted})
}

// malformed is one malformed message: where it goes, and the transaction
// its reply (if any) is about.
type malformed struct {
	what    string
	subject string
	header  map[string][]string
	body    []byte
	txid    string
	op      messages.Op
}

func caseMalformed(e *Env) {
	var ms []malformed
	add := func(what string, c messages.Command, edit func(h map[string][]string)) {
		h := c.Header()
		h[messages.HeaderMsgID] = []string{c.TxID + "." + e.sender()}
		edit(h)
		ms = append(ms, malformed{what: what, subject: c.Subject(), header: h, body: c.Payload, txid: c.TxID, op: c.Op})
	}
	add("a command naming another participant on this participant's subject", e.Cmd(e.TxID("other"), messages.OpPrepare, 1), func(h map[string][]string) {
		h[messages.HeaderParticipant] = []string{e.p.Participant + "-other"}
	})
	add("a repeated header", e.Cmd(e.TxID("repeated"), messages.OpPrepare, 1), func(h map[string][]string) {
		h[messages.HeaderAttempt] = []string{"1", "2"}
	})
	add("an unknown protocol version", e.Cmd(e.TxID("version"), messages.OpPrepare, 1), func(h map[string][]string) {
		h[messages.HeaderVersion] = []string{"99"}
	})
	add("an attempt that is not a number", e.Cmd(e.TxID("attempt"), messages.OpPrepare, 1), func(h map[string][]string) {
		h[messages.HeaderAttempt] = []string{"first"}
	})
	add("a deadline that is not Unix milliseconds", e.Cmd(e.TxID("deadline"), messages.OpPrepare, 1), func(h map[string][]string) {
		h[messages.HeaderDeadline] = []string{"tomorrow"}
	})
	withBody := e.Cmd(e.TxID("payload"), messages.OpCommit, 1)
	withBody.Payload = []byte("a commit carries no payload")
	add("a commit with a payload", withBody, func(map[string][]string) {})
	add("a saga action without its step", e.Cmd(e.TxID("nostep"), messages.OpAction, 1), func(map[string][]string) {})
	elsewhere := e.Cmd(e.TxID("subject"), messages.OpPrepare, 1)
	add("a command on another transaction's subject", elsewhere, func(map[string][]string) {})
	ms[len(ms)-1].subject = messages.CommandSubject(e.p.Participant, e.TxID("elsewhere"))
	// A batch whose framing announces two items and holds one: nothing in
	// it can be read for sure, so it is terminated without replies.
	inner := e.Cmd(e.TxID("badbatch"), messages.OpPrepare, 1)
	h, body, err := messages.EncodeCommandBatch(e.p.Participant, e.p.run+".badbatch", []messages.Command{inner})
	if err != nil {
		e.Fatalf("encoding a batch: %v", err)
	}
	h[messages.HeaderBatch] = []string{"2"}
	ms = append(ms, malformed{what: "a batch with fewer items than it announces", subject: messages.BatchSubject(e.p.Participant, e.p.run+"badbatch"),
		header: h, body: body, txid: inner.TxID, op: inner.Op})

	for _, m := range ms {
		e.Publish(m.subject, m.header, m.body)
	}
	if err := e.p.settled(e.ctx, e.p.wait()); err != nil {
		e.Fatalf("%v", err)
	}
	e.pause(e.p.quiet()) // replies are published before the settling
	ids := []string{}
	for _, m := range ms {
		ids = append(ids, m.txid)
		r, ok := e.next(m.txid, m.op, "", 0)
		if ok && r.Reply.Result != messages.Failed {
			e.Fatalf("%s (%s of %s): answered %s%s, want failed or no answer", m.what, m.op, m.txid, r.Reply.Result, reasonText(r.Reply))
		}
		e.WantCalls(m.op, m.txid, 0)
	}
	e.pause(e.p.quiet())
	for _, m := range ms {
		if r, ok := e.next(m.txid, m.op, "", 0); ok {
			e.Fatalf("%s (%s of %s): answered again (%s): it must be terminated, not delivered again", m.what, m.op, m.txid, r.Reply.Result)
		}
	}
	states := map[string]string{}
	for _, id := range ids {
		states[id] = stateNone
	}
	e.WantStates(states)
	ok := e.TxID("ok")
	e.Expect(e.Cmd(ok, messages.OpPrepare, 1), voteCommit)
	e.Expect(e.Cmd(ok, messages.OpAbort, 1), ack)
}

func caseBatch(e *Env) {
	a, b, c := e.TxID("a"), e.TxID("b"), e.TxID("c")
	bad := e.Cmd(e.TxID("bad"), messages.OpPrepare, 1)
	first := []messages.Command{
		e.Cmd(a, messages.OpPrepare, 1), e.Cmd(b, messages.OpPrepare, 1), e.Cmd(c, messages.OpAbort, 1), e.Cmd(a, messages.OpPrepare, 2),
	}
	// The coordinator never batches a malformed command, but one bad item
	// must not spoil the others: frame one by hand.
	items := make([]messages.BatchItem, 0, len(first)+1)
	for _, cmd := range first {
		h := cmd.Header()
		delete(h, messages.HeaderMsgID)
		items = append(items, messages.BatchItem{Header: h, Body: cmd.Payload})
	}
	bh := bad.Header()
	delete(bh, messages.HeaderMsgID)
	bh[messages.HeaderAttempt] = []string{"1", "2"}
	items = append(items[:2], append([]messages.BatchItem{{Header: bh}}, items[2:]...)...)
	id := e.p.run + e.sender()
	e.Publish(messages.BatchSubject(e.p.Participant, id), map[string][]string{
		messages.HeaderVersion:     {strconv.Itoa(messages.Version)},
		messages.HeaderBatch:       {strconv.Itoa(len(items))},
		messages.HeaderParticipant: {e.p.Participant},
		messages.HeaderMsgID:       {id},
	}, frame(items))
	e.Check(first[0], voteCommit)
	e.Check(first[3], voteCommit)
	e.Check(first[1], voteCommit)
	e.Check(first[2], ack)
	if r, ok := e.next(bad.TxID, bad.Op, "", e.p.quiet()); ok && r.Reply.Result != messages.Failed {
		e.Fatalf("a malformed command in a batch: answered %s, want failed or no answer", r.Reply.Result)
	}
	e.WantCalls(messages.OpPrepare, a, 1)
	e.WantStates(map[string]string{a: statePrepared, b: statePrepared, c: stateAborted, bad.TxID: stateNone})

	second := []messages.Command{
		e.Cmd(a, messages.OpCommit, 1), e.Cmd(b, messages.OpAbort, 1), e.Cmd(c, messages.OpPrepare, 1), e.Cmd(a, messages.OpCommit, 2),
	}
	e.SendBatch(second...)
	e.Check(second[0], ack)
	e.Check(second[3], ack)
	e.Check(second[1], ack)
	e.Check(second[2], voteAbort)
	e.WantCalls(messages.OpCommit, a, 1)
	e.WantCalls(messages.OpAbort, b, 1)
	e.WantCalls(messages.OpPrepare, c, 0)
	e.WantStates(map[string]string{a: stateCommitted, b: stateAborted, c: stateAborted})
}

// frame encodes items as a batch body (docs/PROTOCOL.md, "Batches"),
// independently of package messages' encoder.
func frame(items []messages.BatchItem) []byte {
	var out bytes.Buffer
	for _, it := range items {
		var head strings.Builder
		names := make([]string, 0, len(it.Header))
		for n := range it.Header {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			for _, v := range it.Header[n] {
				head.WriteString(n + ": " + v + "\r\n")
			}
		}
		out.WriteString(strconv.Itoa(head.Len()) + " " + strconv.Itoa(len(it.Body)) + "\r\n")
		out.WriteString(head.String())
		out.Write(it.Body)
	}
	return out.Bytes()
}

func caseAudit(e *Env) {
	prepared, committed, aborted, unknown := e.TxID("prepared"), e.TxID("committed"), e.TxID("aborted"), e.TxID("unknown")
	if _, err := e.p.Audit(e.ctx, unknown); errors.Is(err, ErrNoAudit) {
		e.Skipf("nobody answers on %s: natstx audit counts this participant's transactions in doubt", messages.AuditSubject(e.p.Participant))
	}
	e.Expect(e.Cmd(prepared, messages.OpPrepare, 1), voteCommit)
	e.Expect(e.Cmd(committed, messages.OpPrepare, 1), voteCommit)
	e.Expect(e.Cmd(committed, messages.OpCommit, 1), ack)
	e.Expect(e.Cmd(aborted, messages.OpPrepare, 1), voteCommit)
	e.Expect(e.Cmd(aborted, messages.OpAbort, 1), ack)
	e.WantStates(map[string]string{prepared: statePrepared, committed: stateCommitted, aborted: stateAborted, unknown: stateNone})
	e.Expect(e.Cmd(prepared, messages.OpAbort, 1), ack)
	e.WantStates(map[string]string{prepared: stateAborted})
}

func stepKey(saga, step string) string { return saga + "/" + step }

func caseSagaActionDuplicate(e *Env) {
	s := e.TxID("s")
	act := e.SagaCmd(s, messages.OpAction, "reserve", 1)
	e.Expect(act, ack)
	e.Expect(e.SagaCmd(s, messages.OpAction, "reserve", 2), ack)
	e.Expect(act, ack)
	e.WantCalls(messages.OpAction, stepKey(s, "reserve"), 1)
}

func caseSagaCompensation(e *Env) {
	s := e.TxID("s")
	e.Expect(e.SagaCmd(s, messages.OpAction, "charge", 1), ack)
	comp := e.SagaCmd(s, messages.OpCompensate, "charge", 1)
	e.Expect(comp, ack)
	e.Expect(e.SagaCmd(s, messages.OpCompensate, "charge", 2), ack)
	e.Expect(comp, ack)
	e.Expect(e.SagaCmd(s, messages.OpAction, "charge", 2), ack)
	e.WantCalls(messages.OpAction, stepKey(s, "charge"), 1)
	e.WantCalls(messages.OpCompensate, stepKey(s, "charge"), 1)
}

func caseSagaNullCompensation(e *Env) {
	s := e.TxID("s")
	refused := Want{Result: messages.Refused, Reason: "*", Code: CodeCompensatedFirst, CheckCode: true}
	e.Expect(e.SagaCmd(s, messages.OpCompensate, "book", 1), ack)
	e.Expect(e.SagaCmd(s, messages.OpCompensate, "book", 2), ack)
	e.Expect(e.SagaCmd(s, messages.OpAction, "book", 1), refused)
	e.Expect(e.SagaCmd(s, messages.OpAction, "book", 2), refused)
	e.WantCalls(messages.OpAction, stepKey(s, "book"), 0)
	e.WantCalls(messages.OpCompensate, stepKey(s, "book"), 0)
}

func caseSagaBatch(e *Env) {
	s := e.TxID("s")
	first := []messages.Command{
		e.SagaCmd(s, messages.OpAction, "x", 1), e.SagaCmd(s, messages.OpAction, "y", 1), e.SagaCmd(s, messages.OpCompensate, "z", 1),
	}
	e.SendBatch(first...)
	for _, c := range first {
		e.Check(c, ack)
	}
	second := []messages.Command{
		e.SagaCmd(s, messages.OpCompensate, "x", 1), e.SagaCmd(s, messages.OpAction, "z", 1), e.SagaCmd(s, messages.OpAction, "y", 2),
	}
	e.SendBatch(second...)
	e.Check(second[0], ack)
	e.Check(second[1], Want{Result: messages.Refused, Reason: "*", Code: CodeCompensatedFirst, CheckCode: true})
	e.Check(second[2], ack)
	e.WantCalls(messages.OpAction, stepKey(s, "x"), 1)
	e.WantCalls(messages.OpAction, stepKey(s, "y"), 1)
	e.WantCalls(messages.OpCompensate, stepKey(s, "x"), 1)
	e.WantCalls(messages.OpAction, stepKey(s, "z"), 0)
}

func caseCrash(e *Env) {
	cr := e.p.Crash
	if cr == nil {
		e.Skipf("no way to restart the participant was given (natstx conformance --start CMD)")
	}
	wait := orDefault(e.p.CrashWait, DefaultCrashWait)
	ctx, cancel := context.WithTimeout(e.ctx, 3*wait)
	defer cancel()
	tx := e.TxID("t")
	prep := e.Cmd(tx, messages.OpPrepare, 1)
	prep.Deadline = time.Now().Add(time.Hour).Truncate(time.Millisecond)
	for _, cmd := range []messages.Command{prep, e.Cmd(tx, messages.OpCommit, 1)} {
		if err := cr.ArmCrash(ctx, cmd.Op); err != nil {
			e.Fatalf("arming a crash after %s: %v", cmd.Op, err)
		}
		e.Send(cmd)
		cctx, ccancel := context.WithTimeout(ctx, wait)
		err := cr.Crashed(cctx)
		ccancel()
		if err != nil {
			e.Fatalf("waiting for the participant to crash after applying %s: %v", describe(cmd), err)
		}
		if r, ok := e.next(cmd.TxID, cmd.Op, "", 0); ok {
			e.Fatalf("%s: the participant replied %s before it crashed: the crash point is not between applying and replying", describe(cmd), r.Reply.Result)
		}
		if err := cr.Restart(ctx); err != nil {
			e.Fatalf("restarting the participant: %v", err)
		}
		want := voteCommit
		if cmd.Op == messages.OpCommit {
			want = ack
		}
		r := e.Await(cmd.TxID, cmd.Op, "", wait).Reply
		if r.Result != want.Result || r.Attempt != cmd.Attempt {
			e.Fatalf("%s delivered again after the crash: answered %s%s attempt %d, want %s attempt %d", describe(cmd), r.Result, reasonText(r), r.Attempt, want.Result, cmd.Attempt)
		}
	}
	e.WantStates(map[string]string{tx: stateCommitted})
	e.Expect(e.Cmd(tx, messages.OpCommit, 2), ack)
}

func caseInDoubt(e *Env) {
	if e.p.InDoubtWait < 0 {
		e.Skipf("skipped (in-doubt wait negative)")
	}
	wait := orDefault(e.p.InDoubtWait, DefaultInDoubtWait)
	alone := !othersAnswerOutcomes(e)
	tx := e.TxID("t")
	prep := e.Cmd(tx, messages.OpPrepare, 1)
	prep.Deadline = time.Now().Add(time.Hour).Truncate(time.Millisecond)
	e.Expect(prep, voteCommit)
	q := e.awaitQuestion(tx, wait)
	if q.Participant != e.p.Participant || q.DeadlineMs != prep.Deadline.UnixMilli() {
		e.Fatalf("in-doubt question %+v: want participant %q and deadline_ms %d (the prepare's deadline)", q, e.p.Participant, prep.Deadline.UnixMilli())
	}
	e.decide(tx, messages.OutcomeCommit)
	switch {
	case !alone:
		e.Notef("a coordinator answers outcome questions too: only the question was checked, not that the answer is applied")
	default:
		e.awaitApplied(tx, wait)
	}
	e.Expect(e.Cmd(tx, messages.OpCommit, 1), ack)
	e.WantCalls(messages.OpCommit, tx, 1)
	e.WantStates(map[string]string{tx: stateCommitted})
}

// caseInDoubtAfterCommit: two transactions in doubt; the probe leaves the
// first question unanswered, as a paused coordinator would, and meanwhile
// commits the other. A question about the committed one after that is a
// fault: once its records expire, a coordinator asked about it presumes
// abort and records one against a transaction committed everywhere. The
// participant must check that a transaction is still in doubt when it
// asks, not only when it listed what to ask about.
func caseInDoubtAfterCommit(e *Env) {
	if e.p.InDoubtWait < 0 {
		e.Skipf("skipped (in-doubt wait negative)")
	}
	if othersAnswerOutcomes(e) {
		e.Skipf("a coordinator answers outcome questions too: the probe cannot leave a question unanswered")
	}
	wait := orDefault(e.p.InDoubtWait, DefaultInDoubtWait)
	a, b := e.TxID("a"), e.TxID("b")
	deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	e.hold(a, b)
	for _, tx := range []string{a, b} {
		prep := e.Cmd(tx, messages.OpPrepare, 1)
		prep.Deadline = deadline
		e.Expect(prep, voteCommit)
	}
	first := e.awaitQuestionAbout(wait, a, b)
	other := a
	if first == a {
		other = b
	}
	e.Expect(e.Cmd(other, messages.OpCommit, 1), ack)
	before := e.questionCount(other)
	// Another question about the first one: the participant went through
	// what it holds in doubt again, past the question it waited on.
	e.awaitQuestions(first, e.questionCount(first)+1, wait+e.p.wait())
	if n := e.questionCount(other) - before; n > 0 {
		e.Fatalf("asked %d in-doubt question(s) about %s after acknowledging its commit: a participant must ask only about a transaction it still holds in doubt", n, other)
	}
	e.hold()
	e.Expect(e.Cmd(first, messages.OpAbort, 1), ack)
	e.WantStates(map[string]string{other: stateCommitted, first: stateAborted})
}

// hold makes the probe leave the in-doubt questions about ids unanswered
// (none: answer every one again).
func (e *Env) hold(ids ...string) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	e.p.held = map[string]bool{}
	for _, id := range ids {
		e.p.held[id] = true
	}
}

// questionCount returns how many in-doubt questions about tx the probe
// received so far.
func (e *Env) questionCount(tx string) int {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	return len(e.p.questions[tx])
}

// awaitQuestionAbout waits for a question about any of ids and returns the
// ID it was about.
func (e *Env) awaitQuestionAbout(limit time.Duration, ids ...string) string {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		e.p.mu.Lock()
		for _, id := range ids {
			if len(e.p.questions[id]) > 0 {
				e.p.mu.Unlock()
				return id
			}
		}
		ch := e.p.changed
		e.p.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			e.Fatalf("no in-doubt question about %v on %s within %s of their commit votes (is the participant's in-doubt time longer?)", ids, messages.APIOutcome, limit)
		case <-e.ctx.Done():
			e.Fatalf("stopped: %v", e.ctx.Err())
		}
	}
}

// awaitQuestions waits until the probe received n questions about tx.
func (e *Env) awaitQuestions(tx string, n int, limit time.Duration) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		e.p.mu.Lock()
		got := len(e.p.questions[tx])
		ch := e.p.changed
		e.p.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			e.Fatalf("%d in-doubt question(s) about %s within %s, want %d: a participant asks again about what stays in doubt", got, tx, limit, n)
		case <-e.ctx.Done():
			e.Fatalf("stopped: %v", e.ctx.Err())
		}
	}
}

// othersAnswerOutcomes reports whether anyone but the probe answers
// in-doubt questions (a coordinator), asking about an ID outside the run,
// which the probe itself does not answer.
func othersAnswerOutcomes(e *Env) bool {
	ctx, cancel := context.WithTimeout(e.ctx, time.Second)
	defer cancel()
	data := []byte(`{"id":"probe` + e.p.run + `","participant":"` + e.p.Participant + `"}`)
	_, err := e.p.Conn.RequestWithContext(ctx, messages.APIOutcome, data)
	return err == nil
}

func (e *Env) awaitQuestion(tx string, limit time.Duration) messages.OutcomeRequest {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		e.p.mu.Lock()
		if qs := e.p.questions[tx]; len(qs) > 0 {
			e.p.mu.Unlock()
			return qs[0]
		}
		ch := e.p.changed
		e.p.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			e.Fatalf("no in-doubt question about %s on %s within %s of its commit vote (is the participant's in-doubt time longer?)", tx, messages.APIOutcome, limit)
		case <-e.ctx.Done():
			e.Fatalf("stopped: %v", e.ctx.Err())
		}
	}
}

// decide makes the probe answer the in-doubt questions about tx with
// outcome.
func (e *Env) decide(tx, outcome string) {
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	e.p.answers[tx] = outcome
}

// awaitApplied waits until the participant applied the commit answer: the
// handler ran it (Calls) or the audit API says committed.
func (e *Env) awaitApplied(tx string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		switch {
		case e.p.Calls != nil:
			if e.p.Calls(messages.OpCommit, tx) > 0 {
				return
			}
		default:
			st, err := e.p.Audit(e.ctx, tx)
			if errors.Is(err, ErrNoAudit) {
				e.Notef("the answer's application not checked: %v", err)
				return
			}
			if err == nil && st[tx] == stateCommitted {
				return
			}
		}
		if time.Now().After(deadline) {
			e.Fatalf("the participant did not apply the commit answer to its in-doubt question about %s within %s", tx, limit)
		}
		select {
		case <-e.ctx.Done():
			e.Fatalf("stopped: %v", e.ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
