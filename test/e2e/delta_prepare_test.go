package e2e

import (
	"net/http"
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

// TestDeltaPreparedBeforeTheChildAsks: a push to the root has it compute the delta its
// connected registry will ask for, from the inventory the site reported: release 1 whole for
// the empty site, then release 2 against release 1 while the site is offline; back online,
// the site gets the update as that delta, which the root does not compute again.
func TestDeltaPreparedBeforeTheChildAsks(t *testing.T) {
	t.Parallel()
	const adminPassword = "prepare-admin-password-0123"
	const repo = "edge/prep"
	rootData := t.TempDir()
	root := startMember(t, "root", nodeOptions{dataDir: rootData, env: []string{"OUTPOST_ADMIN_PASSWORD=" + adminPassword}})
	cli := &admin{t: t, root: root, password: adminPassword}
	cli.must("create", "--name", "siteA", "--mode", "ReadOnly", "--repository", repo, "--sync-schedule", "@every 2s")
	site := startMember(t, "site", nodeOptions{args: []string{"--connection-string", cli.connectionString("siteA")}})

	image := func(files int) v1.Image {
		img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), sourceLayer(t, 17, files))
		if err != nil {
			t.Fatal(err)
		}
		return mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	img1, img2 := image(300), image(305) // release 2: five files more
	inventory := filepath.Join(rootData, "outpost", "delta", "inventories", "sitea.json")
	eventually(t, 60*time.Second, "the root holds the empty site's inventory", func() (bool, string) {
		b, err := os.ReadFile(inventory)
		return err == nil && string(b) == "[]", string(b)
	}, site, root)
	preparedFor := func(manifest v1.Hash) func() (bool, string) {
		return func() (bool, string) {
			return logLine(root.logs(), "deltas prepared for children", manifest.String()) != "", lastLine(root.logs())
		}
	}
	// Release 1 for the empty site: its whole layer, prepared too.
	want1 := root.pushImage(t, repo+":v1", img1)
	eventually(t, 2*time.Minute, "the root prepares release 1 for the empty site", preparedFor(want1), root)
	site.waitImage(t, 90*time.Second, repo, "v1", want1, site, root)
	layers, _ := img1.Layers()
	layer1, _ := layers[0].Digest()
	eventually(t, 60*time.Second, "the root holds the site's inventory with release 1's layer", func() (bool, string) {
		b, err := os.ReadFile(inventory)
		return err == nil && strings.Contains(string(b), layer1.String()), string(b)
	}, site, root)
	site.stop()

	want2 := root.pushImage(t, repo+":v2", img2)
	eventually(t, 2*time.Minute, "the root prepares release 2's delta", preparedFor(want2), root)
	computed, reused := strings.Count(root.logs(), `"delta computed"`), strings.Count(root.logs(), `"delta reused"`)

	site.restart()
	site.waitImage(t, 90*time.Second, repo, "v2", want2, site, root)
	site.expectServes(t, map[string]v1.Image{repo + ":v1": img1, repo + ":v2": img2})
	layers, _ = img2.Layers()
	layer2, _ := layers[0].Digest()
	deltaBytes, layerBytes := rebuiltFromDelta(site.logs(), layer2.String())
	if deltaBytes == 0 {
		t.Fatalf("the site did not rebuild release 2's layer from a delta:\n%s", site.logTail(20))
	}
	// Not even looked up by its bases: the site's request was the one prepared.
	if n, r := strings.Count(root.logs(), `"delta computed"`), strings.Count(root.logs(), `"delta reused"`); n != computed || r != reused {
		t.Errorf("when the site asked, the root computed %d deltas and reused %d by their bases; want none, it had prepared its request", n-computed, r-reused)
	}
	// The operator sees it in the root's metrics: both releases prepared, none left to prepare,
	// and the site's two requests answered from the cache (release 1's may have joined its
	// preparation, counted as computed: the site syncs every 2 s).
	metrics := string(root.do(t, http.MethodGet, "/metrics", nil).body)
	for name, want := range map[string]float64{"outpost_delta_prepared_total": 2, "outpost_delta_prepare_queue_images": 0} {
		if v := metricValue(metrics, name); v != want {
			t.Errorf("the root's /metrics: %s %v, want %v", name, v, want)
		}
	}
	cached, computedAsked := metricValue(metrics, `outpost_delta_plans_total{result="cached"}`), metricValue(metrics, `outpost_delta_plans_total{result="computed"}`)
	if cached < 1 || cached+computedAsked != 2 {
		t.Errorf("the root's /metrics: %v requests answered from the cache and %v computed, want 2 in all, release 2's from the cache", cached, computedAsked)
	}
	t.Logf("release 2's layer (%d bytes) came as a %d-byte delta prepared before the site asked", layerBytes, deltaBytes)
}

// metricValue is the value of the sample name (with its labels) in a /metrics text; -1 if none.
func metricValue(metrics, name string) float64 {
	for line := range strings.SplitSeq(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}
