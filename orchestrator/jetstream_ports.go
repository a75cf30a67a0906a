package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
)

// The production drivers of the ports: JetStream key-value buckets, the
// command stream, the wall clock and goroutines.

// jsStore is a Store over a JetStream key-value bucket.
type jsStore struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	// stop ends the waits of PutAsync when the engine stops.
	stop <-chan struct{}
}

func newJSStore(js jetstream.JetStream, kv jetstream.KeyValue, stop <-chan struct{}) *jsStore {
	return &jsStore{js: js, kv: kv, bucket: kv.Bucket(), stop: stop}
}

func (s *jsStore) subject(key string) string { return "$KV." + s.bucket + "." + key }

func (s *jsStore) Get(ctx context.Context, key string) (StoreEntry, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return StoreEntry{}, ErrNoEntry
	}
	if err != nil {
		return StoreEntry{}, err
	}
	return StoreEntry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}, nil
}

func (s *jsStore) Create(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	var opts []jetstream.KVCreateOpt
	if ttl > 0 {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	rev, err := s.kv.Create(ctx, key, value, opts...)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s in %s", ErrEntryExists, key, s.bucket)
	}
	return rev, err
}

func (s *jsStore) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	rev, err := s.kv.Update(ctx, key, value, revision)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("%w: %s in %s", ErrRevisionChanged, key, s.bucket)
	}
	return rev, err
}

func (s *jsStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	if ttl <= 0 {
		return s.kv.Put(ctx, key, value)
	}
	ack, err := s.js.Publish(ctx, s.subject(key), value, jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func (s *jsStore) PutAsync(key string, value []byte, onErr func(error)) {
	paf, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.subject(key), Data: value})
	if err != nil {
		if onErr != nil {
			onErr(err)
		}
		return
	}
	if onErr == nil {
		return
	}
	// The engine's JetStream context has an async publish timeout, so one
	// of the two channels always fires.
	go func() {
		select {
		case <-paf.Ok():
		case err := <-paf.Err():
			onErr(err)
		case <-s.stop:
		}
	}()
}

func (s *jsStore) Delete(ctx context.Context, key string) error {
	return s.kv.Delete(ctx, key)
}

func (s *jsStore) Entries(ctx context.Context) ([]StoreEntry, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer stopWatch(w)
	var out []StoreEntry
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return out, nil
			}
			out = append(out, StoreEntry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()})
		}
	}
}

// stopWatch stops a key-value watcher and drains what it still delivers: a
// delivery blocked on the full updates channel would otherwise hold the
// watcher's lock for ever, and its goroutine would never end. The channel
// is closed once the subscription is, which ends the drain.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}

// jsCommands publishes commands into the command stream without waiting for
// their acknowledgement.
type jsCommands struct{ js jetstream.JetStream }

func (c jsCommands) Publish(cmd messages.Command) error {
	_, err := c.js.PublishMsgAsync(&nats.Msg{Subject: cmd.Subject(), Header: nats.Header(cmd.Header()), Data: cmd.Payload})
	return err
}

// wallClock is the Driver of a running process: the wall clock, timers and
// goroutines counted in wg.
type wallClock struct{ wg *sync.WaitGroup }

func (w wallClock) Now() time.Time { return time.Now() }

func (w wallClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

func (w wallClock) Go(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

func (w wallClock) Sleep(d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}
