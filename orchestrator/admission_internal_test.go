package orchestrator

import (
	"testing"
	"time"
)

// TestAdmissionLimitFallsWhenFirstVotesLagAndGrowsWhenReached: the limit
// falls by a quarter after a window in which more than one first vote in
// ten was slow, down to the floor; grows by an eighth after one in which it
// was reached and the votes came in time, up to the ceiling; and stays
// otherwise.
func TestAdmissionLimitFallsWhenFirstVotesLagAndGrowsWhenReached(t *testing.T) {
	for _, c := range []struct {
		name  string
		limit int
		w     admitWindow
		want  int
	}{
		{"slow votes", 1000, admitWindow{votes: 100, slow: 11, peak: 1000}, 750},
		{"slow votes at the floor", 70, admitWindow{votes: 100, slow: 50, peak: 70}, 64},
		{"one slow in ten is in time", 1000, admitWindow{votes: 100, slow: 10, peak: 1000}, 1126},
		{"reached, in time", 1000, admitWindow{votes: 100, slow: 0, peak: 1000}, 1126},
		{"reached, at the ceiling", 1990, admitWindow{votes: 10, peak: 1990}, 2000},
		{"not reached", 1000, admitWindow{votes: 100, peak: 999}, 1000},
		{"no votes, reached", 1000, admitWindow{peak: 1200}, 1126},
	} {
		if got := nextLimit(c.limit, 64, 2000, c.w); got != c.want {
			t.Errorf("%s: limit %d after %+v: %d, want %d", c.name, c.limit, c.w, got, c.want)
		}
	}
}

// TestAdmissionGrantsRoomOldestFirst: past the limit begins queue; room
// handed on goes to the oldest waiting; a withdrawn ticket never gets room
// and a granted one cannot be withdrawn; no more than the ceiling wait.
func TestAdmissionGrantsRoomOldestFirst(t *testing.T) {
	a := newAdmission(500*time.Millisecond, 3)
	a.limit = 2
	for i := range 2 {
		if tk, ok := a.tryEnter(); tk != nil || !ok {
			t.Fatalf("begin %d under the limit had to wait (ticket %v, ok %v)", i, tk, ok)
		}
	}
	var tickets []*admitTicket
	for i := range 3 {
		tk, ok := a.tryEnter()
		if tk == nil || !ok {
			t.Fatalf("begin %d past the limit: ticket %v, ok %v; want a ticket", i+2, tk, ok)
		}
		tickets = append(tickets, tk)
	}
	if tk, ok := a.tryEnter(); tk != nil || ok {
		t.Fatalf("a 4th waiting begin beyond a ceiling of 3: ticket %v, ok %v; want refused", tk, ok)
	}
	if !a.withdraw(tickets[1]) {
		t.Fatal("a waiting ticket could not be withdrawn")
	}
	a.leave()
	if !tickets[0].isGranted() || tickets[2].isGranted() {
		t.Fatalf("after one left: granted %v %v, want the oldest only", tickets[0].isGranted(), tickets[2].isGranted())
	}
	if a.withdraw(tickets[0]) {
		t.Fatal("a granted ticket was withdrawn: its room would be lost")
	}
	a.leave()
	if !tickets[2].isGranted() || tickets[1].isGranted() {
		t.Fatalf("after two left: granted (withdrawn %v, last %v), want the last only", tickets[1].isGranted(), tickets[2].isGranted())
	}
	if limit, starting, waiting := a.state(); limit != 2 || starting != 2 || waiting != 0 {
		t.Fatalf("state: limit %d, starting %d, waiting %d; want 2, 2, 0", limit, starting, waiting)
	}
}

// TestAdmissionAdjustsOncePerWindow: first votes later than half of
// RetryBase lower the limit when their window ends, not before; votes in
// time while begins wait raise it and hand the new room to the waiting.
func TestAdmissionAdjustsOncePerWindow(t *testing.T) {
	a := newAdmission(200*time.Millisecond, 10_000) // slow: a first vote after 100ms
	t0 := time.Unix(1_000_000, 0)
	a.firstVote(150*time.Millisecond, t0) // opens the window
	for i := range 50 {
		a.firstVote(150*time.Millisecond, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if limit, _, _ := a.state(); limit != admitInitial {
		t.Fatalf("limit %d within the first window, want %d", limit, admitInitial)
	}
	a.firstVote(150*time.Millisecond, t0.Add(admitWindowLen))
	if limit, _, _ := a.state(); limit != admitInitial-admitInitial/4 {
		t.Fatalf("limit %d after a window of slow votes, want %d", limit, admitInitial-admitInitial/4)
	}
	limit, _, _ := a.state()
	for range limit {
		if tk, _ := a.tryEnter(); tk != nil {
			t.Fatal("a begin under the limit had to wait")
		}
	}
	tk, _ := a.tryEnter()
	if tk == nil {
		t.Fatal("a begin at the limit did not wait")
	}
	at := t0.Add(2 * admitWindowLen)
	a.firstVote(time.Millisecond, at)
	a.firstVote(time.Millisecond, at.Add(admitWindowLen))
	if got, _, _ := a.state(); got != limit+limit/8+1 {
		t.Fatalf("limit %d after a window that reached it with votes in time, want %d", got, limit+limit/8+1)
	}
	if !tk.isGranted() {
		t.Fatal("the waiting begin did not get the new room")
	}
}
