package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/sim"
)

// proc is the natstx binary running as a child process, as a daemon runs.
type proc struct {
	args   []string
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line; closed at EOF
	mu     sync.Mutex
	stdout strings.Builder
	stderr syncBuffer
	done   chan struct{}
	code   int
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc starts natstx with args; t.Cleanup kills it if it still runs.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{args: args, lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.Command(natstxBin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.stdout.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default: // nobody reads lines any more; stdout keeps them
			}
		}
		close(p.lines)
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("natstx %s did not exit after SIGKILL", strings.Join(args, " "))
		}
	})
	return p
}

// waitLine waits up to limit for a stdout line containing want.
func (p *proc) waitLine(t *testing.T, want string, limit time.Duration) string {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				t.Fatalf("natstx %s exited (%d) before printing %q; stdout:\n%s\nstderr:\n%s",
					strings.Join(p.args, " "), p.code, want, p.out(), p.stderr.String())
			}
			if strings.Contains(l, want) {
				return l
			}
		case <-timer.C:
			t.Fatalf("natstx %s printed no %q within %v; stdout:\n%s\nstderr:\n%s",
				strings.Join(p.args, " "), want, limit, p.out(), p.stderr.String())
		}
	}
}

func (p *proc) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

// stop sends sig and returns the exit code, failing if it takes over limit.
func (p *proc) stop(t *testing.T, sig syscall.Signal, limit time.Duration) int {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	return p.wait(t, limit)
}

// wait returns the exit code once the process ends, failing after limit.
func (p *proc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(limit):
		t.Fatalf("natstx %s did not exit within %v; stdout:\n%s\nstderr:\n%s", strings.Join(p.args, " "), limit, p.out(), p.stderr.String())
		return -1
	}
}

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// deadURL is a NATS URL where nothing listens.
func deadURL(t *testing.T) string { return fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)) }

// startServer runs `natstx server` with an embedded NATS server on a free
// port and a fresh data directory, and returns its NATS URL once it is
// ready.
func startServer(t *testing.T, extra ...string) (*proc, string) {
	t.Helper()
	port := freePort(t)
	args := append([]string{"server", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", t.TempDir(), "--log-level", "warn"}, extra...)
	p := startProc(t, nil, args...)
	p.waitLine(t, "ready on", 30*time.Second)
	return p, fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// startSim runs a simulated participant in the test process against url.
func startSim(t *testing.T, url string, cfg sim.Config) *sim.Service {
	t.Helper()
	if cfg.MaxLatency == 0 && cfg.MinLatency == 0 {
		cfg.MaxLatency = time.Millisecond
	}
	svc, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := participants.New(nc, participants.Config{Name: cfg.Name, Handler: svc, SagaHandler: svc, StreamWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rt.Stop()
		nc.Close()
	})
	return svc
}

// connectJS connects to the NATS server at url, closing the connection
// when the test ends, and returns it with its JetStream context.
func connectJS(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// spyOn subscribes on nc to subject, a second subscriber beside the
// coordinator, and returns a function that waits for the next message
// there and decodes it as a T.
func spyOn[T any](t *testing.T, nc *nats.Conn, subject string) func() T {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() T {
		t.Helper()
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("nothing on %s: %v", subject, err)
		}
		var v T
		if err := json.Unmarshal(m.Data, &v); err != nil {
			t.Fatalf("%s: %v in %s", subject, err, m.Data)
		}
		return v
	}
}

// wantExit runs natstx and checks the exit code and that stderr (or stdout)
// contains want; it returns stdout.
func wantExit(t *testing.T, code int, want string, args ...string) string {
	t.Helper()
	stdout, stderr, got := run(t, 30*time.Second, args...)
	if got != code || !strings.Contains(stderr+stdout, want) {
		t.Errorf("natstx %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(args, " "), got, stdout, stderr, code, want)
	}
	return stdout
}
