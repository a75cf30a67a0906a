//go:build !unix

package embedded

import "errors"

// LockFile is the file in a data directory that Start locks on systems with
// flock(2); elsewhere the data directory is not locked.
const LockFile = "natstx.lock"

// ErrDataDirInUse is returned by Start when another server holds the lock of
// the data directory (never on this system, which has no flock).
var ErrDataDirInUse = errors.New("data directory in use")

type dirLock struct{}

func lockDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) unlock() {}
