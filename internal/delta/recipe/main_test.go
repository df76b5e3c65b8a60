package recipe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

// legacyHelperSkip says why the legacy deflate helper could not be built; "" when the tests
// use it.
var legacyHelperSkip string

// Writers and detection start goroutines (pgzip blocks, the asynchronous writer, parallel
// trials, zstd); none may outlive the call that owns it. The legacy deflate helper is built
// from cmd/outpost-legacy-deflate first and used by every test, as a node that has it does.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "recipe-legacy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := buildLegacyHelper(dir); err != nil {
		legacyHelperSkip = err.Error()
		fmt.Fprintf(os.Stderr, "recipe tests: the legacy deflate helper could not be built; its tests skip: %v\n", err)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// buildLegacyHelper builds the helper into dir and makes it the one in use.
func buildLegacyHelper(dir string) error {
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "..", "..", "..", "cmd", LegacyHelperName)
	out := filepath.Join(dir, LegacyHelperName)
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("no go command on PATH to build it with")
	}
	cmd := exec.Command(goTool, "build", "-o", out, ".")
	cmd.Dir = src
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build in %s: %v: %s", src, err, b)
	}
	return UseLegacyHelper(out)
}
