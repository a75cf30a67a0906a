package main

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants/sim"
)

// benchSaga is the saga bench runs for req: one step per participant, in
// order, named after it, the payload as its action and its compensation;
// timeout is each attempt's timeout. Retries back off briefly: a bench
// measures the protocol, not the waits.
func benchSaga(req orchestrator.Request, timeout time.Duration) saga.Definition {
	def := saga.Definition{
		Name:         "bench",
		Timeout:      timeout,
		Retry:        saga.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
		Compensation: saga.CompensationPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
	}
	for _, p := range req.Participants {
		def.Steps = append(def.Steps, saga.Step{Name: p.Name, Participant: p.Name, Action: p.Payload, Compensation: p.Payload})
	}
	return def
}

// engineSagaExec runs sagas on bench's own engine: decided when the saga
// ended, committed when it completed.
func engineSagaExec(eng *orchestrator.Engine, timeout time.Duration) execFunc {
	return func(ctx context.Context, req orchestrator.Request) (string, bool, bool, bool) {
		rec, err := eng.ExecuteSaga(ctx, orchestrator.SagaRequest{ID: req.ID, Definition: benchSaga(req, timeout)})
		return rec.ID, err == nil && rec.State.Final(), rec.State == saga.StateCompleted, false
	}
}

// clientSagaExec runs sagas through the coordinator API; no coordinator at
// all cuts the run short.
func clientSagaExec(nc *nats.Conn, cl *orchestrator.Client, timeout time.Duration, cut context.CancelCauseFunc) execFunc {
	return func(ctx context.Context, req orchestrator.Request) (string, bool, bool, bool) {
		def, err := json.Marshal(sagaFileOf(benchSaga(req, timeout)))
		if err != nil {
			return "", false, false, false
		}
		st, err := cl.BeginSaga(ctx, messages.SagaBeginRequest{ID: req.ID, Definition: string(def), Wait: true})
		switch {
		case errors.Is(err, orchestrator.ErrNoCoordinator):
			cut(errBenchNoCoordinator)
		case err != nil && !nc.IsConnected():
			cut(errBenchLostNATS)
		}
		if err != nil {
			return "", false, false, false
		}
		s := saga.State(st.State)
		return st.ID, s.Final(), s == saga.StateCompleted, false
	}
}

// sagaFileOf writes def in the saga file format (JSON), for the API: the
// steps with their payloads as JSON strings, the timeout and intervals as
// duration strings.
func sagaFileOf(def saga.Definition) map[string]any {
	steps := make([]map[string]any, len(def.Steps))
	for i, st := range def.Steps {
		steps[i] = map[string]any{"name": st.Name, "participant": st.Participant, "action": string(st.Action), "compensation": string(st.Compensation)}
	}
	return map[string]any{
		"name": def.Name, "timeout": def.Timeout.String(),
		"retry":        map[string]any{"initial_interval": def.Retry.InitialInterval.String(), "max_interval": def.Retry.MaxInterval.String()},
		"compensation": map[string]any{"initial_interval": def.Compensation.InitialInterval.String(), "max_interval": def.Compensation.MaxInterval.String()},
		"steps":        steps,
	}
}

// sagaResults turns bench's results into sim.CheckSagas' input: one step
// per participant, named after it.
func sagaResults(results []sim.Result) []sim.SagaResult {
	out := make([]sim.SagaResult, len(results))
	for i, r := range results {
		out[i] = sim.SagaResult{ID: r.ID, Decided: r.Decided, Completed: r.Committed}
		for _, p := range r.Participants {
			out[i].Steps = append(out[i].Steps, sim.SagaStep{Name: p, Participant: p})
		}
	}
	return out
}
