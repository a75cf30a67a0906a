package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/console"
)

// consoleOptions are the flags of the web console of natstx server.
type consoleOptions struct {
	listen     string
	token      string
	stuckAfter time.Duration
}

// minConsoleToken is the shortest --ui-token accepted.
const minConsoleToken = 16

func init() { secretFlags["ui-token"] = true }

func addConsoleFlags(f *pflag.FlagSet, o *consoleOptions) {
	f.StringVar(&o.listen, "ui-listen", "", "HOST:PORT to serve the web console on, e.g. 127.0.0.1:8080 (port 0: any free port; empty: off). An address other than loopback needs --ui-token")
	f.StringVar(&o.token, "ui-token", "", fmt.Sprintf("token every web console request must carry (Authorization: Bearer, or the cookie its /login sets), at least %d characters; required unless --ui-listen is loopback. Prefer NATSTX_UI_TOKEN to the flag, which other users can see", minConsoleToken))
	f.DurationVar(&o.stuckAfter, "ui-stuck-after", console.DefaultStuckAfter, "the web console's 'stuck' filter counts a two-phase transaction that waited this long for a participant")
}

// check validates the console flags before anything starts.
func (o consoleOptions) check() error {
	if o.listen == "" {
		if o.token != "" {
			return usageError{errors.New("--ui-token needs --ui-listen (the console is off without it)")}
		}
		return nil
	}
	host, err := consoleHost(o.listen)
	if err != nil {
		return err
	}
	if o.token != "" && len(o.token) < minConsoleToken {
		return usageError{fmt.Errorf("--ui-token is %d characters; use at least %d (e.g. the output of 'openssl rand -hex 16')", len(o.token), minConsoleToken)}
	}
	if o.token == "" && !isLoopback(host) {
		return usageError{fmt.Errorf("--ui-listen %s is not a loopback address, so anyone who can reach it could abort transactions: set a token with --ui-token or NATSTX_UI_TOKEN, or listen on 127.0.0.1", o.listen)}
	}
	if o.stuckAfter <= 0 {
		return usageError{errors.New("--ui-stuck-after must be positive")}
	}
	return nil
}

// consoleHost splits --ui-listen; port 0 is allowed (any free port).
func consoleHost(listen string) (string, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", usageError{fmt.Errorf("--ui-listen %q: want HOST:PORT, e.g. 127.0.0.1:8080", listen)}
	}
	if port, err := strconv.Atoi(p); err != nil || port < 0 || port > 65535 {
		return "", usageError{fmt.Errorf("--ui-listen %q: the port must be a number from 0 to 65535", listen)}
	}
	return host, nil
}

// isLoopback reports whether host (of HOST:PORT) is a loopback address or
// localhost; an empty host means every address, which is not.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// startConsole serves the web console on o.listen over nc (and, for the
// dashboard, eng's counters). It returns the console's URL and the function
// that stops it.
func startConsole(o consoleOptions, nc *nats.Conn, eng *orchestrator.Engine, log *zap.Logger) (string, func(), error) {
	client, err := orchestrator.NewClient(nc)
	if err != nil {
		return "", nil, err
	}
	h, err := console.New(console.Config{
		Source: client, Stats: eng.Stats, OldestInFlight: eng.OldestInFlight,
		Token: o.token, StuckAfter: o.stuckAfter, Logger: log.Named("console"),
	})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return "", nil, fmt.Errorf("--ui-listen %s: %w", o.listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the web console stopped", zap.Error(err))
		}
	}()
	log.Info("serving the web console", zap.String("listen", ln.Addr().String()), zap.Bool("token", o.token != ""))
	return "http://" + ln.Addr().String() + "/", func() {
		_ = srv.Close()
		<-done
	}, nil
}

// consoleLine is the line that names the console's URL at start-up.
func consoleLine(url string, token bool) string {
	if token {
		return "web console on " + url + " (it asks for its token: sign in at " + url + "login)"
	}
	return "web console on " + url
}

// defaultDemoUI is natstx demo's --ui-listen.
const defaultDemoUI = "127.0.0.1:8080"

// checkUI validates demo's console flags: loopback only (the demo has no
// token). changed says --ui-listen was given.
func (o *demoOptions) checkUI(changed bool) error {
	if !o.ui {
		if changed {
			return usageError{errors.New("--ui-listen needs --ui")}
		}
		return nil
	}
	host, err := consoleHost(o.uiListen)
	if err != nil {
		return err
	}
	if !isLoopback(host) {
		return usageError{fmt.Errorf("--ui-listen %s: the demo serves its console on loopback only (127.0.0.1, ::1, localhost); for more, run natstx server --ui-listen with --ui-token", o.uiListen)}
	}
	o.uiFallback = !changed
	return nil
}

// startDemoConsole serves the demo's console on o.uiListen, or on any free
// loopback port if the default one is taken.
func startDemoConsole(o demoOptions, nc *nats.Conn, eng *orchestrator.Engine, log *zap.Logger) (string, func(), error) {
	co := consoleOptions{listen: o.uiListen, stuckAfter: console.DefaultStuckAfter}
	u, stop, err := startConsole(co, nc, eng, log)
	if err != nil && o.uiFallback {
		host, _ := consoleHost(o.uiListen)
		co.listen = net.JoinHostPort(host, "0")
		u, stop, err = startConsole(co, nc, eng, log)
	}
	return u, stop, err
}

// demoNotes is where the demo prints its console lines: standard output,
// or standard error with --json (whose standard output is one object).
func demoNotes(o demoOptions, out io.Writer) io.Writer {
	if o.jsonOut {
		return os.Stderr
	}
	return out
}

// waitInConsole keeps the demo up after its run, the console open on url,
// until SIGINT or SIGTERM (or ctx ends).
func waitInConsole(ctx context.Context, o demoOptions, out io.Writer, url string) {
	sctx, stop := signalContext(ctx)
	defer stop()
	fmt.Fprintf(demoNotes(o, out), "natstx demo: the run is over; the coordinator, the services and the web console on %s stay up until Ctrl-C\n", url)
	<-sctx.Done()
	fmt.Fprintln(demoNotes(o, out), "natstx demo: stopping")
}
