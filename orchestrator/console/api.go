package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/orchestrator/txn"
)

// twoPCStates and sagaStates are the states a status may have, for the
// state filter.
var (
	twoPCStates = []string{"preparing", "committing", "aborting", "committed", "aborted"}
	sagaStates  = []string{string(saga.StateRunning), string(saga.StateForwardStuck), string(saga.StateCompensating),
		string(saga.StateCompensationStuck), string(saga.StateCompleted), string(saga.StateCompensated)}
)

// Summary is one transaction or saga in the list: what the list page shows
// and filters on.
type Summary struct {
	ID string `json:"id"`
	// Protocol is "2pc" or "saga".
	Protocol string `json:"protocol"`
	State    string `json:"state"`
	// Final is true once the transaction is over.
	Final  bool   `json:"final"`
	Reason string `json:"reason,omitempty"`
	Owner  string `json:"owner,omitempty"`
	// StartedAt and AgeMs: when it began, and how long ago.
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
	AgeMs     int64     `json:"age_ms"`
	// Waiting names the participants it waits for: the answers the current
	// phase needs (two-phase), or those of the steps in flight (saga).
	Waiting []string `json:"waiting,omitempty"`
	// WaitingSince and WaitingMs: since when, and how long (two-phase).
	WaitingSince time.Time `json:"waiting_since,omitzero"`
	WaitingMs    int64     `json:"waiting_ms,omitempty"`
	// Participants are every participant's names, in order.
	Participants []string `json:"participants"`
	// Retrying: unfinished, and a command was sent more than once in the
	// current phase, or a saga step is retrying (its action or compensation).
	Retrying bool `json:"retrying,omitempty"`
	// Stuck: a saga step is stuck, or a two-phase transaction has waited
	// longer than the stuck threshold.
	Stuck bool `json:"stuck,omitempty"`
}

func isSaga(st messages.TxStatus) bool { return st.Protocol == messages.ProtocolSaga }

// final reports whether a status is a final one.
func final(st messages.TxStatus) bool {
	if isSaga(st) {
		return saga.State(st.State).Final()
	}
	s, err := txn.ParseState(st.State)
	return err == nil && s.Final()
}

// summarize condenses st as of now, with stuckAfter the threshold of a
// two-phase transaction's wait.
func summarize(st messages.TxStatus, now time.Time, stuckAfter time.Duration) Summary {
	s := Summary{
		ID: st.ID, Protocol: messages.Protocol2PC, State: st.State, Final: final(st), Reason: st.Reason, Owner: st.Owner,
		StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt, Participants: []string{},
	}
	if !st.StartedAt.IsZero() {
		s.AgeMs = now.Sub(st.StartedAt).Milliseconds()
	}
	if isSaga(st) {
		s.Protocol = messages.ProtocolSaga
		for _, step := range st.Steps {
			if !slices.Contains(s.Participants, step.Participant) {
				s.Participants = append(s.Participants, step.Participant)
			}
			switch saga.StepStatus(step.Status) {
			case saga.StepRunning, saga.StepRetrying, saga.StepCompensating, saga.StepCompensationRetrying:
				if !s.Final && !slices.Contains(s.Waiting, step.Participant) {
					s.Waiting = append(s.Waiting, step.Participant)
				}
			}
			if !s.Final && (step.Status == string(saga.StepRetrying) || step.Status == string(saga.StepCompensationRetrying)) {
				s.Retrying = true
			}
			if step.Stuck {
				s.Stuck = true
			}
		}
		if saga.State(st.State).Stuck() {
			s.Stuck = true
		}
		return s
	}
	for _, p := range st.Participants {
		s.Participants = append(s.Participants, p.Name)
		if !s.Final && p.Sends > 1 {
			s.Retrying = true
		}
	}
	if !s.Final {
		s.Waiting = st.Waiting
		if !st.WaitingSince.IsZero() {
			s.WaitingSince = st.WaitingSince
			s.WaitingMs = now.Sub(st.WaitingSince).Milliseconds()
			if len(st.Waiting) > 0 && now.Sub(st.WaitingSince) > stuckAfter {
				s.Stuck = true
			}
		}
	}
	return s
}

// filter is the list's filters, from the query string.
type filter struct {
	states       []string
	protocol     string
	participant  string
	minAge       time.Duration
	unfinished   bool
	retrying     bool
	stuck        bool
	stuckAfter   time.Duration
	limit        int
	participantL string
}

func parseBool(q map[string][]string, key string) (bool, error) {
	v := ""
	if vs := q[key]; len(vs) > 0 {
		v = vs[0]
	}
	switch strings.ToLower(v) {
	case "", "0", "false", "no", "off":
		return false, nil
	case "1", "true", "yes", "on":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q: want true or false", key, v)
}

// parseDuration reads a Go duration ("90s", "5m") or a number of seconds.
func parseDuration(key, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a duration such as 30s, 5m or 1h", key, v)
	}
	return d, nil
}

func (c *Console) parseFilter(r *http.Request) (filter, error) {
	q := r.URL.Query()
	f := filter{stuckAfter: c.cfg.StuckAfter, limit: c.cfg.MaxList}
	for _, s := range q["state"] {
		for _, one := range strings.Split(s, ",") {
			one = strings.TrimSpace(one)
			if one == "" {
				continue
			}
			if !slices.Contains(twoPCStates, one) && !slices.Contains(sagaStates, one) {
				return f, fmt.Errorf("state=%q: no such state; two-phase: %s; saga: %s", one, strings.Join(twoPCStates, ", "), strings.Join(sagaStates, ", "))
			}
			f.states = append(f.states, one)
		}
	}
	switch p := q.Get("protocol"); p {
	case "", messages.Protocol2PC, messages.ProtocolSaga:
		f.protocol = p
	default:
		return f, fmt.Errorf("protocol=%q: want 2pc or saga", p)
	}
	f.participant = strings.TrimSpace(q.Get("participant"))
	f.participantL = strings.ToLower(f.participant)
	var err error
	if f.minAge, err = parseDuration("min_age", q.Get("min_age")); err != nil {
		return f, err
	}
	if v := q.Get("stuck_after"); v != "" {
		if f.stuckAfter, err = parseDuration("stuck_after", v); err != nil {
			return f, err
		}
	}
	if f.unfinished, err = parseBool(q, "unfinished"); err != nil {
		return f, err
	}
	if f.retrying, err = parseBool(q, "retrying"); err != nil {
		return f, err
	}
	if f.stuck, err = parseBool(q, "stuck"); err != nil {
		return f, err
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return f, fmt.Errorf("limit=%q: want a positive number", v)
		}
		f.limit = min(n, c.cfg.MaxList)
	}
	return f, nil
}

func (f filter) match(s Summary) bool {
	switch {
	case len(f.states) > 0 && !slices.Contains(f.states, s.State),
		f.protocol != "" && s.Protocol != f.protocol,
		f.minAge > 0 && time.Duration(s.AgeMs)*time.Millisecond < f.minAge,
		f.unfinished && s.Final,
		f.retrying && !s.Retrying,
		f.stuck && !s.Stuck:
		return false
	}
	if f.participant != "" {
		found := false
		for _, p := range s.Participants {
			if strings.Contains(strings.ToLower(p), f.participantL) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// listResponse answers GET /api/tx.
type listResponse struct {
	Now          time.Time `json:"now"`
	Transactions []Summary `json:"transactions"`
	// Held counts the statuses held, Matched those that pass the filters;
	// Truncated says the answer carries only the newest Limit of them.
	Held         int   `json:"held"`
	Matched      int   `json:"matched"`
	Truncated    bool  `json:"truncated,omitempty"`
	Limit        int   `json:"limit"`
	StuckAfterMs int64 `json:"stuck_after_ms"`
}

// listCacheFor is how long one read of the status bucket serves the list
// requests that follow: several open pages read it once.
const listCacheFor = 500 * time.Millisecond

func (c *Console) list(ctx context.Context) ([]messages.TxStatus, error) {
	c.listMu.Lock()
	defer c.listMu.Unlock()
	if c.listDone != nil && time.Since(c.listAt) < listCacheFor {
		return c.listDone, nil
	}
	all, err := c.cfg.Source.List(ctx)
	if err != nil {
		return nil, err
	}
	if all == nil {
		all = []messages.TxStatus{}
	}
	c.listDone, c.listAt = all, time.Now()
	return all, nil
}

func (c *Console) apiList(w http.ResponseWriter, r *http.Request) {
	f, err := c.parseFilter(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
	defer cancel()
	all, err := c.list(ctx)
	if err != nil {
		writeSourceError(w, err)
		return
	}
	now := time.Now()
	resp := listResponse{Now: now.UTC(), Held: len(all), Transactions: []Summary{}, Limit: f.limit, StuckAfterMs: f.stuckAfter.Milliseconds()}
	for _, st := range all {
		s := summarize(st, now, f.stuckAfter)
		if f.match(s) {
			resp.Transactions = append(resp.Transactions, s)
		}
	}
	sort.Slice(resp.Transactions, func(i, j int) bool {
		a, b := resp.Transactions[i], resp.Transactions[j]
		if !a.StartedAt.Equal(b.StartedAt) {
			return a.StartedAt.After(b.StartedAt)
		}
		return a.ID < b.ID
	})
	resp.Matched = len(resp.Transactions)
	if resp.Matched > f.limit {
		resp.Transactions, resp.Truncated = resp.Transactions[:f.limit], true
	}
	writeJSON(w, http.StatusOK, resp)
}

// detailResponse answers GET /api/tx/ID.
type detailResponse struct {
	Now     time.Time         `json:"now"`
	Status  messages.TxStatus `json:"status"`
	Summary Summary           `json:"summary"`
	// Actions are the operator actions that apply now: abort (a preparing
	// transaction, or a saga going forward), retry and resolve (a saga).
	Actions []string `json:"actions"`
	// Resolvable are the saga steps a resolve may name: the stuck ones.
	Resolvable   []string `json:"resolvable,omitempty"`
	StuckAfterMs int64    `json:"stuck_after_ms"`
}

func actionsOf(st messages.TxStatus) (actions, resolvable []string) {
	actions = []string{}
	if !isSaga(st) {
		if st.State == txn.Preparing.String() && !st.OnePhase { // a one-phase commit is its participant's to decide
			actions = append(actions, actionAbort)
		}
		return actions, nil
	}
	state := saga.State(st.State)
	if state.Final() {
		return actions, nil
	}
	retrying := false
	for _, step := range st.Steps {
		switch saga.StepStatus(step.Status) {
		case saga.StepRetrying, saga.StepCompensationRetrying:
			retrying = true
		}
		if step.Stuck {
			resolvable = append(resolvable, step.Name)
		}
	}
	if retrying {
		actions = append(actions, actionRetry)
	}
	if len(resolvable) > 0 {
		actions = append(actions, actionResolve)
	}
	if state == saga.StateRunning || state == saga.StateForwardStuck {
		actions = append(actions, actionAbort)
	}
	return actions, resolvable
}

// withStatus is how apiDetail and apiAct begin. It checks the transaction
// ID of r's path (400 if it is no valid name), runs check, the handler's
// own checks of r (nil for none; it answers what it refuses and returns
// false), then reads the ID's status within the console's timeout
// (answered as writeSourceError does if that fails) and hands it to then,
// with that timeout's context.
func (c *Console) withStatus(w http.ResponseWriter, r *http.Request, check func() bool,
	then func(ctx context.Context, id string, st messages.TxStatus)) {
	id := r.PathValue("id")
	if err := messages.ValidateName("transaction ID", id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if check != nil && !check() {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
	defer cancel()
	st, err := c.cfg.Source.Status(ctx, id)
	if err != nil {
		writeSourceError(w, err)
		return
	}
	then(ctx, id, st)
}

func (c *Console) apiDetail(w http.ResponseWriter, r *http.Request) {
	c.withStatus(w, r, nil, func(_ context.Context, _ string, st messages.TxStatus) {
		now := time.Now()
		resp := detailResponse{Now: now.UTC(), Status: st, Summary: summarize(st, now, c.cfg.StuckAfter), StuckAfterMs: c.cfg.StuckAfter.Milliseconds()}
		resp.Actions, resp.Resolvable = actionsOf(st)
		writeJSON(w, http.StatusOK, resp)
	})
}

// The actions of POST /api/tx/ID/ACTION.
const (
	actionAbort   = "abort"
	actionRetry   = "retry"
	actionResolve = "resolve"
)

// ActionRequest is the body of POST /api/tx/ID/abort|retry|resolve: who
// asks, why, and for a resolve the step.
type ActionRequest struct {
	Who  string `json:"who"`
	Why  string `json:"why"`
	Step string `json:"step,omitempty"`
}

// actionResponse answers a POST: the status after the action.
type actionResponse struct {
	Status  messages.TxStatus `json:"status"`
	Message string            `json:"message"`
}

// The longest who and why an action takes.
const (
	maxWho = 200
	maxWhy = 1000
)

func (c *Console) apiAct(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	var req ActionRequest
	c.withStatus(w, r, func() bool {
		var ok bool
		req, ok = readAction(w, r, action)
		return ok
	}, func(ctx context.Context, id string, st messages.TxStatus) {
		c.act(ctx, w, id, action, req, st)
	})
}

// readAction checks action and reads the body of a POST
// /api/tx/ID/ACTION; it answers what it refuses and returns false.
func readAction(w http.ResponseWriter, r *http.Request, action string) (ActionRequest, bool) {
	var req ActionRequest
	if action != actionAbort && action != actionRetry && action != actionResolve {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no action %q: the actions are abort, retry and resolve", action))
		return req, false
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "the body must be JSON (Content-Type: application/json): {\"who\": ..., \"why\": ...}")
		return req, false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "unreadable action request: "+err.Error()+"; send {\"who\": ..., \"why\": ...}")
		return req, false
	}
	req.Who, req.Why, req.Step = strings.TrimSpace(req.Who), strings.TrimSpace(req.Why), strings.TrimSpace(req.Step)
	switch {
	case req.Who == "" || req.Why == "":
		writeError(w, http.StatusBadRequest, "an action needs who asks and why (both are recorded): {\"who\": ..., \"why\": ...}")
		return req, false
	case utf8.RuneCountInString(req.Who) > maxWho || utf8.RuneCountInString(req.Why) > maxWhy:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("who is limited to %d characters and why to %d", maxWho, maxWhy))
		return req, false
	case action == actionResolve && req.Step == "":
		writeError(w, http.StatusBadRequest, "resolve needs the step to resolve: {\"step\": ...}")
		return req, false
	case action != actionResolve && req.Step != "":
		writeError(w, http.StatusBadRequest, "only resolve takes a step")
		return req, false
	}
	return req, true
}

// act sends the operator's action req on transaction id, whose status is
// st, and answers the status after it.
func (c *Console) act(ctx context.Context, w http.ResponseWriter, id, action string, req ActionRequest, st messages.TxStatus) {
	var msg string
	var err error
	switch {
	case isSaga(st):
		st, err = c.cfg.Source.ActOnSaga(ctx, messages.SagaActRequest{ID: id, Action: action, Step: req.Step, Who: req.Who, Why: req.Why})
		msg = fmt.Sprintf("%s of saga %s sent (by %s: %s)", action, id, req.Who, req.Why)
	case action == actionAbort:
		st, err = c.cfg.Source.AbortAs(ctx, id, req.Why, req.Who)
		msg = fmt.Sprintf("abort of %s sent (by %s: %s)", id, req.Who, req.Why)
	default:
		writeError(w, http.StatusConflict, fmt.Sprintf("%s is a two-phase transaction: only abort applies to it (retry and resolve are for sagas)", id))
		return
	}
	if err != nil {
		c.cfg.Logger.Info("console: operator action refused", zap.String("tx", id), zap.String("action", action),
			zap.String("step", req.Step), zap.String("who", req.Who), zap.String("why", req.Why), zap.Error(err))
		code := sourceErrorCode(err)
		if code == http.StatusInternalServerError {
			code = http.StatusConflict // the coordinator refused it
		}
		writeError(w, code, err.Error())
		return
	}
	c.cfg.Logger.Info("console: operator action", zap.String("tx", id), zap.String("action", action),
		zap.String("step", req.Step), zap.String("who", req.Who), zap.String("why", req.Why))
	c.listMu.Lock()
	c.listDone = nil // the next list reads the change
	c.listMu.Unlock()
	writeJSON(w, http.StatusOK, actionResponse{Status: st, Message: msg})
}

// histogram is a latency histogram in /api/stats.
type histogram struct {
	Buckets    []float64 `json:"buckets"`
	Cumulative []uint64  `json:"cumulative"`
	Count      uint64    `json:"count"`
	Sum        float64   `json:"sum"`
}

// statsResponse answers GET /api/stats: a snapshot of the engine's counters.
type statsResponse struct {
	At               time.Time `json:"at"`
	Begun            int64     `json:"begun"`
	Committed        int64     `json:"committed"`
	Aborted          int64     `json:"aborted"`
	Timeouts         int64     `json:"timeouts"`
	Rejected         int64     `json:"rejected"`
	Resends          int64     `json:"resends"`
	InFlight         int64     `json:"in_flight"`
	SagasCompleted   int64     `json:"sagas_completed"`
	SagasCompensated int64     `json:"sagas_compensated"`
	SagasStuck       int64     `json:"sagas_stuck"`
	Recovered        int64     `json:"recovered"`
	OrphansAborted   int64     `json:"orphans_aborted"`
	Fenced           int64     `json:"fenced"`
	// AbortedBy counts the aborted two-phase transactions by cause
	// (orchestrator.AbortCauses, every one present).
	AbortedBy map[string]int64 `json:"aborted_by"`
	// OldestInFlightSeconds is how long the oldest transaction in flight has
	// run; null when unknown.
	OldestInFlightSeconds *float64 `json:"oldest_in_flight_seconds"`
	// Decide, Complete, Write and Saga are the latency histograms: begin
	// to decision, decision to last acknowledgement, the commit decision's
	// write, a saga's begin to its end.
	Decide   histogram `json:"decide"`
	Complete histogram `json:"complete"`
	Write    histogram `json:"write"`
	Saga     histogram `json:"saga"`
}

func histogramOf(h orchestrator.Histogram) histogram {
	out := histogram{Buckets: h.Buckets, Cumulative: h.Cumulative, Count: h.Count, Sum: h.Sum}
	if out.Buckets == nil {
		out.Buckets = []float64{}
	}
	if out.Cumulative == nil {
		out.Cumulative = []uint64{}
	}
	return out
}

func (c *Console) apiStats(w http.ResponseWriter, _ *http.Request) {
	if c.cfg.Stats == nil {
		writeError(w, http.StatusNotFound, "no dashboard: this console was started without an engine's counters")
		return
	}
	s := c.cfg.Stats()
	resp := statsResponse{
		At: time.Now().UTC(), Begun: s.Begun, Committed: s.Committed, Aborted: s.Aborted, Timeouts: s.Timeouts,
		Rejected: s.Rejected, Resends: s.Resends, InFlight: s.InFlight, SagasCompleted: s.SagasCompleted,
		SagasCompensated: s.SagasCompensated, SagasStuck: s.SagasStuck, Recovered: s.Recovered,
		OrphansAborted: s.OrphansAborted, Fenced: s.Fenced, AbortedBy: make(map[string]int64, len(orchestrator.AbortCauses)),
		Decide: histogramOf(s.DecideLatency), Complete: histogramOf(s.CompleteLatency),
		Write: histogramOf(s.WriteLatency), Saga: histogramOf(s.SagaLatency),
	}
	for _, cause := range orchestrator.AbortCauses {
		resp.AbortedBy[cause] = s.AbortedBy[cause]
	}
	if c.cfg.OldestInFlight != nil {
		sec := c.cfg.OldestInFlight().Seconds()
		resp.OldestInFlightSeconds = &sec
	}
	writeJSON(w, http.StatusOK, resp)
}

// errorResponse is every error the API answers.
type errorResponse struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorResponse{Error: msg})
}

// sourceErrorCode is the HTTP status of an error of the Source.
func sourceErrorCode(err error) int {
	switch {
	case errors.Is(err, orchestrator.ErrUnknownTx):
		return http.StatusNotFound
	case errors.Is(err, messages.ErrInvalidName):
		return http.StatusBadRequest
	case errors.Is(err, orchestrator.ErrNoCoordinator):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func writeSourceError(w http.ResponseWriter, err error) {
	code := sourceErrorCode(err)
	if code == http.StatusInternalServerError {
		code = http.StatusServiceUnavailable // reading the status bucket failed
	}
	writeError(w, code, err.Error())
}
