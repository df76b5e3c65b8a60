//go:build unix

package app

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// flock takes an exclusive, non-blocking flock on f: it belongs to the open file, so a second
// open of the same file, even by this process, does not get it.
func flock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrDataDirInUse
	}
	if err != nil {
		return fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return nil
}
