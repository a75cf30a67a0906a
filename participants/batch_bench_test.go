//go:build unix

package participants

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
)

// benchStarter is the Runtime's way of starting a command
// (Runtime.runCommand): its workers, at most concurrency of them.
func benchStarter(b *testing.B, concurrency int) func(func()) bool {
	w := newWorkers(concurrency)
	stopping := make(chan struct{})
	b.Cleanup(func() {
		close(stopping)
		w.close()
	})
	return func(f func()) bool { return w.run(f, stopping) }
}

// BenchmarkHandleBatch measures batches of commands through
// Processor.HandleBatch with the Runtime's way of starting each command,
// with the in-memory record and a handler that does nothing: one op is a
// batch of prepares and then a batch of commits of the same transactions.
// Each parallel goroutine keeps its own transactions and sweeps the
// finished records after each round of them. Besides the time per op it
// reports cpu-ns/op, the CPU time the process spent (user and system, all
// goroutines and the GC) per op, which a busy machine disturbs less.
func BenchmarkHandleBatch(b *testing.B) {
	for _, size := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("items=%d", size), func(b *testing.B) {
			benchmarkHandleBatch(b, size)
		})
	}
}

func benchmarkHandleBatch(b *testing.B, size int) {
	const rounds = 64 // batch pairs per goroutine before its records are swept
	p, err := NewProcessor(Config{Name: "svc", Handler: HandlerFuncs{}})
	if err != nil {
		b.Fatal(err)
	}
	start := benchStarter(b, DefaultConcurrency)
	type pair struct {
		prepH, commH map[string][]string
		prepB, commB []byte
		subject      string
	}
	// The batches of each goroutine of RunParallel (GOMAXPROCS of them).
	sets := make([][]pair, runtime.GOMAXPROCS(0))
	for g := range sets {
		sets[g] = make([]pair, rounds)
		for r := range sets[g] {
			var prep, comm []messages.Command
			for i := range size {
				c := messages.Command{TxID: fmt.Sprintf("g%d-r%d-i%d", g, r, i), Op: messages.OpPrepare, Participant: "svc",
					Attempt: 1, ReplyTo: messages.ReplySubject("bench", "svc"), Deadline: time.Now().Add(time.Hour), Payload: []byte(`{"amount":1}`)}
				prep = append(prep, c)
				c.Op, c.Payload = messages.OpCommit, nil
				comm = append(comm, c)
			}
			id := fmt.Sprintf("b%d-%d", g, r)
			pr := &sets[g][r]
			pr.subject = messages.BatchSubject("svc", id)
			if pr.prepH, pr.prepB, err = messages.EncodeCommandBatch("svc", id+"p", prep); err != nil {
				b.Fatal(err)
			}
			if pr.commH, pr.commB, err = messages.EncodeCommandBatch("svc", id+"c", comm); err != nil {
				b.Fatal(err)
			}
		}
	}
	var next atomic.Int32
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		pairs := sets[next.Add(1)-1]
		r := 0
		for pb.Next() {
			pr := &pairs[r]
			if ba := p.HandleBatch(pr.prepH, pr.prepB, pr.subject, start); ba.Settle != SettleAck || len(ba.Replies) != 1 {
				panic(fmt.Sprintf("prepare batch: %+v", ba))
			}
			if ba := p.HandleBatch(pr.commH, pr.commB, pr.subject, start); ba.Settle != SettleAck || len(ba.Replies) != 1 {
				panic(fmt.Sprintf("commit batch: %+v", ba))
			}
			if r++; r == rounds {
				r = 0
				p.Sweep(time.Now().Add(2 * DefaultRetention))
			}
		}
	})
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
