package orchestrator_test

import (
	"context"
	"fmt"
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
