package sim_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
	"github.com/natstx/natstx/participants/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 15 * time.Second

func newService(t *testing.T, cfg sim.Config) *sim.Service {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "sim"
	}
	if cfg.MinLatency == 0 && cfg.MaxLatency == 0 {
		cfg.MaxLatency = time.Nanosecond
	}
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tx(id string) participants.Tx { return participants.Tx{ID: id, Participant: "sim", Attempt: 1} }

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sim.Config
	}{
		{"no name", sim.Config{}},
		{"bad name", sim.Config{Name: "a b"}},
		{"rate below 0", sim.Config{Name: "s", SuccessRate: sim.Rate(-0.1)}},
		{"rate above 1", sim.Config{Name: "s", SuccessRate: sim.Rate(1.1)}},
		{"rate NaN", sim.Config{Name: "s", SuccessRate: sim.Rate(math.NaN())}},
		{"negative latency", sim.Config{Name: "s", MinLatency: -time.Millisecond}},
		{"max below min", sim.Config{Name: "s", MinLatency: 2 * time.Millisecond, MaxLatency: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sim.New(tc.cfg); err == nil {
				t.Fatalf("New(%+v) succeeded", tc.cfg)
			}
		})
	}
	s, err := sim.New(sim.Config{Name: "s"})
	if err != nil || s.Name() != "s" {
		t.Fatalf("defaults: %v", err)
	}
}

func TestAlwaysSucceeds(t *testing.T) {
	ctx := context.Background()
	s := newService(t, sim.Config{SuccessRate: sim.Rate(1)})
	for i := range 50 {
		id := fmt.Sprint("c", i)
		if err := s.Prepare(ctx, tx(id), []byte(id)); err != nil {
			t.Fatal(err)
		}
		if !s.Staged(id) {
			t.Fatalf("%s not staged", id)
		}
		if i%2 == 0 {
			if err := s.Commit(ctx, tx(id)); err != nil {
				t.Fatal(err)
			}
		} else if err := s.Abort(ctx, tx(id)); err != nil {
			t.Fatal(err)
		}
		if s.Staged(id) || s.Committed(id) != (i%2 == 0) {
			t.Fatalf("%s: staged %v committed %v", id, s.Staged(id), s.Committed(id))
		}
	}
	if err := s.Prepare(ctx, tx("open"), nil); err != nil {
		t.Fatal(err)
	}
	staged, committed, aborted := s.Counts()
	if staged != 1 || committed != 25 || aborted != 25 {
		t.Errorf("counts %d %d %d", staged, committed, aborted)
	}
	if p, ok := s.CommittedPayload("c4"); !ok || string(p) != "c4" {
		t.Errorf("payload %q %v", p, ok)
	}
	ids := s.CommittedIDs()
	if len(ids) != 25 || !slices.IsSorted(ids) || ids[0] != "c0" {
		t.Errorf("committed IDs %v", ids)
	}
	if s.DoubleApplies() != 0 {
		t.Error("double applies")
	}
}

func TestAlwaysFails(t *testing.T) {
	ctx := context.Background()
	s := newService(t, sim.Config{SuccessRate: sim.Rate(0)})
	for i := range 50 {
		id := fmt.Sprint("f", i)
		err := s.Prepare(ctx, tx(id), []byte("x"))
		if !errors.Is(err, sim.ErrPrepare) || err.Error() != "simulated prepare failure" {
			t.Fatalf("Prepare = %v", err)
		}
		if err := s.Commit(ctx, tx(id)); !errors.Is(err, sim.ErrCommit) {
			t.Fatalf("Commit = %v", err)
		}
		if err := s.Abort(ctx, tx(id)); !errors.Is(err, sim.ErrAbort) {
			t.Fatalf("Abort = %v", err)
		}
	}
	if staged, committed, aborted := s.Counts(); staged+committed+aborted != 0 {
		t.Errorf("counts %d %d %d, want nothing applied", staged, committed, aborted)
	}
}

func TestSeedIsDeterministic(t *testing.T) {
	run := func(seed int64) []bool {
		s := newService(t, sim.Config{SuccessRate: sim.Rate(0.5), MaxLatency: time.Microsecond, Seed: seed})
		var out []bool
		for i := range 200 {
			out = append(out, s.Prepare(context.Background(), tx(fmt.Sprint(i)), nil) == nil)
		}
		return out
	}
	a, b, c := run(42), run(42), run(43)
	if !slices.Equal(a, b) {
		t.Error("the same seed gave different outcomes")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds gave the same 200 outcomes")
	}
	if n := countTrue(a); n == 0 || n == len(a) {
		t.Errorf("rate 0.5 gave %d successes of %d", n, len(a))
	}
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func TestContextEndsLatency(t *testing.T) {
	s := newService(t, sim.Config{MinLatency: time.Hour, MaxLatency: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Prepare(ctx, tx("slow"), nil) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Prepare = %v, want the context's error", err)
		}
	case <-time.After(wait):
		t.Fatal("Prepare did not return when its context ended")
	}
	if s.Staged("slow") {
		t.Error("staged after the context ended")
	}
}

func TestDoubleApplies(t *testing.T) {
	ctx := context.Background()
	s := newService(t, sim.Config{})
	_ = s.Prepare(ctx, tx("d"), nil)
	if err := s.Commit(ctx, tx("d")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, tx("d")); err != nil {
		t.Fatalf("second Commit = %v, want success", err)
	}
	if err := s.Abort(ctx, tx("d")); err == nil {
		t.Fatal("Abort of a committed transaction succeeded")
	}
	if n := s.DoubleApplies(); n != 2 {
		t.Errorf("double applies %d, want 2", n)
	}
	if !s.Committed("d") {
		t.Error("no longer committed")
	}
}

// behindRuntime runs s behind a participant Runtime named "sim" on an
// embedded NATS server, both stopped with t, and returns a context for the
// test, the runtime, the JetStream to publish commands with, their reply
// subject and a subscription to it.
func behindRuntime(t *testing.T, s *sim.Service) (context.Context, *participants.Runtime, jetstream.JetStream, string, *nats.Subscription) {
	t.Helper()
	srv := conformance.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	t.Cleanup(cancel)
	replyTo := messages.ReplySubject("test", "sim")
	replies, err := srv.Conn.SubscribeSync(replyTo)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := participants.New(srv.Conn, participants.Config{Name: "sim", Handler: s, AckWait: 2 * time.Second,
		OpTimeout: time.Second, RetryDelay: 5 * time.Millisecond, StreamWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Stop)
	return ctx, rt, srv.JS, replyTo, replies
}

// TestBehindRuntime drives a flaky Service through a real Runtime the way a
// coordinator would: commit what voted commit, abort the rest, re-send
// nothing (the runtime retries failed commits and aborts). Every transaction
// ends applied exactly as decided, and nothing is applied twice.
func TestBehindRuntime(t *testing.T) {
	s := newService(t, sim.Config{SuccessRate: sim.Rate(0.7), MaxLatency: time.Millisecond, Seed: 7})
	ctx, rt, js, replyTo, replies := behindRuntime(t, s)

	send := func(id string, op messages.Op) {
		c := messages.Command{TxID: id, Op: op, Participant: "sim", Attempt: 1, ReplyTo: replyTo}
		msg := &nats.Msg{Subject: c.Subject(), Header: nats.Header(c.Header())}
		if op == messages.OpPrepare {
			msg.Data = []byte("payload of " + id)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}

	const n = 100
	for i := range n {
		send(fmt.Sprint("t", i), messages.OpPrepare)
	}
	decided := map[string]bool{} // txid -> commit
	acked := map[string]bool{}
	for len(acked) < n {
		m, err := replies.NextMsg(wait)
		if err != nil {
			t.Fatalf("waiting for replies (%d decided, %d acknowledged): %v", len(decided), len(acked), err)
		}
		r, err := messages.DecodeReply(map[string][]string(m.Header), m.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Op == messages.OpPrepare:
			decided[r.TxID] = r.Result == messages.VoteCommit
			if r.Result == messages.VoteCommit {
				send(r.TxID, messages.OpCommit)
			} else {
				send(r.TxID, messages.OpAbort)
			}
		case r.Result == messages.Ack:
			acked[r.TxID] = true
		case r.Result != messages.Failed: // a failed commit or abort is retried by the runtime
			t.Fatalf("unexpected reply %+v", r)
		}
	}
	var want []string
	for id, commit := range decided {
		if commit {
			want = append(want, id)
		}
		if s.Staged(id) {
			t.Errorf("%s still staged", id)
		}
		if p, ok := s.CommittedPayload(id); ok && string(p) != "payload of "+id {
			t.Errorf("%s committed payload %q", id, p)
		}
	}
	slices.Sort(want)
	if got := s.CommittedIDs(); !slices.Equal(got, want) {
		t.Errorf("committed %v, want %v", got, want)
	}
	if len(want) == 0 || len(want) == n {
		t.Errorf("%d of %d voted commit; the seed should give a mix", len(want), n)
	}
	if d := s.DoubleApplies(); d != 0 {
		t.Errorf("%d double applies", d)
	}
	if st := rt.Stats(); st.HandlerErrors == 0 {
		t.Errorf("stats %+v: a 0.7 success rate should have failed some calls", st)
	}
}

// TestSagaSteps: a Service as a SagaHandler: an action is done or refused
// by the dice (code CodeRefused), a compensation undoes a done step, and
// repeats count as double applies.
func TestSagaSteps(t *testing.T) {
	ctx := context.Background()
	ok := newService(t, sim.Config{})
	st := participants.Step{SagaID: "s1", Name: "a", Participant: "sim", Attempt: 1}
	if err := ok.Action(ctx, st, []byte("p")); err != nil {
		t.Fatal(err)
	}
	if !ok.StepDone("s1", "a") {
		t.Fatal("step not done")
	}
	if err := ok.Compensate(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	if ok.StepDone("s1", "a") || !ok.StepCompensated("s1", "a") {
		t.Fatal("step not compensated")
	}
	if err := ok.Compensate(ctx, st, nil); err == nil {
		t.Fatal("second compensation succeeded")
	}
	if err := ok.Action(ctx, st, nil); err != nil {
		t.Fatalf("action after compensation = %v, want success counted as a double apply", err)
	}
	if n := ok.DoubleApplies(); n != 2 {
		t.Errorf("double applies %d, want 2", n)
	}
	never := newService(t, sim.Config{SuccessRate: sim.Rate(0)})
	err := never.Action(ctx, st, nil)
	var r *participants.RefusedError
	if !errors.As(err, &r) || r.Code != sim.CodeRefused || !errors.Is(err, participants.ErrRefused) {
		t.Fatalf("action at rate 0 = %v, want a refusal with code %s", err, sim.CodeRefused)
	}
	if done, comp := never.SagaCounts(); done != 0 || comp != 0 {
		t.Fatalf("a refused action left %d done, %d compensated", done, comp)
	}
}

// TestSagasBehindRuntime drives a flaky Service through a real Runtime the
// way a saga coordinator would: action a, then action b; when b is refused,
// compensate a, again after each failed answer. Every saga ends completed
// or compensated, as CheckSagas verifies, and nothing is applied twice.
func TestSagasBehindRuntime(t *testing.T) {
	srv := conformance.StartNATS(t)
	nc, js := srv.Conn, srv.JS
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	replyTo := messages.ReplySubject("test", "sim")
	replies, err := nc.SubscribeSync(replyTo)
	if err != nil {
		t.Fatal(err)
	}
	s := newService(t, sim.Config{SuccessRate: sim.Rate(0.7), MaxLatency: time.Millisecond, Seed: 7})
	rt, err := participants.New(nc, participants.Config{Name: "sim", SagaHandler: s, AckWait: 2 * time.Second,
		OpTimeout: time.Second, RetryDelay: 5 * time.Millisecond, StreamWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()

	send := func(saga string, op messages.Op, step string, attempt int) {
		c := messages.Command{TxID: saga, Op: op, Participant: "sim", Attempt: attempt, ReplyTo: replyTo, Step: step}
		msg := &nats.Msg{Subject: c.Subject(), Header: nats.Header(c.Header())}
		if op == messages.OpAction {
			msg.Data = []byte(saga + "/" + step)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	const n = 60
	for i := range n {
		send(fmt.Sprint("s", i), messages.OpAction, "a", 1)
	}
	ended := map[string]bool{} // saga -> completed
	for len(ended) < n {
		m, err := replies.NextMsg(wait)
		if err != nil {
			t.Fatalf("waiting for replies (%d sagas ended): %v", len(ended), err)
		}
		r, err := messages.DecodeReply(map[string][]string(m.Header), m.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Op == messages.OpAction && r.Step == "a" && r.Result == messages.Ack:
			send(r.TxID, messages.OpAction, "b", 1)
		case r.Op == messages.OpAction && r.Step == "a" && r.Result == messages.Refused:
			ended[r.TxID] = false
		case r.Op == messages.OpAction && r.Step == "b" && r.Result == messages.Ack:
			ended[r.TxID] = true
		case r.Op == messages.OpAction && r.Step == "b" && r.Result == messages.Refused:
			send(r.TxID, messages.OpCompensate, "a", 1)
		case r.Op == messages.OpCompensate && r.Result == messages.Failed:
			if r.Attempt > 100 {
				t.Fatalf("compensation of %s failed %d times", r.TxID, r.Attempt)
			}
			send(r.TxID, messages.OpCompensate, "a", r.Attempt+1)
		case r.Op == messages.OpCompensate && r.Result == messages.Ack:
			ended[r.TxID] = false
		default:
			t.Fatalf("unexpected reply %+v", r)
		}
	}
	var results []sim.SagaResult
	completed := 0
	for id, ok := range ended {
		results = append(results, sim.SagaResult{ID: id, Steps: []sim.SagaStep{{Name: "a", Participant: "sim"}, {Name: "b", Participant: "sim"}},
			Decided: true, Completed: ok})
		if ok {
			completed++
		}
	}
	rep := sim.CheckSagas(results, map[string]*sim.Service{"sim": s})
	if rep.Violations != 0 || rep.Transactions != n || rep.Committed != completed {
		t.Fatalf("%s: %v", rep, rep.Problems)
	}
	if completed == 0 || completed == n {
		t.Errorf("%d of %d sagas completed; the seed should give a mix", completed, n)
	}
	if _, comp := s.SagaCounts(); comp == 0 {
		t.Errorf("no step compensated; the seed should refuse some b after a was done")
	}
}

// TestReadOnlyPrepareVotesReadOnlyAndStagesNothing: a ReadOnly Service's
// Prepare returns participants.ReadOnly and records the vote without
// staging; a simulated failure still votes abort (ErrPrepare), unrecorded.
func TestReadOnlyPrepareVotesReadOnlyAndStagesNothing(t *testing.T) {
	ctx := context.Background()
	s := newService(t, sim.Config{ReadOnly: true})
	if !s.ReadOnly() {
		t.Fatal("ReadOnly() false for Config.ReadOnly")
	}
	if err := s.Prepare(ctx, tx("r"), []byte("payload")); !errors.Is(err, participants.ReadOnly) {
		t.Fatalf("Prepare = %v, want participants.ReadOnly", err)
	}
	if !s.VotedReadOnly("r") {
		t.Error("the read-only vote is not recorded")
	}
	if staged, committed, aborted := s.Counts(); s.Staged("r") || staged+committed+aborted != 0 {
		t.Errorf("counts %d %d %d (staged r: %v), want nothing staged or applied", staged, committed, aborted, s.Staged("r"))
	}

	never := newService(t, sim.Config{ReadOnly: true, SuccessRate: sim.Rate(0)})
	if err := never.Prepare(ctx, tx("f"), nil); !errors.Is(err, sim.ErrPrepare) {
		t.Fatalf("Prepare at rate 0 = %v, want ErrPrepare (an abort vote)", err)
	}
	if never.VotedReadOnly("f") {
		t.Error("a failed prepare was recorded as a read-only vote")
	}

	plain := newService(t, sim.Config{})
	if err := plain.Prepare(ctx, tx("p"), nil); err != nil || plain.ReadOnly() || plain.VotedReadOnly("p") || !plain.Staged("p") {
		t.Errorf("a Service not ReadOnly: Prepare = %v, staged %v, voted read-only %v", err, plain.Staged("p"), plain.VotedReadOnly("p"))
	}
}

// TestSecondPhaseAfterReadOnlyIsCountedAndCheckReportsIt: Commit and Abort
// called for a transaction voted read-only apply nothing, are counted, and
// make Check report a violation even though the transaction committed.
func TestSecondPhaseAfterReadOnlyIsCountedAndCheckReportsIt(t *testing.T) {
	ctx := context.Background()
	s := newService(t, sim.Config{ReadOnly: true})
	_ = s.Prepare(ctx, tx("r"), nil)
	if err := s.Commit(ctx, tx("r")); err != nil {
		t.Fatalf("Commit = %v", err)
	}
	if err := s.Abort(ctx, tx("r")); err != nil {
		t.Fatalf("Abort = %v", err)
	}
	if n := s.SecondPhaseAfterReadOnly(); n != 2 {
		t.Errorf("SecondPhaseAfterReadOnly %d, want 2", n)
	}
	if s.Committed("r") || s.Staged("r") || s.DoubleApplies() != 0 {
		t.Errorf("committed %v, staged %v, double applies %d: want nothing", s.Committed("r"), s.Staged("r"), s.DoubleApplies())
	}
	rep := sim.Check([]sim.Result{{ID: "r", Participants: []string{"ro"}, Decided: true, Committed: true}}, map[string]*sim.Service{"ro": s})
	if rep.Violations != 1 || len(rep.Problems) != 1 {
		t.Fatalf("%s: %q, want one violation (the second phase)", rep, rep.Problems)
	}
}

// TestCheckAcceptsReadOnlyParticipantThatAppliedNothing: a committed
// transaction needs its read-only participant's vote, not an apply; an
// aborted one nothing of it.
func TestCheckAcceptsReadOnlyParticipantThatAppliedNothing(t *testing.T) {
	ctx := context.Background()
	w := newService(t, sim.Config{Name: "w"})
	ro := newService(t, sim.Config{Name: "ro", ReadOnly: true})
	for _, id := range []string{"c", "a"} {
		if err := w.Prepare(ctx, tx(id), []byte(id)); err != nil {
			t.Fatal(err)
		}
		if err := ro.Prepare(ctx, tx(id), []byte(id)); !errors.Is(err, participants.ReadOnly) {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ctx, tx("c")); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(ctx, tx("a")); err != nil {
		t.Fatal(err)
	}
	both := []string{"w", "ro"}
	rep := sim.Check([]sim.Result{
		{ID: "c", Participants: both, Decided: true, Committed: true},
		{ID: "a", Participants: both, Decided: true},
		{ID: "never-prepared", Participants: []string{"ro"}, Decided: true}, // aborted before its prepare
	}, map[string]*sim.Service{"w": w, "ro": ro})
	if rep.Violations != 0 || rep.Committed != 1 || rep.Aborted != 2 {
		t.Fatalf("%s: %q, want 1 committed, 2 aborted, no violation", rep, rep.Problems)
	}
}

// TestCheckReportsReadOnlyParticipantThatAppliedOrNeverVoted: a read-only
// service that applied a transaction (here a Commit of one it never
// prepared), or that is in a committed transaction it never voted
// read-only on, is a violation.
func TestCheckReportsReadOnlyParticipantThatAppliedOrNeverVoted(t *testing.T) {
	ctx := context.Background()
	ro := newService(t, sim.Config{Name: "ro", ReadOnly: true})
	if err := ro.Commit(ctx, tx("applied")); err != nil {
		t.Fatal(err)
	}
	if !ro.Committed("applied") {
		t.Fatal("the Commit of a transaction never prepared applied nothing; the test needs it applied")
	}
	svcs := map[string]*sim.Service{"ro": ro}
	for _, res := range []sim.Result{
		{ID: "applied", Participants: []string{"ro"}, Decided: true, Committed: true},
		{ID: "applied", Participants: []string{"ro"}, Decided: true},
		{ID: "unseen", Participants: []string{"ro"}, Decided: true, Committed: true},
	} {
		rep := sim.Check([]sim.Result{res}, svcs)
		if rep.Violations != 1 {
			t.Errorf("%+v: %s: %q, want one violation", res, rep, rep.Problems)
		}
	}
}

// TestReadOnlyBehindRuntimeGetsNoSecondPhaseCall: behind a real Runtime a
// ReadOnly Service's prepare is answered vote-read-only, and a commit or
// abort sent anyway is acknowledged from the runtime's record without
// calling Commit or Abort, so Check finds nothing wrong.
func TestReadOnlyBehindRuntimeGetsNoSecondPhaseCall(t *testing.T) {
	s := newService(t, sim.Config{ReadOnly: true, MaxLatency: time.Millisecond})
	ctx, _, js, replyTo, replies := behindRuntime(t, s)
	send := func(id string, op messages.Op) {
		c := messages.Command{TxID: id, Op: op, Participant: "sim", Attempt: 1, ReplyTo: replyTo}
		msg := &nats.Msg{Subject: c.Subject(), Header: nats.Header(c.Header())}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	next := func() messages.Reply {
		t.Helper()
		m, err := replies.NextMsg(wait)
		if err != nil {
			t.Fatal(err)
		}
		r, err := messages.DecodeReply(map[string][]string(m.Header), m.Data)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var results []sim.Result
	for i, op := range []messages.Op{messages.OpCommit, messages.OpAbort} {
		id := fmt.Sprint("ro", i)
		send(id, messages.OpPrepare)
		if r := next(); r.TxID != id || r.Result != messages.VoteReadOnly {
			t.Fatalf("prepare of %s answered %+v, want %s", id, r, messages.VoteReadOnly)
		}
		send(id, op)
		if r := next(); r.TxID != id || r.Op != op || r.Result != messages.Ack {
			t.Fatalf("%s of %s answered %+v, want ack", op, id, r)
		}
		results = append(results, sim.Result{ID: id, Participants: []string{"sim"}, Decided: true, Committed: op == messages.OpCommit})
	}
	if n := s.SecondPhaseAfterReadOnly(); n != 0 {
		t.Errorf("Commit or Abort called %d times after read-only votes", n)
	}
	if rep := sim.Check(results, map[string]*sim.Service{"sim": s}); rep.Violations != 0 {
		t.Errorf("%s: %q", rep, rep.Problems)
	}
}
