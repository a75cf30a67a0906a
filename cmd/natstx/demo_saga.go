package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants/services"
	"github.com/natstx/natstx/participants/sim"
)

// demoSagaSteps are the steps of the demo's saga, in order, each at the
// example service of the same index in demoServices.
var demoSagaSteps = []string{"reserve", "charge", "ship"}

// demoSagaDefinition is saga i of the demo: reserve stock, charge payment,
// book shipping, each compensated by releasing it (the same payload).
func demoSagaDefinition(o demoOptions, i int) (saga.Definition, []services.SagaStep) {
	def := saga.Definition{
		Name:         "order",
		Timeout:      o.timeout,
		Retry:        saga.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxAttempts: 3},
		Compensation: saga.CompensationPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 200 * time.Millisecond},
	}
	steps := make([]services.SagaStep, 0, len(demoServices))
	for k, kind := range demoServices {
		p := services.Payload(kind, i)
		def.Steps = append(def.Steps, saga.Step{Name: demoSagaSteps[k], Participant: kind, Action: p, Compensation: p})
		steps = append(steps, services.SagaStep{Name: demoSagaSteps[k], Participant: kind})
	}
	return def, steps
}

// demoSagaReport is what runSagas learned: the sagas that ended (completed
// or compensated), how many did not, and each one's latency.
type demoSagaReport struct {
	results     []services.SagaResult
	completed   int
	compensated int
	unfinished  int
	latencies   []time.Duration
	elapsed     time.Duration
}

// runSagas runs o.count sagas, o.concurrency at a time, on eng.
func runSagas(ctx context.Context, eng *orchestrator.Engine, o demoOptions, out io.Writer) demoSagaReport {
	var (
		mu   sync.Mutex
		rep  = demoSagaReport{results: make([]services.SagaResult, 0, o.count), latencies: make([]time.Duration, 0, o.count)}
		next = make(chan int)
		wg   sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				def, steps := demoSagaDefinition(o, i)
				id := orchestrator.NewID()
				t0 := time.Now()
				// Ample time: every step may retry, and compensations go on
				// until they succeed.
				sctx, cancel := context.WithTimeout(ctx, 10*o.timeout+o.quiesceLimit)
				rec, err := eng.ExecuteSaga(sctx, orchestrator.SagaRequest{ID: id, Definition: def})
				cancel()
				took := time.Since(t0)
				ms := float64(took.Microseconds()) / 1000
				mu.Lock()
				rep.latencies = append(rep.latencies, took)
				var line string
				switch {
				case err == nil && rec.State == saga.StateCompleted:
					rep.completed++
					rep.results = append(rep.results, services.SagaResult{ID: id, Steps: steps, Completed: true})
					line = fmt.Sprintf("saga %s completed in %.1fms", id, ms)
				case err == nil && rec.State == saga.StateCompensated:
					rep.compensated++
					rep.results = append(rep.results, services.SagaResult{ID: id, Steps: steps})
					line = fmt.Sprintf("saga %s compensated in %.1fms: %s", id, ms, rec.Reason)
				default:
					rep.unfinished++
					line = fmt.Sprintf("saga %s %s after %.1fms: %v", id, rec.State, ms, err)
				}
				if !o.quiet && !o.jsonOut {
					fmt.Fprintln(out, line)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < o.count && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	rep.elapsed = time.Since(start)
	return rep
}

// checkSagaDemo checks on the services' databases that every completed saga
// has each step applied and every compensated one none, and the services'
// conservation invariants; each broken one counts as a violation. In the
// report, Committed counts completed sagas, Aborted compensated ones and
// InDoubt those that did not end.
func checkSagaDemo(ctx context.Context, sr demoSagaReport, svcs map[string]services.Service) (sim.Report, []string, error) {
	rep := sim.Report{Transactions: len(sr.results) + sr.unfinished, Committed: sr.completed, Aborted: sr.compensated, InDoubt: sr.unfinished}
	n, problems, err := services.CheckSagas(ctx, sr.results, svcs)
	if err != nil {
		return rep, nil, err
	}
	rep.Violations, rep.Problems = n, problems
	lines, err := checkInvariants(ctx, &rep, svcs)
	return rep, lines, err
}
