// Package securetest runs, for tests, a NATS server on 127.0.0.1 with
// JetStream, the command stream, and two users: "coordinator", allowed
// everything, and "participant", with the permissions of one participant
// (messages.ParticipantPermissions), as `natstx auth init` gives them.
package securetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
)

// Server is a running server and the coordinator's connection to it.
type Server struct {
	URL string
	// Coordinator is connected as the all-powerful user.
	Coordinator *nats.Conn
	JS          jetstream.JetStream
	participant string
}

// Start starts a server whose "participant" user has participant's
// permissions, and declares the command stream; all of it ends with t.
func Start(t *testing.T, participant string) *Server {
	t.Helper()
	p := messages.ParticipantPermissions(participant)
	perms := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: p.PublishAllow, Deny: p.PublishDeny},
		Subscribe: &server.SubjectPermission{Allow: p.SubscribeAllow, Deny: p.SubscribeDeny},
	}
	if p.AllowResponses {
		perms.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Users: []*server.User{
			{Username: "coordinator", Password: "c"},
			{Username: "participant", Password: "p", Permissions: perms},
		},
	})
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
	s := &Server{URL: srv.ClientURL(), participant: participant}
	s.Coordinator, err = nats.Connect(s.URL, nats.UserInfo("coordinator", "c"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Coordinator.Close)
	if s.JS, err = jetstream.New(s.Coordinator); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := orchestrator.EnsureStreams(ctx, s.JS, orchestrator.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// Violations records the permission errors NATS reports to a connection.
type Violations struct {
	mu   sync.Mutex
	seen []string
}

func (v *Violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seen = append(v.seen, err.Error())
}

// Seen returns the errors reported so far.
func (v *Violations) Seen() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.seen...)
}

// Participant connects as the participant, with its inbox prefix; the
// connection closes with t.
func (s *Server) Participant(t *testing.T) (*nats.Conn, *Violations) {
	t.Helper()
	v := &Violations{}
	nc, err := nats.Connect(s.URL, nats.UserInfo("participant", "p"),
		nats.CustomInboxPrefix(messages.ParticipantInbox(s.participant)), nats.ErrorHandler(v.handler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

// CreateConsumer creates the participant's consumer as the coordinator
// does.
func (s *Server) CreateConsumer(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.JS.CreateConsumer(ctx, messages.CommandStream, orchestrator.ParticipantConsumerConfig(s.participant)); err != nil {
		t.Fatal(err)
	}
}
