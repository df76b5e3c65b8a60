package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/app"
	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/registry"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Run(ctx, args, Env{Stdout: &out, Stderr: &errOut})
	return result{code, out.String(), errOut.String()}
}

// oneErrorLine checks the contract for failures: exactly one line on stderr, "outpost: …".
func oneErrorLine(t *testing.T, r result, want ...string) {
	t.Helper()
	if !strings.HasPrefix(r.stderr, "outpost: ") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr is not one error line: %q", r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q lacks %q", r.stderr, w)
		}
	}
}

func TestGCBadInput(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"gc", "--grace", "soon", "--data", dir}, []string{"--grace", "soon"}},
		{[]string{"gc", "--grace=-1s", "--data", dir}, []string{"--grace", "negative"}},
		{[]string{"gc", "--grace", "P1M", "--data", dir}, []string{"--grace", "P1M"}},
		{[]string{"gc", "-o", "yaml", "--data", dir}, []string{"--output", "yaml"}},
		{[]string{"gc", "--data", filepath.Join(dir, "missing")}, []string{"dataDir", "--data", "missing"}},
		{[]string{"gc", "--data", notADir}, []string{"dataDir", "not a directory"}},
		{[]string{"gc", "--data", dir}, []string{"dataDir", "not an outpost data directory"}},
		{[]string{"gc", "--no-such-flag"}, []string{"--no-such-flag"}},
		{[]string{"gc", "now"}, []string{"now"}},
	} {
		r := run(t, tc.args...)
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %q", tc.args, r.code, ExitUsage, r.stderr)
		}
		oneErrorLine(t, r, tc.want...)
		if r.stdout != "" {
			t.Errorf("%v: stdout %q", tc.args, r.stdout)
		}
	}
}

// seedStore pushes app:v1, an untagged image and a stray blob into dataDir, all older than the
// grace, and returns the tagged image's digest.
func seedStore(t *testing.T, dataDir string) digest.Digest {
	t.Helper()
	reg, err := registry.New(context.Background(), registry.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg.Handler())
	host := strings.TrimPrefix(srv.URL, "http://")
	push := func(ref string) digest.Digest {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := img.Digest()
		if strings.HasSuffix(ref, "@") {
			ref += h.String()
		}
		r, err := name.ParseReference(host + "/" + ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
		return digest.Digest(h.String())
	}
	tagged := push("app:v1")
	push("app@")
	layer, _ := random.Layer(128, types.DockerLayer)
	repo, _ := name.NewRepository(host + "/app")
	if err := remote.WriteLayer(repo, layer); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	err = filepath.WalkDir(filepath.Join(dataDir, "docker"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	return tagged
}

func TestGCOffline(t *testing.T) {
	dir := t.TempDir()
	tagged := seedStore(t, dir)

	r := run(t, "gc", "--data", dir, "--delete-untagged", "--dry-run", "-o", "json")
	if r.code != ExitOK {
		t.Fatalf("dry run: exit %d, stderr %q", r.code, r.stderr)
	}
	var dry registry.GCResult
	if err := json.Unmarshal([]byte(r.stdout), &dry); err != nil {
		t.Fatalf("dry run output %q: %v", r.stdout, err)
	}
	// The untagged manifest, its config and layer, and the stray blob.
	if !dry.DryRun || dry.ManifestsDeleted != 1 || dry.BlobLinksRemoved != 3 || dry.BlobsDeleted != 4 || len(dry.Blobs) != 4 {
		t.Fatalf("dry run: %+v", dry)
	}

	r = run(t, "gc", "--data", dir, "--delete-untagged")
	if r.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if want := "garbage collection (offline): deleted 1 manifests, removed 3 blob links, deleted 4 blobs, freed "; !strings.HasPrefix(r.stdout, want) {
		t.Fatalf("stdout %q, want it to start with %q", r.stdout, want)
	}

	r = run(t, "gc", "--data", dir, "--delete-untagged", "--dry-run")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "dry run (offline): would delete 0 manifests, remove 0 blob links, delete 0 blobs, free 0 B\n") {
		t.Fatalf("second dry run: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// The lock is free again, and the tagged image is whole.
	lock, err := app.LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	lock.Release()
	reg, err := registry.New(context.Background(), registry.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if ok, err := reg.HasManifest(context.Background(), "app", tagged); !ok || err != nil {
		t.Fatalf("tagged manifest gone: %v", err)
	}
}

// With a node serving the data directory, gc asks it over the admin socket.
func TestGCOnline(t *testing.T) {
	dir := t.TempDir()
	seedStore(t, dir)
	cfg := config.Default()
	cfg.DataDir = dir
	node, err := app.New(context.Background(), cfg, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- node.Serve(ctx, ln, nil) }()
	defer func() {
		cancel()
		select {
		case <-served:
		case <-time.After(15 * time.Second):
			t.Error("the node did not stop")
		}
	}()
	sock := filepath.Join(dir, app.AdminSocket)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no admin socket")
		}
	}

	r := run(t, "gc", "--data", dir, "--delete-untagged", "--dry-run")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "dry run (online): would delete 1 manifests, remove 3 blob links, delete 4 blobs") {
		t.Fatalf("online dry run: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, "gc", "--data", dir, "--delete-untagged", "--grace", "PT30M", "-o", "json")
	var res registry.GCResult
	if r.code != ExitOK || json.Unmarshal([]byte(r.stdout), &res) != nil || res.DryRun || res.BlobsDeleted != 4 {
		t.Fatalf("online collection: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// A lock held by something that is not a serving node (another offline gc) is an error, not a
// second collection.
func TestGCLockedWithoutNode(t *testing.T) {
	dir := t.TempDir()
	lock, err := app.LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	r := run(t, "gc", "--data", dir)
	if r.code != ExitError {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, ExitError, r.stderr)
	}
	oneErrorLine(t, r, "another outpost process holds", "admin.sock")
}

// A second node on a data directory in use stops with one dataDir line and exit code 2.
func TestServeOnDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	lock, err := app.LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	r := run(t, "serve", "--addr", "127.0.0.1:0", "--data", dir, "--log-level", "error")
	if r.code != ExitUsage {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, ExitUsage, r.stderr)
	}
	oneErrorLine(t, r, "config key dataDir (from flag --data)", "another outpost process uses this data directory")
}
