package services_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/services"
)

// proc returns a Processor over svc's barrier, with faults (nil for none).
func proc(t *testing.T, svc services.Service, faults *services.Faults) *participants.Processor {
	t.Helper()
	b, err := services.NewBarrier(context.Background(), svc, faults)
	if err != nil {
		t.Fatal(err)
	}
	p, err := participants.NewProcessor(participants.Config{Name: svc.Kind(), Barrier: b})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run sends one saga command through p and returns its reply.
func run(t *testing.T, p *participants.Processor, saga string, op messages.Op, step string, attempt int, payload []byte) messages.Reply {
	t.Helper()
	c := messages.Command{TxID: saga, Op: op, Participant: p.Name(), Attempt: attempt, ReplyTo: messages.ReplySubject("t", p.Name()), Step: step, Payload: payload}
	var rep messages.Reply
	p.Handle(c.Header(), c.Payload, c.Subject(), func(a participants.Answer) { rep = a.Reply })
	return rep
}

// refusedPayload is an order no seeded database can serve.
func refusedPayload(kind string) ([]byte, string) {
	switch kind {
	case "inventory":
		return []byte(`{"item": "widget", "qty": 1000000000}`), services.CodeOutOfStock
	case "payment":
		return []byte(`{"account": "alice", "amount": 1000000000}`), services.CodeInsufficientFunds
	}
	return []byte(`{"slot": "nowhere"}`), services.CodeNoCapacity
}

// TestSagaSteps: for each service, sagas done, compensated (also twice),
// refused with the service's code, compensated first, and with a bad
// payload; the invariants hold after every command and CheckSagas agrees
// with how each saga ended.
func TestSagaSteps(t *testing.T) {
	ctx := context.Background()
	for _, kind := range services.Kinds {
		t.Run(kind, func(t *testing.T) {
			svc, err := services.Open(ctx, kind, filepath.Join(t.TempDir(), kind+".db"))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.DB().Close()
			p := proc(t, svc, nil)
			check := func(what string) {
				t.Helper()
				if line, err := svc.Check(ctx); err != nil {
					t.Fatalf("after %s: %v (%s)", what, err, line)
				}
			}
			var results []services.SagaResult
			for i := range 20 {
				saga := fmt.Sprintf("saga-%02d", i)
				steps := []services.SagaStep{{Name: "a", Participant: kind}, {Name: "b", Participant: kind}}
				for _, st := range steps {
					if r := run(t, p, saga, messages.OpAction, st.Name, 1, svc.Payload(i)); r.Result != messages.Ack {
						t.Fatalf("%s/%s action: %+v", saga, st.Name, r)
					}
					check(saga + " action")
				}
				completed := i%2 == 0
				if !completed {
					for _, st := range steps {
						for attempt := 1; attempt <= 2; attempt++ {
							if r := run(t, p, saga, messages.OpCompensate, st.Name, attempt, nil); r.Result != messages.Ack {
								t.Fatalf("%s/%s compensate: %+v", saga, st.Name, r)
							}
							check(saga + " compensation")
						}
					}
				}
				results = append(results, services.SagaResult{ID: saga, Steps: steps, Completed: completed})
			}
			payload, code := refusedPayload(kind)
			if r := run(t, p, "refused", messages.OpAction, "a", 1, payload); r.Result != messages.Refused || r.Code != code {
				t.Fatalf("refused action: %+v, want refused with code %s", r, code)
			}
			if r := run(t, p, "refused", messages.OpCompensate, "a", 1, nil); r.Result != messages.Ack {
				t.Fatalf("compensation of a refused action: %+v", r)
			}
			if r := run(t, p, "bad", messages.OpAction, "a", 1, []byte(`{"sku": 1}`)); r.Result != messages.Refused || r.Code != services.CodeBadPayload {
				t.Fatalf("bad payload: %+v", r)
			}
			if r := run(t, p, "first", messages.OpCompensate, "a", 1, nil); r.Result != messages.Ack {
				t.Fatalf("null compensation: %+v", r)
			}
			if r := run(t, p, "first", messages.OpAction, "a", 1, svc.Payload(1)); r.Result != messages.Refused {
				t.Fatalf("action after its compensation: %+v", r)
			}
			check("refusals")
			results = append(results,
				services.SagaResult{ID: "refused", Steps: []services.SagaStep{{Name: "a", Participant: kind}}},
				services.SagaResult{ID: "first", Steps: []services.SagaStep{{Name: "a", Participant: kind}}})
			n, problems, err := services.CheckSagas(ctx, results, map[string]services.Service{kind: svc})
			if err != nil || n != 0 {
				t.Fatalf("CheckSagas: %d violations %v (%v)", n, problems, err)
			}
			// CheckSagas sees a lie: a completed saga said compensated.
			results[0].Completed = false
			if n, _, _ := services.CheckSagas(ctx, results, map[string]services.Service{kind: svc}); n != 2 {
				t.Fatalf("CheckSagas found %d violations in a wrong result, want 2", n)
			}
		})
	}
}

// TestSagaStepsWithFaults: with simulated failures and refusals, every
// saga retried until it answers, then compensated when refused, keeps the
// invariants.
func TestSagaStepsWithFaults(t *testing.T) {
	ctx := context.Background()
	for _, kind := range services.Kinds {
		t.Run(kind, func(t *testing.T) {
			svc, err := services.Open(ctx, kind, filepath.Join(t.TempDir(), kind+".db"))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.DB().Close()
			p := proc(t, svc, &services.Faults{SuccessRate: 0.7, RefuseRate: 0.2, Seed: 7})
			var results []services.SagaResult
			refusals := 0
			for i := range 30 {
				saga := fmt.Sprintf("f-%02d", i)
				completed := true
				var r messages.Reply
				for attempt := 1; attempt <= 50; attempt++ { // bounded: a failure is retried
					if r = run(t, p, saga, messages.OpAction, "a", attempt, svc.Payload(i)); r.Result != messages.Failed {
						break
					}
				}
				if r.Result == messages.Refused {
					refusals++
					if r.Code != services.CodeSimulated {
						t.Fatalf("%s: refused %+v, want code %s", saga, r, services.CodeSimulated)
					}
					completed = false
					for attempt := 1; attempt <= 50; attempt++ {
						if r = run(t, p, saga, messages.OpCompensate, "a", attempt, nil); r.Result == messages.Ack {
							break
						}
					}
				}
				if r.Result != messages.Ack {
					t.Fatalf("%s: still %+v after 50 attempts", saga, r)
				}
				results = append(results, services.SagaResult{ID: saga, Steps: []services.SagaStep{{Name: "a", Participant: kind}}, Completed: completed})
			}
			if refusals == 0 {
				t.Fatal("no simulated refusal in 30 sagas at RefuseRate 0.2 with this seed")
			}
			if line, err := svc.Check(ctx); err != nil {
				t.Fatalf("%v (%s)", err, line)
			}
			if n, problems, err := services.CheckSagas(ctx, results, map[string]services.Service{kind: svc}); err != nil || n != 0 {
				t.Fatalf("CheckSagas: %d violations %v (%v)", n, problems, err)
			}
		})
	}
}
