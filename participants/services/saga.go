package services

import (
	"context"
	"fmt"

	"github.com/natstx/natstx/participants"
)

// The codes of the example services' saga refusals (participants.Refuse),
// sent in the reply's Natstx-Code header.
const (
	// CodeOutOfStock: the inventory has too few units of the item, or no
	// such item.
	CodeOutOfStock = "out-of-stock"
	// CodeInsufficientFunds: the account's balance is too low, or no such
	// account.
	CodeInsufficientFunds = "insufficient-funds"
	// CodeNoCapacity: the shipping slot is full, or no such slot.
	CodeNoCapacity = "no-capacity"
	// CodeBadPayload: the action's payload is not of the service's shape.
	CodeBadPayload = "bad-payload"
)

// StepKey is the key under which a service's tables keep a saga step's
// effect (the txid column): the saga ID and the step name joined by ':',
// which no transaction ID contains, so saga steps and two-phase commit
// transactions never share a row.
func StepKey(sagaID, step string) string { return sagaID + ":" + step }

// StepState reads what svc's tables say about step of saga sagaID:
// TxApplied once its action is done, TxReleased once compensated, TxNone if
// never done (refused, failed, or compensated first).
func StepState(ctx context.Context, svc Service, sagaID, step string) (TxState, error) {
	return svc.TxState(ctx, StepKey(sagaID, step))
}

// SagaStep is one step of a saga, for CheckSagas.
type SagaStep struct {
	Name        string
	Participant string
}

// SagaResult is how the coordinator says a saga ended, for CheckSagas.
type SagaResult struct {
	ID    string
	Steps []SagaStep
	// Completed: every step done; else the saga was compensated.
	Completed bool
}

// CheckSagas checks, after quiescence, that every completed saga has each
// step applied by its service and every compensated one none (each step
// released or never done). It returns the number of violations and what
// each was (at most 50).
func CheckSagas(ctx context.Context, results []SagaResult, svcs map[string]Service) (int, []string, error) {
	violations := 0
	var problems []string
	for _, r := range results {
		for _, st := range r.Steps {
			svc := svcs[st.Participant]
			if svc == nil {
				return 0, nil, fmt.Errorf("services: no service %q to check", st.Participant)
			}
			s, err := StepState(ctx, svc, r.ID, st.Name)
			if err != nil {
				return 0, nil, err
			}
			if r.Completed && s != TxApplied || !r.Completed && s != TxNone && s != TxReleased {
				violations++
				if len(problems) < 50 {
					problems = append(problems, fmt.Sprintf("saga %s completed=%v but %s has step %s %s", r.ID, r.Completed, st.Participant, st.Name, s))
				}
			}
		}
	}
	return violations, problems, nil
}

var (
	_ participants.SQLSagaHandler = (*Inventory)(nil)
	_ participants.SQLSagaHandler = (*Payment)(nil)
	_ participants.SQLSagaHandler = (*Shipping)(nil)
)
