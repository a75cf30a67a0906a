package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/orchestrator/embedded"
)

// startJetStream starts an embedded NATS server for an internal test of
// this package (which cannot use conformance.StartNATS: it imports this
// package) and returns a JetStream context on a connection to it; both
// end with t. An asynchronous error on the connection (such as a slow
// consumer's dropped messages) fails the test.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return connectJetStream(t, srv.URL())
}

// connectJetStream connects to the server at url for the rest of the
// test, failing it on an asynchronous error on the connection.
func connectJetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		subject := ""
		if sub != nil {
			subject = sub.Subject
		}
		t.Errorf("NATS reported %v (subscription %q)", err, subject)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// recordsStore opens the record bucket on a new embedded server and
// returns a context that ends with the test, a jsStore over the bucket and
// stopStore, which ends the store as the engine's stop does (also done at
// cleanup; it may be called twice).
func recordsStore(t *testing.T) (ctx context.Context, s *jsStore, stopStore func()) {
	t.Helper()
	js := startJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	kv, err := openRecords(ctx, js, StreamOptions{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var once sync.Once
	stopStore = func() { once.Do(func() { close(stop) }) }
	t.Cleanup(stopStore)
	return ctx, newJSStore(js, kv, stop), stopStore
}

// putKeys puts keys k000, k001, ... up to n, each with value "v".
func putKeys(ctx context.Context, t *testing.T, s *jsStore, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.Put(ctx, fmt.Sprintf("k%03d", i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestJetStreamStoreEntriesSinceARevision: Entries(ctx, after) of the
// JetStream store gives each key's latest live value written after the
// revision, on a real embedded server: what the recovery scans in the
// window after a death read.
func TestJetStreamStoreEntriesSinceARevision(t *testing.T) {
	ctx, s, _ := recordsStore(t)
	must := func(_ uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Put(ctx, "a", []byte("a1"), 0))     // 1
	must(s.Put(ctx, "b", []byte("b1"), 0))     // 2
	must(s.Put(ctx, "a", []byte("a2"), 0))     // 3
	if err := s.Delete(ctx, "b"); err != nil { // 4
		t.Fatal(err)
	}
	must(s.Create(ctx, "c", []byte("c1"), 0)) // 5
	must(s.Put(ctx, "d", []byte("d1"), 0))    // 6
	must(s.Put(ctx, "d", []byte("d2"), 0))    // 7
	list := func(after uint64, keep func(StoreEntry) bool) string {
		t.Helper()
		es, highest, err := s.Entries(ctx, after, keep)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s=%s@%d", e.Key, e.Value, e.Revision))
		}
		return strings.Join(out, " ") + fmt.Sprintf(" (read to %d)", highest)
	}
	for _, c := range []struct {
		after uint64
		want  string
	}{
		{0, "a=a2@3 c=c1@5 d=d2@7 (read to 7)"},
		{1, "a=a2@3 c=c1@5 d=d2@7 (read to 7)"},
		{3, "c=c1@5 d=d2@7 (read to 7)"},
		{5, "d=d2@7 (read to 7)"},
		{6, "d=d2@7 (read to 7)"},
		{7, " (read to 7)"},
		{100, " (read to 100)"},
	} {
		if got := list(c.after, nil); got != c.want {
			t.Errorf("Entries after %d = %q, want %q", c.after, got, c.want)
		}
	}
	// keep decides what is held; the revision read is the highest of all.
	second := func(e StoreEntry) bool { return strings.HasSuffix(string(e.Value), "2") }
	if got, want := list(0, second), "a=a2@3 d=d2@7 (read to 7)"; got != want {
		t.Errorf("Entries kept = %q, want %q", got, want)
	}
	if got, want := list(4, second), "d=d2@7 (read to 7)"; got != want {
		t.Errorf("Entries after 4 kept = %q, want %q", got, want)
	}
	// A key whose TTL ran out is gone: the server's marker (revision 9)
	// stands for it.
	must(s.Put(ctx, "e", []byte("e1"), time.Second)) // 8
	for i := 0; ; i++ {
		if _, err := s.Get(ctx, "e"); err == ErrNoEntry {
			break
		}
		if i == 100 {
			t.Fatal("the key with a TTL of a second was still there after 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := list(0, nil), "a=a2@3 c=c1@5 d=d2@7 (read to 9)"; got != want {
		t.Errorf("Entries after a TTL ran out = %q, want %q", got, want)
	}
}

// TestJetStreamStoreListingGoesOnWhereItRanOutOfTime: a listing cut short
// by its context returns what it read and the highest revision, and keeps
// its consumer; the next listing from that revision reads on from the same
// consumer (no new one set up), and together they give every entry once. A
// listing from elsewhere closes the held one and sets up its own, and the
// store's stop closes what is held.
func TestJetStreamStoreListingGoesOnWhereItRanOutOfTime(t *testing.T) {
	ctx, s, stopStore := recordsStore(t)
	const n = 500
	putKeys(ctx, t, s, n)
	// cut lists from the first entry and runs out of time after at entries.
	cut := func(at int) ([]StoreEntry, uint64, error) {
		lctx, lcancel := context.WithCancel(ctx)
		defer lcancel()
		count := 0
		return s.Entries(lctx, 0, func(StoreEntry) bool {
			if count++; count == at {
				lcancel()
			}
			return true
		})
	}
	seen := map[string]int{}
	es, after, err := cut(100)
	if err == nil || after == 0 || len(es) >= n {
		t.Fatalf("the cut listing: %d entries, read to %d, error %v; want part of them and the context's error", len(es), after, err)
	}
	for _, e := range es {
		seen[e.Key]++
	}
	held := s.held
	if held == nil || held.next != after {
		t.Fatalf("no listing held at revision %d after it ran out of time", after)
	}
	es, last, err := s.Entries(ctx, after, nil)
	if err != nil {
		t.Fatal(err)
	}
	if held.it == nil || s.held != nil {
		t.Fatal("the listing read to its end is still held")
	}
	select {
	case <-held.done:
	default:
		t.Fatal("the listing read to its end was not closed")
	}
	for _, e := range es {
		seen[e.Key]++
	}
	if len(seen) != n || last != n {
		t.Fatalf("the two listings gave %d keys, read to %d; want all %d", len(seen), last, n)
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s listed %d times", k, c)
		}
	}
	// Cut again, then a listing from elsewhere: the held one is closed.
	_, after, _ = cut(10)
	held = s.held
	if held == nil {
		t.Fatal("no listing held")
	}
	if _, _, err := s.Entries(ctx, after+5, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.done:
	default:
		t.Fatal("a listing from another revision did not close the held one")
	}
	// Cut once more, then the store stops: what is held is closed.
	_, _, _ = cut(10)
	held = s.held
	stopStore()
	select {
	case <-held.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the held listing was not closed when the store stopped")
	}
}

// TestJetStreamStoreGivesUpAHeldListingThatFellSilent: a held listing
// whose consumer delivers nothing more (paused here; in a cluster, its
// node died with it, which deletes nothing) is given up after
// maxScanStalls listings in a row ran out of time on it, and the next
// listing reads every entry through a new consumer.
func TestJetStreamStoreGivesUpAHeldListingThatFellSilent(t *testing.T) {
	ctx, s, _ := recordsStore(t)
	const n = 50
	putKeys(ctx, t, s, n)
	lctx, lcancel := context.WithCancel(ctx)
	count := 0
	_, after, err := s.Entries(lctx, 0, func(StoreEntry) bool {
		if count++; count == 1 {
			lcancel()
		}
		return true
	})
	lcancel()
	silent := s.held
	if err == nil || silent == nil {
		t.Fatalf("the cut listing: error %v, held %v; want the context's error and a held listing", err, silent)
	}
	if _, err := s.js.PauseConsumer(ctx, silent.stream, silent.consumer, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Drop what the consumer delivered before the pause: from here it
	// delivers nothing.
	silent.it.Stop()
	it, err := mustConsumer(ctx, t, s, silent).Messages(jetstream.PullMaxMessages(scanBatch))
	if err != nil {
		t.Fatal(err)
	}
	silent.it = it
	look := func() ([]StoreEntry, error) {
		sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer scancel()
		es, _, err := s.Entries(sctx, after, nil)
		return es, err
	}
	for i := 1; i < maxScanStalls; i++ {
		if _, err := look(); err == nil || s.held != silent {
			t.Fatalf("look %d through the silent consumer: error %v, held %v; want it to run out of time and the listing held", i, err, s.held)
		}
	}
	if _, err := look(); err == nil || !strings.Contains(err.Error(), "delivered nothing") || s.held != nil {
		t.Fatalf("look %d through the silent consumer: error %v, held %v; want it given up", maxScanStalls, err, s.held)
	}
	es, err := look()
	if err != nil {
		t.Fatalf("the listing after the silent one was given up: %v", err)
	}
	select {
	case <-silent.done:
	default:
		t.Fatal("the silent listing was not closed")
	}
	if len(es) != int(n-after) {
		t.Fatalf("the listing after the silent one gave %d entries from revision %d, want %d", len(es), after, n-int(after))
	}
}

// mustConsumer returns the held listing's consumer.
func mustConsumer(ctx context.Context, t *testing.T, s *jsStore, h *heldScan) jetstream.Consumer {
	t.Helper()
	c, err := s.js.Consumer(ctx, h.stream, h.consumer)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestJetStreamStoreHeldListingBuffersOneBatch: while a listing that ran
// out of time is held and nobody reads on, its consumer has delivered at
// most scanBatch entries beyond those read, however many the bucket holds
// (a push watch delivers them all into the process's memory), and none is
// dropped as a slow consumer's (startJetStream fails the test on that). It
// is cut just after the consumer asked for more, when what it asked for
// fills its buffer.
func TestJetStreamStoreHeldListingBuffersOneBatch(t *testing.T) {
	ctx, s, _ := recordsStore(t)
	const n = 20 * scanBatch
	// In rounds of a thousand: more asynchronous publishes at once than the
	// client allows pending (4,000 by default) stall, and one then fails.
	for i := range n {
		s.PutAsync(fmt.Sprintf("k%05d", i), []byte("v"), func(err error) { t.Error(err) })
		if (i+1)%1000 != 0 && i+1 != n {
			continue
		}
		select {
		case <-s.js.PublishAsyncComplete():
		case <-ctx.Done():
			t.Fatal("the writes were not acknowledged")
		}
	}
	lctx, lcancel := context.WithCancel(ctx)
	count := 0
	es, _, _ := s.Entries(lctx, 0, func(StoreEntry) bool {
		if count++; count == scanBatch/2+2 {
			lcancel()
		}
		return true
	})
	lcancel()
	held := s.held
	if held == nil || len(es) >= n {
		t.Fatalf("the cut listing read %d of %d entries and holds %v", len(es), n, held)
	}
	cons, err := s.js.Consumer(ctx, held.stream, held.consumer)
	if err != nil {
		t.Fatal(err)
	}
	var delivered uint64
	for range 20 { // a second for the consumer to deliver what it will
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		delivered = info.Delivered.Consumer
		if delivered-held.received > scanBatch {
			t.Fatalf("the held listing read %d entries and has %d delivered: more than a batch (%d) buffered", held.received, delivered, scanBatch)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the held listing read %d entries; its consumer delivered %d", held.received, delivered)
	if delivered <= held.received {
		t.Fatalf("the held listing read %d entries and has %d delivered: it asked for nothing ahead", held.received, delivered)
	}
	es2, last, err := s.Entries(ctx, held.next, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(es) + len(es2); got != n || last != n {
		t.Fatalf("the two listings gave %d entries, read to %d; want %d", got, last, n)
	}
}

// TestJetStreamStoreListingKeepsAConsumerStillBeingCreated: a listing whose
// time runs out while its consumer is still being created (on a stream of
// millions that takes longer than a listing's slice) holds the creation,
// and the next listing from the same revision reads through that consumer
// instead of starting another creation that would run out of time too.
func TestJetStreamStoreListingKeepsAConsumerStillBeingCreated(t *testing.T) {
	ctx, s, _ := recordsStore(t)
	const n = 50
	for i := range n {
		if _, err := s.Put(ctx, fmt.Sprintf("k%02d", i), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	lctx, lcancel := context.WithTimeout(ctx, time.Nanosecond)
	defer lcancel()
	<-lctx.Done()
	if es, _, err := s.Entries(lctx, 0, nil); err == nil || len(es) != 0 {
		t.Fatalf("a listing with no time: %d entries, error %v; want none and the context's error", len(es), err)
	}
	held := s.held
	if held == nil || held.next != 0 {
		t.Fatal("the consumer being created was not held for the next listing")
	}
	es, last, err := s.Entries(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != n || last != n {
		t.Fatalf("the next listing gave %d entries, read to %d; want %d", len(es), last, n)
	}
	select {
	case <-held.done:
	default:
		t.Fatal("the next listing did not read through the held consumer (it is still open)")
	}
	info, err := s.js.Stream(ctx, held.stream)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().State.Consumers; c != 0 {
		t.Fatalf("%d consumers left on %s after the listings ended; want 0", c, held.stream)
	}
}
