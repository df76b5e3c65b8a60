package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/test/faultnet"
)

// TestSyncResumesAfterKill9: a child is SIGKILLed half-way through syncing a 48 MiB image over
// a 6 MiB/s link and restarted on the same data directory. It resumes the blobs from its
// checkpoints: the image becomes pullable with the parent's digest, and the link carried at
// most the image, the two chunks in flight at the kill (parallelism 2), and request overhead.
func TestSyncResumesAfterKill9(t *testing.T) {
	t.Parallel()
	const chunk = 1 << 20
	parent := startNode(t, nodeOptions{})
	img := randomImage(t, 3, 16<<20)
	want := parent.pushImage(t, "edge/big:v1", img)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(mustRawManifest(t, img))) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}

	link, err := faultnet.NewProxy(parent.addr, faultnet.WithBandwidth(faultnet.Downstream, 6<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })

	dir := t.TempDir()
	cfg := filepath.Join(dir, "outpost.yaml")
	body := "parent:\n  url: " + link.URL() + "\n" + parentCredentials + "sync:\n  repositories: [edge/big]\n  chunkSizeMiB: 1\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	// No window: the child syncs at start-up.
	child := startNode(t, nodeOptions{dataDir: data, args: []string{"--config", cfg}})

	ctx := testContext(t, 2*time.Minute)
	if err := link.WaitBytes(ctx, faultnet.Downstream, size/2); err != nil {
		t.Fatalf("waiting for half the image to cross the link: %v", err)
	}
	child.kill()
	atKill := link.Stats().BytesDown
	if atKill >= size {
		t.Fatalf("the whole image (%d bytes) had crossed before the kill (%d)", size, atKill)
	}
	if code, ok := child.waitExit(time.Second); !ok || code != -1 {
		t.Fatalf("after SIGKILL: exit code %d (exited %v), want -1", code, ok)
	}

	child.restart()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := child.do(t, "HEAD", "/v2/edge/big/manifests/v1", nil, "Accept", mtOCIManifest)
		if got.status == 200 && got.header.Get("Docker-Content-Digest") == want.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the image is not on the child 90s after the restart: HEAD %d %q", got.status, got.header.Get("Docker-Content-Digest"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	child.expectSameImage(t, child.ref(t, "edge/big:v1"), img)
	if !strings.Contains(child.logs(), `"resuming blob"`) {
		t.Errorf("the restarted child did not resume a blob from its checkpoint")
	}

	// Bytes: the image once, the (at most) two chunks in flight at the kill, and per request
	// its headers or small JSON body (1 KiB each): one request per chunk, plus per pass a
	// handful for the /v2/ ping, tag list, manifest HEAD and GET, referrers; 64 of them cover
	// both start-up passes, retries after the kill and a firing of the schedule.
	total := link.Stats().BytesDown
	limit := size + 2*chunk + (size/chunk+64)<<10
	if total > limit {
		t.Errorf("the link carried %d bytes for a %d-byte image; want at most %d (+%d)", total, size, limit, total-limit)
	}
	t.Logf("image %d B; link carried %d B (ratio %.4f), %d B before the kill; %d B beyond the image",
		size, total, float64(total)/float64(size), atKill, total-size)

	// The running child's status says the repository is synced.
	deadline = time.Now().Add(20 * time.Second)
	for {
		r := runOutpost(t, nil, "sync", "status", "-o", "json", "--data", data)
		if r.code != 0 {
			t.Fatalf("sync status: exit %d: %s", r.code, r.stderr)
		}
		var st struct {
			Link         string `json:"link"`
			Repositories []struct {
				Name, State string
			} `json:"repositories"`
			LastPass *struct{ Result string } `json:"lastPass"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("sync status -o json: %v\n%s", err, r.stdout)
		}
		if len(st.Repositories) == 1 && st.Repositories[0].Name == "edge/big" && st.Repositories[0].State == "synced" &&
			st.LastPass != nil && st.LastPass.Result == "ok" && st.Link == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sync status does not report edge/big synced:\n%s", r.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Its metrics: what it received from the parent, and nothing fetched twice.
	metrics := child.do(t, "GET", "/metrics", nil)
	expectStatus(t, "GET /metrics", metrics, 200)
	received, ok := metricSample(string(metrics.body), "outpost_sync_parent_received_bytes_total")
	if !ok || received <= 0 || received > float64(total) {
		t.Errorf("outpost_sync_parent_received_bytes_total = %v (present %v); want more than 0 and at most the %d bytes on the link", received, ok, total)
	}
	if refetched, ok := metricSample(string(metrics.body), "outpost_sync_refetched_bytes_total"); !ok || refetched != 0 {
		t.Errorf("outpost_sync_refetched_bytes_total = %v (present %v), want 0", refetched, ok)
	}
	// The restarted process fetched only what the first one had not stored.
	if max := float64(size-atKill) + 2*chunk + 64<<10; received > max {
		t.Errorf("the restarted child received %.0f bytes; resuming should need at most %.0f", received, max)
	}
	t.Logf("the restarted child received %.0f B", received)
}

// metricSample returns the value of the unlabelled sample name in a Prometheus text exposition.
func metricSample(text, name string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
