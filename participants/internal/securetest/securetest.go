// Package securetest runs, for tests, a NATS server on 127.0.0.1 as a
// secure deployment runs it: on the configuration `natstx auth init`
// generates (orchestrator/auth: an operator, natstx's three accounts with
// their exports and imports, messages.AccountImports), with JetStream, and
// the command stream declared. The coordinator connects with its generated
// credentials in the NATSTX account, which holds the stream; a participant
// connects with its own, in the NATSTX_PARTICIPANTS account, with the
// permissions of its name (messages.ParticipantPermissions), and reaches
// natstx's JetStream API under messages.JetStreamAPIPrefix
// (messages/jsconnect).
package securetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/auth/authtest"
)

// Server is a running server and the coordinator's connection to it.
type Server struct {
	// URL is the server's client URL.
	URL string
	// Coordinator is connected as the coordinator, in the NATSTX account.
	Coordinator *nats.Conn
	// JS is the coordinator's JetStream API.
	JS          jetstream.JetStream
	participant string
	d           *authtest.Deployment
}

// Start starts a server on a newly generated deployment's configuration
// (orchestrator/auth/authtest), connects the coordinator, and declares the
// command stream; participant is the name Participant connects as. All of it
// ends with t.
func Start(t *testing.T, participant string) *Server {
	t.Helper()
	d := authtest.Start(t)
	s := &Server{URL: d.URL, participant: participant, d: d}
	s.Coordinator = d.Connect(t, messages.RoleCoordinator, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if s.JS, err = jsconnect.New(ctx, s.Coordinator); err != nil {
		t.Fatal(err)
	}
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

// Participant connects as the participant, with credentials of its own
// (a new user each call) and its inbox prefix; the connection closes with
// t.
func (s *Server) Participant(t *testing.T) (*nats.Conn, *Violations) {
	t.Helper()
	v := &Violations{}
	return s.d.Connect(t, messages.RoleParticipant, s.participant, nats.ErrorHandler(v.handler)), v
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
