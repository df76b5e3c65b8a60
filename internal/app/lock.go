package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/outpost-registry/outpost/internal/config"
)

// LockFile is the data directory's lock, relative to it. A serving node holds it for its whole
// life, and so does offline garbage collection: two nodes never share a data directory, and a
// command that takes the lock knows no node is running there.
const LockFile = "outpost/lock"

// ErrDataDirInUse is returned by LockDataDir when another process holds the lock.
var ErrDataDirInUse = errors.New("another outpost process uses this data directory")

// DataDirLock is a held lock on a data directory. The kernel releases it when the process
// ends, however it ends.
type DataDirLock struct {
	f    *os.File
	once sync.Once
}

// LockDataDir takes the exclusive lock of dataDir without waiting: ErrDataDirInUse when another
// process (or another Node of this one) holds it.
func LockDataDir(dataDir string) (*DataDirLock, error) {
	p := filepath.Join(dataDir, LockFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("locking the data directory: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking the data directory: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		return nil, err
	}
	return &DataDirLock{f: f}, nil
}

// Release gives the lock up. It may be called more than once, and on a nil lock.
func (l *DataDirLock) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() { _ = l.f.Close() })
}

// lockDataDir takes the lock for a node; a data directory in use is a *config.Error.
func lockDataDir(dataDir, source string) (*DataDirLock, error) {
	lock, err := LockDataDir(dataDir)
	if errors.Is(err, ErrDataDirInUse) {
		return nil, &config.Error{Key: "dataDir", Source: source,
			Msg: fmt.Sprintf("%s: %s: stop it first, or choose another directory with --data", dataDir, err)}
	}
	if err != nil {
		return nil, &config.Error{Key: "dataDir", Source: source, Msg: err.Error()}
	}
	return lock, nil
}

// Close releases what New took, for a node that will not Serve: the store and the data
// directory's lock. Serve does this itself when it returns.
func (n *Node) Close() error {
	err := n.closeStores()
	n.lock.Release()
	return err
}
