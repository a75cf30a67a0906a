// Package consumer sets up a participant's durable consumer of commands
// (natstx-<name> on NATSTX_CMD, docs/PROTOCOL.md) for the Go runtime and the
// watermill adapter.
//
// The coordinator creates the consumer of each participant before its first
// command to it. A participant looks its consumer up at start: if it is
// there, the participant uses it, and updates it first if its settings
// differ and the participant may; if it is not there, the participant
// creates it if it may, else waits for the coordinator to (Await). Under the
// permissions of `natstx auth init` a participant may not create or update
// consumers (a consumer's creator chooses where the server delivers its
// messages: nats-server#8274).
//
// NATS reports a publish to a subject the client may not publish to only
// asynchronously (a "permissions violation" error to the connection's error
// handler and LastError); a request there gets no answer and would wait for
// its whole timeout. The create and update requests here are published,
// then flushed: the server answers the PING of the flush after the error of
// the publish before it, so a refusal is known when the flush returns.
//
// The JetStream API given may be under a prefix (in the participants'
// account of `natstx auth init`, messages.JetStreamAPIPrefix: see
// messages/jsconnect): the create and update requests, built here, use the
// prefix of the JetStream API they are given.
package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
)

// ErrRefused is returned by Open when the participant may not create its
// consumer (or got no answer to the request): it waits for the coordinator
// to create it, with Await.
var ErrRefused = errors.New("not allowed to create the consumer, or no answer")

// Config is the consumer of participant name with the protocol's settings,
// for a participant that handles up to concurrency commands at once and
// whose ack wait is ackWait.
func Config(name string, ackWait time.Duration, concurrency int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       messages.ConsumerName(name),
		Description:   "natstx commands for participant " + name,
		FilterSubject: messages.ParticipantFilter(name),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 2 * concurrency,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Diff names the settings of Config in which have differs from want.
func Diff(have, want jetstream.ConsumerConfig) []string {
	var d []string
	add := func(name string, differ bool, h, w any) {
		if differ {
			d = append(d, fmt.Sprintf("%s %v (want %v)", name, h, w))
		}
	}
	add("filter_subject", have.FilterSubject != want.FilterSubject || len(have.FilterSubjects) > 0, have.FilterSubject, want.FilterSubject)
	add("ack_policy", have.AckPolicy != want.AckPolicy, have.AckPolicy, want.AckPolicy)
	add("ack_wait", have.AckWait != want.AckWait, have.AckWait, want.AckWait)
	add("max_ack_pending", have.MaxAckPending != want.MaxAckPending, have.MaxAckPending, want.MaxAckPending)
	add("deliver_policy", have.DeliverPolicy != want.DeliverPolicy, have.DeliverPolicy, want.DeliverPolicy)
	add("description", have.Description != want.Description, have.Description, want.Description)
	return d
}

// Opened is what Open found or did.
type Opened struct {
	Consumer jetstream.Consumer
	// Created: this participant created the consumer; Updated: it updated
	// its settings to the wanted ones.
	Created, Updated bool
	// Differs lists the settings that differ from the wanted ones, when the
	// consumer was left as it was; UpdateErr says why.
	Differs   []string
	UpdateErr error
}

// Open looks up the consumer want.Durable of stream NATSTX_CMD: it uses it,
// updated to want first if its settings differ (a refused or failed update
// is reported in Opened, and the consumer used as it is), or creates it if
// it is not there. It returns ErrRefused if the participant may not create
// it (or got no answer); any other error is the server's or the
// connection's. nc is the connection of js.
func Open(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, want jetstream.ConsumerConfig) (Opened, error) {
	var created bool
	// A consumer created by someone else between the look-up and the
	// create sends us back to the look-up, once or twice.
	for range 3 {
		cons, err := lookup(ctx, js, want.Durable)
		switch {
		case err == nil:
			diff := Diff(cons.CachedInfo().Config, want)
			if len(diff) == 0 {
				return Opened{Consumer: cons, Created: created}, nil
			}
			if err := upsert(ctx, nc, js, want, "update"); err != nil {
				return Opened{Consumer: cons, Created: created, Differs: diff, UpdateErr: err}, nil
			}
			cons, err = lookup(ctx, js, want.Durable)
			if err != nil {
				return Opened{}, err
			}
			return Opened{Consumer: cons, Created: created, Updated: true}, nil
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			err := upsert(ctx, nc, js, want, "create")
			switch {
			case err == nil:
				created = true
			case errors.Is(err, jetstream.ErrConsumerExists), errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse):
			case errors.Is(err, errNoAnswer):
				return Opened{}, fmt.Errorf("%w: %w", ErrRefused, err)
			default:
				return Opened{}, err
			}
		default:
			return Opened{}, err
		}
	}
	return Opened{}, fmt.Errorf("consumer %s keeps appearing and disappearing", want.Durable)
}

// lookup returns the consumer name of NATSTX_CMD.
func lookup(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Consumer, error) {
	return js.Consumer(ctx, messages.CommandStream, name)
}

// errNoAnswer is a create or update request that the server refused to
// take (a permissions violation) or did not answer.
var errNoAnswer = errors.New("no answer")

// requestTimeout bounds a create or update request that NATS took but the
// server does not answer (the JetStream client's default timeout).
const requestTimeout = 5 * time.Second

// APIPrefix is the prefix of js's JetStream API subjects, without the
// trailing dot: "$JS.API" by default, the prefix js was created with
// (jetstream.NewWithAPIPrefix), or its domain's ("$JS.<domain>.API").
func APIPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".")
	case o.Domain != "":
		return "$JS." + o.Domain + ".API"
	}
	return strings.TrimSuffix(jetstream.DefaultAPIPrefix, ".")
}

// upsert sends a create or update (action) of want through js's API
// subject that names the consumer and its filter (the one the participant
// identities of `natstx auth init` could use, before they lost it), on nc.
func upsert(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, want jetstream.ConsumerConfig, action string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	subject := fmt.Sprintf("%s.CONSUMER.CREATE.%s.%s.%s", APIPrefix(js), messages.CommandStream, want.Durable, want.FilterSubject)
	body, err := json.Marshal(struct {
		Stream string                   `json:"stream_name"`
		Config jetstream.ConsumerConfig `json:"config"`
		Action string                   `json:"action"`
	}{messages.CommandStream, want, action})
	if err != nil {
		return err
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	before := nc.LastError()
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return err
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("%w: %w", errNoAnswer, err)
	}
	if after := nc.LastError(); after != before && Refused(after, subject) {
		return fmt.Errorf("%w: %w", errNoAnswer, after)
	}
	msg, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoAnswer, err)
	}
	var resp struct {
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("the answer to %s is not JSON: %w", subject, err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	return nil
}

// Refused reports whether err is NATS refusing a publish to subject.
func Refused(err error, subject string) bool {
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`)
}

// Await looks up consumer name of NATSTX_CMD until it exists or ctx ends,
// waiting between looks-ups from 50ms, doubling, up to 2s. onErr, if set,
// gets each error other than "not found" that differs from the one before.
func Await(ctx context.Context, js jetstream.JetStream, name string, onErr func(error)) (jetstream.Consumer, error) {
	wait := 50 * time.Millisecond
	var last string
	for {
		cons, err := lookup(ctx, js, name)
		if err == nil {
			return cons, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) && err.Error() != last && onErr != nil {
			onErr(err)
		}
		last = err.Error()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// Hooks are what AwaitThenStart reports as it goes; each may be nil.
type Hooks struct {
	// LookupFailed gets each lookup error other than "not found" that
	// differs from the one before (as Await's onErr).
	LookupFailed func(error)
	// Differs gets the settings in which the consumer found differs from
	// the one wanted (Diff): its creator, the coordinator, chose them.
	Differs func([]string)
	// StartFailed gets the error of a start that is tried again.
	StartFailed func(error)
}

// AwaitThenStart waits for the consumer want.Durable of the command stream
// (Await: the coordinator creates it), reports the settings in which it
// differs from want, and calls start with it; a start that fails is
// reported and tried again a second later, with a fresh look-up. It returns
// nil once a start succeeded, or ctx's error once ctx ends.
func AwaitThenStart(ctx context.Context, js jetstream.JetStream, want jetstream.ConsumerConfig, h Hooks, start func(jetstream.Consumer) error) error {
	for {
		cons, err := Await(ctx, js, want.Durable, h.LookupFailed)
		if err != nil {
			return err
		}
		if d := Diff(cons.CachedInfo().Config, want); len(d) > 0 && h.Differs != nil {
			h.Differs(d)
		}
		err = start(cons)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if h.StartFailed != nil {
			h.StartFailed(err)
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
