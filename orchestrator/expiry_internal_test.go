package orchestrator

import (
	"fmt"
	"testing"
	"time"
)

// TestExpiryQueueForgetsTheOldestFirst: past the limit the oldest IDs go,
// in the order they came, across the compactions; then those whose time
// passed go, and no more.
func TestExpiryQueueForgetsTheOldestFirst(t *testing.T) {
	var q expiryQueue
	t0 := time.Unix(1_000_000, 0)
	var forgotten []string
	forget := func(id string) { forgotten = append(forgotten, id) }
	for i := range 10_000 {
		q.add(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Millisecond))
		q.expire(t0, 1_000, forget)
	}
	if len(forgotten) != 9_000 {
		t.Fatalf("%d forgotten past the limit, want 9000", len(forgotten))
	}
	for i, id := range forgotten {
		if id != fmt.Sprint(i) {
			t.Fatalf("forgotten %d: %s, want %d (oldest first)", i, id, i)
		}
	}
	if got := len(q.items) - q.head; got != 1_000 {
		t.Fatalf("%d kept, want 1000", got)
	}
	if len(q.items) > 2_000 {
		t.Fatalf("the queue holds %d slots for 1000 IDs: it is not compacted", len(q.items))
	}
	forgotten = nil
	q.expire(t0.Add(9_500*time.Millisecond), 1_000, forget)
	if len(forgotten) != 500 || forgotten[0] != "9000" || forgotten[499] != "9499" {
		t.Fatalf("expired by time: %d, from %v", len(forgotten), forgotten[:min(1, len(forgotten))])
	}
	if id := q.items[q.head].id; id != "9500" {
		t.Fatalf("oldest kept: %s, want 9500", id)
	}
}

// BenchmarkExpiryQueueAtTheLimit: one add and expire on a queue full at a
// shard's share of the default MaxRemembered (200,000 over 8 shards), as
// each finished transaction does once a coordinator has run that many.
func BenchmarkExpiryQueueAtTheLimit(b *testing.B) {
	const limit = 25_000
	var q expiryQueue
	at := time.Now().Add(time.Hour)
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	for i := range limit {
		q.add(ids[i%len(ids)], at)
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.add(ids[i%len(ids)], at)
		q.expire(now, limit, func(string) {})
	}
}
