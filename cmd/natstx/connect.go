package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/natstx/natstx/messages"
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

// connOptions are the connection flags every command that connects shares:
// who it is (a credentials file, or a user and password) and how it checks
// the server (TLS). They are persistent flags of the root command, so each
// has its NATSTX_* variable and config-file key (NATSTX_CREDS, creds:).
type connOptions struct {
	creds, user, password  string
	tlsCert, tlsKey, tlsCA string
	inboxPrefix            string
}

// secretFlags are the flags whose values --print-config masks.
var secretFlags = map[string]bool{"password": true}

// addConnFlags adds the connection flags to f.
func addConnFlags(f *pflag.FlagSet, o *connOptions) {
	f.StringVar(&o.creds, "creds", "", "NATS credentials file (.creds: user JWT and seed) of this identity, e.g. from 'natstx auth init'")
	f.StringVar(&o.user, "user", "", "NATS user name (with --password), for servers configured with plain users")
	f.StringVar(&o.password, "password", "", "NATS password of --user (prefer NATSTX_PASSWORD to a flag, which other users can see)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "client certificate (PEM) for servers that verify clients")
	f.StringVar(&o.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert")
	f.StringVar(&o.tlsCA, "tls-ca", "", "CA certificate (PEM) that signed the NATS server's certificate; setting it requires TLS")
	f.StringVar(&o.inboxPrefix, "inbox-prefix", "", "reply inbox prefix; default: the one the identity's permissions allow (see docs/SECURITY.md)")
}

// validate checks that the flags make sense together.
func (o connOptions) validate() error {
	switch {
	case o.creds != "" && o.user != "":
		return usageError{errors.New("--creds and --user both name an identity; give one")}
	case o.password != "" && o.user == "":
		return usageError{errors.New("--password needs --user")}
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	return nil
}

// natsOptions turns the flags into connection options; defaultInbox is the
// inbox prefix of the command's identity, used unless --inbox-prefix says
// otherwise.
func (o connOptions) natsOptions(defaultInbox string) []nats.Option {
	var opts []nats.Option
	if o.creds != "" {
		opts = append(opts, nats.UserCredentials(o.creds))
	}
	if o.user != "" {
		opts = append(opts, nats.UserInfo(o.user, o.password))
	}
	if o.tlsCA != "" {
		opts = append(opts, nats.RootCAs(o.tlsCA))
	}
	if o.tlsCert != "" {
		opts = append(opts, nats.ClientCert(o.tlsCert, o.tlsKey))
	}
	inbox := defaultInbox
	if o.inboxPrefix != "" {
		inbox = o.inboxPrefix
	}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	return opts
}

// The connection flags of the command running, set by the root command's
// PersistentPreRunE; connect reads them.
var (
	connMu   sync.Mutex
	connFlag connOptions
)

func setConnOptions(o connOptions) {
	connMu.Lock()
	defer connMu.Unlock()
	connFlag = o
}

func currentConnOptions() connOptions {
	connMu.Lock()
	defer connMu.Unlock()
	return connFlag
}

// connect dials NATS at url as name, with the command's credentials and TLS
// settings and the operator's reply inbox (a caller of another identity
// passes nats.CustomInboxPrefix in opts). A failure says where it tried and
// what to do. A connection that drops retries 5 times, 500ms apart, then
// closes; opts (nats.MaxReconnects(-1) for a daemon) change that.
func connect(url, name string, opts ...nats.Option) (*nats.Conn, error) {
	return connectAs(url, name, messages.OperatorInbox(), opts...)
}

// connectAs is connect for an identity whose reply inboxes start with inbox
// ("" for the NATS default, _INBOX, the coordinator's).
func connectAs(url, name, inbox string, opts ...nats.Option) (*nats.Conn, error) {
	sec := currentConnOptions()
	base := append([]nats.Option{
		nats.Name(name),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(5),
		nats.ReconnectWait(500 * time.Millisecond),
	}, sec.natsOptions(inbox)...)
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, connectError(url, err)
	}
	return nc, nil
}

// connectError explains a failed dial; the URL is shown without any password
// it carries.
func connectError(u string, err error) error {
	shown := redactURL(u)
	switch {
	case errors.Is(err, nats.ErrAuthorization), strings.Contains(err.Error(), "Authorization Violation"), strings.Contains(err.Error(), "authorization violation"):
		return fmt.Errorf("NATS at %s refused this identity: %w; pass the credentials of an identity it knows (--creds, or --user and --password; NATSTX_CREDS, NATSTX_USER, NATSTX_PASSWORD)", shown, err)
	case strings.Contains(err.Error(), "tls") || strings.Contains(err.Error(), "x509") || strings.Contains(err.Error(), "certificate"):
		return fmt.Errorf("TLS with NATS at %s failed: %w; check --tls-ca (the CA of the server's certificate) and, if the server verifies clients, --tls-cert and --tls-key", shown, err)
	}
	return fmt.Errorf("cannot reach NATS at %s: %w; start one with 'natstx server' (or 'natstx nats'), or point --nats (or NATSTX_NATS) at a running server", shown, err)
}

// redactURL returns the comma-separated NATS URLs u with any password (and
// token) replaced by "xxxxx", for logs, messages and --print-config. A URL
// that does not parse (a password with '#' or '/' in it) or has no scheme
// (user:pass@host, which the NATS client accepts) is masked too: whatever
// stands before the last '@' of its authority is user information.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		pu, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err == nil && pu.User != nil && pu.Host != "":
			if _, ok := pu.User.Password(); ok {
				pu.User = url.UserPassword(pu.User.Username(), "xxxxx")
			} else {
				pu.User = url.User("xxxxx")
			}
			parts[i] = pu.String()
		case err == nil && pu.Host != "", !strings.Contains(p, "@"):
			// a URL without user information
		default:
			parts[i] = redactUserinfo(p)
		}
	}
	return strings.Join(parts, ",")
}

// redactUserinfo masks the user information of a URL that url.Parse does
// not take apart: "nats://user:xxxxx@host", "xxxxx@host". Without a scheme,
// a '/' before the '@' makes it a file path, left as it is.
func redactUserinfo(p string) string {
	scheme, rest := "", p
	if i := strings.Index(p, "://"); i >= 0 {
		scheme, rest = p[:i+3], p[i+3:]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return p
	}
	user, host := rest[:at], rest[at+1:]
	if scheme == "" && strings.Contains(user, "/") {
		return p
	}
	if c := strings.Index(user, ":"); c >= 0 {
		return scheme + user[:c] + ":xxxxx@" + host
	}
	return scheme + "xxxxx@" + host
}

// connectDaemon dials NATS for a long-running process whose reply inboxes
// start with inbox (see connectAs): it keeps trying for up to wait (NATS may
// be restarting), then, once connected, reconnects for ever.
func connectDaemon(ctx context.Context, url, name, inbox string, wait time.Duration) (*nats.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		nc, err := connectAs(url, name, inbox, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
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
