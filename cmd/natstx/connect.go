package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// defaultNATS is where client commands look for NATS: where `natstx server`
// and `natstx nats` listen by default.
const defaultNATS = "nats://127.0.0.1:4222"

// connectTimeout bounds the dial to NATS, so an unreachable server is
// reported in seconds, never as a hang.
const connectTimeout = 3 * time.Second

// addNATSFlag adds the --nats flag of a client command.
func addNATSFlag(c *cobra.Command, dst *string) {
	c.Flags().StringVar(dst, "nats", defaultNATS, "URL of the NATS server (or comma-separated cluster URLs)")
}

// connect dials NATS at url as name. A failure says where it tried and what
// to do. A connection that drops retries 5 times, 500ms apart, then closes;
// opts (nats.MaxReconnects(-1) for a daemon) change that.
func connect(url, name string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name(name),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(5),
		nats.ReconnectWait(500 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("cannot reach NATS at %s: %w; start one with 'natstx server' (or 'natstx nats'), or point --nats (or NATSTX_NATS) at a running server", url, err)
	}
	return nc, nil
}

// connectDaemon dials NATS for a long-running process: it keeps trying for
// up to wait (NATS may be restarting), then, once connected, reconnects for
// ever.
func connectDaemon(ctx context.Context, url, name string, wait time.Duration) (*nats.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		nc, err := connect(url, name, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
		if err == nil || time.Now().After(deadline) {
			return nc, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// splitHostPort parses HOST:PORT for a listen flag.
func splitHostPort(flag, addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, usageError{fmt.Errorf("--%s %q: want HOST:PORT, e.g. 127.0.0.1:4222", flag, addr)}
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, usageError{fmt.Errorf("--%s %q: the port must be a number from 1 to 65535", flag, addr)}
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}
