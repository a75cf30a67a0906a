package messages

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the protocol version this build speaks; it travels in
// HeaderVersion on every message. Version 2 added the saga operations
// (action, compensate), HeaderStep, HeaderCode and the result Refused;
// version 3 gave each participant its own reply subject
// (natstx.reply.<instance>.<participant>, see ReplySubject); version 4 added
// batches of commands and of replies (HeaderBatch, see batch.go); version 5
// added the W3C trace context of a command (HeaderTraceParent,
// HeaderTraceState); version 6 added the read-only vote (VoteReadOnly) and
// one-phase commit (OpCommitOnePhase).
const Version = 6

// Header names. Nats-Msg-Id is JetStream's own de-duplication header.
const (
	HeaderVersion     = "Natstx-Version"
	HeaderTxID        = "Natstx-Txid"
	HeaderOp          = "Natstx-Op"
	HeaderParticipant = "Natstx-Participant"
	HeaderDeadline    = "Natstx-Deadline"
	HeaderAttempt     = "Natstx-Attempt"
	HeaderReplyTo     = "Natstx-Reply-To"
	HeaderResult      = "Natstx-Result"
	// HeaderStep names the saga step of an action or compensate command and
	// of its reply; absent on two-phase commit messages.
	HeaderStep = "Natstx-Step"
	// HeaderCode is an optional error code on a reply (Refused or Failed),
	// which a saga's retry policy may list as never retried.
	HeaderCode  = "Natstx-Code"
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderTraceParent and HeaderTraceState carry a command's W3C trace
	// context (https://www.w3.org/TR/trace-context/), spelled as the W3C
	// spells them; optional. A participant continues the trace around its
	// handler; a malformed value only starts a new trace.
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// MaxTraceHeaderLen bounds HeaderTraceParent and HeaderTraceState (the W3C
// limit of tracestate); a longer value is dropped, not an error.
const MaxTraceHeaderLen = 512

// MaxCodeLen bounds HeaderCode.
const MaxCodeLen = 64

// MaxReasonLen bounds the reason text of a reply; Body cuts longer reasons
// and decoders reject them.
const MaxReasonLen = 1024

// Op is a command's operation.
type Op string

// The operations of two-phase commit.
const (
	OpPrepare Op = "prepare"
	OpCommit  Op = "commit"
	OpAbort   Op = "abort"
	// OpCommitOnePhase (since protocol 6) is sent instead of prepare to
	// the only participant of a transaction: do the work and commit it at
	// once. The participant decides the outcome: it answers Ack (committed)
	// or VoteAbort (it will never commit), and is sent neither commit nor
	// abort.
	OpCommitOnePhase Op = "commit-one-phase"
)

// The operations of a saga step: do it, and undo it.
const (
	OpAction     Op = "action"
	OpCompensate Op = "compensate"
)

// Valid reports whether o is an operation of this protocol version.
func (o Op) Valid() bool { return o.TwoPhase() || o.Saga() }

// TwoPhase reports whether o is an operation of two-phase commit.
func (o Op) TwoPhase() bool {
	return o == OpPrepare || o == OpCommit || o == OpAbort || o == OpCommitOnePhase
}

// Saga reports whether o is an operation of a saga step.
func (o Op) Saga() bool { return o == OpAction || o == OpCompensate }

// CarriesPayload reports whether a command of operation o may carry a
// payload: prepare, commit-one-phase, action and compensate do.
func (o Op) CarriesPayload() bool { return o == OpPrepare || o == OpCommitOnePhase || o.Saga() }

// Votes reports whether o asks a participant for its vote: prepare and
// commit-one-phase, whose answer decides the transaction.
func (o Op) Votes() bool { return o == OpPrepare || o == OpCommitOnePhase }

// Result is what a participant answers to a command.
type Result string

// The results a participant can send.
const (
	// VoteCommit answers prepare: the participant has staged its part and
	// promises to commit it if told to.
	VoteCommit Result = "vote-commit"
	// VoteAbort answers prepare: the participant cannot do its part; Reason
	// says why.
	VoteAbort Result = "vote-abort"
	// VoteReadOnly answers prepare (since protocol 6): the participant's part
	// changed nothing and holds nothing, so it needs neither commit nor abort;
	// it counts as a vote commit and is sent no second phase.
	VoteReadOnly Result = "vote-read-only"
	// Ack answers commit or abort: the outcome is applied durably.
	Ack Result = "ack"
	// Failed answers a command the participant could not handle this time (a
	// malformed command, a commit that failed and will be retried, a saga
	// step's action or compensation that may succeed later); Reason says why.
	// It never changes a transaction's outcome by itself.
	Failed Result = "failed"
	// Refused answers a saga action the participant will never do (a
	// business rule: no stock, no funds); the saga compensates. Reason says
	// why, Code may classify it.
	Refused Result = "refused"
)

// Valid reports whether r is a result of this protocol version.
func (r Result) Valid() bool {
	return r == VoteCommit || r == VoteAbort || r == VoteReadOnly || r == Ack || r == Failed || r == Refused
}

// Vote reports whether r answers prepare: vote-commit, vote-abort or
// vote-read-only.
func (r Result) Vote() bool { return r == VoteCommit || r == VoteAbort || r == VoteReadOnly }

// Command is what a coordinator asks one participant to do for one
// transaction.
type Command struct {
	TxID        string
	Op          Op
	Participant string
	// Deadline is when the whole transaction must have decided; a participant
	// votes abort on a prepare that arrives after it. Zero means none.
	Deadline time.Time
	// Attempt counts re-sends of this operation, from 1.
	Attempt int
	// ReplyTo is the subject the reply goes to.
	ReplyTo string
	// Payload is the participant's part of the transaction (prepare, or a
	// saga step's action or compensation), opaque to natstx.
	Payload []byte
	// Step names the saga step of an action or compensate command; empty
	// for two-phase commit.
	Step string
	// Sender names the coordinator incarnation that publishes the command.
	// It only goes into the Nats-Msg-Id header (see MsgID) and is not
	// decoded.
	Sender string
	// TraceParent and TraceState are the W3C trace context of the
	// coordinator's span for this command (HeaderTraceParent,
	// HeaderTraceState); empty when tracing is off.
	TraceParent, TraceState string
}

// Subject is the subject this command is published on.
func (c Command) Subject() string { return CommandSubject(c.Participant, c.TxID) }

// Validate checks every field of c.
func (c Command) Validate() error {
	if err := ValidateName("transaction ID", c.TxID); err != nil {
		return err
	}
	if err := ValidateName("participant", c.Participant); err != nil {
		return err
	}
	if !c.Op.Valid() {
		return fmt.Errorf("%w: unknown operation %q", ErrMalformed, c.Op)
	}
	if c.Attempt < 1 {
		return fmt.Errorf("%w: attempt %d is below 1", ErrMalformed, c.Attempt)
	}
	if err := validateSubject("reply subject", c.ReplyTo); err != nil {
		return err
	}
	if !c.Deadline.IsZero() && c.Deadline.UnixMilli() <= 0 {
		return fmt.Errorf("%w: deadline %v is not after 1970-01-01", ErrMalformed, c.Deadline)
	}
	if !c.Op.CarriesPayload() && len(c.Payload) > 0 {
		return fmt.Errorf("%w: %s carries a payload; only prepare, action and compensate do", ErrMalformed, c.Op)
	}
	return validateStep(c.Op, c.Step)
}

// validateStep checks that a saga operation names its step and a two-phase
// commit operation names none.
func validateStep(op Op, step string) error {
	switch {
	case op.Saga():
		if err := ValidateName("saga step", step); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrMalformed, op, err)
		}
	case step != "":
		return fmt.Errorf("%w: %s carries header %s; only saga operations do", ErrMalformed, op, HeaderStep)
	}
	return nil
}

// MsgID is c's Nats-Msg-Id: MsgID of its fields, then its Sender if any. A
// coordinator that took a transaction over, or restarted, counts attempts
// from 1 again; its Sender keeps its sends from being dropped as duplicates
// of the previous owner's within the stream's duplicate window.
func (c Command) MsgID() string {
	var buf [192]byte
	return string(appendMsgID(buf[:0], c.TxID, c.Op, c.Participant, c.Attempt, c.Step, c.Sender))
}

// Header encodes c's fields, all but the payload, as message headers.
func (c Command) Header() map[string][]string {
	var buf [maxFields]headerField
	return headerMap(c.fields(&buf), HeaderMsgID, c.MsgID())
}

// fields lists the headers of c but HeaderMsgID, in the byte order of their
// names: the order they have in a batch item. The list is in *buf.
func (c *Command) fields(buf *[maxFields]headerField) []headerField {
	fs := append(buf[:0], headerField{name: HeaderAttempt, num: int64(c.Attempt), numeric: true})
	if !c.Deadline.IsZero() {
		fs = append(fs, headerField{name: HeaderDeadline, num: c.Deadline.UnixMilli(), numeric: true})
	}
	fs = append(fs,
		headerField{name: HeaderOp, value: string(c.Op)},
		headerField{name: HeaderParticipant, value: c.Participant},
		headerField{name: HeaderReplyTo, value: c.ReplyTo})
	if c.Step != "" {
		fs = append(fs, headerField{name: HeaderStep, value: c.Step})
	}
	fs = append(fs, headerField{name: HeaderTxID, value: c.TxID}, headerField{name: HeaderVersion, value: versionText})
	if c.TraceParent != "" {
		fs = append(fs, headerField{name: HeaderTraceParent, value: c.TraceParent})
		if c.TraceState != "" {
			fs = append(fs, headerField{name: HeaderTraceState, value: c.TraceState})
		}
	}
	return fs
}

// maxFields bounds the headers of one command or reply.
const maxFields = 10

// headerField is one header of a message being encoded: its name and its
// value, which is a number when numeric (so that a batch encoder appends the
// digits without making a string of them).
type headerField struct {
	name, value string
	num         int64
	numeric     bool
}

// text is f's value.
func (f *headerField) text() string {
	if f.numeric {
		return strconv.FormatInt(f.num, 10)
	}
	return f.value
}

// lineLen is the length of f's header line "Name: value\r\n".
func (f *headerField) lineLen() int {
	n := len(f.value)
	if f.numeric {
		var digits [20]byte
		n = len(strconv.AppendInt(digits[:0], f.num, 10))
	}
	return len(f.name) + n + 4
}

// appendLine appends f's header line "Name: value\r\n" to b.
func (f *headerField) appendLine(b []byte) []byte {
	b = append(append(b, f.name...), ": "...)
	if f.numeric {
		b = strconv.AppendInt(b, f.num, 10)
	} else {
		b = append(b, f.value...)
	}
	return append(b, "\r\n"...)
}

// headerMap returns fs, and the header extra with value extraValue unless
// extra is "", as message headers: a map of its exact size whose values
// share one backing array, each capped so that appending to one copies it.
func headerMap(fs []headerField, extra, extraValue string) map[string][]string {
	n := len(fs)
	if extra != "" {
		n++
	}
	h := make(map[string][]string, n)
	vs := make([]string, n)
	for i := range fs {
		vs[i] = fs[i].text()
		h[fs[i].name] = vs[i : i+1 : i+1]
	}
	if extra != "" {
		vs[n-1] = extraValue
		h[extra] = vs[n-1 : n : n]
	}
	return h
}

// DecodeCommand decodes a command from a message's headers and body, and
// validates it.
func DecodeCommand(h map[string][]string, body []byte) (Command, error) {
	var c Command
	if err := checkVersion(h); err != nil {
		return c, err
	}
	// One header after the other, not a loop over a table of pointers to
	// the destinations: with the table, c and the locals escaped to the heap.
	var err error
	var op, attempt, deadline string
	if c.TxID, err = single(h, HeaderTxID, false); err != nil {
		return c, err
	}
	if op, err = single(h, HeaderOp, false); err != nil {
		return c, err
	}
	if c.Participant, err = single(h, HeaderParticipant, false); err != nil {
		return c, err
	}
	if attempt, err = single(h, HeaderAttempt, false); err != nil {
		return c, err
	}
	if c.ReplyTo, err = single(h, HeaderReplyTo, false); err != nil {
		return c, err
	}
	if deadline, err = single(h, HeaderDeadline, true); err != nil {
		return c, err
	}
	if c.Step, err = single(h, HeaderStep, true); err != nil {
		return c, err
	}
	c.Op = Op(op)
	if c.Attempt, err = strconv.Atoi(attempt); err != nil {
		return c, fmt.Errorf("%w: %s %q is not a number", ErrMalformed, HeaderAttempt, attempt)
	}
	if deadline != "" {
		ms, err := strconv.ParseInt(deadline, 10, 64)
		if err != nil || ms <= 0 {
			return c, fmt.Errorf("%w: %s %q is not a positive Unix time in milliseconds", ErrMalformed, HeaderDeadline, deadline)
		}
		c.Deadline = time.UnixMilli(ms)
	}
	if len(body) > 0 {
		c.Payload = body
	}
	c.TraceParent, c.TraceState = traceHeader(h, HeaderTraceParent), traceHeader(h, HeaderTraceState)
	if c.TraceParent == "" {
		c.TraceState = ""
	}
	return c, c.Validate()
}

// Reply is a participant's answer to one command.
type Reply struct {
	TxID        string
	Op          Op
	Participant string
	Result      Result
	// Attempt echoes the command's attempt, for tracing.
	Attempt int
	// Reason explains VoteAbort, Refused and Failed; at most MaxReasonLen
	// bytes.
	Reason string
	// Step echoes a saga command's step; empty for two-phase commit.
	Step string
	// Code optionally classifies a Refused or Failed result (at most
	// MaxCodeLen bytes of [A-Za-z0-9_-]).
	Code string
}

// Validate checks every field of r.
func (r Reply) Validate() error {
	if err := ValidateName("transaction ID", r.TxID); err != nil {
		return err
	}
	if err := ValidateName("participant", r.Participant); err != nil {
		return err
	}
	if !r.Op.Valid() {
		return fmt.Errorf("%w: unknown operation %q", ErrMalformed, r.Op)
	}
	if !r.Result.Valid() {
		return fmt.Errorf("%w: unknown result %q", ErrMalformed, r.Result)
	}
	switch {
	case r.Op == OpPrepare && (r.Result == Ack || r.Result == Refused):
		return fmt.Errorf("%w: prepare is answered with a vote, not %q", ErrMalformed, r.Result)
	case r.Op == OpCommitOnePhase && (r.Result == VoteCommit || r.Result == VoteReadOnly || r.Result == Refused):
		return fmt.Errorf("%w: commit-one-phase is answered with ack, vote-abort or failed, not %q", ErrMalformed, r.Result)
	case r.Op == OpCommitOnePhase: // ack, vote-abort or failed
	case r.Op != OpPrepare && r.Result.Vote():
		return fmt.Errorf("%w: %s is answered with an ack, not %q", ErrMalformed, r.Op, r.Result)
	case r.Result == Refused && r.Op != OpAction:
		return fmt.Errorf("%w: only an action can be refused, not %s", ErrMalformed, r.Op)
	}
	if err := validateStep(r.Op, r.Step); err != nil {
		return err
	}
	if r.Code != "" {
		if len(r.Code) > MaxCodeLen {
			return fmt.Errorf("%w: %s is %d bytes long, the limit is %d", ErrMalformed, HeaderCode, len(r.Code), MaxCodeLen)
		}
		if err := ValidateName(HeaderCode, r.Code); err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
	}
	if r.Attempt < 1 {
		return fmt.Errorf("%w: attempt %d is below 1", ErrMalformed, r.Attempt)
	}
	if !utf8.ValidString(r.Reason) {
		return fmt.Errorf("%w: reason is not UTF-8", ErrMalformed)
	}
	if len(r.Reason) > MaxReasonLen {
		return fmt.Errorf("%w: reason is %d bytes long, the limit is %d", ErrMalformed, len(r.Reason), MaxReasonLen)
	}
	return nil
}

// Header encodes r's fields as message headers; the reason travels in the
// body (see Body).
func (r Reply) Header() map[string][]string {
	var buf [maxFields]headerField
	return headerMap(r.fields(&buf), "", "")
}

// fields lists the headers of r in the byte order of their names: the
// order they have in a batch item. The list is in *buf.
func (r *Reply) fields(buf *[maxFields]headerField) []headerField {
	fs := append(buf[:0], headerField{name: HeaderAttempt, num: int64(r.Attempt), numeric: true})
	if r.Code != "" {
		fs = append(fs, headerField{name: HeaderCode, value: r.Code})
	}
	fs = append(fs,
		headerField{name: HeaderOp, value: string(r.Op)},
		headerField{name: HeaderParticipant, value: r.Participant},
		headerField{name: HeaderResult, value: string(r.Result)})
	if r.Step != "" {
		fs = append(fs, headerField{name: HeaderStep, value: r.Step})
	}
	return append(fs, headerField{name: HeaderTxID, value: r.TxID}, headerField{name: HeaderVersion, value: versionText})
}

// Body is the message body of r: its reason, cut to MaxReasonLen bytes at a
// character boundary.
func (r Reply) Body() []byte { return []byte(Truncate(r.Reason, MaxReasonLen)) }

// DecodeReply decodes a reply from a message's headers and body, and validates
// it.
func DecodeReply(h map[string][]string, body []byte) (Reply, error) {
	var r Reply
	if err := checkVersion(h); err != nil {
		return r, err
	}
	// One header after the other, as in DecodeCommand.
	var err error
	var op, result, attempt string
	if r.TxID, err = single(h, HeaderTxID, false); err != nil {
		return r, err
	}
	if op, err = single(h, HeaderOp, false); err != nil {
		return r, err
	}
	if r.Participant, err = single(h, HeaderParticipant, false); err != nil {
		return r, err
	}
	if result, err = single(h, HeaderResult, false); err != nil {
		return r, err
	}
	if attempt, err = single(h, HeaderAttempt, false); err != nil {
		return r, err
	}
	if r.Step, err = single(h, HeaderStep, true); err != nil {
		return r, err
	}
	if r.Code, err = single(h, HeaderCode, true); err != nil {
		return r, err
	}
	r.Op, r.Result = Op(op), Result(result)
	if r.Attempt, err = strconv.Atoi(attempt); err != nil || r.Attempt < 1 {
		return r, fmt.Errorf("%w: %s %q is not a positive number", ErrMalformed, HeaderAttempt, attempt)
	}
	if !utf8.Valid(body) {
		return r, fmt.Errorf("%w: reason is not UTF-8", ErrMalformed)
	}
	r.Reason = string(body)
	return r, r.Validate()
}

// Truncate cuts s to at most n bytes without splitting a UTF-8 character.
func Truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

var versionText = strconv.Itoa(Version)

func checkVersion(h map[string][]string) error {
	v, err := single(h, HeaderVersion, false)
	if err != nil {
		return err
	}
	if v != versionText {
		return fmt.Errorf("%w: %s is %q, this build speaks %d", ErrVersion, HeaderVersion, v, Version)
	}
	return nil
}

// single returns the one value of header name. A missing header is an error
// unless optional; a repeated one always is.
func single(h map[string][]string, name string, optional bool) (string, error) {
	vs := h[name]
	switch {
	case len(vs) == 0 && optional:
		return "", nil
	case len(vs) == 0:
		if other, ok := foldedName(h, name); ok {
			return "", fmt.Errorf("%w: header %s is missing; %s is there, but header names are case-sensitive", ErrMalformed, name, other)
		}
		return "", fmt.Errorf("%w: header %s is missing", ErrMalformed, name)
	case len(vs) > 1:
		return "", fmt.Errorf("%w: header %s appears %d times", ErrMalformed, name, len(vs))
	}
	return vs[0], nil
}

// foldedName returns the name of a header of h that is name but for case.
func foldedName(h map[string][]string, name string) (string, bool) {
	for k := range h {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return "", false
}

// RejectedTxID returns the transaction ID that a reply the coordinator
// could not decode names, so that its rejection can be told to the
// transaction: the one value of HeaderTxID, or of a header whose name
// differs from it only in case (a peer that got the case wrong), if that
// value is a valid name; "" if there is none.
func RejectedTxID(h map[string][]string) string {
	vs := h[HeaderTxID]
	if len(vs) == 0 {
		if other, ok := foldedName(h, HeaderTxID); ok {
			vs = h[other]
		}
	}
	if len(vs) != 1 || ValidateName("transaction ID", vs[0]) != nil {
		return ""
	}
	return vs[0]
}

// validateSubject checks that s is a NATS subject a reply can be published to:
// dot-separated non-empty tokens, no wildcards, no white space.
func validateSubject(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrMalformed, what)
	}
	if len(s) > 4*MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes long", ErrMalformed, what, len(s))
	}
	prev := byte('.')
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b == '.' && prev == '.':
			return fmt.Errorf("%w: %s %q has an empty token", ErrMalformed, what, s)
		case b == '*' || b == '>' || b <= ' ' || b == 0x7f:
			return fmt.Errorf("%w: %s %q has %q at byte %d", ErrMalformed, what, s, b, i)
		}
		prev = b
	}
	if prev == '.' {
		return fmt.Errorf("%w: %s %q ends with '.'", ErrMalformed, what, s)
	}
	return nil
}

// traceHeader returns the one value of trace header name, or "" when it is
// absent, repeated or longer than MaxTraceHeaderLen: a broken trace context
// starts a new trace, it does not fail the command.
func traceHeader(h map[string][]string, name string) string {
	if v := h[name]; len(v) == 1 && len(v[0]) <= MaxTraceHeaderLen {
		return v[0]
	}
	return ""
}
