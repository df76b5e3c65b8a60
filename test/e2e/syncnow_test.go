package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestSyncNowRespectsTheWindow: with a window that is closed now, the node sends nothing at
// start-up, `sync now` is refused with a one-line reason, and `sync now --force` syncs.
func TestSyncNowRespectsTheWindow(t *testing.T) {
	parent := startNode(t, nodeOptions{})
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(parent.ref(t, "edge/app:v1"), img, parent.remote(t)...); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "outpost.yaml")
	// 00:00 on 1 January only: the window is closed now (unless the test runs in that minute).
	if now := time.Now().UTC(); now.Month() == time.January && now.Day() == 1 && now.Hour() == 0 {
		t.Skip("the test's closed window is open right now (00:00-00:01 UTC on 1 January)")
	}
	body := "parent:\n  url: " + parent.base() + "\n" + parentCredentials + "sync:\n  repositories: [edge/app]\n  schedule: \"0 0 1 1 *\"\n  window: PT1M\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	child := startNode(t, nodeOptions{dataDir: data, args: []string{"--config", cfg}})

	status := func() map[string]any {
		r := runOutpost(t, nil, "sync", "status", "-o", "json", "--data", data)
		if r.code != 0 {
			t.Fatalf("sync status: exit %d: %s", r.code, r.stderr)
		}
		var s map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			t.Fatalf("sync status -o json: %v\n%s", err, r.stdout)
		}
		return s
	}
	if s := status(); s["window"].(map[string]any)["open"] != false || s["lastPass"] != nil {
		t.Fatalf("window should be closed and no pass run: %v", s)
	}

	r := runOutpost(t, nil, "sync", "now", "--data", data)
	if r.code == 0 || !strings.Contains(r.stderr, "no sync window is open") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("sync now outside the window: exit %d, stderr %q", r.code, r.stderr)
	}
	if got := child.do(t, "HEAD", "/v2/edge/app/manifests/v1", nil); got.status != 404 {
		t.Fatalf("image present before any pass: %d", got.status)
	}

	r = runOutpost(t, nil, "sync", "now", "--force", "--data", data)
	if r.code != 0 {
		t.Fatalf("sync now --force: exit %d: %s", r.code, r.stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := child.do(t, "HEAD", "/v2/edge/app/manifests/v1", nil)
		if got.status == 200 && got.header.Get("Docker-Content-Digest") == want.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("image not synced after sync now --force: %d %s", got.status, got.header.Get("Docker-Content-Digest"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The forced pass opened the link for itself only.
	deadline = time.Now().Add(10 * time.Second)
	for {
		s := status()
		lp, _ := s["lastPass"].(map[string]any)
		if lp != nil && lp["result"] == "ok" && s["window"].(map[string]any)["open"] == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the forced pass: %v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A node without a parent says so.
	r = runOutpost(t, nil, "sync", "now", "--data", parent.dataDir)
	if r.code == 0 || !strings.Contains(r.stderr, "no parent") {
		t.Fatalf("sync now on a root: exit %d, stderr %q", r.code, r.stderr)
	}
	// No node at all: a clear one-line error.
	r = runOutpost(t, nil, "sync", "status", "--data", t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "is `outpost serve` running with this data directory") {
		t.Fatalf("sync status without a node: exit %d, stderr %q", r.code, r.stderr)
	}
}
