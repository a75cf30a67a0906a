package messages

import (
	"slices"
	"strings"
	"testing"
)

// matches reports whether subject matches NATS pattern (tokens split on
// '.', '*' one token, '>' one or more trailing tokens).
func matches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func allowed(allow, deny []string, subject string) bool {
	for _, d := range deny {
		if matches(d, subject) {
			return false
		}
	}
	for _, a := range allow {
		if matches(a, subject) {
			return true
		}
	}
	return false
}

func TestPermissionsTable(t *testing.T) {
	const (
		pub = "pub"
		sub = "sub"
	)
	cases := []struct {
		role    Role
		name    string
		verb    string
		subject string
		want    bool
	}{
		// The coordinator does everything natstx does.
		{RoleCoordinator, "", pub, CommandSubject("inventory", "tx1"), true},
		{RoleCoordinator, "", pub, "$KV.natstx_tx.tx1", true},
		{RoleCoordinator, "", pub, "$JS.API.STREAM.CREATE.NATSTX_CMD", true},
		// ... among it each participant's consumer, before its first command.
		{RoleCoordinator, "", pub, "$JS.API.CONSUMER.CREATE.NATSTX_CMD.natstx-inventory.natstx.cmd.inventory.>", true},
		{RoleCoordinator, "", sub, "_INBOX.x1", true},
		{RoleCoordinator, "", sub, ReplyFilter("c1"), true},
		{RoleCoordinator, "", sub, APIBegin, true},
		{RoleCoordinator, "", pub, OperatorInbox() + ".abc", true},
		// ... and answers requests from other accounts on the subjects the
		// server gives them, even after it reconnected.
		{RoleCoordinator, "", pub, "_R_.zNilWD.cPH2Zp", true},
		{RoleCoordinator, "", pub, "other.app", false},

		// The operator uses the API and reads the status bucket.
		{RoleOperator, "", pub, APIBegin, true},
		{RoleOperator, "", pub, APIAbort("c1"), true},
		{RoleOperator, "", pub, APIStatus, true},
		{RoleOperator, "", pub, APISagaAct("c1"), true},
		{RoleOperator, "", pub, AuditSubject("inventory"), true},
		{RoleOperator, "", pub, "$JS.natstx.API.DIRECT.GET.KV_natstx_status.$KV.natstx_status.tx1", true},
		{RoleOperator, "", pub, "$JS.API.DIRECT.GET.KV_natstx_status.$KV.natstx_status.tx1", false},
		{RoleOperator, "", pub, "$JS.natstx.API.CONSUMER.CREATE.KV_natstx_status.w1.$KV.natstx_status.>", true},
		{RoleOperator, "", pub, "$JS.API.CONSUMER.CREATE.KV_natstx_status.w1.$KV.natstx_status.>", false},
		{RoleOperator, "", sub, OperatorInbox() + ".x1", true},
		// ... and never commands, votes, bucket writes, nor the other data.
		{RoleOperator, "", pub, CommandSubject("inventory", "tx1"), false},
		{RoleOperator, "", pub, ReplySubject("c1", "inventory"), false},
		{RoleOperator, "", pub, "$KV.natstx_status.tx1", false},
		{RoleOperator, "", pub, "$KV.natstx_tx.tx1", false},
		{RoleOperator, "", pub, "$JS.API.CONSUMER.CREATE.NATSTX_CMD.spy.natstx.cmd.>", false},
		{RoleOperator, "", pub, "$JS.API.STREAM.MSG.GET.NATSTX_CMD", false},
		{RoleOperator, "", pub, "$JS.API.DIRECT.GET.KV_natstx_tx", false},
		{RoleOperator, "", pub, "$JS.API.STREAM.PURGE.KV_natstx_status", false},
		{RoleOperator, "", pub, "$JS.API.STREAM.DELETE.NATSTX_CMD", false},
		{RoleOperator, "", sub, CommandSubject("inventory", "tx1"), false},
		{RoleOperator, "", sub, "_INBOX.x1", false},
		{RoleOperator, "", sub, ParticipantInbox("inventory") + ".x1", false},

		// A participant reads its own commands and replies as itself.
		{RoleParticipant, "inventory", pub, ReplySubject("c1", "inventory"), true},
		{RoleParticipant, "inventory", pub, APIOutcome, true},
		{RoleParticipant, "inventory", pub, "$JS.natstx.API.STREAM.INFO.NATSTX_CMD", true},
		{RoleParticipant, "inventory", pub, "$JS.API.STREAM.INFO.NATSTX_CMD", false},
		{RoleParticipant, "inventory", pub, "$JS.natstx.API.CONSUMER.INFO.NATSTX_CMD.natstx-inventory", true},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.INFO.NATSTX_CMD.natstx-inventory", false},
		{RoleParticipant, "inventory", pub, "$JS.natstx.API.CONSUMER.MSG.NEXT.NATSTX_CMD.natstx-inventory", true},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.MSG.NEXT.NATSTX_CMD.natstx-inventory", false},
		{RoleParticipant, "inventory", pub, "$JS.ACK.NATSTX_CMD.natstx-inventory.1.5.5.1700000000.0", true},
		{RoleParticipant, "inventory", sub, AuditSubject("inventory"), true},
		{RoleParticipant, "inventory", sub, ParticipantInbox("inventory") + ".x1", true},
		// ... and nobody else's, and never a command.
		{RoleParticipant, "inventory", pub, ReplySubject("c1", "payment"), false},
		{RoleParticipant, "inventory", pub, CommandSubject("payment", "tx1"), false},
		{RoleParticipant, "inventory", pub, CommandSubject("inventory", "tx1"), false},
		{RoleParticipant, "inventory", pub, APIBegin, false},
		{RoleParticipant, "inventory", pub, APIAbort("c1"), false},
		// It may not create or update a consumer, not even its own (the
		// creator chooses the deliver subject: nats-server#8274); the
		// coordinator creates it.
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.CREATE.NATSTX_CMD.natstx-inventory.natstx.cmd.inventory.>", false},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.DURABLE.CREATE.NATSTX_CMD.natstx-inventory", false},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.CREATE.NATSTX_CMD.spy", false},
		{RoleParticipant, "inventory", pub, "$JS.natstx.API.CONSUMER.CREATE.NATSTX_CMD.natstx-inventory.natstx.cmd.inventory.>", false},
		{RoleParticipant, "inventory", pub, "$JS.natstx.API.CONSUMER.MSG.NEXT.NATSTX_CMD.natstx-payment", false},
		{RoleParticipant, "inventory", pub, "$JS.API.INFO", true},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.DELETE.NATSTX_CMD.natstx-inventory", false},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.CREATE.NATSTX_CMD.natstx-payment.natstx.cmd.payment.>", false},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.CREATE.NATSTX_CMD.natstx-inventory.natstx.cmd.>", false},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.CREATE.NATSTX_CMD.natstx-inventory", false},
		{RoleParticipant, "inventory", pub, "$JS.API.CONSUMER.MSG.NEXT.NATSTX_CMD.natstx-payment", false},
		{RoleParticipant, "inventory", pub, "$JS.ACK.NATSTX_CMD.natstx-payment.1.5.5.1700000000.0", false},
		{RoleParticipant, "inventory", pub, "$JS.API.STREAM.MSG.GET.NATSTX_CMD", false},
		{RoleParticipant, "inventory", pub, "$JS.API.DIRECT.GET.KV_natstx_status", false},
		{RoleParticipant, "inventory", pub, "$KV.natstx_tx.tx1", false},
		{RoleParticipant, "inventory", sub, CommandSubject("payment", "tx1"), false},
		{RoleParticipant, "inventory", sub, ReplySubject("c1", "payment"), false},
		{RoleParticipant, "inventory", sub, ParticipantInbox("payment") + ".x1", false},
		{RoleParticipant, "inventory", sub, "_INBOX.x1", false},
		{RoleParticipant, "inventory", sub, AuditSubject("payment"), false},
		{RoleOperator, "", pub, "_R_.zNilWD.cPH2Zp", false},
	}
	for _, c := range cases {
		p, ok := PermissionsFor(c.role, c.name)
		if !ok {
			t.Fatalf("PermissionsFor(%s, %q) not ok", c.role, c.name)
		}
		var got bool
		if c.verb == pub {
			got = allowed(p.PublishAllow, p.PublishDeny, c.subject)
		} else {
			got = allowed(p.SubscribeAllow, p.SubscribeDeny, c.subject)
		}
		if got != c.want {
			t.Errorf("%s %s: %s %s allowed = %v, want %v", c.role, c.name, c.verb, c.subject, got, c.want)
		}
	}
}

func TestPermissionsForRejects(t *testing.T) {
	for _, c := range []struct {
		role Role
		name string
	}{{"admin", ""}, {RoleParticipant, ""}, {RoleParticipant, "a.b"}, {RoleParticipant, "a*"}} {
		if _, ok := PermissionsFor(c.role, c.name); ok {
			t.Errorf("PermissionsFor(%q, %q) ok, want refused", c.role, c.name)
		}
	}
	if p, _ := PermissionsFor(RoleParticipant, "x"); !p.AllowResponses {
		t.Error("a participant must answer audits: AllowResponses is false")
	}
	if p, _ := PermissionsFor(RoleOperator, ""); p.AllowResponses {
		t.Error("an operator answers no requests: AllowResponses is true")
	}
}

func TestInboxPrefixes(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range []string{OperatorInbox(), ParticipantInbox("a"), ParticipantInbox("b")} {
		if seen[p] || strings.ContainsAny(p, "*> ") || strings.HasSuffix(p, ".") || !strings.HasPrefix(p, InboxRoot+".") {
			t.Errorf("inbox prefix %q is not a distinct literal under %s", p, InboxRoot)
		}
		seen[p] = true
	}
}

// overlap reports whether some subject matches both NATS patterns a and b.
func overlap(a, b string) bool {
	x, y := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(x) && i < len(y); i++ {
		if x[i] == ">" || y[i] == ">" {
			return true
		}
		if x[i] != "*" && y[i] != "*" && x[i] != y[i] {
			return false
		}
	}
	return len(x) == len(y)
}

// TestParticipantsCreateNoConsumer: nothing a participant may publish
// reaches the JetStream API's consumer create or update subjects, in any
// form (a push consumer's deliver subject is not checked against its
// creator's permissions: nats-server#8274).
func TestParticipantsCreateNoConsumer(t *testing.T) {
	if !overlap("$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.CREATE.NATSTX_CMD.*.natstx.cmd.p.>") || overlap("a.b", "a.c") || overlap("a.*", "a.b.c") {
		t.Fatal("overlap is wrong")
	}
	p := ParticipantPermissions("inventory")
	for _, create := range []string{
		jsAPIPrefix + ".CONSUMER.CREATE.>", jsAPIPrefix + ".CONSUMER.DURABLE.CREATE.>",
		JetStreamAPIPrefix + ".CONSUMER.CREATE.>", JetStreamAPIPrefix + ".CONSUMER.DURABLE.CREATE.>",
	} {
		for _, a := range p.PublishAllow {
			if overlap(a, create) {
				t.Errorf("participant may publish %s, which reaches %s", a, create)
			}
		}
		if !slices.ContainsFunc(p.PublishDeny, func(d string) bool { return matches(d, create) }) {
			t.Errorf("%s is not denied explicitly", create)
		}
	}
}

// TestPermissionsMatchTheAccounts: what an identity may publish under
// JetStreamAPIPrefix is imported into its account, every service its
// account imports from NATSTX is exported there, and what the participants'
// and operators' accounts import from NATSTX never reaches a bucket write
// or a consumer of the command stream other than a participant's own pull.
func TestPermissionsMatchTheAccounts(t *testing.T) {
	for _, role := range []Role{RoleOperator, RoleParticipant} {
		p, _ := PermissionsFor(role, "inventory")
		imports := AccountImports(AccountOf(role))
		for _, a := range p.PublishAllow {
			if !strings.HasPrefix(a, JetStreamAPIPrefix+".") {
				continue
			}
			if !slices.ContainsFunc(imports, func(i Import) bool { return i.Local != "" && matches(i.Local, a) || i.Local == a }) {
				t.Errorf("%s may publish %s, which its account %s does not import", role, a, AccountOf(role))
			}
		}
	}
	for _, a := range Accounts() {
		for _, i := range AccountImports(a) {
			exported := slices.ContainsFunc(AccountExports(i.From), func(e Export) bool {
				return e.Service == i.Service && (e.Subject == i.Subject || matches(e.Subject, strings.ReplaceAll(strings.ReplaceAll(i.Subject, "*", "x"), ">", "x")))
			})
			if !exported {
				t.Errorf("%s imports %s from %s, which does not export it", a, i.Subject, i.From)
			}
			if overlap(i.Subject, "$KV.>") || overlap(i.Subject, "natstx.cmd.>") {
				t.Errorf("%s imports %s, a bucket or command subject", a, i.Subject)
			}
		}
	}
	if AccountOf(RoleCoordinator) != AccountNatstx || AccountOf(RoleParticipant) == AccountOf(RoleOperator) {
		t.Error("AccountOf puts the roles in the wrong accounts")
	}
}
