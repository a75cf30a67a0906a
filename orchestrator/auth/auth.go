// Package auth generates the NATS identities of a secure natstx deployment:
// a NATS operator, the system account, natstx's three accounts with their
// exports and imports (messages.Accounts, messages.AccountExports and
// messages.AccountImports), the server configuration that trusts them, and
// one user per identity with the subject permissions of its role
// (messages.PermissionsFor), as credentials files. `natstx auth` writes them
// to disk; tests use them to run servers as a deployment would.
package auth

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/natstx/natstx/messages"
)

// Keys are the signing keys of one deployment: secrets.
type Keys struct {
	// Operator signs the accounts.
	Operator nkeys.KeyPair
	// System is the NATS system account's key.
	System nkeys.KeyPair
	// Accounts sign the users of each natstx account.
	Accounts map[messages.Account]nkeys.KeyPair
}

// NewKeys creates the keys of a new deployment.
func NewKeys() (*Keys, error) {
	k := &Keys{Accounts: map[messages.Account]nkeys.KeyPair{}}
	var err error
	if k.Operator, err = nkeys.CreateOperator(); err != nil {
		return nil, err
	}
	if k.System, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	for _, a := range messages.Accounts() {
		if k.Accounts[a], err = nkeys.CreateAccount(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func publicKey(kp nkeys.KeyPair) string {
	pub, _ := kp.PublicKey() // a created or parsed key pair always has one
	return pub
}

// accountClaims are account a's claims: JetStream for NATSTX only, and a's
// exports and imports.
func (k *Keys) accountClaims(a messages.Account) *jwt.AccountClaims {
	ac := jwt.NewAccountClaims(publicKey(k.Accounts[a]))
	ac.Name = string(a)
	if a == messages.AccountNatstx {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	}
	for _, e := range messages.AccountExports(a) {
		x := &jwt.Export{Subject: jwt.Subject(e.Subject), Type: jwt.Stream}
		if e.Service {
			x.Type = jwt.Service
			if e.Streamed {
				x.ResponseType = jwt.ResponseTypeStream
			}
		}
		ac.Exports.Add(x)
	}
	for _, i := range messages.AccountImports(a) {
		x := &jwt.Import{Account: publicKey(k.Accounts[i.From]), Subject: jwt.Subject(i.Subject), Type: jwt.Stream, Share: i.Share}
		if i.Service {
			x.Type = jwt.Service
		}
		if i.Local != "" {
			x.LocalSubject = jwt.RenamingSubject(i.Local)
		}
		ac.Imports.Add(x)
	}
	return ac
}

// ServerConfig is the NATS server configuration that trusts the deployment:
// the operator, the system account, and natstx's accounts in a memory
// resolver. It holds public JWTs only.
func (k *Keys) ServerConfig() (string, error) {
	oc := jwt.NewOperatorClaims(publicKey(k.Operator))
	oc.Name = "natstx"
	oc.SystemAccount = publicKey(k.System)
	opJWT, err := oc.Encode(k.Operator)
	if err != nil {
		return "", fmt.Errorf("signing the operator: %w", err)
	}
	sc := jwt.NewAccountClaims(publicKey(k.System))
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(k.Operator)
	if err != nil {
		return "", fmt.Errorf("signing the system account: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "operator: %s\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  # SYS\n  %s: %s\n",
		opJWT, publicKey(k.System), publicKey(k.System), sysJWT)
	for _, a := range messages.Accounts() {
		ac := k.accountClaims(a)
		var vr jwt.ValidationResults
		ac.Validate(&vr)
		if errs := vr.Errors(); len(errs) > 0 {
			return "", fmt.Errorf("account %s: %v", a, errs)
		}
		j, err := ac.Encode(k.Operator)
		if err != nil {
			return "", fmt.Errorf("signing account %s: %w", a, err)
		}
		fmt.Fprintf(&b, "  # %s\n  %s: %s\n", a, ac.Subject, j)
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// Creds issues a user of role (participant name for RoleParticipant),
// signed by the key of its account, and returns its credentials file.
func (k *Keys) Creds(role messages.Role, name string) ([]byte, error) {
	return Creds(k.Accounts[messages.AccountOf(role)], role, name)
}

// UserName is the name a user of role (and participant name) gets; it is
// the name of its credentials file without ".creds".
func UserName(role messages.Role, name string) string {
	if role == messages.RoleParticipant {
		return "participant-" + name
	}
	return string(role)
}

// Creds issues a user of role (participant name) signed by account, which
// must be the key of messages.AccountOf(role), and returns its credentials
// file (the user's JWT and secret seed).
func Creds(account nkeys.KeyPair, role messages.Role, name string) ([]byte, error) {
	perms, ok := messages.PermissionsFor(role, name)
	if !ok {
		return nil, fmt.Errorf("no permissions for role %q, name %q", role, name)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(publicKey(user))
	uc.Name = UserName(role, name)
	uc.Tags.Add("natstx-role:" + string(role))
	uc.Pub.Allow.Add(perms.PublishAllow...)
	uc.Pub.Deny.Add(perms.PublishDeny...)
	uc.Sub.Allow.Add(perms.SubscribeAllow...)
	uc.Sub.Deny.Add(perms.SubscribeDeny...)
	if perms.AllowResponses {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	}
	userJWT, err := uc.Encode(account)
	if err != nil {
		return nil, fmt.Errorf("signing user %s: %w", uc.Name, err)
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(userJWT, seed)
}
