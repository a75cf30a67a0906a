package messages

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Version is the protocol version this build speaks; it travels in
// HeaderVersion on every message.
const Version = 1

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
	HeaderMsgID       = "Nats-Msg-Id"
)

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
)

// Valid reports whether o is an operation of this protocol version.
func (o Op) Valid() bool { return o == OpPrepare || o == OpCommit || o == OpAbort }

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
	// Ack answers commit or abort: the outcome is applied durably.
	Ack Result = "ack"
	// Failed answers a command the participant could not handle this time (a
	// malformed command, a commit that failed and will be retried); Reason says
	// why. It never changes a transaction's outcome by itself.
	Failed Result = "failed"
)

// Valid reports whether r is a result of this protocol version.
func (r Result) Valid() bool { return r == VoteCommit || r == VoteAbort || r == Ack || r == Failed }

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
	// Payload is the participant's part of the transaction (prepare only),
	// opaque to natstx.
	Payload []byte
	// Sender names the coordinator incarnation that publishes the command.
	// It only goes into the Nats-Msg-Id header (see MsgID) and is not
	// decoded.
	Sender string
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
	if c.Op != OpPrepare && len(c.Payload) > 0 {
		return fmt.Errorf("%w: %s carries a payload; only prepare does", ErrMalformed, c.Op)
	}
	return nil
}

// MsgID is c's Nats-Msg-Id: MsgID of its fields, then its Sender if any. A
// coordinator that took a transaction over, or restarted, counts attempts
// from 1 again; its Sender keeps its sends from being dropped as duplicates
// of the previous owner's within the stream's duplicate window.
func (c Command) MsgID() string {
	id := MsgID(c.TxID, c.Op, c.Participant, c.Attempt)
	if c.Sender != "" {
		id += "." + c.Sender
	}
	return id
}

// Header encodes c's fields, all but the payload, as message headers.
func (c Command) Header() map[string][]string {
	h := map[string][]string{
		HeaderVersion:     {versionText},
		HeaderTxID:        {c.TxID},
		HeaderOp:          {string(c.Op)},
		HeaderParticipant: {c.Participant},
		HeaderAttempt:     {strconv.Itoa(c.Attempt)},
		HeaderReplyTo:     {c.ReplyTo},
		HeaderMsgID:       {c.MsgID()},
	}
	if !c.Deadline.IsZero() {
		h[HeaderDeadline] = []string{strconv.FormatInt(c.Deadline.UnixMilli(), 10)}
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
	var err error
	var op, attempt, deadline string
	for _, f := range []struct {
		name     string
		dst      *string
		optional bool
	}{
		{HeaderTxID, &c.TxID, false},
		{HeaderOp, &op, false},
		{HeaderParticipant, &c.Participant, false},
		{HeaderAttempt, &attempt, false},
		{HeaderReplyTo, &c.ReplyTo, false},
		{HeaderDeadline, &deadline, true},
	} {
		if *f.dst, err = single(h, f.name, f.optional); err != nil {
			return c, err
		}
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
	// Reason explains VoteAbort and Failed; at most MaxReasonLen bytes.
	Reason string
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
	case r.Op == OpPrepare && r.Result == Ack:
		return fmt.Errorf("%w: prepare is answered with a vote, not %q", ErrMalformed, r.Result)
	case r.Op != OpPrepare && (r.Result == VoteCommit || r.Result == VoteAbort):
		return fmt.Errorf("%w: %s is answered with an ack, not %q", ErrMalformed, r.Op, r.Result)
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
	return map[string][]string{
		HeaderVersion:     {versionText},
		HeaderTxID:        {r.TxID},
		HeaderOp:          {string(r.Op)},
		HeaderParticipant: {r.Participant},
		HeaderResult:      {string(r.Result)},
		HeaderAttempt:     {strconv.Itoa(r.Attempt)},
	}
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
	var err error
	var op, result, attempt string
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{HeaderTxID, &r.TxID},
		{HeaderOp, &op},
		{HeaderParticipant, &r.Participant},
		{HeaderResult, &result},
		{HeaderAttempt, &attempt},
	} {
		if *f.dst, err = single(h, f.name, false); err != nil {
			return r, err
		}
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
		return "", fmt.Errorf("%w: header %s is missing", ErrMalformed, name)
	case len(vs) > 1:
		return "", fmt.Errorf("%w: header %s appears %d times", ErrMalformed, name, len(vs))
	}
	return vs[0], nil
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
