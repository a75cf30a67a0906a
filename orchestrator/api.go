package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/saga"
)

// serveAPI subscribes the coordinator API: begin (any instance, in a queue
// group) and abort (this instance's own transactions).
func (e *Engine) serveAPI() error {
	begin, err := e.nc.QueueSubscribe(messages.APIBegin, messages.APIQueue, e.onlyInboxReplies(e.onBegin))
	if err != nil {
		return fmt.Errorf("natstx: subscribing to %s: %w", messages.APIBegin, err)
	}
	abort, err := e.nc.Subscribe(messages.APIAbort(e.cfg.Instance), e.onlyInboxReplies(e.onAbort))
	if err != nil {
		_ = begin.Unsubscribe()
		return fmt.Errorf("natstx: subscribing to %s: %w", messages.APIAbort(e.cfg.Instance), err)
	}
	e.apiSubs = []*nats.Subscription{begin, abort}
	act, err := e.nc.Subscribe(messages.APISagaAct(e.cfg.Instance), e.onlyInboxReplies(e.onSagaAct))
	if err != nil {
		for _, s := range e.apiSubs {
			_ = s.Unsubscribe()
		}
		return fmt.Errorf("natstx: subscribing to %s: %w", messages.APISagaAct(e.cfg.Instance), err)
	}
	e.apiSubs = append(e.apiSubs, act)
	for _, q := range []struct {
		subject string
		cb      nats.MsgHandler
	}{{messages.APIStatus, e.onStatus}, {messages.APIOutcome, e.onOutcome}, {messages.APISagaBegin, e.onSagaBegin}} {
		sub, err := e.nc.QueueSubscribe(q.subject, messages.APIQueue, e.onlyInboxReplies(q.cb))
		if err != nil {
			for _, s := range e.apiSubs {
				_ = s.Unsubscribe()
			}
			return fmt.Errorf("natstx: subscribing to %s: %w", q.subject, err)
		}
		e.apiSubs = append(e.apiSubs, sub)
	}
	return nil
}

// onlyInboxReplies drops, and logs, a request whose reply subject is not
// an inbox (messages.CheckRequestReply): the coordinator may write the
// buckets and publish commands, so an answer sent where the asker points
// it could become a decision record or a command.
func (e *Engine) onlyInboxReplies(cb nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		if m.Reply != "" {
			if err := messages.CheckRequestReply(m.Reply); err != nil {
				e.log.Warn("request dropped unanswered: its reply subject is not an inbox", zap.String("subject", m.Subject), zap.Error(err))
				return
			}
		}
		cb(m)
	}
}

func (e *Engine) onBegin(m *nats.Msg) {
	if e.halted.Load() || !e.beginAllowed(m) {
		return
	}
	var req messages.BeginRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		e.respond(m, nil, fmt.Errorf("%w: begin request is not valid JSON: %v", messages.ErrMalformed, err))
		return
	}
	r := Request{ID: req.ID, Timeout: time.Duration(req.TimeoutMs) * time.Millisecond}
	for _, p := range req.Participants {
		r.Participants = append(r.Participants, Participant{Name: p.Name, Payload: p.Payload})
	}
	if req.TimeoutMs < 0 {
		e.respond(m, nil, fmt.Errorf("timeout_ms %d is negative", req.TimeoutMs))
		return
	}
	if req.CallerTimeoutMs < 0 {
		e.respond(m, nil, fmt.Errorf("caller_timeout_ms %d is negative", req.CallerTimeoutMs))
		return
	}
	// The caller's deadline wins when sooner, as a context deadline does
	// for Engine.Begin (whose context here has none: the answer to a request
	// that waits must outlive the prepare phase).
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = e.cfg.PrepareTimeout
	}
	if ms := req.CallerTimeoutMs; ms > 0 && ms < timeout.Milliseconds() {
		r.Timeout = time.Duration(ms) * time.Millisecond
	}
	// The caller's trace, if its request carries one, continues here.
	if !req.Wait {
		id, err := e.Begin(traceContextOf(context.Background(), m.Header), r)
		if err != nil {
			e.respond(m, nil, err)
			return
		}
		st, err := e.statusDoc(id)
		e.respond(m, &st, err)
		return
	}
	// Waiting may take the whole prepare timeout and a commit phase: answer
	// from a goroutine, so the subscription keeps serving others.
	e.spawn(func() {
		out, err := e.Execute(traceContextOf(e.base, m.Header), r) // ends when the engine stops
		if err != nil {
			e.respond(m, nil, err)
			return
		}
		st, err := e.statusDoc(out.ID)
		e.respond(m, &st, err)
	})
}

func (e *Engine) onAbort(m *nats.Msg) {
	if e.halted.Load() {
		return
	}
	var req messages.AbortRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		e.respond(m, nil, fmt.Errorf("%w: abort request is not valid JSON: %v", messages.ErrMalformed, err))
		return
	}
	reason := req.Reason
	if reason == "" {
		reason = "aborted by an operator"
	}
	who := req.Who
	if who == "" {
		who = "an operator (unnamed)"
	}
	_, err := e.AbortAs(req.ID, who, reason)
	if err != nil {
		e.respond(m, nil, err)
		return
	}
	st, err := e.statusDoc(req.ID)
	e.respond(m, &st, err)
}

func (e *Engine) respond(m *nats.Msg, st *messages.TxStatus, err error) {
	resp := messages.StatusResponse{Status: st}
	if err != nil {
		resp.Status, resp.Error = nil, err.Error()
		e.log.Info("API request refused", zap.String("subject", m.Subject), zap.Error(err))
	}
	data, _ := json.Marshal(resp)
	if m.Reply == "" {
		return
	}
	if rerr := m.Respond(data); rerr != nil {
		e.log.Warn("answering an API request failed", zap.String("subject", m.Subject), zap.Error(rerr))
	}
}

// onSagaBegin starts a saga from a SagaBeginRequest.
// beginAllowed takes a token of Config.MaxBeginRate from the bucket of the
// request's sender for a begin request, or answers it ErrRateLimited
// (counted in Stats.Rejected) and returns false.
func (e *Engine) beginAllowed(m *nats.Msg) bool {
	if e.beginLimit == nil {
		return true
	}
	who := requesterOf(m)
	if e.beginLimit.allow(who) {
		return true
	}
	e.stats.Rejected.Add(1)
	e.respond(m, nil, fmt.Errorf("%w: this coordinator accepts at most %g begins a second through its API from %s (natstx server --max-begin-rate); retry later", ErrRateLimited, e.cfg.MaxBeginRate, who))
	return false
}

func (e *Engine) onSagaBegin(m *nats.Msg) {
	if e.halted.Load() || e.draining.Load() {
		if e.draining.Load() {
			e.respond(m, nil, ErrDraining)
		}
		return
	}
	if !e.beginAllowed(m) {
		return
	}
	var req messages.SagaBeginRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		e.respond(m, nil, fmt.Errorf("%w: saga begin request is not valid JSON: %v", messages.ErrMalformed, err))
		return
	}
	if req.TimeoutMs < 0 {
		e.respond(m, nil, fmt.Errorf("timeout_ms %d is negative", req.TimeoutMs))
		return
	}
	def, err := saga.Parse([]byte(req.Definition))
	if err != nil {
		e.respond(m, nil, err)
		return
	}
	r := SagaRequest{ID: req.ID, Definition: def, Timeout: time.Duration(req.TimeoutMs) * time.Millisecond}
	answer := func(rec saga.Record, err error) {
		if err != nil {
			e.respond(m, nil, err)
			return
		}
		st := sagaStatusOf(rec, e.cfg.Instance, e.now(), e.now())
		e.respond(m, &st, nil)
	}
	if !req.Wait {
		id, err := e.BeginSaga(traceContextOf(context.Background(), m.Header), r)
		if err != nil {
			answer(saga.Record{}, err)
			return
		}
		answer(e.SagaStatus(id))
		return
	}
	e.spawn(func() { answer(e.ExecuteSaga(traceContextOf(e.base, m.Header), r)) })
}

// onSagaAct applies an operator action to a saga this instance drives.
func (e *Engine) onSagaAct(m *nats.Msg) {
	if e.halted.Load() {
		return
	}
	var req messages.SagaActRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		e.respond(m, nil, fmt.Errorf("%w: saga action request is not valid JSON: %v", messages.ErrMalformed, err))
		return
	}
	rec, err := e.ActOnSaga(req)
	if err != nil {
		e.respond(m, nil, err)
		return
	}
	e.log.Info("operator action on a saga", zap.String("saga", req.ID), zap.String("action", req.Action),
		zap.String("step", req.Step), zap.String("who", req.Who), zap.String("why", req.Why))
	st := sagaStatusOf(rec, e.cfg.Instance, rec.StartedAt, e.now())
	e.respond(m, &st, nil)
}
