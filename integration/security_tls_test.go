package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/sim"
)

// writeTestCerts writes a new CA (ca.pem) and a certificate for 127.0.0.1
// and localhost that it signed (server-cert.pem, server-key.pem), good for
// both server and client authentication as routes need, into dir/natstx-tls,
// the names configs/secure-*.yaml use. Nothing is committed: each test makes
// its own.
func writeTestCerts(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "natstx-tls")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "natstx test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "natstx test server"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*pem.Block{
		"ca.pem":          {Type: "CERTIFICATE", Bytes: caDER},
		"server-cert.pem": {Type: "CERTIFICATE", Bytes: leafDER},
		"server-key.pem":  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(out, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// startServerIn starts `natstx server args...` in directory dir (where a
// config's relative paths point) and waits up to limit for its ready line.
// Cleanup stops it with SIGTERM, then SIGKILL after 15s.
func startServerIn(t *testing.T, dir string, limit time.Duration, args ...string) {
	t.Helper()
	launchServerIn(t, dir, args...)(limit)
}

// launchServerIn starts `natstx server args...` in dir as startServerIn
// does and returns the function that waits for it to be ready.
func launchServerIn(t *testing.T, dir string, args ...string) func(limit time.Duration) {
	t.Helper()
	bin, err := buildNatstx()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"server"}, args...)...)
	cmd.Dir = dir
	stderr := &lockedWriter{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, done := make(chan bool, 1), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if !sent && strings.Contains(sc.Text(), " ready on ") {
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if strings.Contains(stderr.String(), "xxxxx") || strings.Contains(stderr.String(), "SUA") {
			t.Errorf("natstx server %v logged something secret-looking:\n%s", args, stderr)
		}
	})
	return func(limit time.Duration) {
		t.Helper()
		select {
		case ok := <-ready:
			if !ok {
				t.Fatalf("natstx server %v exited before it was ready:\n%s", args, stderr)
			}
		case <-time.After(limit):
			t.Fatalf("natstx server %v not ready after %v:\n%s", args, limit, stderr)
		}
	}
}

// repoConfig is the path of a file in configs/.
func repoConfig(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// secureClient connects to url over TLS (the CA of dir/natstx-tls) as the
// identity of the credentials file named id in dir/natstx-auth.
func secureClient(t *testing.T, dir, url, id, inbox string) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.RootCAs(filepath.Join(dir, "natstx-tls", "ca.pem")), nats.Timeout(3 * time.Second),
		nats.UserCredentials(filepath.Join(dir, "natstx-auth", id+".creds")), nats.MaxReconnects(-1)}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("%s over TLS to %s: %v", id, url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// runSecureTx checks that the participant's connection pnc and the
// operator's onc are each in an account without JetStream (the accounts of
// `natstx auth init`, which reach natstx's JetStream through imports under
// messages.JetStreamAPIPrefix), starts participant inventory on pnc, begins
// a transaction for it through the API as the operator on onc, and checks
// that it commits.
func runSecureTx(t *testing.T, pnc, onc *nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range []struct {
		who string
		nc  *nats.Conn
	}{{"participant inventory", pnc}, {"operator", onc}} {
		if imported, err := jsconnect.Imported(ctx, c.nc); err != nil || !imported {
			t.Fatalf("%s over TLS: JetStream imported %v (%v); want true, the accounts of natstx auth init", c.who, imported, err)
		}
	}
	svc, err := sim.New(sim.Config{Name: "inventory", SuccessRate: sim.Rate(1)})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := participants.New(pnc, participants.Config{Name: "inventory", Handler: svc,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	client, err := orchestrator.NewClient(onc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := client.Begin(ctx, messages.BeginRequest{Participants: []messages.ParticipantSpec{{Name: "inventory", Payload: []byte("1")}}, Wait: true})
	if err != nil || st.State != "committed" {
		t.Fatalf("a transaction over TLS with credentials: %s, %v", st.State, err)
	}
	t.Logf("tx %s committed over TLS, as operator and participant inventory", st.ID)
}

// TestSecurityConfigSingleNode runs `natstx server --config
// configs/secure-single.yaml` as it is (only the port changed), on the
// files of `natstx auth init` and test certificates, and checks that a
// transaction runs over TLS with credentials, while a client without TLS,
// without the CA or without credentials is refused.
func TestSecurityConfigSingleNode(t *testing.T) {
	dir := t.TempDir()
	natstxAuthInit(t, dir, "inventory")
	writeTestCerts(t, dir)
	port := freePorts(t, 1)[0]
	startServerIn(t, dir, 30*time.Second, "--config", repoConfig(t, "secure-single.yaml"), "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port))
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	creds := filepath.Join(dir, "natstx-auth", "operator.creds")
	for _, c := range []struct {
		what string
		opts []nats.Option
	}{
		{"credentials without the CA", []nats.Option{nats.UserCredentials(creds)}},
		{"the CA without credentials", []nats.Option{nats.RootCAs(filepath.Join(dir, "natstx-tls", "ca.pem"))}},
	} {
		nc, err := nats.Connect(url, append(c.opts, nats.Timeout(3*time.Second), nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Errorf("a client with %s connected", c.what)
			continue
		}
		t.Logf("a client with %s is refused: %v", c.what, err)
	}
	runSecureTx(t, secureClient(t, dir, url, "participant-inventory", messages.ParticipantInbox("inventory")),
		secureClient(t, dir, url, "operator", messages.OperatorInbox()))
}

// TestSecurityConfigCluster runs the three nodes of configs/secure-cluster/
// (ports changed, nothing else): routes over TLS with certificates both
// ways, clients over TLS with credentials; a participant on node 2 commits a
// transaction begun through node 3.
func TestSecurityConfigCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster takes a while to elect its leaders")
	}
	dir := t.TempDir()
	natstxAuthInit(t, dir, "inventory")
	writeTestCerts(t, dir)
	ports := freePorts(t, 6)
	route := func(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]) }
	var waits []func(time.Duration)
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, route(j))
			}
		}
		waits = append(waits, launchServerIn(t, dir, "--config", repoConfig(t, fmt.Sprintf("secure-cluster/node%d.yaml", i+1)),
			"--nats-listen", fmt.Sprintf("127.0.0.1:%d", ports[i]),
			"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			"--routes", strings.Join(routes, ",")))
	}
	start := time.Now()
	for _, wait := range waits {
		wait(3*time.Minute - time.Since(start))
	}
	t.Logf("three nodes ready with TLS routes in %v", time.Since(start).Round(time.Second))
	runSecureTx(t, secureClient(t, dir, fmt.Sprintf("nats://127.0.0.1:%d", ports[1]), "participant-inventory", messages.ParticipantInbox("inventory")),
		secureClient(t, dir, fmt.Sprintf("nats://127.0.0.1:%d", ports[2]), "operator", messages.OperatorInbox()))
}
