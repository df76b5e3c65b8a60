package e2e

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// memoryCgroup is a new memory cgroup limited to limit bytes, as a container runtime makes one
// for a pod with a memory limit, and a way to read how often the kernel's OOM killer acted in
// it. Tests that cannot make one (not root, no memory controller) skip.
type memoryCgroup struct {
	dir string
	v2  bool
}

func newMemoryCgroup(t *testing.T, limit int64) memoryCgroup {
	t.Helper()
	name := fmt.Sprintf("outpost-e2e-%d-%d", os.Getpid(), rand.Uint32())
	try := []memoryCgroup{
		{dir: filepath.Join("/sys/fs/cgroup", name), v2: true}, // cgroup v2, its root
		{dir: filepath.Join("/sys/fs/cgroup/memory", name)},    // cgroup v1's memory hierarchy
	}
	var errs []error
	for _, cg := range try {
		if cg.v2 {
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
				continue
			}
		} else if _, err := os.Stat(filepath.Dir(cg.dir)); err != nil {
			continue
		}
		if err := os.Mkdir(cg.dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		file := "memory.limit_in_bytes"
		if cg.v2 {
			file = "memory.max"
		}
		if err := os.WriteFile(filepath.Join(cg.dir, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
			errs = append(errs, err)
			_ = os.Remove(cg.dir)
			continue
		}
		t.Cleanup(func() {
			// The cgroup goes once its processes are gone; the node is stopped by then.
			for end := time.Now().Add(10 * time.Second); os.Remove(cg.dir) != nil && time.Now().Before(end); {
				time.Sleep(100 * time.Millisecond)
			}
		})
		return cg
	}
	t.Skipf("cannot make a memory cgroup to run a node in (%v): skipping the memory-limit test", errors.Join(errs...))
	return memoryCgroup{}
}

// oomKills is how many processes the kernel killed for the cgroup's limit.
func (cg memoryCgroup) oomKills(t *testing.T) int {
	t.Helper()
	file := "memory.oom_control"
	if cg.v2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// peak is the most memory the cgroup held, when the kernel says.
func (cg memoryCgroup) peak() string {
	file := "memory.max_usage_in_bytes"
	if cg.v2 {
		file = "memory.peak"
	}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return "unknown"
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

// executableLayer is a gzip layer (compress/gzip default level, as Docker pushes) holding exe
// as usr/local/bin/app.
func executableLayer(t *testing.T, exe []byte) v1.Layer {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	if err := tw.WriteHeader(&tar.Header{Name: "usr/local/bin/app", Mode: 0o755, Size: int64(len(exe)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(exe); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return gzipLayer(t, raw.Bytes())
}

// TestParentWithinMemoryLimit: a parent in a container with a memory limit of 320 MiB (a
// cgroup, as a pod's) serves a child the delta of a rebuilt executable (the outpost binary,
// 28 MB), whose EXEDIFF would take it about 300 MiB more: it reads its limit at startup, leaves out the patches
// that do not fit, and sends a larger delta instead of being killed by the kernel. The child
// serves the new image byte for byte.
func TestParentWithinMemoryLimit(t *testing.T) {
	t.Parallel()
	const limit = 320 << 20
	cg := newMemoryCgroup(t, limit)
	exe, err := os.ReadFile(outpostBinary)
	if err != nil {
		t.Fatal(err)
	}
	// Release 2: a few strings changed in the middle of the binary, as a small fix does.
	exe2 := bytes.Clone(exe)
	for i := len(exe2) / 2; i < len(exe2)/2+4096; i += 512 {
		copy(exe2[i:], "release 2")
	}
	image := func(exe []byte) v1.Image {
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		img, err := mutate.AppendLayers(img, executableLayer(t, exe))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	img1, img2 := image(exe), image(exe2)

	parent := startNode(t, nodeOptions{cgroup: cg.dir})
	want1 := parent.pushImage(t, "edge/app:v1", img1)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "outpost.yaml")
	body := "parent:\n  url: " + parent.base() + "\n" + parentCredentials + "sync:\n  repositories: [edge/app]\n  schedule: \"@every 2s\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	child := startNode(t, nodeOptions{args: []string{"--config", cfg}})
	c, p := &member{node: child, name: "child"}, &member{node: parent, name: "parent"}
	c.waitImage(t, 3*time.Minute, "edge/app", "v1", want1, c, p)

	want2 := parent.pushImage(t, "edge/app:v2", img2)
	killed := func() {
		if n := cg.oomKills(t); n > 0 || parent.current().exited() {
			t.Fatalf("the parent was killed for its memory limit of %d MiB (%d OOM kills; exited: %v; peak %s)",
				limit>>20, n, parent.current().exited(), cg.peak())
		}
	}
	eventually(t, 3*time.Minute, "edge/app:v2 at the child", func() (bool, string) {
		killed()
		got, detail := c.headDigest(t, "edge/app", "v2")
		return got == want2.String(), detail
	}, c, p)
	c.expectServes(t, map[string]v1.Image{"edge/app:v1": img1, "edge/app:v2": img2})
	killed()
	t.Logf("the parent's cgroup peaked at %s of %d MiB", cg.peak(), limit>>20)
	logs := parent.logs()
	if !strings.Contains(logs, `"msg":"memory limit"`) {
		t.Errorf("the parent did not log the memory limit it read:\n%s", logs)
	}
	if !strings.Contains(logs, "binary patches left out") {
		t.Errorf("the parent did not say it left patches out for its memory limit:\n%s", logs)
	}
	deltaBytes, layerBytes := rebuiltFromDelta(child.logs(), "")
	if deltaBytes == 0 {
		t.Fatalf("the child did not get release 2's layer as a delta:\n%s", lastLine(child.logs()))
	}
	t.Logf("release 2's layer (%d bytes) came as a %d-byte delta", layerBytes, deltaBytes)
}
