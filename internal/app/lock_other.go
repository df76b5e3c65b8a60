//go:build !unix

package app

import "os"

// flock is a no-op where flock(2) does not exist: nothing stops two nodes sharing a directory.
func flock(*os.File) error { return nil }
