package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/natstx/natstx/participants/services"
)

// child is one natstx process of a chaos or cluster run that the test
// kills, pauses and starts again, always with the same arguments unless
// told otherwise. Its standard error goes to a log file (appended across
// restarts) whose tail is shown when something goes wrong.
type child struct {
	t       *testing.T
	name    string
	args    []string
	env     []string
	ready   string // a line containing this means it is ready
	log     string // its standard error, appended across restarts
	cmd     *exec.Cmd
	done    chan struct{}
	readyCh chan struct{}
	extra   []string // the extra arguments of the last start
	paused  bool
	starts  int
}

// newChild describes a natstx process; start runs it. Cleanup kills it.
func newChild(t *testing.T, dir, name, ready string, args ...string) *child {
	t.Helper()
	c := &child{t: t, name: name, args: args, ready: ready, log: filepath.Join(dir, name+".log")}
	t.Cleanup(c.kill)
	return c
}

// running reports whether the process runs (paused or not).
func (c *child) running() bool {
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// start runs the process with extra arguments added to its own, and waits
// (at most limit) for its ready line.
func (c *child) start(limit time.Duration, extra ...string) error {
	if err := c.launch(extra...); err != nil {
		return err
	}
	return c.waitReady(limit)
}

// launch runs the process with extra arguments added to its own, without
// waiting for it to be ready.
func (c *child) launch(extra ...string) error {
	if c.running() {
		return fmt.Errorf("%s already runs", c.name)
	}
	bin, err := buildNatstx()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	c.starts++
	c.extra = extra
	fmt.Fprintf(logf, "---- start %d at %s: natstx %s\n", c.starts, time.Now().Format("15:04:05.000"), strings.Join(append(append([]string{}, c.args...), extra...), " "))
	cmd := exec.Command(bin, append(append([]string{}, c.args...), extra...)...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	_ = logf.Close() // the child holds its own descriptor
	c.cmd, c.done, c.readyCh, c.paused = cmd, make(chan struct{}), make(chan struct{}), false
	ready, done := c.readyCh, c.done
	go func() {
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			if !seen && strings.Contains(sc.Text(), c.ready) {
				seen = true
				close(ready)
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	return nil
}

// isReady reports whether the running process printed its ready line.
func (c *child) isReady() bool {
	if !c.running() {
		return false
	}
	select {
	case <-c.readyCh:
		return true
	default:
		return false
	}
}

// waitReady waits (at most limit) for the ready line of the process
// launched last; one that is not ready by then is killed.
func (c *child) waitReady(limit time.Duration) error {
	if c.done == nil {
		return fmt.Errorf("%s was never started", c.name)
	}
	select {
	case <-c.readyCh:
		return nil
	case <-c.done:
		return fmt.Errorf("%s exited before it was ready:\n%s", c.name, c.tail())
	case <-time.After(limit):
		c.kill()
		return fmt.Errorf("%s not ready within %v:\n%s", c.name, limit, c.tail())
	}
}

// mustStart is start that fails the test.
func (c *child) mustStart(limit time.Duration, extra ...string) {
	c.t.Helper()
	if err := c.start(limit, extra...); err != nil {
		c.t.Fatal(err)
	}
}

// kill sends SIGKILL (a paused process dies too) and waits for the end.
func (c *child) kill() {
	if !c.running() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c.paused = false
}

// stop sends SIGTERM (resuming a paused process first) and waits up to
// limit for a graceful end, then kills it.
func (c *child) stop(limit time.Duration) {
	if !c.running() {
		return
	}
	c.resume()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(limit):
		c.kill()
	}
}

// pause stops the process with SIGSTOP; resume continues it.
func (c *child) pause() {
	if c.running() && !c.paused {
		_ = c.cmd.Process.Signal(syscall.SIGSTOP)
		c.paused = true
	}
}

func (c *child) resume() {
	if c.running() && c.paused {
		_ = c.cmd.Process.Signal(syscall.SIGCONT)
		c.paused = false
	}
}

// tail is the end of the process's log.
func (c *child) tail() string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// truth is what the services' own databases say about a set of
// transactions, after every process stopped.
type truth struct {
	Transactions, Committed, Aborted, InDoubt, Violations int
	Problems                                              []string
	committed                                             map[string]bool
	traced                                                map[string]bool // some service has a row for it
	Conservation                                          []string
}

// readTruth opens each service's SQLite file (kind -> path) and classifies
// every transaction of ids: committed when every service applied it,
// aborted when none applied or holds it, in doubt when one still holds it
// staged, a violation when some applied it and others did not. Each
// service's conservation invariants are checked too; a broken one is a
// violation.
func readTruth(ctx context.Context, dbs map[string]string, ids []string) (truth, error) {
	tr := truth{committed: map[string]bool{}, traced: map[string]bool{}}
	svcs := map[string]services.Service{}
	for kind, path := range dbs {
		svc, err := services.Open(ctx, kind, path)
		if err != nil {
			return tr, err
		}
		defer func() { _ = svc.DB().Close() }()
		svcs[kind] = svc
	}
	lines, err := services.CheckAll(ctx, svcs)
	tr.Conservation = lines
	if err != nil {
		if !errors.Is(err, services.ErrInvariant) {
			return tr, err
		}
		tr.Violations++
		tr.Problems = append(tr.Problems, err.Error())
	}
	for _, id := range ids {
		tr.Transactions++
		applied, staged := 0, 0
		states := map[string]services.TxState{}
		for kind, svc := range svcs {
			s, err := svc.TxState(ctx, id)
			if err != nil {
				return tr, err
			}
			states[kind] = s
			if s != services.TxNone {
				tr.traced[id] = true
			}
			switch s {
			case services.TxApplied:
				applied++
			case services.TxStaged:
				staged++
			}
		}
		switch {
		case applied > 0 && applied < len(svcs):
			tr.Violations++
			if len(tr.Problems) < 50 {
				tr.Problems = append(tr.Problems, fmt.Sprintf("%s applied by some services only: %v", id, states))
			}
		case staged > 0:
			tr.InDoubt++
			if len(tr.Problems) < 50 {
				tr.Problems = append(tr.Problems, fmt.Sprintf("%s still staged after quiescence: %v", id, states))
			}
		case applied == len(svcs):
			tr.Committed++
			tr.committed[id] = true
		default:
			tr.Aborted++
		}
	}
	return tr, nil
}

// stagedCount counts the transactions of ids that some service holds
// staged right now (the databases are shared with running processes, which
// SQLite's WAL allows).
func stagedCount(ctx context.Context, dbs map[string]string, ids []string) (int, error) {
	n := 0
	for kind, path := range dbs {
		db, err := services.OpenSQLite(path)
		if err != nil {
			return 0, err
		}
		svc, err := services.New(ctx, kind, db)
		if err != nil {
			_ = db.Close()
			return 0, err
		}
		for _, id := range ids {
			s, err := svc.TxState(ctx, id)
			if err != nil {
				_ = db.Close()
				return 0, err
			}
			if s == services.TxStaged {
				n++
			}
		}
		_ = db.Close()
	}
	return n, nil
}

// lockedSet is a set of strings safe for concurrent use.
type lockedSet struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *lockedSet) put(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.m[k] = v
}

func (s *lockedSet) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out
}
