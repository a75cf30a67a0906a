package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
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
// it begins b.N transactions of 3 participants, waits until each is in the
// state below, and reports the live heap after a GC, less the heap before,
// per transaction. The embedded NATS server and the participants run in the
// same process, so the figure includes what they keep;
// NATSTX_HEAP_PROFILE=prefix writes a heap profile per state
// (prefix-awaiting-acks, prefix-silent-participants), from which `go tool
// pprof -sample_index=inuse_space -focus='natstx/orchestrator[./]'` gives
// the coordinator's own share (the pattern leaves this test package out). No timeout during the measurement.
//
//   - awaiting-acks: decided to commit and waiting for the commits'
//     acknowledgements (the participants vote commit, then fail every
//     commit and ask JetStream for it again in an hour; the coordinator
//     would re-send it in an hour): the state with the most in it, the
//     decision record written, no re-send.
//   - silent-participants: the participants are not running, the
//     prepares wait in the stream. Admission lets at most 1,024
//     transactions be in their first round at once, and a round with silent
//     participants ends at its first re-send, so RetryBase is short for all
//     b.N to begin within seconds: each transaction is sent about
//     log2(b.N/1024) + 1 times, and its event history holds those sends.
func BenchmarkInFlightHeap(b *testing.B) {
	b.Run("awaiting-acks", func(b *testing.B) {
		f := newFixture(b, orchestrator.Config{PrepareTimeout: time.Hour, RetryBase: time.Hour, RetryMax: time.Hour, StatusLinger: time.Hour})
		var commits atomic.Int64
		refuse := participants.HandlerFuncs{CommitFunc: func(context.Context, participants.Tx) error {
			commits.Add(1)
			return errors.New("not now")
		}}
		for _, name := range []string{"p1", "p2", "p3"} {
			rt, err := participants.New(f.nc, participants.Config{Name: name, Handler: refuse, RetryDelay: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			if err := rt.Start(ctxT(b, 10*time.Second)); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(rt.Stop)
		}
		measureInFlightHeap(b, f.eng, parts("p1", "p2", "p3"), "awaiting-acks", func() bool { return commits.Load() >= int64(3*b.N) })
	})
	b.Run("silent-participants", func(b *testing.B) {
		f := newFixture(b, orchestrator.Config{PrepareTimeout: time.Hour, RetryBase: 100 * time.Millisecond, RetryMax: time.Hour, StatusLinger: time.Hour})
		measureInFlightHeap(b, f.eng, parts("absent-1", "absent-2", "absent-3"), "silent-participants", func() bool { return f.eng.Stats().Begun >= int64(b.N) })
	})
}

// measureInFlightHeap begins b.N transactions of req on eng, waits (at most
// a minute) until there, and reports the heap they hold per transaction.
func measureInFlightHeap(b *testing.B, eng *orchestrator.Engine, req []orchestrator.Participant, state string, there func() bool) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := eng.Begin(context.Background(), orchestrator.Request{Participants: req}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for deadline := time.Now().Add(time.Minute); !there(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d transactions not %s within a minute: %+v", b.N, state, eng.Stats())
		}
	}
	time.Sleep(500 * time.Millisecond) // the PubAcks and status writes settle
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-B/in-flight-txn")
	if prefix := os.Getenv("NATSTX_HEAP_PROFILE"); prefix != "" {
		// The heap as it is now, with every transaction in flight.
		out, err := os.Create(prefix + "-" + state)
		if err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		if err := pprof.Lookup("heap").WriteTo(out, 0); err != nil {
			b.Fatal(err)
		}
	}
	if got := eng.Stats().InFlight; got != int64(b.N) {
		b.Fatalf("%d in flight, want %d", got, b.N)
	}
}
