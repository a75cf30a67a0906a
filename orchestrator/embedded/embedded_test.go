package embedded

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartServesJetStreamAndStopCleansUp(t *testing.T) {
	s, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL(), "nats://127.0.0.1:") {
		t.Fatalf("want a loopback URL, got %s", s.URL())
	}
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("JetStream not enabled: %v", err)
	}
	nc.Close()
	dir := s.DataDir()
	s.Stop()
	s.Stop() // twice is fine
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary data directory %s left behind (%v)", dir, err)
	}
}

func TestGivenDataDirIsKept(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the caller's data directory was removed: %v", err)
	}
}

func TestPortInUseIsAClearError(t *testing.T) {
	a, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	_, portText, _ := net.SplitHostPort(a.NATS().Addr().String())
	p, _ := strconv.Atoi(portText)
	_, err = Start(Config{Port: p})
	if err == nil || !strings.Contains(err.Error(), "cannot listen on 127.0.0.1:"+portText) {
		t.Fatalf("want a clear error naming the address, got %v", err)
	}
}

func TestDataDirInUseIsRefusedNamingTheHolder(t *testing.T) {
	dir := t.TempDir()
	a, err := Start(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(Config{DataDir: dir})
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("a second server on %s: want ErrDataDirInUse, got %v", dir, err)
	}
	if want := "locked by process " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("the error must name the directory and the holder (%q): %v", want, err)
	}
	a.Stop()
	b, err := Start(Config{DataDir: dir})
	if err != nil {
		t.Fatalf("after the holder stopped, the directory must be free: %v", err)
	}
	b.Stop()
}

func TestSyncModeReachesJetStream(t *testing.T) {
	for _, mode := range []SyncMode{"", SyncInterval, SyncAlways} {
		s, err := Start(Config{Sync: mode})
		if err != nil {
			t.Fatal(err)
		}
		got := s.NATS().JetStreamConfig().SyncAlways
		s.Stop()
		if got != (mode == SyncAlways) {
			t.Errorf("sync %q: JetStream SyncAlways = %v", mode, got)
		}
	}
	if _, err := Start(Config{Sync: "sometimes"}); err == nil || !strings.Contains(err.Error(), `"sometimes"`) {
		t.Errorf("unknown sync mode: %v", err)
	}
	if m, err := ParseSyncMode("always"); err != nil || m != SyncAlways {
		t.Errorf("ParseSyncMode(always) = %q, %v", m, err)
	}
}
