package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "state.json")
	if err := Write(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "two" {
		t.Fatalf("read %q, %v", b, err)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", info.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	if err := Write(filepath.Join(path, "under-a-file"), nil, 0o600); err == nil {
		t.Fatal("writing under a regular file succeeded")
	}
}

func TestRandomHex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id")
	a, err := RandomHex(path, 16, 32)
	if err != nil || len(a) != 32 {
		t.Fatalf("%q %v", a, err)
	}
	b, err := RandomHex(path, 16, 32)
	if err != nil || a != b {
		t.Fatalf("not kept: %q %q %v", a, b, err)
	}
	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _ := RandomHex(path, 16, 32); c == "short" || len(c) != 32 {
		t.Fatalf("a too short token was kept: %q", c)
	}
}
