package e2e

import (
	"compress/gzip"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/outpost-registry/outpost/test/faultdisk"
)

// TestFullDisk: a child whose data directory fills up mid-sync keeps serving what it has,
// serves nothing half-synced, refuses a push with 507 (the disk is full), and completes the
// image once there is room again — byte-identical, with the bytes fetched before the disk
// filled kept.
func TestFullDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := faultdisk.Small(t, 6<<20)

	parent := startNode(t, nodeOptions{})
	img := randomImage(t, 3, 3<<20) // 9 MiB: does not fit in 6
	want := parent.pushImage(t, "edge/full:v1", img)

	cfg := filepath.Join(dir, "outpost.yaml")
	body := "parent:\n  url: " + parent.base() + "\n" + parentCredentials + "sync:\n  repositories: [edge/full]\n  schedule: \"@every 2s\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	child := startNode(t, nodeOptions{dataDir: data, args: []string{"--config", cfg}})
	m := &member{node: child, name: "child"}

	eventually(t, 60*time.Second, "the child reports the full disk in a failed pass", func() (bool, string) {
		logs := child.logs()
		return strings.Contains(logs, "no space left on device") && strings.Contains(logs, `"msg":"sync pass"`), lastLine(logs)
	}, m)
	if child.current().exited() {
		t.Fatal("the child exited on a full disk")
	}
	if got, detail := m.headDigest(t, "edge/full", "v1"); got != "" {
		t.Fatalf("the child serves edge/full:v1 before it has all of it: %s", detail)
	}
	// A push into the full disk fails with an error answer, and stores nothing.
	r := child.do(t, http.MethodPost, "/v2/edge/pushed/blobs/uploads/", nil)
	if r.status == http.StatusAccepted {
		loc := r.header.Get("Location")
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		big := make([]byte, 8<<20)
		r = child.do(t, http.MethodPut, loc+sep+"digest=sha256:"+strings.Repeat("0", 64), big, "Content-Type", "application/octet-stream")
	}
	if r.status != http.StatusInsufficientStorage || !strings.Contains(string(r.body), "no room left on its disk: incident ") || strings.Contains(string(r.body), data) {
		t.Errorf("a push into the full disk: %s, want 507 saying the disk is full, with an incident number and no path", r)
	}
	if r := child.do(t, http.MethodGet, "/readyz", nil); r.status != http.StatusOK || !strings.Contains(string(r.body), "full") {
		t.Errorf("/readyz on a full disk: %s, want 200 (it still serves what it holds) with a warning", r)
	}

	// Room again: the next pass completes the image.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", data).CombinedOutput(); err != nil {
		t.Fatalf("growing the tmpfs: %v: %s", err, out)
	}
	m.waitImage(t, 60*time.Second, "edge/full", "v1", want, m)
	m.expectServes(t, map[string]v1.Image{"edge/full:v1": img})
}

// TestFullDiskDuringRebuild: a child whose disk has no room for a delta's rebuild (the base
// layer decompressed, the rebuilt layer) gives up the delta cleanly — no base, delta or upload
// left to fill the disk — fetches the layer whole instead, and serves the image byte-identical.
func TestFullDiskDuringRebuild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	parent := startNode(t, nodeOptions{})
	// v2 is v1 with 20 more files: a small delta against v1, whose tar does not fit.
	v1Layer, v2Layer := sourceLayer(t, 7, 150), sourceLayer(t, 7, 170)
	v1Img, v2Img := imageOf(t, v1Layer), imageOf(t, v2Layer)
	wantV1 := parent.pushImage(t, "edge/src:v1", v1Img)
	l1, _ := v1Layer.Size()
	l2, _ := v2Layer.Size()
	tar1 := uncompressedSize(t, v1Layer)
	// Room for v1, then for v2's layer whole, not for v1's tar beside them.
	size := l1 + l2 + (tar1-l2)/2 + 512<<10
	if tar1 <= l2+1<<20 {
		t.Fatalf("the layers compress too little for the test: tar %d, layers %d and %d bytes", tar1, l1, l2)
	}
	data := faultdisk.Small(t, size)

	cfg := filepath.Join(dir, "outpost.yaml")
	body := "parent:\n  url: " + parent.base() + "\n" + parentCredentials + "sync:\n  repositories: [edge/src]\n  schedule: \"@every 2s\"\n  delta: true\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	child := startNode(t, nodeOptions{dataDir: data, args: []string{"--config", cfg}})
	m := &member{node: child, name: "child"}
	m.waitImage(t, 60*time.Second, "edge/src", "v1", wantV1, m)

	wantV2 := parent.pushImage(t, "edge/src:v2", v2Img)
	m.waitImage(t, 90*time.Second, "edge/src", "v2", wantV2, m)
	m.expectServes(t, map[string]v1.Image{"edge/src:v1": v1Img, "edge/src:v2": v2Img})
	logs := child.logs()
	if !strings.Contains(logs, "delta failed; fetching the layer whole") || !strings.Contains(logs, "no space left on device") {
		t.Fatalf("the child did not give up a delta for lack of room:\n%s", lastLine(logs))
	}
	entries, _ := os.ReadDir(filepath.Join(data, "outpost", "sync", "deltas"))
	for _, e := range entries {
		t.Errorf("left behind after the failed rebuild: %s", e.Name())
	}
	t.Logf("tmpfs %d B; layers %d and %d B, v1's tar %d B", size, l1, l2, tar1)
}

// imageOf is a one-layer OCI image.
func imageOf(t *testing.T, layer v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

func uncompressedSize(t *testing.T, l v1.Layer) int64 {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
