package delta_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// imageManifest stores an OCI image manifest of these gzip layers and returns its digest.
func imageManifest(t *testing.T, src *diskBlobs, layers ...blob) digest.Digest {
	t.Helper()
	m := v1.Manifest{MediaType: v1.MediaTypeImageManifest,
		Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromString("{}"), Size: 2}}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: l.digest, Size: l.size})
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return src.putBytes(t, raw).digest
}

func waitPrepared(t *testing.T, svc interface{ PrepareIdle() <-chan struct{} }) {
	t.Helper()
	select {
	case <-svc.PrepareIdle():
	case <-time.After(5 * time.Minute):
		t.Fatal("Prepare did not finish within 5 minutes")
	}
}

// TestPrepare: once an image is stored, the deltas its children will ask for are computed
// before they ask, also for an index's images: against the earlier release a child holds, or
// the whole layer for a child that holds nothing of it; their requests are then answered from
// the cache. A registry that is no longer a child gets nothing prepared.
func TestPrepare(t *testing.T) {
	t.Parallel()
	src := newDiskBlobs(t)
	base := baseTree(9, layerBytes())
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(10), dockerGzip)
	b3 := src.putLayer(t, base.v2(11), dockerGzip)
	other := src.putBytes(t, gzipBytes(t, gen(randFor(12), kindAsset, 64<<10))) // no base of anything
	svc, logs := newService(t, src)
	reg := prometheus.NewRegistry()
	if err := svc.Register(reg); err != nil {
		t.Fatal(err)
	}

	// site-a holds the earlier release; site-b only another repository's image.
	inventories := map[string][]acrapi.HeldLayer{
		"site-a": {{Digest: b1.digest.String(), Repository: testRepo, Position: 0}},
		"site-b": {{Digest: other.digest.String(), Repository: "other/repo", Position: 0}},
	}
	for name, inv := range inventories {
		if err := svc.SetInventory(name, acrapi.InventoryHash(inv), inv); err != nil {
			t.Fatal(err)
		}
	}
	// As each will ask, through the /acr handler: its inventory as Have.
	ask := func(name string, target blob) acrapi.DeltaRequest {
		req := request(target)
		req.Have = inventories[name]
		return req
	}

	// Deleted, or no longer syncing this repository: nothing is prepared for them.
	svc.Prepare(testRepo, imageManifest(t, src, b2), func(string) bool { return false })
	waitPrepared(t, svc)
	if n := computed(logs); n != 0 {
		t.Fatalf("%d deltas computed for no child", n)
	}
	children := func(name string) bool { return name == "site-a" || name == "site-b" }
	svc.Prepare(testRepo, imageManifest(t, src, b2), children)
	waitPrepared(t, svc)
	if n := computed(logs); n != 2 || logs.FilterMessage("deltas prepared for children").Len() != 1 {
		t.Fatalf("%d deltas computed, %d preparations logged; want site-a's and site-b's", n, logs.FilterMessage("deltas prepared for children").Len())
	}
	start := time.Now()
	p := mustPlan(t, svc, ask("site-a", b2))
	took := time.Since(start)
	whole := mustPlan(t, svc, ask("site-b", b2))
	if computed(logs) != 2 {
		t.Errorf("the sites' requests computed their deltas again")
	}
	checkPlan(t, p, b2, acrapi.DeltaFormat, b1)
	checkPlan(t, whole, b2, delta.FormatWhole)
	ch := newChild(t, b1)
	ch.mustRebuild(p, ch.fetch(svc, p), b2)
	ch.mustRebuild(whole, ch.fetch(svc, whole), b2)
	t.Logf("site-a's plan answered in %v: %s", took.Round(time.Microsecond), delta.Describe(p))

	// The same image again (tagged twice): nothing more.
	svc.Prepare(testRepo, imageManifest(t, src, b2), children)
	waitPrepared(t, svc)
	if computed(logs) != 2 || logs.FilterMessage("deltas prepared for children").Len() != 1 {
		t.Errorf("the same image prepared again: %d computed", computed(logs))
	}

	// An index: its images' layers, of the platforms each child keeps (site-a: amd64 only).
	if err := svc.SetPlatforms("site-a", []string{"linux/amd64"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetPlatforms("site-b", []string{"linux/"}); err == nil || !strings.Contains(err.Error(), `"linux/"`) {
		t.Errorf("a malformed platform: %v, want an error naming it", err)
	}
	b4, b5 := src.putLayer(t, base.v2(13), dockerGzip), src.putLayer(t, base.v2(14), dockerGzip)
	index := v1.Index{MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{
		{MediaType: v1.MediaTypeImageManifest, Digest: imageManifest(t, src, b3), Size: 1,
			Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}},
		{MediaType: v1.MediaTypeImageManifest, Digest: imageManifest(t, src, b4), Size: 1,
			Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}},
		{MediaType: v1.MediaTypeImageManifest, Digest: imageManifest(t, src, b5), Size: 1}}} // no platform: site-a skips it
	index.SchemaVersion = 2
	raw, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	svc.Prepare(testRepo, src.putBytes(t, raw).digest, children)
	waitPrepared(t, svc)
	if computed(logs) != 6 {
		t.Errorf("%d deltas computed after an index was stored, want 6 (site-a's amd64; site-b's amd64, arm64 and the one without a platform)", computed(logs))
	}
	if p3 := mustPlan(t, svc, ask("site-a", b3)); computed(logs) != 6 {
		t.Errorf("the index's layer was computed again when asked for: %s", p3.ID)
	}
	// Metrics: six prepared, and the three requests answered from the cache.
	want := `# HELP outpost_delta_prepared_total Deltas computed ahead of the children's requests, when an image arrived.
# TYPE outpost_delta_prepared_total counter
outpost_delta_prepared_total 6
# HELP outpost_delta_prepare_queue_images Images whose deltas for the children are being prepared or wait to be (0: all prepared).
# TYPE outpost_delta_prepare_queue_images gauge
outpost_delta_prepare_queue_images 0
` + plansMetric(0, 3, 0, 0)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outpost_delta_prepared_total", "outpost_delta_prepare_queue_images", "outpost_delta_plans_total"); err != nil {
		t.Error(err)
	}
}
