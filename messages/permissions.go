package messages

// NATS subject permissions of natstx's identities. A secure deployment puts
// each identity in the account of its role (accounts.go) and gives each user
// the permissions its role returns here; `natstx auth init` renders them into
// user JWTs. The subjects are those of the identity's own account: a
// participant or an operator reaches natstx's JetStream API under
// JetStreamAPIPrefix. docs/SECURITY.md explains each entry.
//
// Everything not allowed is denied: the Deny lists only restate, for the
// reader and as a second line of defence, what a role must never do.

// Role is the kind of a natstx identity.
type Role string

// The roles of natstx identities.
const (
	// RoleCoordinator runs `natstx server`: it declares the stream and
	// buckets, publishes commands and writes every bucket.
	RoleCoordinator Role = "coordinator"
	// RoleOperator runs the CLI's client commands (tx begin, status, list,
	// watch, abort, saga actions, audit): it uses the coordinator API and
	// reads the status bucket.
	RoleOperator Role = "operator"
	// RoleParticipant is one participant name: it reads its own commands and
	// replies as itself.
	RoleParticipant Role = "participant"
)

// InboxRoot starts the reply inboxes of every identity but the coordinator's.
// Each identity gets its own prefix under it (OperatorInbox,
// ParticipantInbox) and may subscribe only there, so that no identity reads
// another's replies (the replies to a participant's pull requests are its
// commands). A client sets its prefix with nats.CustomInboxPrefix.
const InboxRoot = "_INBOX_natstx"

// OperatorInbox is the inbox prefix of the operator identity.
func OperatorInbox() string { return InboxRoot + ".operator" }

// ParticipantInbox is the inbox prefix of participant name.
func ParticipantInbox(name string) string { return InboxRoot + ".participant." + name }

// Permissions are the subjects one identity may publish and subscribe to.
type Permissions struct {
	// PublishAllow and SubscribeAllow are the only subjects allowed.
	PublishAllow, SubscribeAllow []string
	// PublishDeny and SubscribeDeny are denied even where an allow matches.
	PublishDeny, SubscribeDeny []string
	// AllowResponses lets the identity publish one reply to the reply
	// subject of each request it received, whatever that subject is.
	AllowResponses bool
}

// The JetStream subjects, as the permissions name them.
const (
	jsAck = "$JS.ACK"
	jsFC  = "$JS.FC"
	kvPfx = "$KV"
)

// StatusStream is the JetStream stream behind StatusBucket.
const StatusStream = "KV_" + StatusBucket

// PermissionsFor returns the permissions of role; name is the participant's
// name for RoleParticipant and ignored otherwise. It returns false for an
// unknown role or an invalid participant name.
func PermissionsFor(role Role, name string) (Permissions, bool) {
	switch role {
	case RoleCoordinator:
		return CoordinatorPermissions(), true
	case RoleOperator:
		return OperatorPermissions(), true
	case RoleParticipant:
		if ValidateName("participant name", name) != nil {
			return Permissions{}, false
		}
		return ParticipantPermissions(name), true
	}
	return Permissions{}, false
}

// CoordinatorPermissions are the coordinator's: everything natstx does in
// its account. It declares and writes the stream and buckets, creates each
// participant's consumer, publishes commands, serves the API, receives
// every reply, and answers requests (whose inboxes it may publish to). A
// request from another account comes with a reply subject the server chose,
// under ResponsePrefix: the coordinator may publish there whatever
// connection it received the request on, so that an answer sent after it
// reconnected to another server still goes out (AllowResponses knows only
// the requests its current connection received).
func CoordinatorPermissions() Permissions {
	return Permissions{
		PublishAllow: []string{
			"natstx.>",
			jsAPIPrefix + ".>", jsAck + ".>", jsFC + ".>",
			kvPfx + ".>",
			"_INBOX.>", InboxRoot + ".>", ResponsePrefix + ".>",
		},
		SubscribeAllow: []string{"natstx.>", "_INBOX.>", InboxRoot + ".>"},
		AllowResponses: true,
	}
}

// ResponsePrefix starts the reply subjects the NATS server gives a request
// that crosses accounts through a service import: it routes what is
// published there back to the requester, in its own account.
const ResponsePrefix = "_R_"

// jsInfo is the JetStream account-information request. In the participants'
// and operators' accounts the server answers it itself ("JetStream not
// enabled for account"), which tells a client to use JetStreamAPIPrefix.
const jsInfo = jsAPIPrefix + ".INFO"

// OperatorPermissions are the operator's, in the operators' account: the
// coordinator API (begin, abort, status, saga actions), audits of
// participants, and reading the status bucket (a key, a watch), which is all
// that account imports besides. It publishes no command, no reply, and no
// bucket write, and reads neither the command stream nor the other buckets.
func OperatorPermissions() Permissions {
	allow := []string{"natstx.api.v1.>", AuditSubject("*"), jsInfo}
	for _, e := range operatorJS() {
		allow = append(allow, localJS(e.Subject))
	}
	return Permissions{
		PublishAllow: allow,
		PublishDeny: []string{
			CommandPrefix + ".>", ReplyPrefix + ".>", kvPfx + ".>",
		},
		SubscribeAllow: []string{OperatorInbox() + ".>"},
		SubscribeDeny:  []string{CommandPrefix + ".>", ReplyPrefix + ".>"},
	}
}

// ParticipantPermissions are participant name's, in the participants'
// account: look up and read only its own durable consumer, whose filter is
// its own commands; acknowledge them; reply on its own reply subject; ask
// the coordinators about a transaction in doubt; and answer audits addressed
// to it.
//
// A participant may not create or update any consumer, its own included:
// the creator of a consumer chooses where the server delivers its messages
// (a push consumer's deliver subject), and NATS does not check that subject
// against the creator's publish permissions (nats-server#8274), so a
// participant could have its commands published into a bucket's or another
// participant's subjects. The coordinator creates each participant's
// consumer before its first command to it; the participant looks it up and
// waits for it if it is not there yet.
func ParticipantPermissions(name string) Permissions {
	cons := ConsumerName(name)
	return Permissions{
		PublishAllow: []string{
			ReplyPrefix + ".*." + name,
			APIOutcome,
			jsInfo,
			localJS(jsAPI("STREAM.INFO." + CommandStream)),
			localJS(jsAPI("CONSUMER.INFO." + CommandStream + "." + cons)),
			localJS(jsAPI("CONSUMER.MSG.NEXT." + CommandStream + "." + cons)),
			jsAck + "." + CommandStream + "." + cons + ".>",
		},
		PublishDeny: []string{
			CommandPrefix + ".>", kvPfx + ".>",
			jsAPIPrefix + ".CONSUMER.CREATE.>", jsAPIPrefix + ".CONSUMER.DURABLE.CREATE.>",
			JetStreamAPIPrefix + ".CONSUMER.CREATE.>", JetStreamAPIPrefix + ".CONSUMER.DURABLE.CREATE.>",
		},
		SubscribeAllow: []string{AuditSubject(name), ParticipantInbox(name) + ".>"},
		SubscribeDeny:  []string{CommandPrefix + ".>", ReplyPrefix + ".>"},
		AllowResponses: true,
	}
}
