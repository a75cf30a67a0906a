package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/orchestrator/txn"
)

// sagaStates are the states a saga's status may have.
var sagaStates = []saga.State{saga.StateRunning, saga.StateForwardStuck, saga.StateCompensating,
	saga.StateCompensationStuck, saga.StateCompleted, saga.StateCompensated}

func sagaStateNames() []string {
	out := make([]string, len(sagaStates))
	for i, s := range sagaStates {
		out[i] = string(s)
	}
	return out
}

// Client talks to running coordinators over NATS; it needs no engine in its
// own process. Begin and Abort are requests to the coordinator API; Status,
// List and Watch read the status bucket directly, through natstx's
// JetStream API as the connection's account reaches it (its own, or the
// one the operators' account of `natstx auth init` imports under
// messages.JetStreamAPIPrefix: messages/jsconnect). Safe for concurrent use.
type Client struct {
	nc *nats.Conn

	// mu guards js, which the first successful jetStream sets.
	mu sync.Mutex
	js jetstream.JetStream
}

// NewClient returns a client on nc. It sends nothing: the client finds how
// its account reaches JetStream when it first reads the status bucket, so
// that a client that only uses the API (Begin, BeginSaga) needs no
// JetStream.
func NewClient(nc *nats.Conn) (*Client, error) {
	if nc == nil {
		return nil, errors.New("natstx: NewClient needs a NATS connection")
	}
	return &Client{nc: nc}, nil
}

// jetStream returns natstx's JetStream API on c's connection, asking NATS
// which one it is (jsconnect.New, bounded by ctx) on the first call, and
// again after a failure.
func (c *Client) jetStream(ctx context.Context) (jetstream.JetStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.js != nil {
		return c.js, nil
	}
	js, err := jsconnect.New(ctx, c.nc)
	if err != nil {
		return nil, err
	}
	c.js = js
	return js, nil
}

// ErrNoCoordinator is returned when no coordinator answers an API request.
var ErrNoCoordinator = errors.New("natstx: no coordinator answered (is `natstx server` running on this NATS?)")

// Begin asks a coordinator to run a transaction. With req.Wait it returns
// the outcome; ctx must then allow for the prepare timeout and the commit
// phase. The trace context of ctx (an OpenTelemetry span, if any) travels in
// the request's W3C headers, for the coordinator to continue the trace;
// so it does for every request of the Client.
//
// A deadline of ctx is the caller's deadline for the transaction, as for
// Engine.Begin: it wins when sooner than the prepare timeout. What it
// leaves, in whole milliseconds rounded down, is sent as req.TimeoutMs when
// sooner than that; without a TimeoutMs, as req.CallerTimeoutMs, for the
// coordinator to cut its own prepare timeout to when sooner (a later
// deadline leaves it). When less than a millisecond is left, nothing is
// begun (ErrDeadlineExpired). To bound only the wait for the answer, not the
// transaction, cancel ctx instead of giving it a deadline.
func (c *Client) Begin(ctx context.Context, req messages.BeginRequest) (messages.TxStatus, error) {
	var err error
	if req.TimeoutMs != 0 {
		req.TimeoutMs, err = soonerDeadline(ctx, req.ID, req.TimeoutMs)
	} else {
		req.CallerTimeoutMs, err = soonerDeadline(ctx, req.ID, req.CallerTimeoutMs)
	}
	if err != nil {
		return messages.TxStatus{}, err
	}
	return c.request(ctx, messages.APIBegin, req)
}

// soonerDeadline returns timeoutMs (0: none), a timeout in milliseconds of a
// request to begin transaction or saga id, cut to what the deadline of ctx
// leaves, in whole milliseconds rounded down, when that is sooner; with less
// than a millisecond left, ErrDeadlineExpired. A negative timeoutMs is left
// for the coordinator to refuse.
func soonerDeadline(ctx context.Context, id string, timeoutMs int64) (int64, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		return timeoutMs, nil
	}
	left := time.Until(dl).Milliseconds()
	if left <= 0 || ctx.Err() != nil {
		return 0, fmt.Errorf("%w: %s", ErrDeadlineExpired, id)
	}
	if timeoutMs == 0 || left < timeoutMs {
		return left, nil
	}
	return timeoutMs, nil
}

// Abort asks the coordinator that owns transaction id to abort it. It fails
// if the transaction already decided, naming the decision.
func (c *Client) Abort(ctx context.Context, id, reason string) (messages.TxStatus, error) {
	return c.AbortAs(ctx, id, reason, "")
}

// AbortAs is Abort, naming who asks (an operator or a tool) for the
// transaction's history.
func (c *Client) AbortAs(ctx context.Context, id, reason, who string) (messages.TxStatus, error) {
	st, err := c.Status(ctx, id)
	if err != nil {
		return st, err
	}
	if st.State != txn.Preparing.String() {
		return st, fmt.Errorf("natstx: transaction %s is %s; only a preparing transaction can be aborted", id, st.State)
	}
	if st.OnePhase {
		return st, fmt.Errorf("%w: transaction %s (its participant %s answers when it can)", ErrOnePhaseAbort, id, strings.Join(st.Waiting, ", "))
	}
	return c.request(ctx, messages.APIAbort(st.Owner), messages.AbortRequest{ID: id, Reason: reason, Who: who})
}

// BeginSaga asks a coordinator to run a saga. With req.Wait it returns once
// the saga completed or was compensated; ctx must allow for that.
//
// A deadline of ctx is the caller's deadline for the saga, as for
// Engine.BeginSaga: when sooner than req.TimeoutMs (or when that is zero),
// the time it leaves, in whole milliseconds rounded down, is sent as
// TimeoutMs; when less than a millisecond is left, the saga is not begun
// (ErrDeadlineExpired). To bound only the wait for the answer, not the
// saga, cancel ctx instead of giving it a deadline.
func (c *Client) BeginSaga(ctx context.Context, req messages.SagaBeginRequest) (messages.TxStatus, error) {
	var err error
	if req.TimeoutMs, err = soonerDeadline(ctx, req.ID, req.TimeoutMs); err != nil {
		return messages.TxStatus{}, err
	}
	return c.request(ctx, messages.APISagaBegin, req)
}

// ActOnSaga asks the coordinator that drives saga req.ID to apply an
// operator action (retry now, resolve a step, abort), recorded with who and
// why.
func (c *Client) ActOnSaga(ctx context.Context, req messages.SagaActRequest) (messages.TxStatus, error) {
	st, err := c.Status(ctx, req.ID)
	if err != nil {
		return st, err
	}
	if st.Protocol != messages.ProtocolSaga {
		return st, fmt.Errorf("natstx: %s is not a saga", req.ID)
	}
	return c.request(ctx, messages.APISagaAct(st.Owner), req)
}

func (c *Client) request(ctx context.Context, subject string, body any) (messages.TxStatus, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return messages.TxStatus{}, err
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	injectTrace(ctx, msg.Header)
	m, err := c.nc.RequestMsgWithContext(ctx, msg)
	if errors.Is(err, nats.ErrNoResponders) {
		return messages.TxStatus{}, ErrNoCoordinator
	}
	if err != nil {
		return messages.TxStatus{}, fmt.Errorf("natstx: request on %s: %w", subject, err)
	}
	var resp messages.StatusResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return messages.TxStatus{}, fmt.Errorf("natstx: unreadable answer on %s: %w", subject, err)
	}
	if resp.Error != "" {
		return messages.TxStatus{}, errors.New(resp.Error)
	}
	if resp.Status == nil {
		return messages.TxStatus{}, fmt.Errorf("natstx: answer on %s has neither status nor error", subject)
	}
	return *resp.Status, nil
}

// injectTrace puts the W3C trace context of ctx's span, if it has one, in
// h (messages.HeaderTraceParent, HeaderTraceState), whatever propagator is
// set globally.
func injectTrace(ctx context.Context, h nats.Header) {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	for _, k := range []string{messages.HeaderTraceParent, messages.HeaderTraceState} {
		if v := carrier.Get(k); v != "" {
			h.Set(k, v)
		}
	}
}

// bucket opens the status bucket, and returns the JetStream API it is in.
func (c *Client) bucket(ctx context.Context) (jetstream.JetStream, jetstream.KeyValue, error) {
	js, err := c.jetStream(ctx)
	if err != nil {
		return nil, nil, err
	}
	kv, err := js.KeyValue(ctx, messages.StatusBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil, fmt.Errorf("natstx: no status bucket %s on this NATS: no coordinator has run here", messages.StatusBucket)
	}
	return js, kv, err
}

// Status returns the latest status of transaction id; errors.Is(err,
// ErrUnknownTx) when no status is held (never run, or past the retention).
func (c *Client) Status(ctx context.Context, id string) (messages.TxStatus, error) {
	if err := messages.ValidateName("transaction ID", id); err != nil {
		return messages.TxStatus{}, err
	}
	_, kv, err := c.bucket(ctx)
	if err != nil {
		return messages.TxStatus{}, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return messages.TxStatus{ID: id}, fmt.Errorf("%w: %s", ErrUnknownTx, id)
	}
	if err != nil {
		return messages.TxStatus{}, err
	}
	return decodeStatus(e)
}

// List returns the status of every transaction held (within the retention),
// only those in the given states if any are named.
func (c *Client) List(ctx context.Context, states ...string) ([]messages.TxStatus, error) {
	for _, s := range states {
		if _, err := txn.ParseState(s); err != nil && !slices.Contains(sagaStates, saga.State(s)) {
			return nil, fmt.Errorf("%w, or a saga state (%s)", err, strings.Join(sagaStateNames(), ", "))
		}
	}
	_, kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	w, stop, err := watchAll(ctx, kv, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer stop()
	var out []messages.TxStatus
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok || e == nil { // nil marks the end of the current values
				return out, nil
			}
			st, err := decodeStatus(e)
			if err != nil {
				continue
			}
			if len(states) == 0 || slices.Contains(states, st.State) {
				out = append(out, st)
			}
		}
	}
}

// Watch streams status changes from now on until ctx ends; the channel is
// closed then.
func (c *Client) Watch(ctx context.Context) (<-chan messages.TxStatus, error) {
	js, kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	// Start right after the bucket's last write, by sequence: a watch that
	// only asks for new writes can miss the first ones when its consumer is
	// recreated (an ordered consumer that lost a heartbeat) before anything
	// was delivered.
	stream, err := js.Stream(ctx, messages.StatusStream)
	if err != nil {
		return nil, err
	}
	from := stream.CachedInfo().State.LastSeq + 1
	w, stop, err := watchAll(ctx, kv, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	ch := make(chan messages.TxStatus, 64)
	go func() {
		defer close(ch)
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				st, err := decodeStatus(e)
				if err != nil {
					continue
				}
				select {
				case ch <- st:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch, nil
}

func decodeStatus(e jetstream.KeyValueEntry) (messages.TxStatus, error) {
	var st messages.TxStatus
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, fmt.Errorf("natstx: status of %s is unreadable: %w", e.Key(), err)
	}
	return st, nil
}
