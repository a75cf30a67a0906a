// Package embedded runs a NATS server with JetStream inside the current
// process: the default broker of `natstx demo`, `natstx server` and every test.
// It listens on loopback only unless told otherwise, keeps JetStream data in a
// directory, and shuts down cleanly.
package embedded

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says how to run the embedded server. The zero value is valid: a
// random loopback port and a fresh temporary data directory, removed on Stop.
type Config struct {
	// Host is the address to listen on; default 127.0.0.1.
	Host string
	// Port is the client port; 0 picks a free one, -1 means the NATS default
	// 4222.
	Port int
	// DataDir holds JetStream's files. Empty means a new temporary directory
	// that Stop removes.
	DataDir string
	// Name is the server name; in a cluster it must differ per node. Default
	// "natstx-<port>".
	Name string
	// MaxPayload is the largest message the server accepts, in bytes; 0 keeps
	// the NATS default (1 MiB).
	MaxPayload int32
	// Cluster, when set, joins this server to a JetStream cluster.
	Cluster *ClusterConfig
	// StartTimeout bounds how long Start waits for the server to accept
	// connections; default 10s.
	StartTimeout time.Duration
	// Logs turns on the NATS server's own log lines (to standard error).
	Logs bool
	// ConfigFile, if set, is a NATS server configuration file loaded first,
	// e.g. the operator and accounts `natstx auth init` writes. The fields
	// of Config override its listen address and JetStream store, and, when
	// set, its server name, payload limit, cluster and TLS; everything else
	// in it (authorization, limits) applies as written.
	ConfigFile string
	// TLS, if set, makes clients connect over TLS with this certificate.
	TLS *TLSConfig
	// Sync is when JetStream flushes its files to disk: SyncInterval (the
	// default, JetStream's own: every 2 minutes, so a machine crash or power
	// loss can lose the writes of the last interval, a process crash none)
	// or SyncAlways (an fsync before each write is acknowledged).
	Sync SyncMode
}

// SyncMode says when JetStream flushes its files to disk.
type SyncMode string

// The sync modes.
const (
	SyncInterval SyncMode = "interval"
	SyncAlways   SyncMode = "always"
)

// ParseSyncMode reads "interval" or "always" ("" means interval).
func ParseSyncMode(s string) (SyncMode, error) {
	switch SyncMode(s) {
	case "", SyncInterval:
		return SyncInterval, nil
	case SyncAlways:
		return SyncAlways, nil
	}
	return "", fmt.Errorf("sync mode %q: use %q (JetStream's default: fsync every 2 minutes) or %q (fsync before each write is acknowledged)", s, SyncInterval, SyncAlways)
}

// TLSConfig names the PEM files of one TLS listener.
type TLSConfig struct {
	// Cert and Key are the server's certificate and private key.
	Cert, Key string
	// CA is the certificate authority that signed the peers' certificates;
	// required when Verify is set, and for routes.
	CA string
	// Verify requires a client certificate signed by CA. Routes always
	// verify.
	Verify bool
}

// options builds the nats-server TLS configuration of t.
func (t *TLSConfig) options(verify bool) (*tls.Config, error) {
	if t.Cert == "" || t.Key == "" {
		return nil, errors.New("a TLS listener needs a certificate and its key")
	}
	if verify && t.CA == "" {
		return nil, errors.New("verifying peers' certificates needs the CA that signed them")
	}
	return server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.Cert, KeyFile: t.Key, CaFile: t.CA, Verify: verify, Timeout: 2})
}

// ClusterConfig joins a server to a cluster over route connections.
type ClusterConfig struct {
	// Name is the cluster name, the same on every node.
	Name string
	// Host and Port are where this node listens for routes.
	Host string
	Port int
	// Routes are the route URLs of the other nodes, e.g. nats://127.0.0.1:6223.
	Routes []string
	// TLS, if set, encrypts the routes; each node presents its certificate
	// and verifies the others' against TLS.CA.
	TLS *TLSConfig
}

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
	dataDir string
	tempDir bool
	lock    *dirLock
}

// Start starts a server and waits until it accepts connections. It locks
// the data directory first (the file LockFile in it, which names the holder)
// and fails with ErrDataDirInUse, naming the process that holds it, when
// another server runs on that directory: two JetStream servers on one store
// would corrupt it and each take the other's coordinators for dead. Stop
// releases the lock; so does the end of the process, however it ends.
func Start(cfg Config) (*Server, error) {
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	switch port {
	case 0:
		port = server.RANDOM_PORT
	case -1:
		port = server.DEFAULT_PORT
	}
	var lock *dirLock
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("embedded nats: creating the data directory: %w", err)
		}
		l, err := lockDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		lock = l
	}
	if port != server.RANDOM_PORT {
		// nats-server reports a taken port only in its log; find out first.
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			lock.unlock()
			return nil, fmt.Errorf("embedded nats: cannot listen on %s: %w", addr, err)
		}
		_ = l.Close()
	}
	s := &Server{dataDir: cfg.DataDir, lock: lock}
	if s.dataDir == "" {
		dir, err := os.MkdirTemp("", "natstx-nats-")
		if err != nil {
			return nil, fmt.Errorf("embedded nats: creating a data directory: %w", err)
		}
		s.dataDir, s.tempDir = dir, true
		if s.lock, err = lockDir(dir); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		fromFile, err := server.ProcessConfigFile(cfg.ConfigFile)
		if err != nil {
			s.cleanup()
			return nil, fmt.Errorf("embedded nats: configuration file %s: %w", cfg.ConfigFile, err)
		}
		opts = fromFile
	}
	if cfg.Name != "" {
		opts.ServerName = cfg.Name
	}
	opts.Host, opts.Port = host, port
	opts.JetStream, opts.StoreDir = true, s.dataDir
	switch cfg.Sync {
	case SyncAlways:
		opts.SyncAlways = true
	case "", SyncInterval:
	default:
		s.cleanup()
		_, err := ParseSyncMode(string(cfg.Sync))
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if cfg.MaxPayload != 0 || cfg.ConfigFile == "" {
		opts.MaxPayload = cfg.MaxPayload
	}
	opts.NoSigs, opts.NoLog = true, !cfg.Logs
	if cfg.TLS != nil {
		tc, err := cfg.TLS.options(cfg.TLS.Verify)
		if err != nil {
			s.cleanup()
			return nil, fmt.Errorf("embedded nats: client TLS: %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, cfg.TLS.Verify, 2
	}
	if cfg.Cluster != nil {
		keep := opts.Cluster // TLS and authorization from the file, if any
		opts.Cluster = server.ClusterOpts{Name: cfg.Cluster.Name, Host: cfg.Cluster.Host, Port: cfg.Cluster.Port,
			TLSConfig: keep.TLSConfig, TLSTimeout: keep.TLSTimeout, TLSMap: keep.TLSMap,
			Username: keep.Username, Password: keep.Password}
		if cfg.Cluster.TLS != nil {
			tc, err := cfg.Cluster.TLS.options(true)
			if err != nil {
				s.cleanup()
				return nil, fmt.Errorf("embedded nats: route TLS: %w", err)
			}
			// A node is both server and client of routes, as nats-server
			// sets up a cluster's tls block: strict verification both ways.
			tc.ClientAuth, tc.RootCAs = tls.RequireAndVerifyClientCert, tc.ClientCAs
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 2
		}
		opts.Routes = nil
		if opts.ServerName == "" {
			opts.ServerName = "natstx-" + strconv.Itoa(cfg.Cluster.Port)
		}
		for _, r := range cfg.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil {
				s.cleanup()
				return nil, fmt.Errorf("embedded nats: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if cfg.Logs {
		ns.ConfigureLogger()
	}
	s.ns = ns
	ns.Start()
	wait := cfg.StartTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if !ns.ReadyForConnections(wait) {
		s.Stop()
		return nil, errors.New("embedded nats: server did not accept connections within " + wait.String() +
			" (is " + net.JoinHostPort(host, strconv.Itoa(port)) + " already in use?)")
	}
	return s, nil
}

// URL is the client URL to connect to, e.g. nats://127.0.0.1:4222.
func (s *Server) URL() string { return s.ns.ClientURL() }

// DataDir is the JetStream data directory in use.
func (s *Server) DataDir() string { return s.dataDir }

// NATS returns the underlying nats-server, for what this package does not
// wrap (monitoring, cluster state).
func (s *Server) NATS() *server.Server { return s.ns }

// Stop shuts the server down, waits until it has, and removes the data
// directory if Start created it. It is safe to call more than once.
func (s *Server) Stop() {
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	s.cleanup()
}

func (s *Server) cleanup() {
	s.lock.unlock()
	s.lock = nil
	if s.tempDir {
		_ = os.RemoveAll(s.dataDir)
		s.tempDir = false
	}
}
