package messages

import "strings"

// NATS accounts of a secure deployment. `natstx auth init` puts natstx's
// identities in three accounts:
//
//	NATSTX               the coordinators; JetStream: the command stream and every bucket
//	NATSTX_PARTICIPANTS  the participants; no JetStream of its own
//	NATSTX_OPERATORS     the operators (the CLI's client commands); no JetStream of its own
//
// The NATSTX account exports, and the other two import, only what those
// identities need: the participants their consumers' pulls and acks, the
// reply subjects and the in-doubt question; the operators the coordinator
// API and the reading of the status bucket. The participants' account
// exports the audits to the operators'.
//
// Why accounts and not only permissions: NATS does not check the subject a
// server publishes to on a client's behalf (the reply subject of a request,
// a pull request's among them) against that client's permissions. In one
// account, a participant's pull request with reply subject
// `$KV.natstx_tx.<id>` had the server's empty answer stored in the decision
// bucket. A request that crosses accounts through an import has its reply
// subject replaced by one the server routes back into the requester's
// account, where no natstx stream or bucket listens.
//
// Where an account imports JetStream API subjects, it gets them under
// JetStreamAPIPrefix: the server itself answers `$JS.API.>` in an account
// without JetStream ("JetStream not enabled for account"), which is how a
// client tells that it must use the prefix. Acknowledgements and flow
// control keep their subjects (`$JS.ACK.>`, `$JS.FC.>`): they are the reply
// subjects of the messages delivered, which an import does not rename.

// Account is the name of a NATS account of a secure deployment.
type Account string

// The accounts of a secure deployment.
const (
	// AccountNatstx holds the coordinators and natstx's streams and buckets.
	AccountNatstx Account = "NATSTX"
	// AccountParticipants holds every participant identity.
	AccountParticipants Account = "NATSTX_PARTICIPANTS"
	// AccountOperators holds the operator identities.
	AccountOperators Account = "NATSTX_OPERATORS"
)

// Accounts lists the accounts of a secure deployment, NATSTX first.
func Accounts() []Account {
	return []Account{AccountNatstx, AccountParticipants, AccountOperators}
}

// AccountOf is the account of role's identities.
func AccountOf(role Role) Account {
	switch role {
	case RoleParticipant:
		return AccountParticipants
	case RoleOperator:
		return AccountOperators
	}
	return AccountNatstx
}

// JetStreamAPIPrefix is where the participants' and operators' accounts
// import natstx's JetStream API: `$JS.natstx.API.CONSUMER.INFO.NATSTX_CMD.x`
// there is `$JS.API.CONSUMER.INFO.NATSTX_CMD.x` in the NATSTX account. A
// client in such an account uses it as its JetStream API prefix (nats.go
// jetstream.NewWithAPIPrefix, nats.js `apiPrefix`).
const JetStreamAPIPrefix = "$JS.natstx.API"

// Export is a subject an account offers to others.
type Export struct {
	// Subject may hold wildcards.
	Subject string
	// Service: requests (a service export) rather than a stream of messages.
	Service bool
	// Streamed: a service that answers one request with many messages (a
	// pull request's).
	Streamed bool
}

// Import is a subject an account takes from another.
type Import struct {
	// From is the exporting account.
	From Account
	// Subject is the exported subject (or a part of it).
	Subject string
	// Local is the subject in the importing account, if not Subject.
	Local string
	// Service: a service import; else a stream import.
	Service bool
	// Share: the exporter learns who sent each request (the server adds a
	// Nats-Request-Info header naming the requester's account and user).
	Share bool
}

// jsAPI returns the JetStream API subject rest ("STREAM.INFO.X").
func jsAPI(rest string) string { return jsAPIPrefix + "." + rest }

// jsAPIPrefix is JetStream's own API prefix.
const jsAPIPrefix = "$JS.API"

// localJS renames a JetStream API subject into JetStreamAPIPrefix.
func localJS(subject string) string {
	if rest, ok := strings.CutPrefix(subject, jsAPIPrefix+"."); ok {
		return JetStreamAPIPrefix + "." + rest
	}
	return subject
}

// participantJS are the JetStream subjects participants import: the command
// stream's info, and their consumers' info, pulls and acknowledgements.
// Permissions pin each participant to its own consumer.
func participantJS() []Export {
	return []Export{
		{Subject: jsAPI("STREAM.INFO." + CommandStream), Service: true},
		{Subject: jsAPI("CONSUMER.INFO." + CommandStream + ".*"), Service: true},
		{Subject: jsAPI("CONSUMER.MSG.NEXT." + CommandStream + ".*"), Service: true, Streamed: true},
		{Subject: jsAck + "." + CommandStream + ".>", Service: true},
	}
}

// operatorJS are the JetStream subjects operators import: reading the status
// bucket (gets, and the consumers of its watches).
func operatorJS() []Export {
	s := StatusStream
	return []Export{
		{Subject: jsAPI("STREAM.INFO." + s), Service: true},
		{Subject: jsAPI("STREAM.MSG.GET." + s), Service: true},
		{Subject: jsAPI("DIRECT.GET." + s), Service: true},
		{Subject: jsAPI("DIRECT.GET." + s + ".>"), Service: true},
		{Subject: jsAPI("CONSUMER.CREATE." + s), Service: true},
		{Subject: jsAPI("CONSUMER.CREATE." + s + ".>"), Service: true},
		{Subject: jsAPI("CONSUMER.INFO." + s + ".*"), Service: true},
		{Subject: jsAPI("CONSUMER.DELETE." + s + ".*"), Service: true},
		{Subject: jsAPI("CONSUMER.MSG.NEXT." + s + ".*"), Service: true, Streamed: true},
		{Subject: jsAck + "." + s + ".>", Service: true},
		{Subject: jsFC + "." + s + ".>", Service: true},
	}
}

// The exports besides the JetStream subjects: the coordinator API, for
// operators (all of it) and participants (the in-doubt question, APIOutcome);
// the reply subjects, for participants; the operators' inbox, where the push
// consumers of their watches deliver; and the participants' audits, for
// operators.
var (
	apiExport           = Export{Subject: "natstx.api.v1.>", Service: true}
	replyExport         = Export{Subject: ReplyPrefix + ".>", Service: true}
	operatorInboxExport = Export{Subject: OperatorInbox() + ".>"}
	auditExport         = Export{Subject: AuditSubject("*"), Service: true}
)

// AccountExports are what account a exports.
func AccountExports(a Account) []Export {
	switch a {
	case AccountNatstx:
		out := []Export{replyExport, apiExport, operatorInboxExport}
		out = append(out, participantJS()...)
		return append(out, operatorJS()...)
	case AccountParticipants:
		return []Export{auditExport}
	}
	return nil
}

// AccountImports are what account a imports.
func AccountImports(a Account) []Import {
	var out []Import
	add := func(from Account, e Export, share bool) {
		i := Import{From: from, Subject: e.Subject, Service: e.Service, Share: share}
		if local := localJS(e.Subject); local != e.Subject {
			i.Local = local
		}
		out = append(out, i)
	}
	switch a {
	case AccountParticipants:
		add(AccountNatstx, replyExport, false)
		add(AccountNatstx, Export{Subject: APIOutcome, Service: true}, false)
		for _, e := range participantJS() {
			add(AccountNatstx, e, false)
		}
	case AccountOperators:
		add(AccountNatstx, apiExport, true)
		add(AccountNatstx, operatorInboxExport, false)
		for _, e := range operatorJS() {
			add(AccountNatstx, e, false)
		}
		add(AccountParticipants, auditExport, false)
	}
	return out
}
