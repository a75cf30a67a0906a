package consumer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants/internal/consumer"
	"github.com/natstx/natstx/participants/internal/securetest"
)

const name = "inventory"

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// participantJS connects as the participant and returns its connection,
// its permission violations, and its JetStream API: the one its account
// imports, under messages.JetStreamAPIPrefix.
func participantJS(t *testing.T, s *securetest.Server) (*nats.Conn, *securetest.Violations, jetstream.JetStream) {
	t.Helper()
	nc, v := s.Participant(t)
	js, err := jsconnect.New(ctxFor(t), nc)
	if err != nil {
		t.Fatal(err)
	}
	if got := consumer.APIPrefix(js); got != messages.JetStreamAPIPrefix {
		t.Fatalf("the participant's JetStream API is under %q, want %q", got, messages.JetStreamAPIPrefix)
	}
	return nc, v, js
}

func info(t *testing.T, js jetstream.JetStream) jetstream.ConsumerConfig {
	t.Helper()
	c, err := js.Consumer(ctxFor(t), messages.CommandStream, messages.ConsumerName(name))
	if err != nil {
		t.Fatal(err)
	}
	return c.CachedInfo().Config
}

// TestConfigIsTheCoordinators: with the Go runtime's defaults, a
// participant wants the consumer the coordinator creates.
func TestConfigIsTheCoordinators(t *testing.T) {
	want := consumer.Config(name, 30*time.Second, 256)
	if d := consumer.Diff(orchestrator.ParticipantConsumerConfig(name), want); len(d) > 0 {
		t.Errorf("the coordinator's consumer differs from the runtime's defaults: %v", d)
	}
	if d := consumer.Diff(orchestrator.ParticipantConsumerConfig(name), consumer.Config(name, time.Minute, 256)); len(d) != 1 || !strings.HasPrefix(d[0], "ack_wait") {
		t.Errorf("Diff = %v, want ack_wait only", d)
	}
}

// TestAPIPrefix: the prefix of the subjects Open builds is the JetStream
// API's it is given.
func TestAPIPrefix(t *testing.T) {
	s := securetest.Start(t, name)
	prefixed, err := jetstream.NewWithAPIPrefix(s.Coordinator, messages.JetStreamAPIPrefix+".")
	if err != nil {
		t.Fatal(err)
	}
	domain, err := jetstream.NewWithDomain(s.Coordinator, "hub")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		js   jetstream.JetStream
		want string
	}{{s.JS, "$JS.API"}, {prefixed, messages.JetStreamAPIPrefix}, {domain, "$JS.hub.API"}} {
		if got := consumer.APIPrefix(c.js); got != c.want {
			t.Errorf("APIPrefix = %q, want %q", got, c.want)
		}
	}
}

// TestOpenWhereAllowed: an identity that may create and update consumers
// creates a missing one and updates one whose settings differ.
func TestOpenWhereAllowed(t *testing.T) {
	s := securetest.Start(t, name)
	want := consumer.Config(name, 3*time.Second, 8)
	o, err := consumer.Open(ctxFor(t), s.Coordinator, s.JS, want)
	if err != nil || !o.Created || o.Updated || o.Consumer == nil {
		t.Fatalf("Open of a missing consumer: %+v, %v; want created", o, err)
	}
	if d := consumer.Diff(info(t, s.JS), want); len(d) > 0 {
		t.Errorf("created with %v", d)
	}
	want.AckWait = 5 * time.Second
	o, err = consumer.Open(ctxFor(t), s.Coordinator, s.JS, want)
	if err != nil || o.Created || !o.Updated || len(o.Differs) > 0 {
		t.Fatalf("Open of a consumer with other settings: %+v, %v; want updated", o, err)
	}
	if got := info(t, s.JS).AckWait; got != 5*time.Second {
		t.Errorf("ack_wait %v after the update, want 5s", got)
	}
	o, err = consumer.Open(ctxFor(t), s.Coordinator, s.JS, want)
	if err != nil || o.Created || o.Updated || len(o.Differs) > 0 {
		t.Errorf("Open of a consumer as wanted: %+v, %v; want it used as it is", o, err)
	}
}

// TestOpenUnderParticipantPermissions: a participant that may not create
// its consumer learns it from the refusal itself (a permissions violation,
// not a request timing out); once the coordinator created it, the
// participant uses it, with the coordinator's settings if it may not update
// them, and changes nothing.
func TestOpenUnderParticipantPermissions(t *testing.T) {
	s := securetest.Start(t, name)
	nc, v, js := participantJS(t, s)
	want := consumer.Config(name, time.Minute, 256)
	start := time.Now()
	_, err := consumer.Open(ctxFor(t), nc, js, want)
	if !errors.Is(err, consumer.ErrRefused) || !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("Open of a missing consumer = %v, want ErrRefused from a permissions violation", err)
	}
	// Known from the refusal, not from a request timing out.
	if took := time.Since(start); took >= 2*time.Second {
		t.Errorf("Open took %v to learn of the refusal", took)
	}
	// The connection's error handler hears of it too, asynchronously.
	for i := 0; len(v.Seen()) == 0 && i < 1000; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if seen := v.Seen(); len(seen) != 1 || !strings.Contains(seen[0], `"`+messages.JetStreamAPIPrefix+".CONSUMER.CREATE."+messages.CommandStream+".natstx-inventory.natstx.cmd.inventory.>"+`"`) {
		t.Errorf("violations %v, want the one create", seen)
	}

	s.CreateConsumer(t)
	o, err := consumer.Open(ctxFor(t), nc, js, want)
	if err != nil || o.Consumer == nil || o.Created || o.Updated {
		t.Fatalf("Open of the coordinator's consumer: %+v, %v", o, err)
	}
	if len(o.Differs) != 1 || !strings.HasPrefix(o.Differs[0], "ack_wait") || !errors.Is(o.UpdateErr, nats.ErrPermissionViolation) {
		t.Errorf("differs %v (update: %v), want ack_wait, its update refused", o.Differs, o.UpdateErr)
	}
	if got := info(t, s.JS); consumer.Diff(got, orchestrator.ParticipantConsumerConfig(name)) != nil {
		t.Errorf("the participant changed the coordinator's consumer: %+v", got)
	}

	// Settings as wanted: no update tried, so no violation (the connection
	// records the last error it got before the answer to a flush).
	before := nc.LastError()
	o, err = consumer.Open(ctxFor(t), nc, js, consumer.Config(name, 30*time.Second, 256))
	if err != nil || len(o.Differs) > 0 || o.Updated {
		t.Errorf("Open as wanted: %+v, %v", o, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if after := nc.LastError(); after != before {
		t.Errorf("a new error: %v", after)
	}
}

// TestAwait: Await returns the consumer once it exists, and the context's
// error if it ends first.
func TestAwait(t *testing.T) {
	s := securetest.Start(t, name)
	_, _, js := participantJS(t, s)
	ctx, cancel := context.WithCancel(ctxFor(t))
	cancel()
	if _, err := consumer.Await(ctx, js, messages.ConsumerName(name), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Await with a cancelled context = %v", err)
	}
	type result struct {
		c   jetstream.Consumer
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := consumer.Await(ctxFor(t), js, messages.ConsumerName(name), func(err error) { t.Errorf("looking up: %v", err) })
		got <- result{c, err}
	}()
	s.CreateConsumer(t)
	r := <-got
	if r.err != nil || r.c == nil || r.c.CachedInfo().Name != messages.ConsumerName(name) {
		t.Errorf("Await = %v, %v", r.c, r.err)
	}
}

// TestAwaitThenStart: it waits for the consumer the coordinator creates,
// reports its settings that differ from the participant's, tries a failed
// start again, and returns once a start succeeded; with its context ended
// it returns that error without starting.
func TestAwaitThenStart(t *testing.T) {
	s := securetest.Start(t, name)
	_, _, js := participantJS(t, s)
	want := consumer.Config(name, 7*time.Second, 3) // not the coordinator's settings
	ctx, cancel := context.WithCancel(ctxFor(t))
	cancel()
	started := 0
	start := func(jetstream.Consumer) error { started++; return nil }
	if err := consumer.AwaitThenStart(ctx, js, want, consumer.Hooks{}, start); !errors.Is(err, context.Canceled) || started != 0 {
		t.Fatalf("with a cancelled context: %v, %d starts", err, started)
	}

	var differs []string
	var failures []error
	done := make(chan error, 1)
	go func() {
		done <- consumer.AwaitThenStart(ctxFor(t), js, want, consumer.Hooks{
			LookupFailed: func(err error) { t.Errorf("looking up: %v", err) },
			Differs:      func(d []string) { differs = d },
			StartFailed:  func(err error) { failures = append(failures, err) },
		}, func(c jetstream.Consumer) error {
			started++
			if started == 1 {
				return errors.New("refused by the test")
			}
			if c.CachedInfo().Name != messages.ConsumerName(name) {
				t.Errorf("started with %q", c.CachedInfo().Name)
			}
			return nil
		})
	}()
	s.CreateConsumer(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if started != 2 || len(failures) != 1 || !strings.Contains(failures[0].Error(), "refused by the test") {
		t.Fatalf("%d starts, failures reported %v: want 2 and the first", started, failures)
	}
	if len(differs) == 0 {
		t.Fatal("the coordinator's settings (ack wait, max ack pending) were not reported as differing")
	}
}
