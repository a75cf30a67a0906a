package integration

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants/sim"
)

// TestRecordBucketsStayBounded runs 50,000 transactions with a short
// retention and checks that the decision and status buckets shrink back to
// the transactions in flight (none) once the retention has passed.
func TestRecordBucketsStayBounded(t *testing.T) {
	n := 50_000
	if testing.Short() {
		n = 5_000
	}
	const retention = 2 * time.Second
	// Abort records (of participants in doubt) last the longer of the
	// retention and the command stream's MaxAge: a short MaxAge makes that
	// bound observable here too.
	c := startCluster(t, orchestrator.Config{Retention: retention, Streams: orchestrator.StreamOptions{MaxAge: 10 * time.Second}},
		serviceSpec{"inventory", 0.9, time.Nanosecond})
	start := time.Now()
	results, _ := c.load(n, 500, 5*time.Second)
	c.quiesce(time.Minute)
	rep := sim.Check(results, c.services)
	report.Counts(t, fmt.Sprintf("%s in %v", rep, time.Since(start).Round(time.Millisecond)))
	if rep.Violations != 0 || rep.InDoubt != 0 || rep.Transactions != n {
		t.Fatalf("%s: %v", rep, rep.Problems)
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	count := func(bucket string) uint64 {
		s, err := js.Stream(context.Background(), "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	deadline := time.Now().Add(10*time.Second + 30*time.Second)
	for {
		records, statuses := count(orchestrator.RecordBucket), count(messages.StatusBucket)
		if records == 0 && statuses == 0 {
			t.Logf("after the retention: %d decision records, %d status entries", records, statuses)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("buckets still hold %d decision records and %d status entries (0 in flight)", records, statuses)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestNATSRestartMidRun stops the NATS server (file storage) in the middle of
// a run and starts it again on the same port and data directory: every
// transaction still resolves, all or nothing.
func TestNATSRestartMidRun(t *testing.T) {
	port := freePorts(t, 1)[0]
	srvCfg := embedded.Config{Port: port, DataDir: t.TempDir()}
	c := startClusterOn(t, srvCfg, orchestrator.Config{RetryBase: 100 * time.Millisecond, RetryMax: 500 * time.Millisecond},
		serviceSpec{"inventory", 0.95, 20 * time.Millisecond},
		serviceSpec{"payment", 0.9, 20 * time.Millisecond},
		serviceSpec{"shipping", 0.95, 20 * time.Millisecond},
	)
	var stopped atomic.Bool
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		for c.eng.Stats().Committed+c.eng.Stats().Aborted < 300 {
			time.Sleep(5 * time.Millisecond)
		}
		c.srv.Stop()
		stopped.Store(true)
		time.Sleep(2500 * time.Millisecond) // longer than the prepare timeout
		srv, err := embedded.Start(srvCfg)
		if err != nil {
			t.Error(err)
			return
		}
		c.srv = srv
	}()
	results, _ := c.load(1500, 100, 2*time.Second)
	<-restarted
	c.quiesce(2 * time.Minute)
	rep := sim.Check(results, c.services)
	st := c.eng.Stats()
	report.Counts(t, fmt.Sprintf("%s; server stopped mid-run: %v; timeouts %d, resends %d, publish errors %d, persist errors %d",
		rep, stopped.Load(), st.Timeouts, st.Resends, st.PublishErrors, st.PersistErrors))
	for _, p := range rep.Problems {
		t.Error("violation:", p)
	}
	if !stopped.Load() || rep.Violations != 0 || rep.InDoubt != 0 || rep.Committed == 0 {
		t.Fatalf("%s", rep)
	}
}
