package orchestrator

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/orchestrator/txn"
)

// historyHead is how many of a transaction's first events its history
// keeps once it is full; the rest of messages.MaxHistory are the latest.
const historyHead = 16

// history is a transaction's bounded event history (messages.TxStatus
// History): its first historyHead events and its latest ones,
// messages.MaxHistory in all; dropped counts those left out between them.
type history struct {
	events  []messages.TxEvent
	dropped int
}

// add appends ev, dropping the oldest event after the head when full.
func (h *history) add(ev messages.TxEvent) {
	if len(h.events) < messages.MaxHistory {
		h.events = append(h.events, ev)
		return
	}
	copy(h.events[historyHead:], h.events[historyHead+1:])
	h.events[len(h.events)-1] = ev
	h.dropped++
}

// into sets st's history to a copy of h's (the status document is encoded
// off the event loop, while the loop goes on adding).
func (h *history) into(st *messages.TxStatus) {
	st.History, st.HistoryDropped = append([]messages.TxEvent(nil), h.events...), h.dropped
}

// addToStatus appends ev to the history a status document carries.
func addToStatus(st *messages.TxStatus, ev messages.TxEvent) {
	h := history{events: st.History, dropped: st.HistoryDropped}
	h.add(ev)
	st.History, st.HistoryDropped = h.events, h.dropped
}

// event returns a history event of kind at now (to the microsecond: the
// history is written with every status, so it is kept short).
func (e *Engine) event(kind string) messages.TxEvent {
	return messages.TxEvent{At: e.now().UTC().Truncate(time.Microsecond), Event: kind}
}

// noteBegun records that a transaction began here.
func (e *Engine) noteBegun(h *history, participants []string) {
	// Room for a run without trouble: begun, the prepares sent, decided,
	// the decision sent and ended, and a vote and an ack per participant.
	h.events = make([]messages.TxEvent, 0, min(5+2*len(participants), messages.MaxHistory))
	ev := e.event(messages.EventBegun)
	ev.By, ev.Detail = e.cfg.Instance, "participants: "+strings.Join(participants, ", ")
	h.add(ev)
}

// noteTaken records that this instance took a transaction over, after
// the history its status had before (prior, if known): what it took over,
// and from whom.
func (e *Engine) noteTaken(h *history, prior *messages.TxStatus, what string) {
	ev := e.event(messages.EventRecovered)
	ev.By, ev.Detail = e.cfg.Instance, what+" taken over"
	if prior != nil {
		h.events, h.dropped = append([]messages.TxEvent(nil), prior.History...), prior.HistoryDropped
		switch prior.Owner {
		case "":
		case e.cfg.Instance:
			ev.Detail += " from this instance's previous run or lapsed lease"
		default:
			ev.Detail += " from " + prior.Owner + ", whose lease lapsed"
		}
	}
	h.add(ev)
}

// noteSends records the commands of one step of a two-phase transaction:
// the first sends of an operation as one event naming its participants
// (one participant: its name in Participant), each re-send as its own.
func (e *Engine) noteSends(h *history, sends []txn.Send) {
	var first []string
	var op messages.Op
	flush := func() {
		switch len(first) {
		case 0:
			return
		case 1:
			e.noteSend(h, first[0], "", op, 1)
		default:
			ev := e.event(messages.EventSent)
			ev.Attempt, ev.Detail = 1, string(op)+" to "+strings.Join(first, ", ")
			h.add(ev)
		}
		first = first[:0]
	}
	for _, snd := range sends {
		if snd.Attempt > 1 {
			e.noteSend(h, snd.Participant, "", snd.Op, snd.Attempt)
			continue
		}
		if snd.Op != op {
			flush()
			op = snd.Op
		}
		first = append(first, snd.Participant)
	}
	flush()
}

// noteSend records a command sent (or sent again).
func (e *Engine) noteSend(h *history, participant, step string, op messages.Op, attempt int) {
	kind := messages.EventSent
	if attempt > 1 {
		kind = messages.EventResent
	}
	ev := e.event(kind)
	ev.Participant, ev.Step, ev.Attempt, ev.Detail = participant, step, attempt, string(op)
	h.add(ev)
}

// noteTxEvent records what a two-phase event the state machine accepted
// tells: a vote, an ack, a failure, a rejected reply, an abort asked for.
// who names the operator of an abort asked through the API.
func (e *Engine) noteTxEvent(h *history, ev txn.Event, who string) {
	var te messages.TxEvent
	switch ev.Kind {
	case txn.EventVote:
		te = e.event(messages.EventVote)
		te.Detail = "yes"
		if ev.ReadOnly {
			te.Detail = "read-only"
		}
		if !ev.Yes {
			te.Detail = "no"
			if ev.Reason != "" {
				te.Detail += ": " + ev.Reason
			}
		}
	case txn.EventAck:
		te = e.event(messages.EventAck)
		te.Detail = string(ev.Op)
	case txn.EventFailed:
		te = e.event(messages.EventFailed)
		te.Detail = string(ev.Op) + ": " + ev.Reason
	case txn.EventRejected:
		te = e.event(messages.EventRejected)
		te.Detail = ev.Reason
	case txn.EventAbort:
		te = e.event(messages.EventOperator)
		te.By, te.Detail = who, "abort: "+ev.Reason
	default:
		return
	}
	te.Participant = ev.Participant
	h.add(te)
}

// noteDecided records a decision: a timeout first if it caused it.
func (e *Engine) noteDecided(h *history, out Outcome) {
	if out.TimedOut {
		ev := e.event(messages.EventTimeout)
		ev.Detail = out.Reason
		h.add(ev)
	}
	ev := e.event(messages.EventDecided)
	ev.By = e.cfg.Instance
	switch out.State {
	case Committing, Committed:
		ev.Detail = "commit"
	default:
		ev.Detail = "abort"
		if out.Reason != "" {
			ev.Detail += ": " + out.Reason
		}
	}
	h.add(ev)
}

// noteEnded records a final state.
func (e *Engine) noteEnded(h *history, state string) {
	ev := e.event(messages.EventEnded)
	ev.By, ev.Detail = e.cfg.Instance, state
	h.add(ev)
}

// noteSagaEvent records what a saga event the machine accepted tells: a
// step's answer, or an operator action.
func (e *Engine) noteSagaEvent(h *history, sg *saga.Saga, ev saga.Event) {
	var te messages.TxEvent
	switch ev.Kind {
	case saga.EventReply:
		te = e.event(messages.EventFailed)
		switch ev.Result {
		case saga.ResultDone:
			te.Event, te.Detail = messages.EventAck, string(ev.Op)
		case saga.ResultFailed:
			te.Detail = string(ev.Op) + " refused: " + ev.Reason
		default:
			te.Detail = string(ev.Op) + " failed: " + ev.Reason
		}
		if ev.Code != "" {
			te.Detail += " (code " + ev.Code + ")"
		}
		te.Step, te.Attempt = ev.Step, ev.Attempt
		te.Participant = sg.Participant(ev.Step)
	case saga.EventRetryNow, saga.EventResolve, saga.EventAbort:
		te = e.event(messages.EventOperator)
		te.By, te.Step = ev.Who, ev.Step
		te.Detail = sagaActionName(ev.Kind)
		if ev.Why != "" {
			te.Detail += ": " + ev.Why
		}
	default:
		return
	}
	h.add(te)
}

// sagaActionName names an operator event's action as the API does.
func sagaActionName(k saga.EventKind) string {
	switch k {
	case saga.EventRetryNow:
		return messages.SagaRetry
	case saga.EventResolve:
		return messages.SagaResolve
	default:
		return messages.SagaAbort
	}
}

// priorStatus reads the status a transaction had before this instance
// took it over, for its history; nil when there is none or it cannot be
// read (the history then starts at the takeover).
func (e *Engine) priorStatus(ctx context.Context, id string) *messages.TxStatus {
	if e.status == nil {
		return nil
	}
	en, err := e.status.Get(ctx, id)
	if err != nil {
		return nil
	}
	var st messages.TxStatus
	if json.Unmarshal(en.Value, &st) != nil {
		return nil
	}
	return &st
}
