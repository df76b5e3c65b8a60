package exediff

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-registry/outpost/internal/delta/bsdiff"
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

var (
	buildOnce sync.Once
	builds    [2][]byte
	buildErr  error
)

// goBuilds returns two builds of a program, the second with two functions
// added: a real rebuild, with real moved code, pclntab and type data.
// They are stripped (-s -w), as images ship them: compressed DWARF
// sections change throughout with any change and defeat any binary diff.
func goBuilds(t testing.TB) (old, new []byte) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "exediff-test-")
		if err != nil {
			buildErr = err
			return
		}
		defer os.RemoveAll(dir)
		for i, extra := range []int{0, 2} {
			src := filepath.Join(dir, fmt.Sprint(i))
			if err := os.MkdirAll(src, 0o755); err != nil {
				buildErr = err
				return
			}
			files := map[string]string{"go.mod": "module example.com/p\n\ngo 1.22\n", "main.go": program(extra)}
			for name, text := range files {
				if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
					buildErr = err
					return
				}
			}
			bin := filepath.Join(dir, fmt.Sprint("bin", i))
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0", "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build: %v\n%s", err, out)
				return
			}
			if builds[i], err = os.ReadFile(bin); err != nil {
				buildErr = err
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builds[0], builds[1]
}

func roundTrip(t testing.TB, old, new []byte) []byte {
	t.Helper()
	p, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := NewSize(p); err != nil || n != int64(len(new)) {
		t.Fatalf("NewSize = %d, %v; want %d", n, err, len(new))
	}
	var out bytes.Buffer
	n, err := Apply(bytes.NewReader(old), int64(len(old)), p, &out)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(new)) || !bytes.Equal(out.Bytes(), new) {
		t.Fatalf("Apply wrote %d bytes, not the new file's %d", n, len(new))
	}
	return p
}

// TestGoRebuild: two real builds of a Go program round-trip, and the
// predictions make the patch several times smaller than bsdiff's.
func TestGoRebuild(t *testing.T) {
	old, new := goBuilds(t)
	p := roundTrip(t, old, new)
	plain, err := bsdiff.Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d-byte build → %d bytes: patch %d bytes, bsdiff alone %d", len(old), len(new), len(p), len(plain))
	if len(p)*2 > len(plain) {
		t.Errorf("patch of %d bytes, bsdiff alone %d: the predictions did not halve it", len(p), len(plain))
	}
	// Backwards too: functions removed.
	roundTrip(t, new, old)
}

// TestModelParts: each part of the model finds slots in a real Go binary,
// so that none of them silently stops working.
func TestModelParts(t *testing.T) {
	old, new := goBuilds(t)
	om, err := readModel(bytes.NewReader(old), int64(len(old)))
	if err != nil {
		t.Fatal(err)
	}
	nm, err := readModel(bytes.NewReader(new), int64(len(new)))
	if err != nil {
		t.Fatal(err)
	}
	for b, v := range om.bases {
		if v == 0 || nm.bases[b] == 0 {
			t.Errorf("table base %d not found (old %#x, new %#x)", b, v, nm.bases[b])
		}
	}
	if !om.x86 || om.nfunc == 0 || om.typelnk.size == 0 {
		t.Fatalf("model: x86 %v, %d functions, typelinks %d bytes", om.x86, om.nfunc, om.typelnk.size)
	}
	ms, err := bsdiff.Align(old, new)
	if err != nil {
		t.Fatal(err)
	}
	m := newMapper(om, &nm.layout, piecesOf(ms))
	parts := map[string]func(*predictor){
		"go tables":    (*predictor).goTables,
		"x86 operands": (*predictor).x86Operands,
		"pointers":     (*predictor).pointers,
	}
	for name, part := range parts {
		p := &predictor{m: m, seq: newWindow(bytes.NewReader(old), om.size, 1<<20), rnd: newWindow(bytes.NewReader(old), om.size, 4<<10)}
		part(p)
		if len(p.preds) < 100 {
			t.Errorf("%s: %d predictions", name, len(p.preds))
		}
		t.Logf("%s: %d predictions", name, len(p.preds))
	}
}

func TestNotExecutable(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":  nil,
		"text":   []byte(strings.Repeat("not an executable\n", 100)),
		"32-bit": append([]byte("\x7fELF\x01\x01\x01"), make([]byte, 100)...),
	} {
		if _, err := Diff(b, b); !errors.Is(err, ErrNotExecutable) {
			t.Errorf("%s: Diff error %v, want ErrNotExecutable", name, err)
		}
	}
}

// TestCorrupt: damaged patches, and a patch applied to another old file,
// fail with ErrCorrupt or at worst write other bytes (which callers'
// checksums catch); they never panic.
func TestCorrupt(t *testing.T) {
	old, new := goBuilds(t)
	p := roundTrip(t, old, new)
	apply := func(old, p []byte) error {
		_, err := Apply(bytes.NewReader(old), int64(len(old)), p, new2discard{})
		return err
	}
	if err := apply(old, p[:3]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated magic: %v", err)
	}
	if err := apply(old, p[:20]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated header: %v", err)
	}
	// The other build as old: its predictions differ from the patch's.
	if err := apply(new, p); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong old file: %v", err)
	}
	// A flipped CRC byte.
	hdrLen := 0
	if _, hdr, err := split(p); err == nil {
		hdrLen = len(p) - len(hdr)
	}
	q := bytes.Clone(p)
	q[hdrLen-1] ^= 0xff
	if err := apply(old, q); err == nil {
		t.Errorf("a damaged header applied")
	}
}

type new2discard struct{}

func (new2discard) Write(b []byte) (int, error) { return len(b), nil }

// FuzzApply: whatever the patch, Apply returns (an error or bytes) and
// never panics or allocates without bound.
func FuzzApply(f *testing.F) {
	old, new := goBuilds(f)
	p, err := Diff(old, new)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p[:min(len(p), 4096)], 0)
	f.Add(p, 100)
	f.Fuzz(func(t *testing.T, patch []byte, flip int) {
		if flip >= 0 && flip < len(patch) {
			patch = bytes.Clone(patch)
			patch[flip] ^= 0x55
		}
		_, _ = Apply(bytes.NewReader(old), int64(len(old)), patch, new2discard{})
		_, _ = NewSize(patch)
	})
}
