package sync_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/internal/acr"
	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/sync"
	"github.com/outpost-registry/outpost/pkg/acrapi"
	"github.com/outpost-registry/outpost/test/faultnet"
)

const deltaAdminPassword = "delta-test-admin-password"

// deltaParent is a registry that also serves /acr/v1/deltas, as every Outpost node does. fault,
// if set, wraps the delta routes (to cut or corrupt them).
func deltaParent(t *testing.T, fault func(http.Handler) http.Handler) *node {
	t.Helper()
	n, _ := deltaParentLogged(t, fault)
	return n
}

// deltaParentLogged is deltaParent, with its delta service's and /acr API's log.
func deltaParentLogged(t *testing.T, fault func(http.Handler) http.Handler) (*node, *observer.ObservedLogs) {
	t.Helper()
	return deltaParentCachingIn(t, "", fault)
}

// deltaParentCachingIn is deltaParentLogged with its delta cache in deltaDir ("": a directory
// of its own).
func deltaParentCachingIn(t *testing.T, deltaDir string, fault func(http.Handler) http.Handler) (*node, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	deltaLog := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	dir := t.TempDir()
	if deltaDir == "" {
		deltaDir = filepath.Join(dir, "delta")
	}
	cp, err := controlplane.Open(filepath.Join(dir, "cp.db"), controlplane.WithPasswordCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	if _, err := cp.EnsureAdmin(deltaAdminPassword); err != nil {
		t.Fatal(err)
	}
	var n *node
	n = newNode(t, func(v2 http.Handler) http.Handler {
		r := mux.NewRouter()
		// Built at the first request: the delta service reads the node's store, there once
		// newNode returns. The fault wraps the delta routes once, so that it keeps its state.
		var once gosync.Once
		var plain, faulted http.Handler
		acrHandler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			once.Do(func() {
				deltas, err := delta.NewService(deltaDir, n.reg, deltaLog, delta.Limits{})
				if err != nil {
					t.Error(err)
				}
				plain = acr.Handler(acr.Options{ControlPlane: cp, Deltas: deltas, Log: deltaLog})
				faulted = plain
				if fault != nil {
					faulted = fault(plain)
				}
			})
			if strings.HasPrefix(req.URL.Path, "/acr/v1/deltas") {
				faulted.ServeHTTP(w, req)
				return
			}
			plain.ServeHTTP(w, req)
		})
		r.PathPrefix("/acr/").Handler(acrHandler)
		r.PathPrefix("/v2").Handler(v2)
		return r
	})
	return n, logs
}

// deltaOptions are engine options for a child of a deltaParent.
func deltaOptions(t *testing.T, parent *node, repos ...string) sync.Options {
	o := engineOptions(t, parent.srv.URL, repos...)
	o.Parent.Username, o.Parent.Password = "admin", deltaAdminPassword
	o.Delta = true
	return o
}

// tree is a deterministic file tree like source code: files of lines from a shared pool, so
// that, as in real trees, much repeats across files beyond gzip's 32 KiB window.
func tree(seed uint64, files int) map[string][]byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	words := []string{"registry", "layer", "delta", "edge", "sync", "manifest", "digest", "tar", "gzip", "outpost", "site", "parent",
		"func", "return", "err", "nil", "if", "for", "range", "ctx", ":=", "{", "}", "(", ")"}
	pool := make([]string, 400)
	for i := range pool {
		var l strings.Builder
		for range 3 + rng.IntN(9) {
			l.WriteString(words[rng.IntN(len(words))])
			l.WriteByte(' ')
		}
		pool[i] = strings.Repeat("\t", rng.IntN(4)) + l.String() + "\n"
	}
	out := map[string][]byte{}
	for i := range files {
		var b bytes.Buffer
		for b.Len() < 2000+rng.IntN(30000) {
			b.WriteString(pool[rng.IntN(len(pool))])
		}
		out[fmt.Sprintf("app/src/pkg%02d/file%03d.go", i%10, i)] = b.Bytes()
	}
	return out
}

// gzipLayer is a tar of files compressed as Docker does (compress/gzip, default level).
func gzipLayer(t *testing.T, files map[string][]byte) ggcrv1.Layer {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sortStrings(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return static(t, gz.Bytes(), types.OCILayer)
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func layeredImage(t *testing.T, layers ...ggcrv1.Layer) ggcrv1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// edited is files with a few changed, one added and one removed.
func edited(files map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	i := 0
	for n, b := range files {
		i++
		switch {
		case i == 3:
			continue // removed
		case i%9 == 0:
			c := append([]byte(nil), b...)
			copy(c[len(c)/2:], "changed in v2")
			out[n] = c
		default:
			out[n] = b
		}
	}
	out["app/src/new.go"] = []byte(strings.Repeat("package main // new in v2\n", 40))
	return out
}

// TestDeltaSync: the first image reaches an empty child better compressed than its gzip
// layers; an application update comes as a small delta against the layer the child holds;
// every blob is byte-identical to the parent's.
func TestDeltaSync(t *testing.T) {
	var plans atomic.Int64 // POST /acr/v1/deltas: one per layer, no more
	parent := deltaParent(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				plans.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	})
	base, app1 := tree(1, 60), tree(2, 40)
	app2 := edited(app1)
	baseLayer := gzipLayer(t, base)
	parent.push(t, "team/app:v1", layeredImage(t, baseLayer, gzipLayer(t, app1)))
	child := newNode(t, nil)
	e := newEngine(t, deltaOptions(t, parent, "team/app"), child)

	s := e.RunPass(context.Background(), false)
	if s.Result != "ok" {
		t.Fatalf("first pass: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v1")
	if s.DeltaLayers != 2 || s.SavedBytes <= 0 || s.LayerTransferBytes != s.BytesFromParent+s.SavedBytes {
		t.Errorf("first image: %d layers as deltas, %d bytes saved (of %d with layer transfer); want both layers better compressed", s.DeltaLayers, s.SavedBytes, s.LayerTransferBytes)
	}
	t.Logf("first image: %d bytes over the link, %d with layer transfer (%.1f%%)", s.BytesFromParent, s.LayerTransferBytes, 100*float64(s.BytesFromParent)/float64(s.LayerTransferBytes))
	if n := plans.Swap(0); n != 2 {
		t.Errorf("%d delta plans asked for 2 layers", n)
	}

	app2Layer := gzipLayer(t, app2)
	parent.push(t, "team/app:v2", layeredImage(t, baseLayer, app2Layer))
	s = e.RunPass(context.Background(), false)
	if s.Result != "ok" {
		t.Fatalf("second pass: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v2")
	size, _ := app2Layer.Size()
	if s.DeltaLayers != 1 || s.SavedBytes < size*9/10 {
		t.Errorf("application update: %d layers as deltas, %d of the layer's %d bytes saved; want one delta saving most of it", s.DeltaLayers, s.SavedBytes, size)
	}
	t.Logf("application update: layer %d bytes, %d bytes over the link in all (%d with layer transfer)", size, s.BytesFromParent, s.LayerTransferBytes)
	if n := plans.Load(); n != 1 {
		t.Errorf("%d delta plans asked for 1 layer", n)
	}
}

// TestRebuildLeavesRoomForLiveHeap: the soft memory limit of a rebuild sits above what the
// node already holds live (here a 128 MiB stand-in for a parent's delta computation), not at
// the 96 MiB a lone child gets, and the limit in force comes back after.
func TestRebuildLeavesRoomForLiveHeap(t *testing.T) {
	const ballastSize = 128 << 20
	var mu gosync.Mutex
	var limits []int64
	sync.WatchMemoryLimit(t, func(l int64) {
		mu.Lock()
		defer mu.Unlock()
		limits = append(limits, l)
	})
	parent := deltaParent(t, nil)
	parent.push(t, "team/app:v1", layeredImage(t, gzipLayer(t, tree(11, 30))))
	child := newNode(t, nil)
	e := newEngine(t, deltaOptions(t, parent, "team/app"), child)

	before := debug.SetMemoryLimit(-1)
	ballast := make([]byte, ballastSize)
	s := e.RunPass(context.Background(), false)
	runtime.KeepAlive(ballast)
	if s.Result != "ok" || s.DeltaLayers != 1 {
		t.Fatalf("pass: %+v; want the layer rebuilt from a delta", s)
	}
	requireSame(t, parent, child, "team/app:v1")
	var set []int64
	mu.Lock()
	defer mu.Unlock()
	for _, l := range limits {
		if l >= 0 {
			set = append(set, l)
		}
	}
	if len(set) != 2 || set[0] < ballastSize+80<<20 || set[0] > before || set[1] != before {
		t.Errorf("limits set %v around the rebuild (limit in force %d); want one of at least %d, then %d back", set, before, ballastSize+80<<20, before)
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("memory limit %d after the pass, want %d", got, before)
	}
}

func TestRebuildLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ prev, live, want int64 }{
		{math.MaxInt64, 10 * mib, 96 * mib},   // a lone child: the fixed limit
		{math.MaxInt64, 300 * mib, 380 * mib}, // a busy parent: its live heap and the budget
		{200 * mib, 300 * mib, 200 * mib},     // never above the limit in force
		{64 * mib, 0, 64 * mib},
	} {
		if got := sync.RebuildLimit(c.prev, c.live); got != c.want {
			t.Errorf("RebuildLimit(%d, %d) = %d, want %d", c.prev, c.live, got, c.want)
		}
	}
}

// TestDeltaSharedAcrossChildren: children that hold different images but the same previous
// release get one delta for the update, computed once, though each offers other layers.
func TestDeltaSharedAcrossChildren(t *testing.T) {
	parent, logs := deltaParentLogged(t, nil)
	base, app1 := tree(21, 40), tree(22, 30)
	baseLayer := gzipLayer(t, base)
	parent.push(t, "team/app:v1", layeredImage(t, baseLayer, gzipLayer(t, app1)))
	other := map[string][]byte{}
	for name, b := range tree(23, 20) {
		other["srv/tools/"+name] = b
	}
	parent.push(t, "team/tools:v1", layeredImage(t, gzipLayer(t, other)))

	var engines []*sync.Engine
	var children []*node
	for _, repos := range [][]string{{"team/app"}, {"team/app", "team/tools"}} {
		child := newNode(t, nil)
		e := newEngine(t, deltaOptions(t, parent, repos...), child)
		if s := e.RunPass(context.Background(), false); s.Result != "ok" {
			t.Fatalf("first pass of a child of %v: %+v", repos, s)
		}
		engines, children = append(engines, e), append(children, child)
	}
	before := logs.FilterMessage("delta computed").Len()

	parent.push(t, "team/app:v2", layeredImage(t, baseLayer, gzipLayer(t, edited(app1))))
	for i, e := range engines {
		if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.DeltaLayers != 1 {
			t.Fatalf("child %d: %+v; want the update as a delta", i, s)
		}
		requireSame(t, parent, children[i], "team/app:v2")
	}
	if computed, reused := logs.FilterMessage("delta computed").Len()-before, logs.FilterMessage("delta reused").Len(); computed != 1 || reused < 1 {
		t.Errorf("the update's delta computed %d times and reused %d times for two children; want once, then reused", computed, reused)
	}
}

// TestDeltaFallsBack: a parent that does not serve deltas, and one whose deltas arrive
// corrupted, both end with the exact image fetched whole.
func TestDeltaFallsBack(t *testing.T) {
	img := layeredImage(t, gzipLayer(t, tree(3, 30)))

	plain := newNode(t, nil)
	plain.push(t, "team/app:v1", img)
	child := newNode(t, nil)
	o := engineOptions(t, plain.srv.URL, "team/app")
	o.Delta = true
	if s := newEngine(t, o, child).RunPass(context.Background(), false); s.Result != "ok" || s.DeltaLayers != 0 {
		t.Fatalf("from a parent without deltas: %+v", s)
	}
	requireSame(t, plain, child, "team/app:v1")

	var corrupted atomic.Int64
	flip := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet {
				next.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(&flipWriter{ResponseWriter: w, n: &corrupted}, r)
		})
	}
	lying := deltaParent(t, flip)
	lying.push(t, "team/app:v1", img)
	child2 := newNode(t, nil)
	s := newEngine(t, deltaOptions(t, lying, "team/app"), child2).RunPass(context.Background(), false)
	if s.Result != "ok" || s.DeltaLayers != 0 || corrupted.Load() == 0 {
		t.Fatalf("from a parent sending corrupt deltas: %+v (corrupted %d responses)", s, corrupted.Load())
	}
	requireSame(t, lying, child2, "team/app:v1")

	// A parent whose plans name the wrong compression level: the rebuilt layer does not hash
	// to its digest and is never committed.
	var altered atomic.Int64
	wrongRecipe := alterPlans(func(p *acrapi.DeltaPlan) bool {
		var rcp map[string]any
		if json.Unmarshal(p.Recipe, &rcp) != nil {
			return false
		}
		rcp["level"] = 1
		p.Recipe, _ = json.Marshal(rcp)
		return true
	}, &altered)
	wrong := deltaParent(t, wrongRecipe)
	wrong.push(t, "team/app:v1", img)
	child3 := newNode(t, nil)
	s = newEngine(t, deltaOptions(t, wrong, "team/app"), child3).RunPass(context.Background(), false)
	if s.Result != "ok" || s.DeltaLayers != 0 || altered.Load() == 0 {
		t.Fatalf("from a parent with wrong recipes: %+v (altered %d plans)", s, altered.Load())
	}
	requireSame(t, wrong, child3, "team/app:v1")
}

// flipWriter flips the first byte of every body it writes.
type flipWriter struct {
	http.ResponseWriter
	n       *atomic.Int64
	flipped bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if !f.flipped && len(p) > 0 {
		f.flipped = true
		f.n.Add(1)
		c := append([]byte(nil), p...)
		c[0] ^= 0xff
		return f.ResponseWriter.Write(c)
	}
	return f.ResponseWriter.Write(p)
}

// TestDeltaResumes: a delta transfer cut in the middle resumes from the bytes the child kept.
func TestDeltaResumes(t *testing.T) {
	var cuts atomic.Int64
	cut := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if cuts.Add(1) == 2 { // the second chunk: half of it, then the connection drops
				next.ServeHTTP(&cutWriter{ResponseWriter: w, left: 8 << 10}, r)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	parent := deltaParent(t, cut)
	big := map[string][]byte{}
	for n, b := range tree(4, 150) {
		big[n] = b
	}
	layer := gzipLayer(t, big)
	parent.push(t, "team/app:v1", layeredImage(t, layer))
	child := newNode(t, nil)
	o := deltaOptions(t, parent, "team/app")
	o.ChunkSize = 16 << 10
	s := newEngine(t, o, child).RunPass(context.Background(), false)
	if s.Result != "ok" || s.DeltaLayers != 1 || cuts.Load() < 3 {
		t.Fatalf("pass with a cut delta transfer: %+v (%d delta requests)", s, cuts.Load())
	}
	requireSame(t, parent, child, "team/app:v1")
	// The cut cost at most the bytes in flight, not the delta again: the bytes received exceed
	// the layer's delta (the rest of what crossed: manifest, config, requests' answers) by
	// less than a chunk.
	size, _ := layer.Size()
	deltaBytes := size - s.SavedBytes
	if s.BytesFromParent > deltaBytes+int64(o.ChunkSize)+16<<10 {
		t.Errorf("a cut delta cost %d bytes in all; the delta is %d bytes, a chunk %d", s.BytesFromParent, deltaBytes, o.ChunkSize)
	}
	t.Logf("delta %d bytes, %d received in all with a cut mid-transfer", deltaBytes, s.BytesFromParent)
}

// cutWriter writes left bytes, then aborts the connection.
type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if len(p) >= c.left {
		_, _ = c.ResponseWriter.Write(p[:c.left])
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler)
	}
	c.left -= len(p)
	return c.ResponseWriter.Write(p)
}

// deltaSite defines a connected registry of team/app with delta sync at root and returns the
// engine of a new node activated as it, and the node.
func deltaSite(t *testing.T, root *root, name string) (*sync.Engine, *node) {
	t.Helper()
	opts, _ := root.define(t, acrapi.ConnectedRegistrySpec{Name: name, Repositories: []string{"team/app"}})
	opts.Delta = true
	child := newNode(t, nil)
	return newEngine(t, opts, child), child
}

// TestConnectedDeltaUsesInventory: a connected registry reports the layers it holds in its
// status report; its next delta request names that inventory instead of listing it, and the
// parent chooses bases from it. Deleted, its inventory is dropped.
func TestConnectedDeltaUsesInventory(t *testing.T) {
	root := newRoot(t)
	baseLayer, app1 := gzipLayer(t, tree(11, 40)), tree(12, 30)
	root.push(t, "team/app:v1", layeredImage(t, baseLayer, gzipLayer(t, app1)))
	e, child := deltaSite(t, root, "siteDelta1")
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("first pass: %+v", s)
	}
	hash, layers, ok := root.deltas.Inventory("siteDelta1")
	if !ok || len(layers) != 2 || layers[0].Repository != "team/app" {
		t.Fatalf("the root's inventory of siteDelta1: %v %v %+v", ok, hash, layers)
	}

	var requests []acrapi.DeltaRequest
	var mu gosync.Mutex
	root.observe = func(r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/acr/v1/deltas" {
			return
		}
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		var req acrapi.DeltaRequest
		_ = json.Unmarshal(b, &req)
		mu.Lock()
		requests = append(requests, req)
		mu.Unlock()
	}
	d := root.push(t, "team/app:v2", layeredImage(t, baseLayer, gzipLayer(t, edited(app1))))
	// The event the root's app records for a push.
	if err := root.cp.AppendEvent(acrapi.Event{Repository: "team/app", Tag: "v2", Digest: d.String(), Action: acrapi.EventPush}); err != nil {
		t.Fatal(err)
	}
	s := e.RunPass(context.Background(), false)
	if s.Result != "ok" || s.DeltaLayers != 1 {
		t.Fatalf("second pass: %+v", s)
	}
	requireSame(t, root.node, child, "team/app:v2")
	mu.Lock()
	defer mu.Unlock()
	if len(requests) != 1 || requests[0].HaveHash != hash || len(requests[0].Have) != 0 {
		t.Fatalf("delta requests: %+v; want one naming inventory %s without a list", requests, hash)
	}

	// Deleted at the root: its inventory goes too.
	if _, err := root.cp.EnsureAdmin(deltaAdminPassword); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodDelete, root.srv.URL+"/acr/v1/connected-registries/siteDelta1", nil)
	req.SetBasicAuth("admin", deltaAdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("deleting siteDelta1: %s", resp.Status)
	}
	if _, _, ok := root.deltas.Inventory("siteDelta1"); ok {
		t.Error("the root keeps the inventory of a deleted connected registry")
	}
}

// TestEmptyChildReportsInventory: a connected registry that holds nothing yet still has an
// inventory at its parent (an empty one, whose list its report leaves out), from which the
// parent can prepare its first images.
func TestEmptyChildReportsInventory(t *testing.T) {
	root := newRoot(t)
	e, _ := deltaSite(t, root, "siteEmpty1")
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("a pass with nothing to sync: %+v", s)
	}
	hash, layers, ok := root.deltas.Inventory("siteEmpty1")
	if !ok || len(layers) != 0 || hash != acrapi.InventoryHash([]acrapi.HeldLayer{}) {
		t.Fatalf("the root's inventory of the empty siteEmpty1: %v %q %+v; want an empty one", ok, hash, layers)
	}
}

// TestDeltaThroughAFaultyParent: 500s and 503 + Retry-After on the plan, a lying length, a
// truncated body and a stall on the delta's chunks — the child retries and resumes, rebuilds
// the layer from the delta, digest-identical, without falling back to the whole layer.
func TestDeltaThroughAFaultyParent(t *testing.T) {
	var rules []*faultnet.RuleHandle
	parent := deltaParent(t, func(next http.Handler) http.Handler {
		faults := faultnet.NewHTTPFaults(next)
		for _, r := range []faultnet.Rule{
			{Method: http.MethodPost, Times: 1, Action: faultnet.Status(http.StatusInternalServerError)},
			{Method: http.MethodPost, Times: 1, Action: faultnet.RetryAfter(http.StatusServiceUnavailable, 50*time.Millisecond)},
			{Method: http.MethodGet, Skip: 1, Times: 1, Action: faultnet.LieLength(+100)},
			{Method: http.MethodGet, Skip: 1, Times: 1, Action: faultnet.Truncate(4 << 10)},
			{Method: http.MethodGet, Skip: 1, Times: 1, Action: faultnet.Delay(time.Second)}, // a stall: the watchdog cuts it
		} {
			rules = append(rules, faults.Add(r))
		}
		return faults
	})
	layer := gzipLayer(t, tree(21, 150))
	parent.push(t, "team/app:v1", layeredImage(t, layer))
	child := newNode(t, nil)
	o := deltaOptions(t, parent, "team/app")
	o.ChunkSize = 16 << 10
	o.StallTimeout = 300 * time.Millisecond
	s := newEngine(t, o, child).RunPass(context.Background(), false)
	if s.Result != "ok" || s.DeltaLayers != 1 {
		t.Fatalf("pass through a faulty parent: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v1")
	for i, r := range rules {
		if r.Applied() != 1 {
			t.Errorf("fault %d was applied %d times, want once", i, r.Applied())
		}
	}
	size, _ := layer.Size()
	if delta := size - s.SavedBytes; s.BytesFromParent > delta+4*int64(o.ChunkSize)+16<<10 {
		t.Errorf("%d bytes received for a %d-byte delta: faults cost more than the chunks they cut", s.BytesFromParent, delta)
	}
}

// TestDeltaParentInternalError: a parent that fails for a reason of its own answers 500 with an
// incident number, not its error (which names its files), and logs the error under that number;
// the child fetches the layer whole.
func TestDeltaParentInternalError(t *testing.T) {
	t.Parallel()
	deltaDir := filepath.Join(t.TempDir(), "delta")
	var broken gosync.Once
	answers, logs := passWithoutDelta(t, deltaDir, func() {
		// The cache's directory becomes a file: every write into it fails, naming its path.
		broken.Do(func() {
			if err := errors.Join(os.RemoveAll(deltaDir), os.WriteFile(deltaDir, nil, 0o600)); err != nil {
				t.Error(err)
			}
		})
	})
	if len(answers) == 0 {
		t.Fatal("the child asked for no delta")
	}
	incident := regexp.MustCompile(`incident ([a-z2-7]{12})`)
	for _, a := range answers {
		m := incident.FindStringSubmatch(a.body)
		if a.status != http.StatusInternalServerError || strings.Contains(a.body, deltaDir) || m == nil {
			t.Errorf("the parent answered %d %q; want a 500 with an incident number and no path of its own", a.status, a.body)
			continue
		}
		logged := logs.FilterMessage("acr request failed").FilterField(zap.String("incident", m[1]))
		if logged.Len() != 1 || !strings.Contains(logged.All()[0].ContextMap()["error"].(string), deltaDir) {
			t.Errorf("incident %s: %d log lines naming the error", m[1], logged.Len())
		}
	}
}

// planAnswer is what a parent answered a request for a delta plan.
type planAnswer struct {
	status int
	body   string
}

// passWithoutDelta pushes an image to a delta parent caching in deltaDir, whose plan requests
// call beforePlan first (when not nil), and syncs a child from it: the pass must end ok with
// every layer fetched whole. It returns the parent's answers to the plan requests, and its log.
func passWithoutDelta(t *testing.T, deltaDir string, beforePlan func()) ([]planAnswer, *observer.ObservedLogs) {
	t.Helper()
	var mu gosync.Mutex
	var answers []planAnswer
	capture := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				next.ServeHTTP(w, r)
				return
			}
			if beforePlan != nil {
				beforePlan()
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			maps.Copy(w.Header(), rec.Header())
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			mu.Lock()
			answers = append(answers, planAnswer{rec.Code, rec.Body.String()})
			mu.Unlock()
		})
	}
	parent, logs := deltaParentCachingIn(t, deltaDir, capture)
	parent.push(t, "team/app:v1", layeredImage(t, gzipLayer(t, tree(5, 60))))
	child := newNode(t, nil)
	s := newEngine(t, deltaOptions(t, parent, "team/app"), child).RunPass(context.Background(), false)
	if s.Result != "ok" || s.DeltaLayers != 0 {
		t.Fatalf("from a parent that computes no delta: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v1")
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(answers), logs
}

// TestAbandonedDeltasRemoved: a partly fetched delta whose plan is never asked for again is
// removed at the start of a pass once a week old; a recent one stays, to be resumed.
func TestAbandonedDeltasRemoved(t *testing.T) {
	parent := deltaParent(t, nil)
	parent.push(t, "team/app:v1", layeredImage(t, gzipLayer(t, tree(5, 20))))
	child := newNode(t, nil)
	o := deltaOptions(t, parent, "team/app")
	e := newEngine(t, o, child)
	dir := filepath.Join(o.StateDir, "deltas")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, recent := filepath.Join(dir, strings.Repeat("a", 64)), filepath.Join(dir, strings.Repeat("b", 64))
	for _, f := range []string{old, recent} {
		if err := os.WriteFile(f, []byte("part of a delta"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	weekAgo := time.Now().Add(-8 * 24 * time.Hour) // past the week a partial delta is kept
	if err := os.Chtimes(old, weekAgo, weekAgo); err != nil {
		t.Fatal(err)
	}
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a delta untouched for a week is still there (%v)", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("a recent partial delta was removed: %v", err)
	}
}

// alterPlans is a fault for deltaParent: it rewrites the plans the parent answers with.
func alterPlans(alter func(*acrapi.DeltaPlan) bool, altered *atomic.Int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			var plan acrapi.DeltaPlan
			if rec.Code == http.StatusOK && json.Unmarshal(body, &plan) == nil && alter(&plan) {
				body, _ = json.Marshal(plan)
				altered.Add(1)
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Del("Content-Length")
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}
}

// TestDeltaLyingPlan: a plan that lies about its delta (its size, its id) costs the layer
// whole, never a wrong layer or a failed pass.
func TestDeltaLyingPlan(t *testing.T) {
	for name, alter := range map[string]func(*acrapi.DeltaPlan){
		"size short":  func(p *acrapi.DeltaPlan) { p.Size -= 100 },
		"size long":   func(p *acrapi.DeltaPlan) { p.Size += 100 },
		"size zero":   func(p *acrapi.DeltaPlan) { p.Size = 0 },
		"unknown id":  func(p *acrapi.DeltaPlan) { p.ID = digest.FromString("no such delta").String() },
		"invalid id":  func(p *acrapi.DeltaPlan) { p.ID = "../../etc/passwd" },
		"other layer": func(p *acrapi.DeltaPlan) { p.Digest = digest.FromString("another layer").String() },
	} {
		t.Run(name, func(t *testing.T) {
			var altered atomic.Int64
			parent := deltaParent(t, alterPlans(func(p *acrapi.DeltaPlan) bool { alter(p); return true }, &altered))
			parent.push(t, "team/app:v1", layeredImage(t, gzipLayer(t, tree(51, 40))))
			child := newNode(t, nil)
			o := deltaOptions(t, parent, "team/app")
			o.Retry.Attempts = 3
			start := time.Now()
			s := newEngine(t, o, child).RunPass(context.Background(), false)
			if altered.Load() == 0 {
				t.Fatal("no plan was altered")
			}
			if s.Result != "ok" || s.DeltaLayers != 0 {
				t.Fatalf("pass with a lying plan: %+v", s)
			}
			requireSame(t, parent, child, "team/app:v1")
			t.Logf("fetched whole after %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestDeltaSplitsThatDoNotHold: a parent whose split points do not reproduce the layer costs
// a serial recompression, not the delta: the child rebuilds again without them.
func TestDeltaSplitsThatDoNotHold(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("needs a layer of several MiB, too slow to compress under the race detector; internal/delta tests the same fallback there")
	}
	var altered atomic.Int64
	parent := deltaParent(t, alterPlans(func(plan *acrapi.DeltaPlan) bool {
		if len(plan.Splits) < 2 {
			return false
		}
		for i := range plan.Splits[:len(plan.Splits)-1] {
			plan.Splits[i] += 4096 // inside a block: no segment ends where it should
		}
		return true
	}, &altered))
	files := map[string][]byte{}
	for n, b := range tree(41, 150) {
		for i := range 8 {
			files[fmt.Sprintf("%d/%s", i, n)] = append(bytes.Repeat([]byte{byte(i)}, i*10), b...)
		}
	}
	layer := gzipLayer(t, files)
	parent.push(t, "team/app:v1", layeredImage(t, layer))
	child := newNode(t, nil)
	s := newEngine(t, deltaOptions(t, parent, "team/app"), child).RunPass(context.Background(), false)
	if altered.Load() == 0 {
		size, _ := layer.Size()
		t.Fatalf("no plan had split points to alter (layer of %d bytes)", size)
	}
	if s.Result != "ok" || s.DeltaLayers != 1 {
		t.Fatalf("pass with split points that do not hold: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v1")
}

// TestInventoryReportedAsChanges: once the parent holds a connected registry's inventory, a
// status report carries what changed, not the whole list; a parent that holds another one
// drops the changes and says so, and the next report sends the inventory whole.
func TestInventoryReportedAsChanges(t *testing.T) {
	root := newRoot(t)
	var layers []ggcrv1.Layer
	for i := range 6 {
		layers = append(layers, gzipLayer(t, tree(uint64(60+i), 3)))
	}
	root.push(t, "team/app:v1", layeredImage(t, layers...))
	e, _ := deltaSite(t, root, "siteInv1")

	var mu gosync.Mutex
	var reports []acrapi.StatusReport
	root.observeStatus(func(rep acrapi.StatusReport) {
		if rep.LayersHash != "" { // not the report that the pass started fetching
			mu.Lock()
			reports = append(reports, rep)
			mu.Unlock()
		}
	})
	last := func() acrapi.StatusReport {
		mu.Lock()
		defer mu.Unlock()
		return reports[len(reports)-1]
	}
	pass := func(tag string, extra int) {
		t.Helper()
		if extra > 0 {
			for i := range extra {
				layers = append(layers, gzipLayer(t, tree(uint64(100+len(layers)+i), 3)))
			}
			d := root.push(t, "team/app:"+tag, layeredImage(t, layers...))
			if err := root.cp.AppendEvent(acrapi.Event{Repository: "team/app", Tag: tag, Digest: d.String(), Action: acrapi.EventPush}); err != nil {
				t.Fatal(err)
			}
		}
		if s := e.RunPass(context.Background(), true); s.Result != "ok" {
			t.Fatalf("pass for %s: %+v", tag, s)
		}
	}
	holds := func(want string) {
		t.Helper()
		if got, _, _ := root.deltas.Inventory("siteInv1"); got != want {
			t.Fatalf("the root holds inventory %q, the child reported %q", got, want)
		}
	}

	pass("v1", 0)
	if r := last(); len(r.Layers) != 6 || r.LayersBase != "" {
		t.Fatalf("first report: %d layers, base %q; want the whole inventory", len(r.Layers), r.LayersBase)
	}
	holds(last().LayersHash)
	first := last().LayersHash

	pass("v2", 1)
	if r := last(); r.Layers != nil || r.LayersBase != first || len(r.LayersAdded) != 1 || len(r.LayersRemoved) != 0 {
		t.Fatalf("report after one more layer: %d layers, base %q, %d added, %d removed; want the change from %s",
			len(r.Layers), r.LayersBase, len(r.LayersAdded), len(r.LayersRemoved), first)
	}
	holds(last().LayersHash)

	// The root loses track (its delta cache replaced, say): the next changes are dropped, and
	// the report after them sends the inventory whole.
	other := []acrapi.HeldLayer{{Digest: digest.FromString("x").String(), Position: 0}}
	if err := root.deltas.SetInventory("siteInv1", acrapi.InventoryHash(other), other); err != nil {
		t.Fatal(err)
	}
	pass("v3", 1)
	if r := last(); r.LayersBase == "" {
		t.Fatalf("report after a third version: %d layers, no base; want changes", len(r.Layers))
	}
	holds(acrapi.InventoryHash(other))
	pass("v3", 0)
	if r := last(); len(r.Layers) != 8 {
		t.Fatalf("report after a dropped change: %d layers, base %q; want the 8 whole", len(r.Layers), r.LayersBase)
	}
	holds(last().LayersHash)

	// A quiet pass reports the inventory without listing the store again; a client's change
	// makes the next report list it.
	walks := e.InventoryWalks()
	pass("v3", 0)
	if got := e.InventoryWalks(); got != walks {
		t.Errorf("a quiet pass listed the store's layers (%d walks, %d before)", got, walks)
	}
	e.StoreChanged()
	pass("v3", 0)
	if got := e.InventoryWalks(); got != walks+1 {
		t.Errorf("after a client's change: %d walks, want %d", got, walks+1)
	}
	holds(last().LayersHash)
}

// TestInventoryAnswerLost: the parent applies a status report's inventory changes but its
// answer is lost on the link. The child, which keeps the inventory it last saw acknowledged,
// reports its next changes against that one; the parent drops them as stale, the delta
// requests naming the old inventory get 409 and list the layers instead (the delta still
// goes), and the report after sends the inventory whole. No pass fails and nothing is lost.
func TestInventoryAnswerLost(t *testing.T) {
	root := newRoot(t)
	// Four layers that stay, so that a release's changes to the inventory are reported as
	// changes, not whole; the last layer changes.
	app := tree(201, 30)
	var layers []ggcrv1.Layer
	for i := range 4 {
		layers = append(layers, gzipLayer(t, tree(uint64(210+i), 3+i)))
	}
	layers = append(layers, gzipLayer(t, app))
	root.push(t, "team/app:v1", layeredImage(t, layers...))
	e, child := deltaSite(t, root, "siteLost1")

	var mu gosync.Mutex
	var reports []acrapi.StatusReport
	var deltaRequests []acrapi.DeltaRequest
	root.observe = func(req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		mu.Lock()
		defer mu.Unlock()
		switch req.URL.Path {
		case "/acr/v1/status":
			var rep acrapi.StatusReport
			_ = json.Unmarshal(b, &rep)
			if rep.LayersHash != "" {
				reports = append(reports, rep)
			}
		case "/acr/v1/deltas":
			var dr acrapi.DeltaRequest
			_ = json.Unmarshal(b, &dr)
			deltaRequests = append(deltaRequests, dr)
		}
	}
	last := func() acrapi.StatusReport {
		mu.Lock()
		defer mu.Unlock()
		return reports[len(reports)-1]
	}
	held := func() string {
		hash, _, _ := root.deltas.Inventory("siteLost1")
		return hash
	}
	// release pushes a version with a few files of the application layer changed, which the
	// child can take as a delta against the one before, and runs a pass.
	release := func(tag string) acrapi.PassSummary {
		t.Helper()
		app = edited(app)
		layers[len(layers)-1] = gzipLayer(t, app)
		d := root.push(t, "team/app:"+tag, layeredImage(t, layers...))
		if err := root.cp.AppendEvent(acrapi.Event{Repository: "team/app", Tag: tag, Digest: d.String(), Action: acrapi.EventPush}); err != nil {
			t.Fatal(err)
		}
		s := e.RunPass(context.Background(), true)
		if s.Result != "ok" {
			t.Fatalf("pass for %s: %+v", tag, s)
		}
		return s
	}

	if s := e.RunPass(context.Background(), true); s.Result != "ok" {
		t.Fatalf("first pass: %+v", s)
	}
	acked := last().LayersHash
	if held() != acked {
		t.Fatalf("the root holds inventory %q, the child reported %q", held(), acked)
	}

	// v2's report after the pass (the second status report: the first says Syncing) is
	// applied, and its answer cut off.
	lost := root.faultACR(faultnet.Rule{Method: http.MethodPost, Path: regexp.MustCompile(`^/acr/v1/status$`), Skip: 1, Times: 1, Action: faultnet.Truncate(0)})
	release("v2")
	if lost[0].Applied() != 1 {
		t.Fatalf("the answer to the report was cut %d times, want once", lost[0].Applied())
	}
	if r := last(); r.LayersBase != acked || held() != r.LayersHash {
		t.Fatalf("v2's report: base %q, hash %q, the root holds %q; want the change from %q applied", r.LayersBase, r.LayersHash, held(), acked)
	}
	applied := held()

	// v3: the child still names the inventory it saw acknowledged, in its delta request (409:
	// it lists its layers, and the delta goes) and in its report (stale: dropped).
	mu.Lock()
	before := len(deltaRequests)
	mu.Unlock()
	if s := release("v3"); s.DeltaLayers != 1 {
		t.Fatalf("v3 pass: %+v; want its changed layer as a delta", s)
	}
	mu.Lock()
	requests := slices.Clone(deltaRequests[before:])
	mu.Unlock()
	if len(requests) != 2 || requests[0].HaveHash != acked || len(requests[0].Have) != 0 || len(requests[1].Have) == 0 {
		t.Fatalf("v3's delta requests: %+v; want one naming %s, then one listing the layers", requests, acked)
	}
	if r := last(); r.LayersBase != acked || held() != applied {
		t.Fatalf("v3's report: base %q; the root holds %q; want changes from %q, dropped", r.LayersBase, held(), acked)
	}

	// The next report sends the inventory whole, and the root holds the child's own again.
	if s := e.RunPass(context.Background(), true); s.Result != "ok" {
		t.Fatalf("pass after v3: %+v", s)
	}
	if r := last(); r.LayersBase != "" || len(r.Layers) == 0 || held() != r.LayersHash {
		t.Fatalf("report after the stale one: base %q, %d layers, the root holds %q; want the inventory whole, held", r.LayersBase, len(r.Layers), held())
	}
	requireSame(t, root.node, child, "team/app:v3")
}

func TestInventoryChanges(t *testing.T) {
	l := func(d string, repo string, pos int) acrapi.HeldLayer {
		return acrapi.HeldLayer{Digest: d, Repository: repo, Position: pos}
	}
	from := []acrapi.HeldLayer{l("a", "r", 0), l("b", "r", 1), l("c", "r", 2), l("e", "r", 0)}
	to := []acrapi.HeldLayer{l("a", "r", 0), l("c", "s", 2), l("d", "r", 3), l("e", "r", 0), l("f", "r", 1)}
	added, removed := sync.InventoryChanges(from, to)
	if want := []acrapi.HeldLayer{l("c", "s", 2), l("d", "r", 3), l("f", "r", 1)}; !slices.Equal(added, want) {
		t.Errorf("added %v, want %v", added, want)
	}
	if want := []string{"b", "c"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if a, r := sync.InventoryChanges(to, to); a != nil || r != nil {
		t.Errorf("no change: %v %v", a, r)
	}
	if a, r := sync.InventoryChanges(nil, to); len(a) != len(to) || r != nil {
		t.Errorf("from nothing: %v %v", a, r)
	}
}

// TestHeldLayersListedOncePerPass: a mirror asking for several layers as deltas in one pass
// lists the layers it holds once, not once per layer.
func TestHeldLayersListedOncePerPass(t *testing.T) {
	parent := deltaParent(t, nil)
	trees := []map[string][]byte{tree(71, 30), tree(72, 30), tree(73, 30)}
	var v1, v2 []ggcrv1.Layer
	for _, tr := range trees {
		v1 = append(v1, gzipLayer(t, tr))
		v2 = append(v2, gzipLayer(t, edited(tr)))
	}
	parent.push(t, "team/app:v1", layeredImage(t, v1...))
	child := newNode(t, nil)
	e := newEngine(t, deltaOptions(t, parent, "team/app"), child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("first pass: %+v", s)
	}
	parent.push(t, "team/app:v2", layeredImage(t, v2...))
	walks := e.InventoryWalks()
	s := e.RunPass(context.Background(), true)
	if s.Result != "ok" || s.DeltaLayers != 3 {
		t.Fatalf("second pass: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v2")
	if got := e.InventoryWalks() - walks; got != 1 {
		t.Errorf("the pass listed the layers held %d times for 3 delta requests, want once", got)
	}
}

// baseWatch looks at the uncompressed bases in a child's state directory.
type baseWatch struct {
	dir     atomic.Value // string: the child's state directory
	holding atomic.Bool  // hold makes the next request wait for a base
	saw     atomic.Bool  // a request held saw one
}

func (b *baseWatch) bases() []string {
	dir, _ := b.dir.Load().(string)
	m, _ := filepath.Glob(filepath.Join(dir, "deltas", "base-*.tar"))
	return m
}

// hold makes the first request after holding was set wait, at most 10 s, for a base to appear.
func (b *baseWatch) hold() {
	if !b.holding.Swap(false) {
		return
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !b.saw.Load(); time.Sleep(5 * time.Millisecond) {
		if len(b.bases()) > 0 {
			b.saw.Store(true)
		}
	}
}

func (b *baseWatch) noneLeft(t *testing.T, when string) {
	t.Helper()
	if m := b.bases(); len(m) > 0 {
		t.Errorf("%s: uncompressed bases left behind: %v", when, m)
	}
}

// TestDeltaBasesWhileDownloading: the child decompresses a delta's bases while the delta
// downloads (the parent here holds the delta back until a base is being written), and leaves
// none of them behind, whether the download succeeds or fails.
func TestDeltaBasesWhileDownloading(t *testing.T) {
	var watch baseWatch
	var failDownloads atomic.Bool
	hold := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/acr/v1/deltas/") {
				watch.hold()
				if failDownloads.Load() {
					http.Error(w, "the parent fails", http.StatusInternalServerError)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
	parent := deltaParent(t, hold)
	base, app1 := tree(21, 60), tree(22, 40)
	baseLayer := gzipLayer(t, base)
	parent.push(t, "team/app:v1", layeredImage(t, baseLayer, gzipLayer(t, app1)))
	child := newNode(t, nil)
	o := deltaOptions(t, parent, "team/app")
	watch.dir.Store(o.StateDir)
	e := newEngine(t, o, child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("first pass: %+v", s)
	}

	watch.holding.Store(true) // the first image had no bases
	app2 := edited(app1)
	parent.push(t, "team/app:v2", layeredImage(t, baseLayer, gzipLayer(t, app2)))
	if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.DeltaLayers != 1 {
		t.Fatalf("application update: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v2")
	if !watch.saw.Load() {
		t.Error("no base was being decompressed while the delta downloaded")
	}
	watch.noneLeft(t, "after a rebuild")

	// The download fails: the layer comes whole, and the decompressed bases go.
	watch.saw.Store(false)
	watch.holding.Store(true)
	failDownloads.Store(true)
	parent.push(t, "team/app:v3", layeredImage(t, baseLayer, gzipLayer(t, edited(app2))))
	if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.DeltaLayers != 0 {
		t.Fatalf("update with failing delta downloads: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v3")
	watch.noneLeft(t, "after a failed download")
}

// TestDeltaGuessedBase: while the parent plans, the child decompresses the layer it holds at
// the same position of the repository; the plan's other bases follow. A plan that does not
// name the guess (a parent that lies here) costs the layer whole, and nothing is left behind.
func TestDeltaGuessedBase(t *testing.T) {
	var watch baseWatch
	var dropGuess atomic.Bool
	var mu gosync.Mutex
	var plans []acrapi.DeltaPlan
	var guessed string
	planned := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || !strings.Contains(r.URL.Path, "/acr/v1/deltas") {
				next.ServeHTTP(w, r)
				return
			}
			watch.hold()
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			var p acrapi.DeltaPlan
			if rec.Code == http.StatusOK && json.Unmarshal(body, &p) == nil {
				mu.Lock()
				plans = append(plans, p)
				if dropGuess.Load() {
					p.Bases = slices.DeleteFunc(p.Bases, func(b string) bool { return b == guessed })
					body, _ = json.Marshal(p)
				}
				mu.Unlock()
			}
			maps.Copy(w.Header(), rec.Header())
			w.Header().Del("Content-Length")
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	}
	parent := deltaParent(t, planned)
	base, app1 := tree(31, 60), tree(32, 40)
	baseLayer := gzipLayer(t, base)
	app1Layer := gzipLayer(t, app1)
	app1Digest, _ := app1Layer.Digest()
	parent.push(t, "team/app:v1", layeredImage(t, baseLayer, app1Layer))
	child := newNode(t, nil)
	o := deltaOptions(t, parent, "team/app")
	watch.dir.Store(o.StateDir)
	e := newEngine(t, o, child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("first pass: %+v", s)
	}

	watch.holding.Store(true)
	app2 := edited(app1)
	app2Layer := gzipLayer(t, app2)
	app2Digest, _ := app2Layer.Digest()
	parent.push(t, "team/app:v2", layeredImage(t, baseLayer, app2Layer))
	if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.DeltaLayers != 1 {
		t.Fatalf("application update: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v2")
	if !watch.saw.Load() {
		t.Error("no base was being decompressed while the parent planned")
	}
	mu.Lock()
	if p := plans[len(plans)-1]; !slices.Contains(p.Bases, app1Digest.String()) {
		t.Errorf("the update's plan uses %v, not the layer at the same position %s", p.Bases, app1Digest)
	}
	guessed = app2Digest.String()
	mu.Unlock()
	watch.noneLeft(t, "after a guessed base")

	// The plan leaves the guess out: its delta no longer rebuilds the layer.
	dropGuess.Store(true)
	parent.push(t, "team/app:v3", layeredImage(t, baseLayer, gzipLayer(t, edited(app2))))
	if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.DeltaLayers != 0 {
		t.Fatalf("update whose plan leaves the guess out: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v3")
	watch.noneLeft(t, "after a wrong guess")
}

// TestPlatformsReported: a connected registry that keeps some platforms of indexes tells its
// parent, which then prepares deltas of those only; it says so once the parent's answer lists
// them among what it reads, as a parent of an earlier release refuses a report with a field
// it does not know.
func TestPlatformsReported(t *testing.T) {
	root := newRoot(t)
	opts, _ := root.define(t, acrapi.ConnectedRegistrySpec{Name: "sitePlat1", Repositories: []string{"team/app"}})
	opts.Delta, opts.Platforms = true, []string{"linux/arm64", "linux/arm/v7"}
	e := newEngine(t, opts, newNode(t, nil))
	var mu gosync.Mutex
	var reports []acrapi.StatusReport
	root.observeStatus(func(rep acrapi.StatusReport) {
		mu.Lock()
		reports = append(reports, rep)
		mu.Unlock()
	})
	for range 2 {
		if s := e.RunPass(context.Background(), false); s.Result != "ok" {
			t.Fatalf("pass: %+v", s)
		}
	}
	mu.Lock()
	seen := slices.Clone(reports) // the root's observer takes mu: not held while reporting below
	mu.Unlock()
	if len(seen) < 2 || seen[0].Platforms != nil || !slices.Equal(seen[len(seen)-1].Platforms, opts.Platforms) {
		t.Fatalf("reports %+v: want the first without platforms, the last with %v", seen, opts.Platforms)
	}
	if got := root.deltas.Platforms("sitePlat1"); !slices.Equal(got, opts.Platforms) {
		t.Fatalf("the root holds platforms %v for sitePlat1, want %v", got, opts.Platforms)
	}

	// A report naming a malformed platform is refused with 400, naming the field, and changes
	// nothing.
	bad := seen[len(seen)-1]
	bad.Platforms = []string{"linux/arm64", "linux"}
	body, err := json.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, opts.Parent.URL+"/acr/v1/status", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(opts.Parent.Username, opts.Parent.Password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(answer), "platforms") || !strings.Contains(string(answer), `\"linux\"`) {
		t.Errorf("a report with platform \"linux\": %d %s; want 400 naming the field and the platform", resp.StatusCode, answer)
	}
	if got := root.deltas.Platforms("sitePlat1"); !slices.Equal(got, opts.Platforms) {
		t.Errorf("after the refused report the root holds platforms %v, want %v", got, opts.Platforms)
	}
}
