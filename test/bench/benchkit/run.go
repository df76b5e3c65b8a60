package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Main runs fn under a context that ends on SIGINT, SIGTERM or after timeout, so that every
// server it started is stopped on the way out, and exits 1 if fn fails, naming prog.
func Main(prog string, timeout time.Duration, fn func(context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	err := fn(ctx)
	cancel()
	stop()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (time limit %s; see -timeout)", err, timeout)
		}
		fmt.Fprintln(os.Stderr, prog+":", err)
		os.Exit(1)
	}
}

// WorkDir returns dir, created if need be, or else a new temporary directory named after
// prefix, which cleanup removes; with dir given, cleanup keeps it, for a look afterwards.
func WorkDir(dir, prefix string) (_ string, cleanup func(), err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", prefix); err != nil {
			return "", nil, err
		}
		return dir, func() { os.RemoveAll(dir) }, nil
	}
	return dir, func() {}, os.MkdirAll(dir, 0o700)
}
