package orchestrator_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

// TestBeginsBeyondTheAdmissionLimitWaitForRoom: with room for two
// transactions in their first round, a third begin waits until the first
// two are decided, then runs to its commit; a fourth whose timeout ends
// while it waits is refused with ErrOverloaded and sends nothing.
func TestBeginsBeyondTheAdmissionLimitWaitForRoom(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	release := make(chan struct{})
	var prepares atomic.Int64
	h := holding(release, nil)
	hold := h.PrepareFunc
	h.PrepareFunc = func(ctx context.Context, tx participants.Tx, payload []byte) error {
		prepares.Add(1)
		return hold(ctx, tx, payload)
	}
	f.participant("slow", h)
	f.participant("fast", yes)
	orchestrator.FixAdmission(f.eng, 2)
	ctx := ctxT(t, 30*time.Second)

	var first []string
	for range 2 {
		id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("slow", "fast")})
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, id)
	}
	third := make(chan error, 1)
	var thirdID atomic.Value
	go func() {
		id, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("slow", "fast")})
		thirdID.Store(id)
		third <- err
	}()
	waitFor(t, func() bool { return f.eng.Stats().Waiting == 1 }, "the third begin to wait")

	_, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("slow", "fast"), Timeout: 200 * time.Millisecond})
	if !errors.Is(err, orchestrator.ErrOverloaded) || !strings.Contains(err.Error(), "no room to start within its timeout") {
		t.Fatalf("a begin whose timeout ended while it waited: %v, want ErrOverloaded saying it found no room", err)
	}
	select {
	case err := <-third:
		t.Fatalf("the third begin returned (%v) while the first two held the room", err)
	default:
	}

	close(release)
	if err := <-third; err != nil {
		t.Fatalf("the third begin, once the first two were decided: %v", err)
	}
	for _, id := range append(first, thirdID.Load().(string)) {
		out, err := f.eng.Wait(ctx, id)
		if err != nil || out.State != orchestrator.Committed {
			t.Fatalf("%s: %v, %v; want committed", id, out.State, err)
		}
	}
	s := f.eng.Stats()
	if got := prepares.Load(); got != 3 {
		t.Fatalf("slow got %d prepares, want 3: the refused begin sent one", got)
	}
	if s.Waited != 2 || s.Rejected != 1 || s.Begun != 3 {
		t.Fatalf("stats: waited %d, rejected %d, begun %d; want 2, 1, 3", s.Waited, s.Rejected, s.Begun)
	}
	waitFor(t, func() bool { s := f.eng.Stats(); return s.Starting == 0 && s.Waiting == 0 }, "the room to be free")
}

// TestASilentParticipantHoldsRoomOnlyUntilTheFirstResend: with room for
// one transaction in its first round, a transaction whose participant is
// not running gives its room up at its first re-send, and another begin,
// waiting for it, runs to its commit while the first still waits for its
// vote.
func TestASilentParticipantHoldsRoomOnlyUntilTheFirstResend(t *testing.T) {
	f := newFixture(t, orchestrator.Config{RetryBase: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	f.participant("up", yes)
	orchestrator.FixAdmission(f.eng, 1)
	ctx := ctxT(t, 30*time.Second)
	stuck, err := f.eng.Begin(ctx, orchestrator.Request{Participants: parts("down"), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("up")})
	if err != nil || out.State != orchestrator.Committed {
		t.Fatalf("a transaction begun behind a silent one: %v, %v; want committed", out.State, err)
	}
	if st, err := f.eng.Status(stuck); err != nil || st.State != orchestrator.Preparing {
		t.Fatalf("the silent participant's transaction: %v, %v; want still preparing", st.State, err)
	}
	if s := f.eng.Stats(); s.Waited != 1 || s.Resends == 0 {
		t.Fatalf("stats: waited %d, resends %d; want 1 begin that waited for a re-send", s.Waited, s.Resends)
	}
}
