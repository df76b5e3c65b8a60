package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/outpost-registry/outpost/test/faultnet"
)

// sourceLayer is a gzip layer (Docker's compress/gzip default level) of a tree of text files
// drawn from a shared pool of lines, as source trees are: it compresses much better with a long
// window than gzip's 32 KiB.
func sourceLayer(t *testing.T, seed uint64, files int) v1.Layer {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 11))
	pool := make([]string, 2000)
	for i := range pool {
		pool[i] = fmt.Sprintf("%s\tv%d := helper%d(ctx, %d) // %x\n", strings.Repeat("\t", rng.IntN(3)), rng.IntN(50), rng.IntN(300), rng.Int64(), rng.Uint32())
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for i := range files {
		var b bytes.Buffer
		for b.Len() < 20000+rng.IntN(60000) {
			b.WriteString(pool[rng.IntN(len(pool))])
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("src/pkg%03d/file%04d.go", i%97, i), Mode: 0o644, Size: int64(b.Len()), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return gzipLayer(t, raw.Bytes())
}

// gzipLayer is a layer of the tar raw compressed as Docker pushes it (compress/gzip, default level).
func gzipLayer(t *testing.T, raw []byte) v1.Layer {
	t.Helper()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return static.NewLayer(gz.Bytes(), types.OCILayer)
}

// logLine is the last line of a node's JSON log whose message is msg and that holds has (any
// when has is ""); "" when there is none.
func logLine(logs, msg, has string) string {
	last := ""
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, `"msg":"`+msg+`"`) && strings.Contains(line, has) {
			last = line
		}
	}
	return last
}

// rebuiltFromDelta is what a child's last "layer rebuilt from a delta" log line says of the
// layer whose digest is d (any layer when d is ""): the sizes of the delta and of the layer,
// zeros when there is no such line.
func rebuiltFromDelta(logs, d string) (deltaBytes, layerBytes int64) {
	var e struct {
		DeltaBytes int64 `json:"delta_bytes"`
		LayerBytes int64 `json:"layer_bytes"`
	}
	_ = json.Unmarshal([]byte(logLine(logs, "layer rebuilt from a delta", d)), &e)
	return e.DeltaBytes, e.LayerBytes
}

// TestDeltaResumesAfterKill9: a child SIGKILLed while it fetches a layer as a delta over a slow
// link restarts, resumes the delta from the bytes it kept, rebuilds the layer byte for byte, and
// the link carries about the delta once — far less than the layer.
func TestDeltaResumesAfterKill9(t *testing.T) {
	t.Parallel()
	parent := startNode(t, nodeOptions{})
	layer := sourceLayer(t, 5, 1000)
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	want := parent.pushImage(t, "edge/src:v1", img)
	layerSize, _ := layer.Size()

	link, err := faultnet.NewProxy(parent.addr, faultnet.WithBandwidth(faultnet.Downstream, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	dir := t.TempDir()
	cfg := filepath.Join(dir, "outpost.yaml")
	body := "parent:\n  url: " + link.URL() + "\n" + parentCredentials + "sync:\n  repositories: [edge/src]\n  chunkSizeMiB: 1\n  delta: true\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	child := startNode(t, nodeOptions{dataDir: data, args: []string{"--config", cfg}})
	m := &member{node: child, name: "child"}

	// Kill once half a MiB of the delta is on the child's disk.
	deltas := filepath.Join(data, "outpost", "sync", "deltas")
	eventually(t, 90*time.Second, "a delta being fetched", func() (bool, string) {
		entries, _ := os.ReadDir(deltas)
		for _, e := range entries {
			if fi, err := e.Info(); err == nil && !strings.HasPrefix(e.Name(), "base-") && fi.Size() > 512<<10 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d files in %s", len(entries), deltas)
	}, m)
	child.kill()
	atKill := link.Stats().BytesDown
	if _, ok := child.waitExit(5 * time.Second); !ok {
		t.Fatal("the child did not die")
	}
	child.restart()
	m.waitImage(t, 90*time.Second, "edge/src", "v1", want, m)
	m.expectServes(t, map[string]v1.Image{"edge/src:v1": img})

	deltaBytes, _ := rebuiltFromDelta(child.logs(), "")
	if deltaBytes == 0 {
		t.Fatalf("the restarted child did not rebuild the layer from a delta:\n%s", lastLine(child.logs()))
	}
	total := link.Stats().BytesDown
	// The delta once, a chunk in flight at the kill, requests' overhead.
	if limit := deltaBytes + 1<<20 + 256<<10; total > limit {
		t.Errorf("the link carried %d bytes for a %d-byte delta (layer %d bytes); want at most %d", total, deltaBytes, layerSize, limit)
	}
	t.Logf("layer %d B, delta %d B; the link carried %d B (%d before the kill, %.1f%% of the layer)", layerSize, deltaBytes, total, atKill, 100*float64(total)/float64(layerSize))
}
