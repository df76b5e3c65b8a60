package recipe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// legacyHelperSkip says why the legacy deflate helpers could not be built; "" when the tests
// use them.
var legacyHelperSkip string

// testHelpers maps each helper's family to the helper the tests built.
var testHelpers = map[string]string{}

// Writers and detection start goroutines (pgzip blocks, the asynchronous writer, parallel
// trials, zstd); none may outlive the call that owns it. The legacy deflate helpers are built
// from cmd/outpost-legacy-deflate first and used by every test, as a node that has them does.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "recipe-legacy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := buildLegacyHelpers(dir); err != nil {
		legacyHelperSkip = err.Error()
		fmt.Fprintf(os.Stderr, "recipe tests: the legacy deflate helpers could not be built; their tests skip: %v\n", err)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// buildLegacyHelpers builds the helpers into dir, as make build does, and makes them the ones
// in use.
func buildLegacyHelpers(dir string) error {
	// Relative to this package, where go test runs it: -trimpath leaves no file paths to go by.
	src := filepath.Join("..", "..", "..", "cmd", LegacyHelperName)
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("no go command on PATH to build them with")
	}
	var paths []string
	for _, b := range []struct{ family, name, modfile string }{
		{familyKlauspost1_18, LegacyHelperName, "go.mod"},
		{familyKlauspost1_15, LegacyHelperName + "-klauspost1.15", "klauspost1.15.mod"},
	} {
		out := filepath.Join(dir, b.name)
		cmd := exec.Command(goTool, "build", "-modfile="+b.modfile, "-o", out, ".")
		cmd.Dir = src
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build -modfile=%s in %s: %v: %s", b.modfile, src, err, msg)
		}
		testHelpers[b.family] = out
		paths = append(paths, out)
	}
	return UseLegacyHelpers(paths...)
}
