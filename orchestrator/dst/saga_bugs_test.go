package dst

import (
	"strings"
	"testing"
	"time"

	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
)

// TestSagaPlantedBugIsCaught: a participant that runs a saga compensation
// itself, without its barrier, and answers it done (plantBlindCompensation)
// must make the saga checks report violations within a few seeds: a late
// action done after its compensation, a compensated saga with an action
// left standing, a barrier and a business row that disagree. The same seeds
// without it report none of them.
func TestSagaPlantedBugIsCaught(t *testing.T) {
	seeds, sagas := 12, 40
	if raceDetector {
		seeds, sagas = 3, 25
	}
	faults := Faults{Drop: 0.1, Delay: 0.1, SlowStore: 0.1, CrashParticipant: 0.01, StoreError: 0.02, PauseParticipant: 0.01,
		SagaRefuse: 0.1, SagaFail: 0.2, SagaBroken: 0.05}
	want := []string{"after its compensation was answered", "was never compensated", "the barrier says", "without a done, uncompensated action"}
	wantCaught(t, seeds, plantBlindCompensation, want, func(i int, p plant) Config {
		f := faults
		return Config{Seed: uint64(i + 1), Transactions: sagas, Sagas: sagas, Coordinators: 2, Faults: &f, HealLimit: time.Minute, plant: p}
	})
}

// TestSagaCheckCatchesBadStates runs the end-of-run saga check on
// hand-built states, one per guarantee broken, and on good ones: each bad
// state must be reported with its kind, each good one not at all.
func TestSagaCheckCatchesBadStates(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	def := saga.Definition{Steps: []saga.Step{{Name: "a", Participant: "p1"}, {Name: "b", Participant: "p2"}}}
	pivotDef := saga.Definition{Steps: []saga.Step{{Name: "a", Participant: "p1", Pivot: true}, {Name: "b", Participant: "p2"}}}
	done := stepDB{state: participants.StepDone, action: true, actionAt: ms(10)}
	comp := func(actionAt, compAt int) stepDB {
		return stepDB{state: participants.StepCompensated, action: true, actionAt: ms(actionAt), comp: true, compAt: ms(compAt)}
	}
	none := stepDB{state: participants.StepNone}
	refused := stepDB{state: participants.StepRefused}
	settled := func(at, compSent int) stepHist {
		return stepHist{everOut: true, settled: true, settledAt: ms(at), compSent: compSent > 0, compSentAt: ms(compSent)}
	}
	record := func(state saga.State, steps ...saga.StepRecord) *saga.Record {
		return &saga.Record{ID: "sg1", State: state, Steps: steps}
	}
	step := func(name string, st saga.StepStatus, mayHaveRun bool) saga.StepRecord {
		return saga.StepRecord{Name: name, Status: st, Attempts: 1, MayHaveRun: mayHaveRun}
	}
	stuck := func(sr saga.StepRecord) saga.StepRecord { sr.Stuck = true; return sr }
	for _, tc := range []struct {
		name string
		v    sagaEnd
		out  sagaOutcome
		want string // "" for a good state
	}{
		{"completed", sagaEnd{def: def, rec: record(saga.StateCompleted, step("a", saga.StepDone, true), step("b", saga.StepDone, true)),
			hist: []stepHist{settled(20, 0), settled(30, 0)}, db: []stepDB{done, done}}, sagaCompleted, ""},
		{"compensated", sagaEnd{def: def, rec: record(saga.StateCompensated, step("a", saga.StepCompensated, true), step("b", saga.StepFailed, false)),
			hist: []stepHist{settled(20, 40), settled(30, 0)}, db: []stepDB{comp(10, 50), refused}}, sagaCompensated, ""},
		{"stuck", sagaEnd{def: def, rec: record(saga.StateCompensationStuck, stuck(step("a", saga.StepCompensationRetrying, true)), step("b", saga.StepFailed, false)),
			hist: []stepHist{settled(20, 40), settled(30, 0)}, db: []stepDB{done, refused}}, sagaStuck, ""},
		{"never started", sagaEnd{def: def, db: []stepDB{none, none}}, sagaNotStarted, ""},

		{"compensation before its action was answered", sagaEnd{def: def, rec: record(saga.StateCompensated, step("a", saga.StepCompensated, true), step("b", saga.StepFailed, false)),
			hist: []stepHist{settled(60, 40), settled(30, 0)}, db: []stepDB{comp(10, 50), refused}}, sagaCompensated, "before the coordinator had its action answered or timed out"},
		{"compensation while the action is out", sagaEnd{def: def, rec: record(saga.StateCompensationStuck, stuck(step("a", saga.StepRunning, true)), step("b", saga.StepFailed, false)),
			hist: []stepHist{{everOut: true, out: true, compSent: true}, settled(30, 0)}, db: []stepDB{comp(10, 50), refused}}, sagaStuck, "still has its action out"},
		{"compensation before it was recorded", sagaEnd{def: def, rec: record(saga.StateCompensated, step("a", saga.StepCompensated, true), step("b", saga.StepFailed, false)),
			hist: []stepHist{settled(20, 60), settled(30, 0)}, db: []stepDB{comp(10, 50), refused}}, sagaCompensated, "before any record said it was compensating"},
		{"completed with a step not done", sagaEnd{def: def, rec: record(saga.StateCompleted, step("a", saga.StepDone, true), step("b", saga.StepDone, true)),
			hist: []stepHist{settled(20, 0), settled(30, 0)}, db: []stepDB{done, none}}, sagaCompleted, "completed, but step b"},
		{"compensated with an action standing", sagaEnd{def: def, rec: record(saga.StateCompensated, step("a", saga.StepCompensated, true), step("b", saga.StepFailed, true)),
			hist: []stepHist{settled(20, 40), settled(30, 0)}, db: []stepDB{comp(10, 50), done}}, sagaCompensated, "was never compensated"},
		{"compensated past the pivot", sagaEnd{def: pivotDef, rec: &saga.Record{ID: "sg1", State: saga.StateCompensated, PastPivot: true,
			Steps: []saga.StepRecord{step("a", saga.StepCompensated, true), step("b", saga.StepPending, false)}},
			hist: []stepHist{settled(20, 40), {}}, db: []stepDB{comp(10, 50), none}}, sagaCompensated, "passed its pivot"},
		{"left in between", sagaEnd{def: def, rec: record(saga.StateCompensating, step("a", saga.StepCompensationRetrying, true), step("b", saga.StepFailed, false)),
			hist: []stepHist{settled(20, 40), settled(30, 0)}, db: []stepDB{done, refused}}, sagaInBetween, "neither completed, compensated nor stuck"},
		{"stuck without a stuck step", sagaEnd{def: def, rec: record(saga.StateCompensationStuck, step("a", saga.StepCompensationRetrying, true), step("b", saga.StepFailed, false)),
			hist: []stepHist{settled(20, 40), settled(30, 0)}, db: []stepDB{done, refused}}, sagaStuck, "no stuck step"},
		{"barrier and business row disagree", sagaEnd{def: def, rec: record(saga.StateCompleted, step("a", saga.StepDone, true), step("b", saga.StepDone, true)),
			hist: []stepHist{settled(20, 0), settled(30, 0)}, db: []stepDB{done, {state: participants.StepDone, action: true, comp: true}}}, sagaCompleted, "the barrier says done"},
		{"an effect without a record", sagaEnd{def: def, db: []stepDB{done, none}}, sagaNotStarted, "never had a durable record"},
	} {
		out, bad := checkSagaEnd(tc.v)
		if out != tc.out {
			t.Errorf("%s: outcome %d, want %d", tc.name, out, tc.out)
		}
		switch {
		case tc.want == "" && len(bad) > 0:
			t.Errorf("%s: a good state reported: %q", tc.name, bad)
		case tc.want != "" && !strings.Contains(strings.Join(bad, "\n"), tc.want):
			t.Errorf("%s: want a violation with %q, got %q", tc.name, tc.want, bad)
		}
	}
}
