// Package version holds the build's version and commit, set by the linker (see the Makefile).
package version

import "runtime"

// Set with -ldflags "-X github.com/outpost-registry/outpost/internal/version.Version=…".
var (
	Version = "dev"
	Commit  = "unknown"
)

// GoVersion is the Go toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }

// UserAgent identifies Outpost in requests it sends.
func UserAgent() string { return "outpost/" + Version }
