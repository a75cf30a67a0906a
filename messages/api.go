package messages

import "time"

// The coordinator's API: JSON request/reply on plain NATS subjects, served by
// every coordinator instance, and the status bucket every state change of a
// transaction is written to, which anyone can read or watch.
const (
	// APIBegin starts a transaction (BeginRequest -> StatusResponse). Served
	// in the queue group APIQueue: one coordinator instance answers.
	APIBegin = "natstx.api.v1.begin"
	// APIQueue is the queue group of APIBegin.
	APIQueue = "natstx-api"
	// StatusBucket is the JetStream key-value bucket holding each
	// transaction's latest TxStatus under its ID, for the retention time.
	StatusBucket = "natstx_status"
)

// APIAbort is the subject on which coordinator instance answers
// AbortRequests for the transactions it owns.
func APIAbort(instance string) string { return "natstx.api.v1." + instance + ".abort" }

// BeginRequest asks a coordinator to run a transaction.
type BeginRequest struct {
	// ID is the transaction ID; empty means the coordinator assigns one.
	ID           string            `json:"id,omitempty"`
	Participants []ParticipantSpec `json:"participants"`
	// TimeoutMs overrides the coordinator's prepare timeout, in milliseconds.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// CallerTimeoutMs, when positive, is what the caller's deadline leaves,
	// in milliseconds: the prepare timeout (TimeoutMs, or the coordinator's
	// without one) is cut to it when longer. Client.Begin sends it for a
	// context deadline when the request has no TimeoutMs.
	CallerTimeoutMs int64 `json:"caller_timeout_ms,omitempty"`
	// Wait asks for the reply only once the outcome is known; otherwise the
	// reply comes as soon as the transaction has begun.
	Wait bool `json:"wait,omitempty"`
}

// ParticipantSpec names one participant and the payload it receives with
// prepare (bytes; base64 in JSON).
type ParticipantSpec struct {
	Name    string `json:"name"`
	Payload []byte `json:"payload,omitempty"`
}

// AbortRequest asks the owning coordinator to abort a transaction that has
// not decided.
type AbortRequest struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
	// Who names the operator or tool that asks, for the history.
	Who string `json:"who,omitempty"`
}

// StatusResponse answers an API request: the transaction's status, or an
// error saying what was wrong.
type StatusResponse struct {
	Status *TxStatus `json:"status,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// TxStatus is the state of one transaction as the status bucket holds it.
type TxStatus struct {
	ID string `json:"id"`
	// Protocol is ProtocolSaga for a saga; empty (or Protocol2PC) for
	// two-phase commit.
	Protocol string `json:"protocol,omitempty"`
	// State is preparing, committing, aborting, committed or aborted for
	// two-phase commit; running, forward-stuck, compensating,
	// compensation-stuck, completed or compensated for a saga.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// TimedOut is true for an abort caused by a vote missing at the deadline.
	TimedOut bool `json:"timed_out,omitempty"`
	// OnePhase is true for a transaction sent commit-one-phase: its only
	// participant decides the outcome (docs/PROTOCOL.md).
	OnePhase bool `json:"one_phase,omitempty"`
	// Owner is the coordinator instance driving the transaction.
	Owner        string              `json:"owner"`
	Participants []ParticipantStatus `json:"participants"`
	// Waiting names the participants whose answer the current phase still
	// needs (a vote while preparing, an acknowledgement after the decision).
	Waiting []string `json:"waiting,omitempty"`
	// WaitingSince is when the current phase began: the start while
	// preparing, the decision after it.
	WaitingSince time.Time `json:"waiting_since,omitzero"`
	StartedAt    time.Time `json:"started_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Steps are a saga's steps, in its definition's order.
	Steps []StepStatus `json:"steps,omitempty"`
	// Deadline is when a saga stops going forward; zero means none.
	Deadline time.Time `json:"deadline,omitzero"`
	// History is what happened to the transaction, oldest first: at most
	// MaxHistory events, the first and the latest ones; HistoryDropped
	// counts those left out between them.
	History        []TxEvent `json:"history,omitempty"`
	HistoryDropped int       `json:"history_dropped,omitempty"`
}

// MaxHistory bounds TxStatus.History.
const MaxHistory = 64

// TxEvent is one event of a transaction's history.
type TxEvent struct {
	At time.Time `json:"at"`
	// Event is one of the Event* names.
	Event string `json:"event"`
	// Participant is the participant the event is about, if one.
	Participant string `json:"participant,omitempty"`
	// Step is the saga step the event is about, if one.
	Step string `json:"step,omitempty"`
	// Attempt is the send a command event is about (1 the first).
	Attempt int `json:"attempt,omitempty"`
	// Detail says more: a vote's result, a reason, an error.
	Detail string `json:"detail,omitempty"`
	// By names who caused the event: the coordinator instance, or the
	// operator of an operator action.
	By string `json:"by,omitempty"`
}

// The events of a TxEvent.
const (
	EventBegun     = "begun"     // the transaction or saga began (By: its coordinator)
	EventSent      = "sent"      // a command went out (Detail: its operation)
	EventResent    = "resent"    // a command went out again, for want of an answer
	EventVote      = "vote"      // a participant voted (Detail: yes, or no and why)
	EventAck       = "ack"       // a participant acknowledged the decision
	EventFailed    = "failed"    // a participant answered failed (Detail: why)
	EventRejected  = "rejected"  // a participant's reply could not be read
	EventTimeout   = "timeout"   // the deadline passed without every vote
	EventDecided   = "decided"   // the decision was recorded (Detail: commit or abort, and why)
	EventRecovered = "recovered" // another instance took the transaction over (By)
	EventOperator  = "operator"  // an operator acted (By: who; Detail: the action and why)
	EventStep      = "step"      // a saga step changed state (Detail: its new status)
	EventEnded     = "ended"     // the transaction reached its final state (Detail: which)
)

// The protocols of TxStatus.Protocol.
const (
	Protocol2PC  = "2pc"
	ProtocolSaga = "saga"
)

// StepStatus is the state of one saga step: what it waits for, how often it
// was tried, its last error and when it is tried next.
type StepStatus struct {
	Name        string `json:"name"`
	Participant string `json:"participant"`
	// Status is pending, running, retrying, done, failed, compensating,
	// compensation-retrying, compensated or compensated-by-hand.
	Status string `json:"status"`
	// Attempts and CompensationAttempts count the attempts sent.
	Attempts             int `json:"attempts,omitempty"`
	CompensationAttempts int `json:"compensation_attempts,omitempty"`
	// LastError and LastCode are the step's last failure.
	LastError string `json:"last_error,omitempty"`
	LastCode  string `json:"last_code,omitempty"`
	// NextRetryAt is when the next attempt goes out, while retrying.
	NextRetryAt time.Time `json:"next_retry_at,omitzero"`
	// Stuck is true while the step has failed beyond the stuck threshold.
	Stuck bool `json:"stuck,omitempty"`
	// Pivot marks the saga's point of no return.
	Pivot bool `json:"pivot,omitempty"`
	// Note says who resolved the step by hand, and why.
	Note string `json:"note,omitempty"`
}

// APISagaBegin starts a saga (SagaBeginRequest -> StatusResponse). Served
// in the queue group APIQueue.
const APISagaBegin = "natstx.api.v1.saga.begin"

// APISagaAct is the subject on which coordinator instance answers
// SagaActRequests for the sagas it owns.
func APISagaAct(instance string) string { return "natstx.api.v1." + instance + ".saga.act" }

// SagaBeginRequest asks a coordinator to run a saga.
type SagaBeginRequest struct {
	// ID is the saga's ID; empty means the coordinator assigns one.
	ID string `json:"id,omitempty"`
	// Definition is the saga's definition in the saga file format, YAML or
	// JSON (docs/SAGA.md).
	Definition string `json:"definition"`
	// TimeoutMs, when positive, is a deadline for the saga going forward, in
	// milliseconds from its start; the definition's, when sooner, wins.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// Wait asks for the reply only once the saga has completed or been
	// compensated (a stuck saga keeps the request waiting until it times
	// out); otherwise it comes once the saga began.
	Wait bool `json:"wait,omitempty"`
}

// The operator actions of a SagaActRequest.
const (
	// SagaRetry sends the next attempt of every retrying step now.
	SagaRetry = "retry"
	// SagaResolve marks a stuck step resolved by hand: compensated, or,
	// past the pivot, done.
	SagaResolve = "resolve"
	// SagaAbort makes a saga going forward compensate now.
	SagaAbort = "abort"
)

// SagaActRequest is an operator action on a saga, recorded with who asked
// and why.
type SagaActRequest struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	// Step is the step a resolve is for.
	Step string `json:"step,omitempty"`
	Who  string `json:"who"`
	Why  string `json:"why"`
}

// ParticipantStatus is what the coordinator knows of one participant.
type ParticipantStatus struct {
	Name string `json:"name"`
	Vote string `json:"vote"` // pending, yes, no
	// Reason is the reason of a no vote or the participant's last failure.
	Reason string `json:"reason,omitempty"`
	// Acked is true once the participant acknowledged the decision.
	Acked bool `json:"acked"`
	// Sends counts the commands sent to it in the current phase.
	Sends int `json:"sends"`
	// Rejected is why the first reply from it that could not be read was
	// rejected (a participant that answers but is not understood).
	Rejected string `json:"rejected,omitempty"`
}

// The coordinator API subjects served in the queue group APIQueue.
const (
	// APIStatus answers a StatusRequest with a StatusResponse.
	APIStatus = "natstx.api.v1.status"
	// APIOutcome answers an OutcomeRequest from a participant in doubt.
	APIOutcome = "natstx.api.v1.outcome"
)

// StatusRequest asks for a transaction's status.
type StatusRequest struct {
	ID string `json:"id"`
}

// OutcomeRequest is a participant in doubt asking how a transaction ended:
// it voted commit and has heard neither commit nor abort.
type OutcomeRequest struct {
	ID          string `json:"id"`
	Participant string `json:"participant"`
	// DeadlineMs is the transaction's decision deadline from its prepare
	// command, in Unix milliseconds (0 if it had none). Before it, an
	// undecided transaction is still "pending".
	DeadlineMs int64 `json:"deadline_ms,omitempty"`
	// AskedAtMs is when the participant asked, in Unix milliseconds (0 if it
	// does not say). A coordinator does not record an abort for a question
	// older than a minute (or half its retention, if less): it may have
	// waited in a paused coordinator while the transaction committed, and
	// is answered with an error instead; the participant asks again.
	AskedAtMs int64 `json:"asked_at_ms,omitempty"`
}

// The outcomes an OutcomeResponse can carry.
const (
	OutcomeCommit  = "commit"
	OutcomeAbort   = "abort"
	OutcomePending = "pending"
)

// OutcomeResponse answers an OutcomeRequest: commit, abort, or pending (ask
// again later), or an error.
type OutcomeResponse struct {
	Outcome string `json:"outcome,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
}

// AuditQueue is the queue group in which the instances of one participant
// answer audit requests.
const AuditQueue = "natstx-audit"

// AuditSubject is where participant answers AuditRequests: what it holds
// locally about given transactions.
func AuditSubject(participant string) string { return "natstx.audit." + participant }

// AuditRequest asks a participant for its local state of each transaction.
type AuditRequest struct {
	IDs []string `json:"ids"`
}

// AuditReadOnly is the audit state of a transaction whose prepare the
// participant answered VoteReadOnly: it holds nothing, whatever the outcome.
const AuditReadOnly = "read-only"

// AuditResponse is a participant's local state of each transaction asked
// about: none, prepared, committed, aborted or read-only (AuditReadOnly).
type AuditResponse struct {
	Participant string            `json:"participant"`
	States      map[string]string `json:"states,omitempty"`
	Error       string            `json:"error,omitempty"`
}
