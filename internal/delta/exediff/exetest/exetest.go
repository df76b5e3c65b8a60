// Package exetest builds real executables for the tests of binary deltas.
package exetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// program is a small Go program; extra adds functions before main's, so
// that everything after them moves, as a change to a real program does.
func program(extra int) string {
	var b strings.Builder
	b.WriteString("package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"sort\"\n\t\"strings\"\n)\n\n")
	for i := range extra {
		fmt.Fprintf(&b, "func added%d(s string) string { return strings.Repeat(s, %d) + fmt.Sprint(len(s)) }\n\n", i, i+2)
	}
	b.WriteString("type item struct{ name string; n int }\n\n")
	b.WriteString("func main() {\n\titems := []item{{\"b\", 2}, {\"a\", 1}}\n\tsort.Slice(items, func(i, j int) bool { return items[i].n < items[j].n })\n")
	for i := range extra {
		fmt.Fprintf(&b, "\tfmt.Fprintln(os.Stderr, added%d(\"x\"))\n", i)
	}
	b.WriteString("\tfmt.Println(items, strings.ToUpper(os.Args[0]))\n}\n")
	return b.String()
}

// pair is one architecture's two builds, made once per test binary.
type pair struct {
	once sync.Once
	bins [2][]byte
	err  error
}

var (
	mu    sync.Mutex
	pairs = map[string]*pair{}
)

// GoBuilds returns two builds of a program for linux/amd64, the second
// with two functions added: a real rebuild, with real moved code, pclntab
// and type data. They are stripped (-s -w), as images ship them:
// compressed DWARF sections change throughout with any change and defeat
// any binary diff.
func GoBuilds(t testing.TB) (old, new []byte) { return GoBuildsFor(t, "amd64") }

// GoBuildsFor is GoBuilds for linux/goarch.
func GoBuildsFor(t testing.TB, goarch string) (old, new []byte) {
	t.Helper()
	return goBuilds(t, goarch, "-s -w")
}

// GoBuildsUnstripped is GoBuilds without -s -w: as `go build` leaves
// them, with their DWARF in zlib-compressed sections.
func GoBuildsUnstripped(t testing.TB) (old, new []byte) {
	t.Helper()
	return goBuilds(t, "amd64", "")
}

// GoBuildsLdflags is GoBuilds for linux/goarch with these -ldflags.
func GoBuildsLdflags(t testing.TB, goarch, ldflags string) (old, new []byte) {
	t.Helper()
	return goBuilds(t, goarch, ldflags)
}

func goBuilds(t testing.TB, goarch, ldflags string) (old, new []byte) {
	t.Helper()
	key := goarch + " " + ldflags
	mu.Lock()
	p := pairs[key]
	if p == nil {
		p = &pair{}
		pairs[key] = p
	}
	mu.Unlock()
	p.once.Do(func() { p.bins, p.err = build(goarch, ldflags) })
	if p.err != nil {
		t.Fatal(p.err)
	}
	return p.bins[0], p.bins[1]
}

func build(goarch, ldflags string) (bins [2][]byte, err error) {
	dir, err := os.MkdirTemp("", "exediff-test-")
	if err != nil {
		return bins, err
	}
	defer os.RemoveAll(dir)
	for i, extra := range []int{0, 2} {
		src := filepath.Join(dir, fmt.Sprint(i))
		if err := os.MkdirAll(src, 0o755); err != nil {
			return bins, err
		}
		files := map[string]string{"go.mod": "module example.com/p\n\ngo 1.22\n", "main.go": program(extra)}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
				return bins, err
			}
		}
		bin := filepath.Join(dir, fmt.Sprint("bin", i))
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags="+ldflags, "-o", bin, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			return bins, fmt.Errorf("go build GOARCH=%s: %v\n%s", goarch, err, out)
		}
		if bins[i], err = os.ReadFile(bin); err != nil {
			return bins, err
		}
	}
	return bins, nil
}
