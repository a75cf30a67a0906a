package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
)

// TestSagasOnTheExampleServices runs sagas of three steps (reserve stock,
// charge payment, book shipping) on the example services with SQLite and
// the barrier, which fail some operations for now and refuse some actions
// for good; every saga must end completed (each step applied) or
// compensated (each step released or never done), and every service's
// conservation invariants must hold.
func TestSagasOnTheExampleServices(t *testing.T) {
	_, nc := startNATS(t, embedded.Config{})
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	eng := startEngine(t, ctx, nc, orchestrator.Config{Logger: log.Named("coordinator")})

	kinds := []string{"inventory", "payment", "shipping"}
	svcs := map[string]services.Service{}
	for i, kind := range kinds {
		svc, err := services.Open(ctx, kind, filepath.Join(t.TempDir(), kind+".db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.DB().Close() })
		b, err := services.NewBarrier(ctx, svc, &services.Faults{SuccessRate: 0.85, RefuseRate: 0.1, MaxLatency: 5 * time.Millisecond, Seed: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		rt, err := participants.New(nc, participants.Config{Name: kind, Barrier: b, Logger: log.Named(kind)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rt.Stop)
		svcs[kind] = svc
	}

	const n, conc = 150, 16
	var (
		mu      sync.Mutex
		results []services.SagaResult
		wg      sync.WaitGroup
		next    = make(chan int)
		states  = map[saga.State]int{}
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				def := saga.Definition{Name: "order", Timeout: 2 * time.Second,
					Retry:        saga.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxAttempts: 3},
					Compensation: saga.CompensationPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 200 * time.Millisecond}}
				res := services.SagaResult{ID: fmt.Sprintf("order-%04d", i)}
				for _, kind := range kinds {
					p := services.Payload(kind, i)
					def.Steps = append(def.Steps, saga.Step{Name: kind, Participant: kind, Action: p, Compensation: p})
					res.Steps = append(res.Steps, services.SagaStep{Name: kind, Participant: kind})
				}
				rec, err := eng.ExecuteSaga(ctx, orchestrator.SagaRequest{ID: res.ID, Definition: def})
				if err != nil {
					t.Errorf("saga %s: %v (state %s)", res.ID, err, rec.State)
					continue
				}
				res.Completed = rec.State == saga.StateCompleted
				mu.Lock()
				results = append(results, res)
				states[rec.State]++
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()

	violations, problems, err := services.CheckSagas(ctx, results, svcs)
	if err != nil {
		t.Fatal(err)
	}
	broken, err := services.CheckAll(ctx, svcs)
	if err != nil {
		t.Fatal(err)
	}
	report.Counts(t, fmt.Sprintf("sagas: %d sagas, %d completed, %d compensated, %d violations; stats %+v", len(results), states[saga.StateCompleted], states[saga.StateCompensated], violations, eng.Stats()))
	for _, line := range broken {
		t.Log(line)
	}
	if violations != 0 || len(results) != n || states[saga.StateCompleted]+states[saga.StateCompensated] != n {
		t.Fatalf("%d violations: %v; states %v", violations, problems, states)
	}
	if states[saga.StateCompleted] == 0 || states[saga.StateCompensated] == 0 {
		t.Fatalf("want both completed and compensated sagas: %v", states)
	}
}
