package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
)

// StreamOptions sizes the JetStream resources natstx declares.
type StreamOptions struct {
	// Replicas is the replication factor of the command stream and the record
	// bucket: 1 on a single server, 3 on a three-node cluster.
	Replicas int
	// MaxAge bounds how long an unconsumed command stays in the stream. A
	// coordinator re-sends commit until it is acknowledged, so an expired
	// command is sent again; default 24h.
	MaxAge time.Duration
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	return o
}

// CommandStreamConfig is the configuration of the stream that stores
// commands. It is a work queue: a command leaves the stream once the one
// participant consumer it is meant for acknowledges it.
func CommandStreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        messages.CommandStream,
		Description: "natstx commands (prepare, commit, abort) awaiting their participant",
		Subjects:    []string{messages.CommandSubjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      o.MaxAge,
		Duplicates:  min(2*time.Minute, o.MaxAge), // the server refuses a window over MaxAge
		Discard:     jetstream.DiscardOld,
	}
}

// EnsureStreams creates or updates the JetStream resources natstx needs. The
// coordinator calls it on start; participants wait for them to exist.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	if _, err := js.CreateOrUpdateStream(ctx, CommandStreamConfig(o)); err != nil {
		return fmt.Errorf("natstx: declaring stream %s: %w", messages.CommandStream, err)
	}
	return nil
}

// openBucket creates or updates a key-value bucket; its error names it. A
// bucket that allows atomic batches (a coordinator with Config.GroupCommit
// turned them on) keeps them: the update would turn them off, and the
// group-committing coordinators would write one by one from then on.
func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	atomicBefore := false
	if s, err := js.Stream(ctx, "KV_"+cfg.Bucket); err == nil {
		atomicBefore = s.CachedInfo().Config.AllowAtomicPublish
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("natstx: declaring key-value bucket %s: %w", cfg.Bucket, err)
	}
	if atomicBefore {
		if err := allowAtomicBatches(ctx, js, cfg.Bucket); err != nil {
			return nil, err
		}
	}
	return kv, nil
}

// updateBucketStream reads the stream behind a key-value bucket, lets change
// alter its configuration, and updates the stream when change reports that
// it altered something. what names the change for the error.
func updateBucketStream(ctx context.Context, js jetstream.JetStream, bucket, what string, change func(*jetstream.StreamConfig) bool) error {
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return fmt.Errorf("natstx: reading the stream of bucket %s: %w", bucket, err)
	}
	cfg := s.CachedInfo().Config
	if !change(&cfg) {
		return nil
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("natstx: %s on bucket %s: %w", what, bucket, err)
	}
	return nil
}
