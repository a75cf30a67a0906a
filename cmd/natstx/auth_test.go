package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
)

// runUmask0 runs natstx args with the umask 000, so that a file written
// with a loose mode shows it, and returns stdout, stderr and the exit code.
func runUmask0(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", `umask 000; exec "$0" "$@"`, natstxBin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// wantMode fails unless path exists with exactly mode.
func wantMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != mode {
		t.Errorf("%s: mode %04o, want %04o", filepath.Base(path), got, mode)
	}
}

// readFiles reads every file of dir by name.
func readFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// dialCreds connects to url with the credentials file creds (and opts),
// recording the errors NATS reports to the connection (permission
// violations).
func dialCreds(url, creds string, opts ...nats.Option) (*nats.Conn, *permErrors, error) {
	pe := &permErrors{}
	nc, err := nats.Connect(url, append([]nats.Option{nats.UserCredentials(creds), nats.Timeout(3 * time.Second), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { pe.add(err) })}, opts...)...)
	return nc, pe, err
}

type permErrors struct {
	mu   sync.Mutex
	seen []string
}

func (p *permErrors) add(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, err.Error())
}

// all returns the errors seen so far.
func (p *permErrors) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

// refused publishes on subject and reports whether NATS answers with a
// permissions violation naming it (within a second).
func (p *permErrors) refused(t *testing.T, nc *nats.Conn, subject string) bool {
	t.Helper()
	if err := nc.Publish(subject, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		hit := slices.ContainsFunc(p.seen, func(s string) bool {
			return strings.Contains(s, "Permissions Violation") && strings.Contains(s, `"`+subject+`"`)
		})
		p.mu.Unlock()
		if hit {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestAuthInitWritesSecretsForItsOwnerAndRefusesToOverwrite: `auth init`
// (run with the umask 000) writes the credentials and signing keys with
// mode 0600, the server configuration 0644 and the directory 0700; a second
// init into the same directory exits 2, naming --force, and changes no
// file; with --force it replaces the keys, and a server on the new
// configuration refuses the credentials issued before.
func TestAuthInitWritesSecretsForItsOwnerAndRefusesToOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "natstx-auth")
	stdout, stderr, code := runUmask0(t, "auth", "init", "--participants", "inventory,payment", "--dir", dir)
	if code != 0 {
		t.Fatalf("auth init: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	secrets := []string{"account-natstx.nk", "account-participants.nk", "account-operators.nk", "operator.nk",
		"coordinator.creds", "operator.creds", "participant-inventory.creds", "participant-payment.creds"}
	for _, f := range secrets {
		wantMode(t, filepath.Join(dir, f), 0o600)
		if !strings.Contains(stdout, f) {
			t.Errorf("auth init does not list %s:\n%s", f, stdout)
		}
	}
	wantMode(t, filepath.Join(dir, "nats-auth.conf"), 0o644)
	wantMode(t, dir, 0o700)
	before := readFiles(t, dir)
	if len(before) != len(secrets)+1 {
		t.Errorf("auth init wrote %d files, want %d (no temporary file left)", len(before), len(secrets)+1)
	}

	for _, args := range [][]string{
		{"auth", "init", "--participants", "inventory,payment", "--dir", dir},
		{"auth", "init", "--participants", "shipping", "--dir", dir},
	} {
		stdout, stderr, code := runUmask0(t, args...)
		if code != 2 || !strings.Contains(stderr, "already exists") || !strings.Contains(stderr, "--force") {
			t.Errorf("natstx %v over an earlier init: exit %d, stderr %q; want exit 2 naming --force (stdout %q)", args, code, stderr, stdout)
		}
	}
	after := readFiles(t, dir)
	if len(after) != len(before) {
		t.Errorf("a refused init left %d files, want %d", len(after), len(before))
	}
	for f, b := range before {
		if !bytes.Equal(after[f], b) {
			t.Errorf("a refused init changed %s", f)
		}
	}

	stdout, stderr, code = runUmask0(t, "auth", "init", "--participants", "inventory,payment", "--dir", dir, "--force")
	if code != 0 {
		t.Fatalf("auth init --force: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	replaced := readFiles(t, dir)
	for _, f := range secrets {
		wantMode(t, filepath.Join(dir, f), 0o600)
		if bytes.Equal(replaced[f], before[f]) {
			t.Errorf("auth init --force kept %s", f)
		}
	}
	wantMode(t, filepath.Join(dir, "nats-auth.conf"), 0o644)

	old := filepath.Join(t.TempDir(), "old-inventory.creds")
	if err := os.WriteFile(old, before["participant-inventory.creds"], 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := embedded.Start(embedded.Config{ConfigFile: filepath.Join(dir, "nats-auth.conf")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if nc, _, err := dialCreds(srv.URL(), old); err == nil {
		nc.Close()
		t.Error("credentials issued before init --force still connect to a server on the new configuration")
	}
	nc, _, err := dialCreds(srv.URL(), filepath.Join(dir, "participant-inventory.creds"))
	if err != nil {
		t.Fatalf("the new credentials: %v", err)
	}
	nc.Close()
	if !t.Failed() {
		t.Logf("auth init: %d secrets 0600, refused twice without --force (nothing changed), --force replaced every key", len(secrets))
	}
}

// TestAuthAddParticipantIssuesCredentialsOfThatParticipant: `auth
// add-participant loyalty` after an init writes participant-loyalty.creds
// (mode 0600 under the umask 000), signed by the key of the init's
// participants' account (account-participants.nk), with the permissions of
// a participant named loyalty and no other; the server on the init's
// configuration, unchanged, admits it, lets it vote as loyalty and refuses
// a vote as inventory. It changes none of the init's files, and without an
// init in --dir it fails, saying so.
func TestAuthAddParticipantIssuesCredentialsOfThatParticipant(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "natstx-auth")
	if stdout, stderr, code := runUmask0(t, "auth", "init", "--participants", "inventory", "--dir", dir); code != 0 {
		t.Fatalf("auth init: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	before := readFiles(t, dir)
	stdout, stderr, code := runUmask0(t, "auth", "add-participant", "loyalty", "--dir", dir)
	if code != 0 {
		t.Fatalf("auth add-participant: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	path := filepath.Join(dir, "participant-loyalty.creds")
	if !strings.Contains(stdout, path) {
		t.Errorf("add-participant does not name %s:\n%s", path, stdout)
	}
	wantMode(t, path, 0o600)
	after := readFiles(t, dir)
	if len(after) != len(before)+1 {
		t.Errorf("add-participant left %d files, want %d", len(after), len(before)+1)
	}
	for f, b := range before {
		if !bytes.Equal(after[f], b) {
			t.Errorf("add-participant changed %s", f)
		}
	}

	// Signed by the account of the init, with loyalty's permissions.
	account, err := nkeys.FromSeed(before["account-participants.nk"])
	if err != nil {
		t.Fatal(err)
	}
	accPub, err := account.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	userJWT, err := jwt.ParseDecoratedJWT(after["participant-loyalty.creds"])
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(userJWT)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := messages.PermissionsFor(messages.RoleParticipant, "loyalty")
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	for _, c := range []struct {
		what      string
		got, want []string
	}{
		{"publish allow", uc.Pub.Allow, want.PublishAllow}, {"publish deny", uc.Pub.Deny, want.PublishDeny},
		{"subscribe allow", uc.Sub.Allow, want.SubscribeAllow}, {"subscribe deny", uc.Sub.Deny, want.SubscribeDeny},
	} {
		if !slices.Equal(sorted(c.got), sorted(c.want)) {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if uc.Issuer != accPub || uc.Name != "participant-loyalty" || !uc.Tags.Contains("natstx-role:participant") || (uc.Resp != nil) != want.AllowResponses {
		t.Errorf("claims: issuer %s (account %s), name %q, tags %v, responses %v", uc.Issuer, accPub, uc.Name, uc.Tags, uc.Resp)
	}

	// The server on the init's configuration admits it, as loyalty only.
	srv, err := embedded.Start(embedded.Config{ConfigFile: filepath.Join(dir, "nats-auth.conf")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	nc, pe, err := dialCreds(srv.URL(), path)
	if err != nil {
		t.Fatalf("the server does not admit participant-loyalty.creds: %v", err)
	}
	defer nc.Close()
	if pe.refused(t, nc, messages.ReplySubject("c1", "loyalty")) {
		t.Error("loyalty may not vote as loyalty")
	}
	if !pe.refused(t, nc, messages.ReplySubject("c1", "inventory")) {
		t.Error("loyalty may vote as inventory")
	}
	if !pe.refused(t, nc, messages.CommandSubject("loyalty", "tx-1")) {
		t.Error("loyalty may publish a command")
	}

	empty := filepath.Join(t.TempDir(), "none")
	_, stderr, code = runUmask0(t, "auth", "add-participant", "loyalty", "--dir", empty)
	if code == 0 || !strings.Contains(stderr, "auth init") {
		t.Errorf("add-participant without an init: exit %d, stderr %q; want a failure naming 'auth init'", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(empty, "participant-loyalty.creds")); err == nil {
		t.Error("add-participant without an init wrote credentials")
	}
	if !t.Failed() {
		t.Logf("add-participant: %s, mode 0600, signed by %s, votes as loyalty only", filepath.Base(path), accPub[:8])
	}
}

// TestUserAndPasswordFlagsConnect: against an embedded server configured
// with plain users (--nats-config), `natstx server` connects its
// coordinator with --user and --password, and `tx list` works with
// --user/--password and with NATSTX_USER/NATSTX_PASSWORD; a wrong password,
// or none, is refused with a message naming the flags and not the password;
// --password without --user is a usage error. No output shows a password.
func TestUserAndPasswordFlagsConnect(t *testing.T) {
	const coordPW, opPW, wrongPW = "coord-s3cret-pw", "op-s3cret-pw", "wrong-s3cret-pw"
	conf := filepath.Join(t.TempDir(), "users.conf")
	if err := os.WriteFile(conf, []byte(`authorization {
  users = [
    {user: coordinator, password: "`+coordPW+`"}
    {user: op, password: "`+opPW+`"}
  ]
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, url := startServer(t, "--nats-config", conf, "--user", "coordinator", "--password", coordPW)
	secret := func(what, out string) {
		t.Helper()
		for _, pw := range []string{coordPW, opPW, wrongPW} {
			if strings.Contains(out, pw) {
				t.Errorf("%s shows a password:\n%s", what, out)
			}
		}
	}
	cases := []struct {
		what string
		env  []string
		args []string
		code int
		want string
	}{
		{"--user and --password", nil, []string{"--user", "op", "--password", opPW}, 0, ""},
		{"NATSTX_USER and NATSTX_PASSWORD", []string{"NATSTX_USER=op", "NATSTX_PASSWORD=" + opPW}, nil, 0, ""},
		{"--user with NATSTX_PASSWORD", []string{"NATSTX_PASSWORD=" + opPW}, []string{"--user", "op"}, 0, ""},
		{"a wrong password", nil, []string{"--user", "op", "--password", wrongPW}, 1, "refused this identity"},
		{"a wrong NATSTX_PASSWORD", []string{"NATSTX_USER=op", "NATSTX_PASSWORD=" + wrongPW}, nil, 1, "refused this identity"},
		{"no user", nil, nil, 1, "refused this identity"},
		{"--password without --user", nil, []string{"--password", opPW}, 2, "--password needs --user"},
	}
	for _, c := range cases {
		p := startProc(t, c.env, append([]string{"tx", "list", "--nats", url, "--json"}, c.args...)...)
		code := p.wait(t, 30*time.Second)
		out := p.out() + p.stderr.String()
		if code != c.code || !strings.Contains(p.stderr.String(), c.want) {
			t.Errorf("tx list with %s: exit %d, want %d and %q\n%s", c.what, code, c.code, c.want, out)
		}
		if c.code == 1 && !strings.Contains(out, "--user and --password") {
			t.Errorf("tx list with %s: the refusal does not name --user and --password:\n%s", c.what, out)
		}
		secret("tx list with "+c.what, out)
	}
	secret("natstx server", srv.out()+srv.stderr.String())
	if !t.Failed() {
		t.Logf("%d tx list runs against a server with plain users, every outcome as expected, no password shown", len(cases))
	}
}

// TestAuthInitConfigurationRunsEveryIdentityInItsAccount runs what `auth
// init` wrote as a deployment would: `natstx server` on nats-auth.conf with
// coordinator.creds, a participant process with its own credentials, and
// the client commands with operator.creds. The participant, in
// NATSTX_PARTICIPANTS, finds that its account has no JetStream of its own
// and reaches its consumer through the imported API (under
// messages.JetStreamAPIPrefix); the operator, in NATSTX_OPERATORS, begins a
// transaction, reads it from the status bucket (tx status, tx list) and
// audits the participant across the accounts. `publish` with the
// coordinator's credentials gets the participant's replies. A later
// participant from
// `auth add-participant` looks up its consumer the same way.
func TestAuthInitConfigurationRunsEveryIdentityInItsAccount(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "natstx-auth")
	if stdout, stderr, code := runUmask0(t, "auth", "init", "--participants", "inventory", "--dir", dir); code != 0 {
		t.Fatalf("auth init: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	creds := func(f string) string { return filepath.Join(dir, f) }
	_, url := startServer(t, "--nats-config", creds("nats-auth.conf"), "--creds", creds("coordinator.creds"))
	startProc(t, nil, "participant", "sim", "--name", "inventory", "--nats", url, "--creds", creds("participant-inventory.creds"),
		"--log-level", "warn").waitLine(t, "ready", 30*time.Second)

	op := []string{"--nats", url, "--creds", creds("operator.creds")}
	wantExit(t, 0, "tx order-1 committed", append([]string{"tx", "begin", "--id", "order-1", "-p", `inventory={"item":"widget","qty":1}`}, op...)...)
	wantExit(t, 0, "committed", append([]string{"tx", "status", "order-1"}, op...)...)
	if out := wantExit(t, 0, "", append([]string{"tx", "list", "--json"}, op...)...); !strings.Contains(out, `"order-1"`) {
		t.Errorf("tx list as the operator does not show order-1:\n%s", out)
	}
	if out := wantExit(t, 0, "", append([]string{"audit", "--json"}, op...)...); !strings.Contains(out, `"committed": 1`) && !strings.Contains(out, `"committed":1`) {
		t.Errorf("audit as the operator does not count order-1 committed:\n%s", out)
	}

	// publish plays the coordinator: with its credentials, the participant's
	// reply crosses from its account to the coordinator's; the operator may
	// not publish commands.
	coordArgs := []string{"--nats", url, "--creds", creds("coordinator.creds")}
	wantExit(t, 0, "reply from inventory", append([]string{"publish", "-p", "inventory", "--tx", "hand-1", "--op", "prepare", "--timeout", "10s"}, coordArgs...)...)
	wantExit(t, 0, "reply from inventory", append([]string{"publish", "-p", "inventory", "--tx", "hand-1", "--op", "abort", "--timeout", "10s"}, coordArgs...)...)
	wantExit(t, 1, "", append([]string{"publish", "-p", "inventory", "--tx", "hand-2", "--op", "abort", "--timeout", "2s"}, op...)...)

	// The identities' own view: the participants' and operators' accounts
	// have no JetStream of their own; the coordinator's has.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		file, inbox string
		imported    bool
	}{
		{"coordinator.creds", "", false},
		{"participant-inventory.creds", messages.ParticipantInbox("inventory"), true},
		{"operator.creds", messages.OperatorInbox(), true},
	} {
		var opts []nats.Option
		if c.inbox != "" {
			opts = append(opts, nats.CustomInboxPrefix(c.inbox))
		}
		nc, pe, err := dialCreds(url, creds(c.file), opts...)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		imported, err := jsconnect.Imported(qctx, nc)
		qcancel()
		nc.Close()
		if err != nil || imported != c.imported {
			t.Errorf("%s: JetStream imported %v (%v), want %v; NATS reported %v", c.file, imported, err, c.imported, pe.all())
		}
	}

	// A participant added later reaches the consumer the coordinator made
	// for it, through the prefix; the server needs no change.
	wantExit(t, 0, "participant-loyalty.creds", "auth", "add-participant", "loyalty", "--dir", dir)
	coord, _, err := dialCreds(url, creds("coordinator.creds"))
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	cjs, err := jsconnect.New(ctx, coord)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cjs.CreateOrUpdateConsumer(ctx, messages.CommandStream, orchestrator.ParticipantConsumerConfig("loyalty")); err != nil {
		t.Fatal(err)
	}
	loyalty, pe, err := dialCreds(url, creds("participant-loyalty.creds"), nats.CustomInboxPrefix(messages.ParticipantInbox("loyalty")))
	if err != nil {
		t.Fatal(err)
	}
	defer loyalty.Close()
	ljs, err := jsconnect.New(ctx, loyalty)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ljs.Consumer(ctx, messages.CommandStream, messages.ConsumerName("loyalty")); err != nil {
		t.Errorf("participant-loyalty looks up its consumer: %v", err)
	}
	if err := loyalty.Flush(); err != nil {
		t.Fatal(err)
	}
	if e := pe.all(); len(e) > 0 {
		t.Errorf("participant-loyalty met errors: %v", e)
	}
	if !t.Failed() {
		t.Logf("auth init's configuration: coordinator in NATSTX, inventory committed order-1 through the prefix, the operator read and audited it, loyalty (added later) reached its consumer")
	}
}

// TestAuthInitOverAnOlderSingleAccountInit: a directory where an older
// natstx wrote its one account key, account.nk, is refused by init (exit 2,
// naming --force) and by add-participant (which names 'auth init --force');
// init --force writes the three accounts and removes account.nk, whose
// users no server on the new configuration trusts.
func TestAuthInitOverAnOlderSingleAccountInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "natstx-auth")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := old.Seed()
	if err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(dir, "account.nk")
	if err := os.WriteFile(legacy, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runUmask0(t, "auth", "init", "--participants", "inventory", "--dir", dir)
	if code != 2 || !strings.Contains(stderr, "account.nk already exists") || !strings.Contains(stderr, "--force") {
		t.Errorf("auth init over an older init: exit %d, stderr %q; want exit 2 naming account.nk and --force (stdout %q)", code, stderr, stdout)
	}
	if files := readFiles(t, dir); len(files) != 1 {
		t.Errorf("a refused init left %d files, want 1 (account.nk)", len(files))
	}
	_, stderr, code = runUmask0(t, "auth", "add-participant", "loyalty", "--dir", dir)
	if code == 0 || !strings.Contains(stderr, "auth init --force") {
		t.Errorf("add-participant over an older init: exit %d, stderr %q; want a failure naming 'auth init --force'", code, stderr)
	}
	stdout, stderr, code = runUmask0(t, "auth", "init", "--participants", "inventory", "--dir", dir, "--force")
	if code != 0 {
		t.Fatalf("auth init --force: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "removed "+legacy) {
		t.Errorf("auth init --force does not say it removed %s:\n%s", legacy, stdout)
	}
	if _, err := os.Stat(legacy); err == nil {
		t.Error("auth init --force left account.nk")
	}
	for _, f := range []string{"account-natstx.nk", "account-participants.nk", "account-operators.nk"} {
		wantMode(t, filepath.Join(dir, f), 0o600)
	}
	if _, stderr, code := runUmask0(t, "auth", "add-participant", "loyalty", "--dir", dir); code != 0 {
		t.Errorf("add-participant after init --force: exit %d, stderr %q", code, stderr)
	}
}
