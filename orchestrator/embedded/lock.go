//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockFile is the file in a data directory that Start locks for as long as
// the server runs: two processes must never run JetStream on one store.
const LockFile = "natstx.lock"

// ErrDataDirInUse is returned by Start when another server (in this process
// or another) holds the lock of the data directory.
var ErrDataDirInUse = errors.New("data directory in use")

// dirLock is an exclusive lock on a data directory: flock(2) on LockFile,
// which records the holder's PID and command line. The kernel drops it when
// the holder exits, however it exits, so a crashed server never leaves a
// stale lock behind.
type dirLock struct{ f *os.File }

// lockDir takes the lock of dir, or fails with ErrDataDirInUse naming the
// holder.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: locking the data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("embedded nats: %w: %s is locked by %s; two servers must never share one JetStream store: stop that one, or give this one another data directory",
				ErrDataDirInUse, dir, holder(path))
		}
		return nil, fmt.Errorf("embedded nats: locking the data directory %s: %w", dir, err)
	}
	holderText := fmt.Sprintf("pid %d\ncommand %s\nsince %s\n", os.Getpid(), strings.Join(os.Args, " "), time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holderText), 0)
		_ = f.Sync()
	}
	return &dirLock{f: f}, nil
}

// holder describes the process recorded in the lock file at path.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "another process (its lock file cannot be read: " + err.Error() + ")"
	}
	var pid, command, since string
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, " ")
		switch k {
		case "pid":
			pid = v
		case "command":
			command = v
		case "since":
			since = v
		}
	}
	if _, err := strconv.Atoi(pid); err != nil {
		return "another process (it has not written its PID yet)"
	}
	s := "process " + pid
	if pid == strconv.Itoa(os.Getpid()) {
		s += " (this process: another embedded server in it)"
	} else if command != "" {
		s += " (" + command + ")"
	}
	if since != "" {
		s += ", since " + since
	}
	return s
}

// unlock releases the lock. The file stays: removing it would let a third
// process lock a new file while a second still waits on the old one.
func (l *dirLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}
