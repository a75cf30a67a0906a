package integration

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/sim"
)

// cluster is one embedded NATS server, one coordinator engine and a set of
// simulated services behind participant runtimes.
type cluster struct {
	t        *testing.T
	srv      *embedded.Server
	nc       *nats.Conn
	eng      *orchestrator.Engine
	services map[string]*sim.Service
}

// startNATS starts an embedded NATS server configured by cfg and connects
// to it; the connection closes and the server stops when t ends.
func startNATS(t *testing.T, cfg embedded.Config) (*embedded.Server, *nats.Conn) {
	t.Helper()
	srv, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv, connect(t, srv.URL())
}

// connect connects to the NATS server at url with opts; the connection
// closes when t ends.
func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startEngine starts a coordinator engine configured by cfg on nc (Start
// bounded by ctx); it stops when t ends.
func startEngine(t *testing.T, ctx context.Context, nc *nats.Conn, cfg orchestrator.Config) *orchestrator.Engine {
	t.Helper()
	eng, err := orchestrator.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Stop)
	return eng
}

type serviceSpec struct {
	name       string
	rate       float64
	maxLatency time.Duration
}

func startCluster(t *testing.T, cfg orchestrator.Config, specs ...serviceSpec) *cluster {
	return startClusterOn(t, embedded.Config{}, cfg, specs...)
}

// startClusterOn is startCluster on a server configured by srvCfg. The one
// connection reconnects for ever, quickly, so a test may restart the server.
func startClusterOn(t *testing.T, srvCfg embedded.Config, cfg orchestrator.Config, specs ...serviceSpec) *cluster {
	t.Helper()
	srv, err := embedded.Start(srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, srv: srv, services: map[string]*sim.Service{}}
	t.Cleanup(func() { c.srv.Stop() }) // the server running at the end, if a test restarted it
	nc := connect(t, srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("coordinator")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.nc, c.eng = nc, startEngine(t, ctx, nc, cfg)
	for i, s := range specs {
		svc, err := sim.New(sim.Config{Name: s.name, SuccessRate: sim.Rate(s.rate), MaxLatency: s.maxLatency, Seed: int64(1000 + i)})
		if err != nil {
			t.Fatal(err)
		}
		rt, err := participants.New(nc, participants.Config{Name: s.name, Handler: svc, Concurrency: 512, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(s.name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rt.Stop)
		c.services[s.name] = svc
	}
	return c
}

// load runs n transactions over every service, conc at a time, and returns
// their results and the most transactions seen in flight at once.
func (c *cluster) load(n, conc int, timeout time.Duration) ([]sim.Result, int64) {
	names := make([]string, 0, len(c.services))
	for name := range c.services {
		names = append(names, name)
	}
	var (
		mu       sync.Mutex
		results  []sim.Result
		inFlight atomic.Int64
		peak     atomic.Int64
		wg       sync.WaitGroup
		next     = make(chan int)
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				// The engine assigns the ID (a caller's ID costs a claim write).
				req := orchestrator.Request{Timeout: timeout}
				for _, name := range names {
					req.Participants = append(req.Participants, orchestrator.Participant{Name: name, Payload: []byte{byte(i)}})
				}
				now := inFlight.Add(1)
				for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				out, err := c.eng.Execute(ctx, req)
				cancel()
				inFlight.Add(-1)
				if err != nil {
					c.t.Errorf("transaction %s: %v (state %s)", out.ID, err, out.State)
				}
				mu.Lock()
				results = append(results, sim.Result{ID: out.ID, Participants: names, Decided: err == nil && out.State.Decided(), Committed: out.Committed()})
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return results, peak.Load()
}

// quiesce waits until the engine has no transaction in flight: every commit
// and abort acknowledged.
func (c *cluster) quiesce(limit time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for c.eng.Stats().InFlight > 0 {
		if time.Now().After(deadline) {
			c.t.Fatalf("still %d transactions in flight after %v", c.eng.Stats().InFlight, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
}
