package orchestrator_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator"
)

// BenchmarkExecute measures whole transactions end to end over an embedded
// NATS server: prepare, votes, the durable commit decision, commit and acks,
// with participants that answer at once. Many transactions run in parallel,
// as in production; the figure to read is txn/s.
func BenchmarkExecute(b *testing.B) {
	for _, n := range []int{1, 3, 5} {
		b.Run(fmt.Sprintf("participants=%d", n), func(b *testing.B) {
			f := newFixture(b, orchestrator.Config{})
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("p%d", i)
				f.participant(names[i], yes)
			}
			req := parts(names...)
			b.SetParallelism(64) // 64 x GOMAXPROCS clients
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: req})
					cancel()
					if err != nil || out.State != orchestrator.Committed {
						b.Errorf("%s %v: %s", out.State, err, out.Reason)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "txn/s")
		})
	}
}

// BenchmarkInFlightHeap measures the heap that in-flight transactions hold:
// it begins b.N transactions of 3 participants that are not running (their
// prepares wait in the stream, the transactions wait for votes), and reports
// the live heap after a GC, less the heap before, per transaction. The
// embedded NATS server runs in the same process, so the figure includes what
// it keeps per stored command; `go test -memprofile` with `go tool pprof
// -sample_index=inuse_space` splits the two.
func BenchmarkInFlightHeap(b *testing.B) {
	// No re-send and no timeout during the measurement: the stream holds
	// three prepares per transaction, the status bucket one status.
	f := newFixture(b, orchestrator.Config{PrepareTimeout: time.Hour, RetryBase: time.Hour, RetryMax: time.Hour, StatusLinger: time.Hour})
	req := parts("absent-1", "absent-2", "absent-3")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.eng.Begin(context.Background(), orchestrator.Request{Participants: req}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for f.eng.Stats().Begun < int64(b.N) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the PubAcks and status writes settle
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-B/in-flight-txn")
	if path := os.Getenv("NATSTX_HEAP_PROFILE"); path != "" {
		// The heap as it is now, with every transaction in flight: go tool
		// pprof -sample_index=inuse_space splits the engine's share from the
		// server's.
		out, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		if err := pprof.Lookup("heap").WriteTo(out, 0); err != nil {
			b.Fatal(err)
		}
	}
	if got := f.eng.Stats().InFlight; got != int64(b.N) {
		b.Fatalf("%d in flight, want %d", got, b.N)
	}
}
