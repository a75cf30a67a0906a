package messages

import (
	"fmt"
	"strconv"
	"strings"
)

// Subject prefixes and the names of the JetStream resources natstx uses.
const (
	// CommandPrefix starts every command subject.
	CommandPrefix = "natstx.cmd"
	// ReplyPrefix starts every reply subject: natstx.reply.<instance>.<participant>.
	ReplyPrefix = "natstx.reply"
	// CommandStream is the JetStream stream that stores commands until a
	// participant has handled them.
	CommandStream = "NATSTX_CMD"
	// CommandSubjects is the subject filter of CommandStream.
	CommandSubjects = CommandPrefix + ".>"
)

// MaxNameLen bounds participant names, transaction IDs and instance names, so
// that subjects, message IDs and record keys stay short.
const MaxNameLen = 128

// CommandSubject is the subject a command for participant about transaction
// txid is published on.
func CommandSubject(participant, txid string) string {
	return CommandPrefix + "." + participant + "." + txid
}

// ParticipantFilter is the subject filter that selects every command for one
// participant.
func ParticipantFilter(participant string) string {
	return CommandPrefix + "." + participant + ".>"
}

// ReplySubject is the subject on which coordinator instance expects the
// replies of one participant. Naming the participant in the subject lets NATS
// permissions pin a participant to its own replies (publish allowed on
// natstx.reply.*.<name> only); the coordinator drops a reply whose subject
// and Natstx-Participant header disagree (CheckReplySubject).
func ReplySubject(instance, participant string) string {
	return ReplyPrefix + "." + instance + "." + participant
}

// ReplyFilter is the subject filter of every reply to coordinator instance.
func ReplyFilter(instance string) string {
	return ReplyPrefix + "." + instance + ".*"
}

// ParseReplySubject splits a reply subject into its instance and participant;
// ok is false when subject is not of the form ReplySubject gives.
func ParseReplySubject(subject string) (instance, participant string, ok bool) {
	rest, found := strings.CutPrefix(subject, ReplyPrefix+".")
	if !found {
		return "", "", false
	}
	instance, participant, found = strings.Cut(rest, ".")
	if !found || instance == "" || participant == "" || strings.Contains(participant, ".") {
		return "", "", false
	}
	return instance, participant, true
}

// CheckReplySubject checks that reply r came on the reply subject of the
// participant it names: a reply published by one participant in the name of
// another is malformed.
func CheckReplySubject(subject string, r Reply) error {
	_, p, ok := ParseReplySubject(subject)
	if !ok {
		return fmt.Errorf("%w: reply subject %q is not %s.<instance>.<participant>", ErrMalformed, subject, ReplyPrefix)
	}
	if p != r.Participant {
		return fmt.Errorf("%w: reply in the name of participant %q came on the reply subject of participant %q", ErrMalformed, r.Participant, p)
	}
	return nil
}

// CheckRequestReply checks the reply subject of a request to a coordinator
// or a participant (the API, an in-doubt question, an audit) before it is
// answered there. The answerer may publish where the asker may not: an
// answer sent to a JetStream or system subject ($JS..., $KV..., $SYS...)
// would be stored as, say, a transaction's decision record, and one sent to
// a protocol subject (natstx...) would pass for a command, a reply or a
// request. So a reply subject must be an inbox-like subject outside both:
// not starting with "$" or with "natstx.", no wildcard, no white space.
func CheckRequestReply(reply string) error {
	if reply == "" {
		return fmt.Errorf("%w: the request has no reply subject", ErrMalformed)
	}
	if err := validateSubject("reply subject", reply); err != nil {
		return err
	}
	if strings.HasPrefix(reply, "$") || strings.HasPrefix(reply, "natstx.") {
		return fmt.Errorf("%w: reply subject %q is a JetStream, system or protocol subject; a request is answered only on an inbox", ErrMalformed, reply)
	}
	return nil
}

// ConsumerName is the durable JetStream consumer shared by every instance of
// one participant.
func ConsumerName(participant string) string {
	return "natstx-" + participant
}

// MsgID is the Nats-Msg-Id of a command sent by no particular sender (see
// Command.MsgID): the same command published twice (a publish retried after
// a lost PubAck) is stored once by the server, while a deliberate re-send
// carries a new attempt number and is stored again.
func MsgID(txid string, op Op, participant string, attempt int) string {
	var buf [128]byte
	return string(appendMsgID(buf[:0], txid, op, participant, attempt, "", ""))
}

// appendMsgID appends "<txid>.<op>.<participant>.<attempt>" to b, then
// ".<step>" and ".<sender>" for those that are not empty.
func appendMsgID(b []byte, txid string, op Op, participant string, attempt int, step, sender string) []byte {
	b = append(append(append(append(append(append(b, txid...), '.'), op...), '.'), participant...), '.')
	b = strconv.AppendInt(b, int64(attempt), 10)
	if step != "" {
		b = append(append(b, '.'), step...)
	}
	if sender != "" {
		b = append(append(b, '.'), sender...)
	}
	return b
}

// ValidateName checks that s can be used as a participant name, transaction ID
// or coordinator instance name: 1 to MaxNameLen characters from [A-Za-z0-9_-].
// what names the field in the error ("participant", "transaction ID", ...).
func ValidateName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes long, the limit is %d", ErrInvalidName, what, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		// Byte by byte: the first byte of a character that is not ASCII is
		// not a name byte either.
		if b := s[i]; !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return fmt.Errorf("%w: %s %q has %q at byte %d; use only letters, digits, '-' and '_'", ErrInvalidName, what, s, b, i)
		}
	}
	return nil
}
