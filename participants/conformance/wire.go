package conformance

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance/wire"
	"github.com/natstx/natstx/participants/services"
)

// probe starts a wire.Probe against the participant of e.
func (e *env) probe(calls func(messages.Op, string) int, crash wire.Crasher, payload []byte) *wire.Probe {
	e.t.Helper()
	p := &wire.Probe{
		Conn: e.Connect(e.t), Participant: name, Payload: payload, ActionPayload: []byte("go"),
		Wait: wait, InDoubtWait: wait, CrashWait: wait, Quiet: 300 * time.Millisecond,
		Calls: calls, Crash: crash,
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(p.Close)
	return p
}

// runCase runs one wire case as a subtest.
func runCase(t *testing.T, p *wire.Probe, c wire.Case) {
	t.Run(c.Name, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*wait)
		defer cancel()
		res := p.Run(ctx, c)
		for _, n := range res.Notes {
			t.Log("note:", n)
		}
		switch res.Status {
		case wire.Fail:
			t.Fatalf("%s: %s", c.Doc, res.Message)
		case wire.Skip:
			t.Skip(res.Message)
		}
	})
}

// testWire runs every black-box case but the crash on one participant with
// an in-memory record and a counting handler of both protocols, asking
// about transactions in doubt after 50ms.
func testWire(t *testing.T, start Start) {
	e := newEnv(t)
	h := newCounter()
	cfg := config()
	cfg.Handler, cfg.SagaHandler = h, h
	cfg.InDoubtAfter = 50 * time.Millisecond
	defer start(t, e.URL, cfg)()
	p := e.probe(h.n, nil, []byte("go"))
	for _, c := range wire.Cases() {
		if c.Name != "crash-redelivery" {
			runCase(t, p, c)
		}
	}
}

// testWireCrash runs the crash case on the inventory service behind its
// barrier: the handler goroutine ends right after the barrier's local
// commit, before the reply (as a process killed there), and a new transport
// on the same database answers the redelivery from the barrier. The
// inventory then holds the reservation sold once.
func testWireCrash(t *testing.T, start Start) {
	e := newEnv(t)
	cfg, svc := inventory(t, filepath.Join(t.TempDir(), "inventory.db"))
	defer svc.DB().Close()
	cr := &crasher{t: t, url: e.URL, start: start}
	cfg.InDoubtAfter = -1
	cfg.AfterApply = cr.afterApply
	cr.cfg = cfg
	cr.stop = start(t, e.URL, cfg)
	defer func() { cr.stop() }()
	p := e.probe(nil, cr, services.Payload("inventory", 0))
	for _, c := range wire.Cases() {
		if c.Name == "crash-redelivery" {
			runCase(t, p, c)
		}
	}
	if n := cr.crashes(); n != 2 {
		t.Fatalf("%d crashes, want 2 (after prepare, after commit)", n)
	}
	ids := p.TxIDs("crash-redelivery")
	if len(ids) != 1 {
		t.Fatalf("the crash case used transactions %v, want one", ids)
	}
	if st, err := svc.TxState(context.Background(), ids[0]); err != nil || st != services.TxApplied {
		t.Fatalf("inventory has %s %s (%v), want applied", ids[0], st, err)
	}
	if _, err := svc.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// crasher is a wire.Crasher for a transport started in this process: the
// armed command's handler goroutine exits right after the command is
// applied (runtime.Goexit: no reply, no acknowledgement, as if the process
// died), and Restart stops the transport and starts a new one with the
// same configuration (the same database).
type crasher struct {
	t     *testing.T
	url   string
	start Start
	cfg   participants.Config
	stop  func()

	mu      sync.Mutex
	armed   messages.Op
	crashed chan struct{}
	count   int
}

func (c *crasher) afterApply(cmd messages.Command) {
	c.mu.Lock()
	hit := c.armed != "" && cmd.Op == c.armed
	var ch chan struct{}
	if hit {
		c.armed, ch = "", c.crashed
		c.count++
	}
	c.mu.Unlock()
	if hit {
		close(ch)
		runtime.Goexit()
	}
}

func (c *crasher) crashes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// ArmCrash arms a crash after the next command of op.
func (c *crasher) ArmCrash(_ context.Context, op messages.Op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.crashed = op, make(chan struct{})
	return nil
}

// Crashed waits for the armed crash.
func (c *crasher) Crashed(ctx context.Context) error {
	c.mu.Lock()
	ch := c.crashed
	c.mu.Unlock()
	if ch == nil {
		return errors.New("no crash armed")
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Restart stops the transport and starts a new one.
func (c *crasher) Restart(context.Context) error {
	c.stop()
	c.stop = c.start(c.t, c.url, c.cfg)
	return nil
}
