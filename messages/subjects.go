package messages

import (
	"fmt"
	"strings"
)

// Subject prefixes and the names of the JetStream resources natstx uses.
const (
	// CommandPrefix starts every command subject.
	CommandPrefix = "natstx.cmd"
	// ReplyPrefix starts every coordinator's reply subject.
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

// ReplySubject is the subject on which coordinator instance expects replies.
func ReplySubject(instance string) string {
	return ReplyPrefix + "." + instance
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
	return fmt.Sprintf("%s.%s.%s.%d", txid, op, participant, attempt)
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
	if i := strings.IndexFunc(s, func(r rune) bool { return !nameRune(r) }); i >= 0 {
		return fmt.Errorf("%w: %s %q has %q at byte %d; use only letters, digits, '-' and '_'", ErrInvalidName, what, s, s[i], i)
	}
	return nil
}

func nameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}
