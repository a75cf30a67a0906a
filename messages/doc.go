// Package messages is natstx's wire protocol: the commands a coordinator sends to
// participants (prepare, commit, abort), the replies they send back (a vote or an
// acknowledgement), the subject names both travel on, and the headers that carry
// them.
//
// It does no I/O and imports no NATS client: headers are plain
// map[string][]string values, which convert directly to nats.Header. Every decoder
// returns an error for malformed input and never panics (see the fuzz tests).
//
// # Subjects
//
//	natstx.cmd.<participant>.<txid>            commands, stored in the JetStream stream NATSTX_CMD
//	natstx.cmd.<participant>.batch.<id>        a batch of commands for one participant (batch.go)
//	natstx.reply.<coordinator>.<participant>   votes and acknowledgements, plain NATS
//
// A command's reply subject travels in the Natstx-Reply-To header, because the
// reply field of a publish into a stream is where JetStream sends its PubAck.
// The participant's name in the reply subject lets NATS permissions allow a
// participant to reply only as itself; a coordinator drops a reply whose
// subject and Natstx-Participant header disagree.
package messages
