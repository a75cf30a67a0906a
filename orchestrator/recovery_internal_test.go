package orchestrator

import (
	"context"
	"sync"
	"testing"
	"time"
)

// countingStore counts the Entries reads of a Store: from the start, or
// since a revision.
type countingStore struct {
	Store
	mu         sync.Mutex
	all, since int
}

func (c *countingStore) Entries(ctx context.Context, after uint64, keep func(StoreEntry) bool) ([]StoreEntry, uint64, error) {
	c.mu.Lock()
	if after == 0 {
		c.all++
	} else {
		c.since++
	}
	c.mu.Unlock()
	return c.Store.Entries(ctx, after, keep)
}

func (c *countingStore) counts() (all, since int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all, c.since
}

// TestALateLookReadsOnlyTheRecordsWrittenSinceTheLastScan: a look at the
// leases a lease or more after the last (this instance was slow, say from
// a long scan) reads the records written since the last scan, where
// anything an instance it could have missed wrote must be; an instance seen
// at the last look and gone now makes it read them all. Before, a late look
// read them all: under load a scan of a million records outlasted half a
// lease, so every look came late and read them all again. On a real
// embedded server.
func TestALateLookReadsOnlyTheRecordsWrittenSinceTheLastScan(t *testing.T) {
	js := startJetStream(t)
	cfg := Config{Instance: "c1", NoStatus: true}
	cfg.setDefaults()
	e := newEngine(cfg)
	e.js, e.drv = js, wallClock{wg: &e.wg}
	defer func() {
		close(e.stop)
		e.cancelBase()
		e.wg.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.openStores(ctx); err != nil {
		t.Fatal(err)
	}
	records := &countingStore{Store: e.stores.Records}
	e.records = &recordStore{kv: records, instance: e.cfg.Instance, now: e.now, retention: e.cfg.Retention, abortTTL: e.cfg.abortRetention()}
	e.leases = &leases{kv: e.stores.Leases}
	// A finished transaction's record, so that a scan has read up to a
	// revision.
	if _, err := e.stores.Records.Put(ctx, "t1", []byte(`{"id":"t1","state":"committed","owner":"c2"}`), 0); err != nil {
		t.Fatal(err)
	}

	e.recoverTick(true)
	if all, _ := records.counts(); all != 1 {
		t.Fatalf("the first look read all the records %d times, want 1", all)
	}
	e.lastLook = e.now().Add(-2 * e.cfg.LeaseTTL)
	e.recoverTick(false)
	if all, since := records.counts(); all != 1 || since != 1 {
		t.Fatalf("a late look: %d reads of all the records (want none since the first), %d of those written since (want 1)", all-1, since)
	}
	e.lastAlive = map[string]bool{"c9": true} // seen last time, gone now
	e.recoverTick(false)
	if all, _ := records.counts(); all != 2 {
		t.Fatalf("an instance gone since the last look: %d reads of all the records, want 1", all-1)
	}
}
