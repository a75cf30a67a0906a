package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants/services"
)

// TestClusterNodeLoss runs a 3-node JetStream cluster of `natstx nats`
// processes, with the command stream and the buckets replicated three
// times, two coordinator processes and the three example services as
// processes, all connected to every node. Load runs throughout while one
// node is killed and restarted, then while the node that leads the command
// stream is killed and restarted. Afterwards every transaction must have
// resolved, all or nothing, as the services' databases and the audit say.
func TestClusterNodeLoss(t *testing.T) {
	dir, err := os.MkdirTemp("", "natstx-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs and data kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	start := time.Now()
	ports := freePorts(t, 6)
	var urls, routes []string
	for i := range 3 {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]))
	}
	url := strings.Join(urls, ",")
	nodes := map[string]*child{}
	var names []string
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		var others []string
		for j := range 3 {
			if j != i {
				others = append(others, routes[j])
			}
		}
		nodes[name] = newChild(t, dir, name, "listening", "nats", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", ports[i]),
			"--data-dir", filepath.Join(dir, name), "--server-name", name, "--cluster-name", "natstx-test",
			"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", ports[3+i]), "--routes", strings.Join(others, ","))
		names = append(names, name)
	}
	for _, n := range names {
		if err := nodes[n].launch(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		if err := nodes[n].waitReady(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var coords []*child
	for _, name := range []string{"c1", "c2"} {
		c := newChild(t, dir, name, "ready", "server", "--nats", url, "--replicas", "3", "--instance", name,
			"--lease-ttl", "2s", "--prepare-timeout", "3s", "--retention", "10m", "--start-timeout", "2m", "--log-level", "info")
		if err := c.launch(); err != nil {
			t.Fatal(err)
		}
		coords = append(coords, c)
	}
	for _, c := range coords {
		if err := c.waitReady(2 * time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	dbs := map[string]string{}
	for _, kind := range services.Kinds {
		dbs[kind] = filepath.Join(dir, kind+".db")
		p := newChild(t, dir, kind, "ready", "participant", kind, "--db", dbs[kind], "--nats", url, "--ack-wait", "4s", "--log-level", "warn")
		p.mustStart(time.Minute)
	}
	t.Logf("cluster, coordinators and services up after %v", time.Since(start).Round(100*time.Millisecond))

	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client, err := orchestrator.NewClient(nc)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range []string{messages.CommandStream, "KV_" + orchestrator.RecordBucket, "KV_" + messages.StatusBucket} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		info, err := js.Stream(ctx, res)
		var replicas int
		if err == nil {
			replicas = info.CachedInfo().Config.Replicas
		}
		cancel()
		if err != nil || replicas != 3 {
			t.Fatalf("%s: %d replicas (%v), want 3", res, replicas, err)
		}
	}

	// Load from the test until stopped; phase counts committed answers per
	// phase of the run.
	var (
		sent        []string
		mu          sync.Mutex
		seen        lockedSet
		next        atomic.Int64
		phase       atomic.Int64
		committedIn [4]atomic.Int64
		stop        = make(chan struct{})
		wg          sync.WaitGroup
	)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(next.Add(1))
				id := fmt.Sprintf("cluster-%06d", i)
				req := messages.BeginRequest{ID: id, Wait: true}
				for _, k := range services.Kinds {
					req.Participants = append(req.Participants, messages.ParticipantSpec{Name: k, Payload: services.Payload(k, i)})
				}
				mu.Lock()
				sent = append(sent, id)
				mu.Unlock()
				p := phase.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				st, err := client.Begin(ctx, req)
				cancel()
				if err != nil {
					seen.put(id, "error")
					time.Sleep(50 * time.Millisecond)
					continue
				}
				seen.put(id, st.State)
				if st.State == "committed" {
					committedIn[p].Add(1)
				}
			}
		}()
	}
	stopLoad := func() {
		select {
		case <-stop:
			return
		default:
		}
		close(stop)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the load did not stop within 30s")
		}
	}
	defer stopLoad()

	leader := func() string {
		end := time.Now().Add(time.Minute)
		for time.Now().Before(end) {
			// Short attempts: a request made while the meta leader is
			// being elected gets no answer at all.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := js.Stream(ctx, messages.CommandStream)
			if err == nil {
				if info, err := s.Info(ctx); err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
					cancel()
					return info.Cluster.Leader
				}
			}
			cancel()
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatal("the command stream has no leader after a minute")
		return ""
	}
	// current waits until the stream and both buckets have a leader and
	// every replica is online and caught up: a restarted node has rejoined.
	current := func() {
		end := time.Now().Add(time.Minute)
		for {
			ok := true
			for _, res := range []string{messages.CommandStream, "KV_" + orchestrator.RecordBucket, "KV_" + messages.StatusBucket} {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				s, err := js.Stream(ctx, res)
				var info *jetstream.StreamInfo
				if err == nil {
					info, err = s.Info(ctx)
				}
				cancel()
				if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
					ok = false
					break
				}
				for _, p := range info.Cluster.Replicas {
					ok = ok && p.Current && !p.Offline
				}
			}
			if ok {
				return
			}
			if time.Now().After(end) {
				t.Fatal("the restarted node has not caught up with the stream and buckets after a minute")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Phase 0: all up. Phase 1: a node that does not lead the stream is
	// killed, then restarted. Phase 2: the stream's leader is killed.
	// Phase 3: everything back.
	time.Sleep(4 * time.Second)
	first := leader()
	victim := names[0]
	for _, n := range names {
		if n != first {
			victim = n
			break
		}
	}
	phase.Store(1)
	t.Logf("killing %s (the stream leader is %s)", victim, first)
	nodes[victim].kill()
	time.Sleep(5 * time.Second)
	if err := nodes[victim].start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	current()
	lead := leader()
	phase.Store(2)
	t.Logf("killing the stream leader %s", lead)
	nodes[lead].kill()
	time.Sleep(6 * time.Second)
	newLead := leader()
	if newLead == lead {
		t.Fatalf("the stream leader is still %s after it was killed", lead)
	}
	if err := nodes[lead].start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	phase.Store(3)
	// At least 4s more load, and until something commits again: how long
	// the elections after a leader loss take depends on the machine (on a
	// loaded 2-core CI machine, longer than the phases above), so the wait
	// for progress is bounded (60s) rather than fixed.
	time.Sleep(4 * time.Second)
	for deadline := time.Now().Add(60 * time.Second); committedIn[3].Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
	}
	stopLoad()

	mu.Lock()
	ids := append([]string(nil), sent...)
	mu.Unlock()
	r := &chaosRun{t: t, start: start}
	quiet := r.quiesce(js, dbs, ids, 3*time.Minute)
	stale, _ := convergedStatuses(t, client, time.Minute)
	audit := runAudit(t, url)
	for _, c := range coords {
		c.stop(10 * time.Second)
	}
	tr, err := readTruth(context.Background(), dbs, ids)
	if err != nil {
		t.Fatal(err)
	}
	answered, lost := 0, 0
	for id, st := range seen.snapshot() {
		if st == "error" {
			if !tr.traced[id] {
				lost++ // never reached a coordinator: counted apart
			}
			continue
		}
		answered++
		switch {
		case st == "committed" && !tr.committed[id]:
			tr.Violations++
			tr.Problems = append(tr.Problems, fmt.Sprintf("%s: Begin answered committed, the services did not all apply it", id))
		case (st == "aborted" || st == "aborting") && tr.committed[id]:
			tr.Violations++
			tr.Problems = append(tr.Problems, fmt.Sprintf("%s: Begin answered %s, the services applied it", id, st))
		}
	}
	summary := fmt.Sprintf("cluster: 3 nodes, R3; %s killed and restarted, then the stream leader %s (new leader %s): "+
		"transactions %d, committed %d, aborted %d, in_doubt %d, violations %d; committed answers per phase %d/%d/%d/%d; "+
		"%d Begin answers, %d begins that reached no coordinator; audit: transactions %d, committed %d, aborted %d, in_doubt %d, violations %d; %v in all, quiescent after %v",
		victim, lead, newLead, tr.Transactions-lost, tr.Committed, tr.Aborted-lost, tr.InDoubt, tr.Violations,
		committedIn[0].Load(), committedIn[1].Load(), committedIn[2].Load(), committedIn[3].Load(),
		answered, lost, audit.Transactions, audit.Committed, audit.Aborted, audit.InDoubt, audit.Violations,
		time.Since(start).Round(time.Second), quiet.Round(time.Second))
	fmt.Println(summary)
	t.Log(summary)
	for _, line := range tr.Conservation {
		t.Log(line)
	}
	// Every status converges to the final state (issue 9, finding 10): the
	// statuses are a view of the decision records and acknowledgements.
	if tr.Violations != 0 || audit.Violations != 0 || tr.InDoubt != 0 || audit.InDoubt != 0 || len(stale) != 0 {
		for id, st := range stale {
			t.Logf("status not final: %s %s (owner %s); the services: committed=%v", id, st.State, st.Owner, tr.committed[id])
		}
		for _, p := range append(tr.Problems, audit.Problems...) {
			t.Log("problem:", p)
		}
		t.Fatalf("%d violations and %d in doubt in the databases; %d violations and %d in doubt in the audit; %d statuses not final a minute after quiescence",
			tr.Violations, tr.InDoubt, audit.Violations, audit.InDoubt, len(stale))
	}
	// Progress: commits after the leader was killed. (While it is down the
	// stream and the buckets elect new leaders; how many commit in those
	// seconds depends on the machine, so that count is only printed.)
	if committedIn[2].Load()+committedIn[3].Load() == 0 || committedIn[3].Load() == 0 {
		t.Fatalf("no transaction committed after the stream leader was killed: %d while it was down, %d after it came back", committedIn[2].Load(), committedIn[3].Load())
	}
}
