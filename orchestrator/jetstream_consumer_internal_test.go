package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/natstx/natstx/messages"
)

// consumerFixture is a command stream on an embedded server and a jsCommands
// publishing into it, whose consumer creations are counted.
type consumerFixture struct {
	t     *testing.T
	js    jetstream.JetStream
	cmds  *jsCommands
	logs  *observer.ObservedLogs
	stop  chan struct{}
	ctx   context.Context
	calls atomic.Int64
	// fail, while set, fails each creation attempt with it.
	mu   sync.Mutex
	fail error
	// onCreate, if set, runs at the start of each attempt.
	onCreate func(participant string)
}

func newConsumerFixture(t *testing.T) *consumerFixture {
	t.Helper()
	js := startJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := EnsureStreams(ctx, js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	f := &consumerFixture{t: t, js: js, stop: make(chan struct{}), ctx: ctx}
	t.Cleanup(func() { close(f.stop) })
	core, logs := observer.New(zap.WarnLevel)
	f.logs = logs
	f.cmds = newJSCommands(js, f.stop, &Stats{}, func(cmds []messages.Command, err error) {
		t.Errorf("%d commands lost: %v", len(cmds), err)
	})
	f.cmds.log = zap.New(core)
	real := f.cmds.createConsumer
	f.cmds.createConsumer = func(ctx context.Context, participant string) error {
		f.calls.Add(1)
		if f.onCreate != nil {
			f.onCreate(participant)
		}
		f.mu.Lock()
		fail := f.fail
		f.mu.Unlock()
		if fail != nil {
			return fail
		}
		return real(ctx, participant)
	}
	return f
}

func (f *consumerFixture) publish(participant, txid string) {
	f.t.Helper()
	cmd := messages.Command{TxID: txid, Op: messages.OpPrepare, Participant: participant, Attempt: 1,
		ReplyTo: messages.ReplySubject("c1", participant), Sender: "c1.s1", Deadline: time.Now().Add(time.Hour)}
	if err := f.cmds.Publish(cmd); err != nil {
		f.t.Fatal(err)
	}
}

// stored is the number of commands in the stream for participant, those in
// batches included.
func (f *consumerFixture) stored(participant string) uint64 {
	f.t.Helper()
	s, err := f.js.Stream(f.ctx, messages.CommandStream)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	var n uint64
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(f.ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			f.t.Fatal(err)
		}
		h := map[string][]string(m.Header)
		switch {
		case messages.IsBatch(h):
			if p, _ := messages.BatchParticipant(m.Subject); p != participant {
				continue
			}
			items, err := messages.DecodeBatch(h, m.Data)
			if err != nil {
				f.t.Fatal(err)
			}
			n += uint64(len(items))
		case strings.HasPrefix(m.Subject, messages.CommandPrefix+"."+participant+"."):
			n++
		}
	}
	return n
}

// waitStored waits (bounded) until participant has want messages stored.
func (f *consumerFixture) waitStored(participant string, want uint64) {
	f.t.Helper()
	for range 1000 {
		if f.stored(participant) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("%s: %d commands stored, want %d", participant, f.stored(participant), want)
}

// TestCoordinatorCreatesParticipantConsumerBeforeFirstCommand: the first
// publish to a participant creates its consumer, with the protocol's
// settings, before any command to it is stored; it is created once per
// participant, however many commands follow.
func TestCoordinatorCreatesParticipantConsumerBeforeFirstCommand(t *testing.T) {
	f := newConsumerFixture(t)
	var mu sync.Mutex
	storedAtCreate := map[string]uint64{}
	f.onCreate = func(p string) {
		n := f.stored(p)
		mu.Lock()
		defer mu.Unlock()
		storedAtCreate[p] = n
	}
	for i := range 40 {
		f.publish("inventory", fmt.Sprintf("tx%d", i))
	}
	f.publish("payment", "tx1")
	f.waitStored("inventory", 40)
	f.waitStored("payment", 1)
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d consumer creations for 2 participants, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"inventory", "payment"} {
		if n, ok := storedAtCreate[p]; !ok || n != 0 {
			t.Errorf("%s: %d commands stored before its consumer was created (attempted: %v)", p, n, ok)
		}
		cons, err := f.js.Consumer(f.ctx, messages.CommandStream, messages.ConsumerName(p))
		if err != nil {
			t.Fatalf("%s's consumer: %v", p, err)
		}
		have, want := cons.CachedInfo().Config, ParticipantConsumerConfig(p)
		if have.FilterSubject != want.FilterSubject || have.AckPolicy != want.AckPolicy || have.AckWait != want.AckWait ||
			have.MaxAckPending != want.MaxAckPending || have.DeliverPolicy != want.DeliverPolicy || have.DeliverSubject != "" {
			t.Errorf("%s's consumer: %+v, want %+v", p, have, want)
		}
	}
	f.publish("inventory", "later")
	f.waitStored("inventory", 41)
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d consumer creations after a later command, want 2", n)
	}
}

// TestCoordinatorKeepsAParticipantsOwnConsumer: a consumer already there,
// with the participant's own settings, counts as created and is left as
// it is.
func TestCoordinatorKeepsAParticipantsOwnConsumer(t *testing.T) {
	f := newConsumerFixture(t)
	own := ParticipantConsumerConfig("inventory")
	own.AckWait, own.MaxAckPending = 7*time.Second, 3
	if _, err := f.js.CreateConsumer(f.ctx, messages.CommandStream, own); err != nil {
		t.Fatal(err)
	}
	f.publish("inventory", "tx1")
	f.waitStored("inventory", 1)
	f.publish("inventory", "tx2")
	f.waitStored("inventory", 2)
	cons, err := f.js.Consumer(f.ctx, messages.CommandStream, messages.ConsumerName("inventory"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cons.CachedInfo().Config; c.AckWait != own.AckWait || c.MaxAckPending != own.MaxAckPending {
		t.Errorf("the participant's consumer was changed: %+v", c)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d creation attempts, want 1 (an existing consumer is success)", n)
	}
	if n := f.logs.Len(); n != 0 {
		t.Errorf("%d warnings: %v", n, f.logs.All())
	}
}

// TestCoordinatorConsumerFailureNeverHoldsCommands: a failed creation is
// logged and the commands held for it go out anyway; later commands go out
// at once; a publish after the retry time tries again, and a success ends
// the attempts.
func TestCoordinatorConsumerFailureNeverHoldsCommands(t *testing.T) {
	f := newConsumerFixture(t)
	f.fail = errors.New("refused by the test")
	f.publish("inventory", "tx1")
	f.publish("inventory", "tx2")
	f.waitStored("inventory", 2)
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d creation attempts, want 1", n)
	}
	if got := f.logs.FilterMessageSnippet("creating the consumer of a participant failed").Len(); got != 1 {
		t.Errorf("%d warnings about the failure, want 1: %v", got, f.logs.All())
	}
	// Before the retry time: no new attempt.
	f.publish("inventory", "tx3")
	f.waitStored("inventory", 3)
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d creation attempts before the retry time, want 1", n)
	}
	// After it (moved here to now): the next publish tries again, in the
	// background, and the command is not held for it.
	pc := f.cmds.consumerOf("inventory")
	f.cmds.mu.Lock()
	pc.retryAt = time.Time{}
	f.cmds.mu.Unlock()
	f.mu.Lock()
	f.fail = nil
	f.mu.Unlock()
	f.publish("inventory", "tx4")
	f.waitStored("inventory", 4)
	for i := 0; !pc.ready.Load(); i++ {
		if i == 1000 {
			t.Fatal("the consumer never became ready after the retry")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d creation attempts, want 2", n)
	}
	if _, err := f.js.Consumer(f.ctx, messages.CommandStream, messages.ConsumerName("inventory")); err != nil {
		t.Errorf("the consumer after the retry: %v", err)
	}
	f.publish("inventory", "tx5")
	f.waitStored("inventory", 5)
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d creation attempts after success, want 2", n)
	}
}

// TestHeldCommandsWhosePublishEndsAtOnceAreReleasedOnce: a held command
// whose publish ends before the release's next turn (here it fails at once:
// the connection closed while the consumer was created) ends its
// participant's queue; the release stops there, and the command is reported
// lost once, not sent twice or dereferenced after its queue is gone.
func TestHeldCommandsWhosePublishEndsAtOnceAreReleasedOnce(t *testing.T) {
	js := startJetStream(t)
	stop := make(chan struct{})
	defer close(stop)
	var lost atomic.Int64
	cmds := newJSCommands(js, stop, &Stats{}, func(cmds []messages.Command, err error) {
		lost.Add(int64(len(cmds)))
	})
	done := make(chan struct{})
	cmds.createConsumer = func(ctx context.Context, participant string) error {
		defer close(done)
		js.Conn().Close()
		return nil
	}
	cmd := messages.Command{TxID: "tx1", Op: messages.OpPrepare, Participant: "inventory", Attempt: 1,
		ReplyTo: messages.ReplySubject("c1", "inventory"), Sender: "c1.s1", Deadline: time.Now().Add(time.Hour)}
	if err := cmds.Publish(cmd); err != nil {
		t.Fatal(err)
	}
	<-done
	for i := 0; ; i++ {
		cmds.mu.Lock()
		_, left := cmds.queues["inventory"]
		cmds.mu.Unlock()
		if !left && lost.Load() == 1 {
			break
		}
		if i == 1000 {
			t.Fatalf("after 10 s: queue left %v, %d commands reported lost, want none left and 1", left, lost.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestACommandSentAgainWhileWaitingTakesTheWaitingOnesPlace: while a
// participant's publish awaits its PubAck, a command sent again (a retry
// of the same request, a higher attempt) replaces the one still waiting,
// in its place: one goes out, the newer.
func TestACommandSentAgainWhileWaitingTakesTheWaitingOnesPlace(t *testing.T) {
	q := &commandQueue{}
	cmd := func(tx string, op messages.Op, attempt int) messages.Command {
		return messages.Command{TxID: tx, Op: op, Participant: "inventory", Attempt: attempt}
	}
	for _, c := range []messages.Command{cmd("tx1", messages.OpPrepare, 1), cmd("tx2", messages.OpPrepare, 1), cmd("tx1", messages.OpAbort, 1)} {
		if q.wait(c) {
			t.Fatalf("%+v replaced a command: none was the same request", c)
		}
	}
	if !q.wait(cmd("tx1", messages.OpPrepare, 2)) {
		t.Fatal("a retry of tx1's prepare did not replace the waiting one")
	}
	first := q.pop(1)
	if len(first) != 1 || first[0].TxID != "tx1" || first[0].Op != messages.OpPrepare || first[0].Attempt != 2 {
		t.Fatalf("first out: %+v, want tx1's prepare, attempt 2, in the first place", first)
	}
	// Once out, a retry queues again.
	if q.wait(cmd("tx1", messages.OpPrepare, 3)) {
		t.Fatal("a retry of a command already taken replaced a waiting one")
	}
	rest := q.take()
	var got []string
	for _, c := range rest {
		got = append(got, fmt.Sprintf("%s/%s/%d", c.TxID, c.Op, c.Attempt))
	}
	if want := "tx2/prepare/1 tx1/abort/1 tx1/prepare/3"; strings.Join(got, " ") != want {
		t.Fatalf("then: %s, want %s", strings.Join(got, " "), want)
	}
	if len(q.queued) != 0 || len(q.waiting) != 0 {
		t.Fatalf("left: %d located, %d waiting", len(q.queued), len(q.waiting))
	}
}
