package dst

import (
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
)

// scriptTarget answers deliveries from a script, and logs them.
type scriptTarget struct {
	e      *env
	answer func(n int) (participants.Settle, bool)
	at     []time.Duration
}

func (t *scriptTarget) deliver(m *streamMsg) (participants.Settle, bool) {
	t.at = append(t.at, t.e.s.now)
	return t.answer(len(t.at))
}

func testCommand(attempt int) messages.Command {
	return messages.Command{TxID: "tx1", Op: messages.OpCommit, Participant: "p1", Attempt: attempt, ReplyTo: messages.ReplySubject("c1", "p1")}
}

func TestStreamRedeliversUntilAcknowledged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(n int) (participants.Settle, bool)
		want   int // deliveries
		gap    time.Duration
	}{
		{"ack", func(int) (participants.Settle, bool) { return participants.SettleAck, true }, 1, 0},
		{"term", func(int) (participants.Settle, bool) { return participants.SettleTerm, true }, 1, 0},
		{"nak twice", func(n int) (participants.Settle, bool) {
			if n < 3 {
				return participants.SettleNak, true
			}
			return participants.SettleAck, true
		}, 3, nakDelay},
		{"down twice", func(n int) (participants.Settle, bool) { return participants.SettleAck, n >= 3 }, 3, ackWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(1, Faults{}, nil)
			st := newStream(e, 0)
			tg := &scriptTarget{e: e, answer: tc.answer}
			st.consume("p1", tg)
			pub := st.publisher(e.s.newGate("c1"), "c1")
			if err := pub.Publish(testCommand(1)); err != nil {
				t.Fatal(err)
			}
			drain(t, e)
			if len(tg.at) != tc.want || st.unacked != 0 {
				t.Fatalf("%d deliveries (want %d), %d unacked", len(tg.at), tc.want, st.unacked)
			}
			if tc.want > 1 {
				if gap := tg.at[1] - tg.at[0]; gap < tc.gap || gap > tc.gap+10*time.Millisecond {
					t.Fatalf("redelivered after %v, want %v", gap, tc.gap)
				}
			}
		})
	}
}

func TestStreamAckLostIsRedelivered(t *testing.T) {
	e := newEnv(1, Faults{AckLost: 1}, nil)
	st := newStream(e, 0)
	tg := &scriptTarget{e: e, answer: func(int) (participants.Settle, bool) { return participants.SettleAck, true }}
	st.consume("p1", tg)
	_ = st.publisher(e.s.newGate("c1"), "c1").Publish(testCommand(1))
	e.s.at(5*time.Second, func() { e.healed = true })
	drain(t, e)
	if len(tg.at) < 5 || st.unacked != 0 {
		t.Fatalf("%d deliveries, %d unacked", len(tg.at), st.unacked)
	}
}

// TestStreamDropsDuplicateMsgIDs: a command published again with the same
// Nats-Msg-Id within the Duplicates window is not stored; after it, it is.
func TestStreamDropsDuplicateMsgIDs(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	st := newStream(e, 0)
	tg := &scriptTarget{e: e, answer: func(int) (participants.Settle, bool) { return participants.SettleAck, true }}
	st.consume("p1", tg)
	pub := st.publisher(e.s.newGate("c1"), "c1")
	for _, at := range []time.Duration{0, time.Second, time.Minute} {
		e.s.at(at, func() { _ = pub.Publish(testCommand(1)) })
	}
	e.s.at(90*time.Second, func() { _ = pub.Publish(testCommand(2)) })
	e.s.at(duplicateWindow+time.Second, func() { _ = pub.Publish(testCommand(1)) })
	drain(t, e)
	if len(tg.at) != 3 || e.n.DuplicateMsgIDs != 2 {
		t.Fatalf("%d deliveries, %d duplicates dropped; want 3 and 2", len(tg.at), e.n.DuplicateMsgIDs)
	}
}

func TestStreamDropsCommandsOlderThanMaxAge(t *testing.T) {
	e := newEnv(1, Faults{}, nil)
	st := newStream(e, 10*time.Second)
	tg := &scriptTarget{e: e, answer: func(int) (participants.Settle, bool) { return participants.SettleAck, false }}
	st.consume("p1", tg)
	_ = st.publisher(e.s.newGate("c1"), "c1").Publish(testCommand(1))
	drain(t, e)
	if len(tg.at) < 9 || len(tg.at) > 10 || st.unacked != 0 || e.n.ExpiredCommands != 1 {
		t.Fatalf("%d deliveries, %d unacked, %d expired", len(tg.at), st.unacked, e.n.ExpiredCommands)
	}
}

func TestPlainNATSDropsAndDuplicates(t *testing.T) {
	e := newEnv(1, Faults{Drop: 0.3, Duplicate: 0.3}, nil)
	got := 0
	for range 1000 {
		e.send("m", func() { got++ })
	}
	drain(t, e)
	if e.n.Dropped == 0 || e.n.Duplicated == 0 || got != 1000-e.n.Dropped+e.n.Duplicated {
		t.Fatalf("delivered %d, dropped %d, duplicated %d", got, e.n.Dropped, e.n.Duplicated)
	}
}
