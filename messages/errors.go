package messages

import "errors"

var (
	// ErrInvalidName is returned when a participant name, transaction ID or
	// instance name is empty, too long, or has a character that is not allowed
	// in a NATS subject token.
	ErrInvalidName = errors.New("natstx: invalid name")
	// ErrMalformed is returned when a message is not a well-formed natstx
	// command or reply: a header is missing, repeated or has a bad value.
	ErrMalformed = errors.New("natstx: malformed message")
	// ErrVersion is returned when a message carries a protocol version this
	// build does not speak.
	ErrVersion = errors.New("natstx: unsupported protocol version")
)
