package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/orchestrator/embedded"
)

// freeLoopbackPorts returns n ports free on 127.0.0.1 when asked.
func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		defer l.Close()
	}
	return ports
}

// startJetStreamCluster starts three embedded servers routed into one
// JetStream cluster on loopback, stopped at the end of the test, and
// returns a JetStream context on the first.
func startJetStreamCluster(t *testing.T) jetstream.JetStream {
	t.Helper()
	ports := freeLoopbackPorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var urls []string
	for i, p := range ports {
		srv, err := embedded.Start(embedded.Config{Name: fmt.Sprintf("n%d", i+1),
			Cluster: &embedded.ClusterConfig{Name: "natstx-test", Host: "127.0.0.1", Port: p, Routes: routes}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		urls = append(urls, srv.URL())
	}
	return connectJetStream(t, urls[0])
}

// TestRacingUpdatesOfAReplicatedBucketLoseAsRevisionChanges: on a
// replicated (R3) stream, updates racing for one revision of a key are
// refused with code 10071 once the winner is stored, and with 10164 while
// it is still in flight; jsStore.Update reports both as ErrRevisionChanged,
// with a TTL or without, so that a writer that lost (a saga's previous
// owner) lets go rather than logging a failure and trying again.
func TestRacingUpdatesOfAReplicatedBucketLoseAsRevisionChanges(t *testing.T) {
	js := startJetStreamCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var kv jetstream.KeyValue
	var err error
	for kv == nil { // until the cluster has a JetStream leader
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		kv, err = openBucket(actx, js, jetstream.KeyValueConfig{Bucket: "natstx_r3", History: 1, Replicas: 3, LimitMarkerTTL: time.Minute})
		acancel()
		if err != nil {
			if ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	s := newJSStore(js, kv, make(chan struct{}))
	const racers = 32
	for round, ttl := range []time.Duration{0, time.Hour, 0, time.Hour} {
		key := fmt.Sprintf("k%d", round)
		rev, err := s.Create(ctx, key, []byte("a"), 0)
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, racers)
		var wg sync.WaitGroup
		for range racers {
			wg.Go(func() {
				_, err := s.Update(ctx, key, []byte("b"), rev, ttl)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		won := 0
		for err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrRevisionChanged):
				t.Errorf("round %d, TTL %v: a racing update failed with %v, want ErrRevisionChanged", round, ttl, err)
			}
		}
		if won != 1 {
			t.Errorf("round %d, TTL %v: %d racing updates of one revision won, want 1", round, ttl, won)
		}
	}
}
