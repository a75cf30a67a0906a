// Package authtest runs, for tests, a NATS server on 127.0.0.1 as a secure
// natstx deployment runs it: on the configuration orchestrator/auth
// generates (natstx's three accounts, JetStream in NATSTX), with a
// credentials file per identity connected on demand.
package authtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/auth"
)

// Deployment is a running server on a generated configuration.
type Deployment struct {
	// Keys signed the configuration and sign the users.
	Keys *auth.Keys
	// URL is the server's client URL.
	URL string
	dir string
}

// Start runs a server on a new deployment's configuration; it shuts down
// with t.
func Start(t testing.TB) *Deployment {
	t.Helper()
	keys, err := auth.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := keys.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	d := &Deployment{Keys: keys, dir: t.TempDir()}
	path := filepath.Join(d.dir, "nats.conf")
	conf = "listen: 127.0.0.1:-1\njetstream: {store_dir: \"" + filepath.Join(d.dir, "js") + "\"}\n" + conf
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("the NATS server is not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	d.URL = srv.ClientURL()
	return d
}

// CredsFile issues a new user of role (participant name) and returns the
// path of its credentials file.
func (d *Deployment) CredsFile(t testing.TB, role messages.Role, name string) string {
	t.Helper()
	creds, err := d.Keys.Creds(role, name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(d.dir, auth.UserName(role, name)+"-*.creds")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(creds); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// Connect connects a new user of role (participant name) with its inbox
// prefix (messages.ParticipantInbox, messages.OperatorInbox) and opts; the
// connection closes with t.
func (d *Deployment) Connect(t testing.TB, role messages.Role, name string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	o := []nats.Option{nats.UserCredentials(d.CredsFile(t, role, name))}
	switch role {
	case messages.RoleParticipant:
		o = append(o, nats.CustomInboxPrefix(messages.ParticipantInbox(name)))
	case messages.RoleOperator:
		o = append(o, nats.CustomInboxPrefix(messages.OperatorInbox()))
	}
	nc, err := nats.Connect(d.URL, append(o, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
