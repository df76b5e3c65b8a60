package delta_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest/observer"

	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/delta/recipe"
	"github.com/outpost-registry/outpost/internal/delta/tardelta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Plan computes in a goroutine and the recipe writers run their own: none may outlive a test.
//
// The tests run in parallel (each with a parent of its own), except TestRebuildMemory, which
// measures the heap and runs before them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkPlan checks what a plan says of its layer.
func checkPlan(t *testing.T, p acrapi.DeltaPlan, target blob, format string, bases ...blob) {
	t.Helper()
	if p.Format != format {
		t.Errorf("plan format %q, want %q", p.Format, format)
	}
	want := []string{}
	for _, b := range bases {
		want = append(want, b.digest.String())
	}
	if got := append([]string{}, p.Bases...); !slices.Equal(got, want) {
		t.Errorf("plan bases %v, want %v", got, want)
	}
	if p.Digest != target.digest.String() || p.LayerSize != target.size {
		t.Errorf("plan is for layer %s (%d bytes), want %s (%d bytes)", p.Digest, p.LayerSize, target.digest, target.size)
	}
	if target.diffID != "" && p.DiffID != target.diffID {
		t.Errorf("plan diff-id %q, want %q", p.DiffID, target.diffID)
	}
	if _, err := recipe.ParseRecipe(p.Recipe); err != nil {
		t.Errorf("plan recipe %s: %v", p.Recipe, err)
	}
	if d, err := digest.Parse(p.ID); err != nil || d.Algorithm() != digest.SHA256 {
		t.Errorf("plan ID %q is not a sha256 digest", p.ID)
	}
}

// TestRoundTrip sends the first image to an empty child, then an application update to a child
// holding the previous version, for the layers of each common tool.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes())
	v2 := base.v2(2)
	tar1, tar2 := int64(len(base.tarBytes(t))), int64(len(v2.tarBytes(t)))
	t.Logf("layer: %d entries, %d-byte tar; update: %d-byte tar", len(base), tar1, tar2)
	for _, c := range compressors {
		t.Run(c.name, func(t *testing.T) {
			src := newDiskBlobs(t)
			b1 := src.putLayer(t, base, c)
			b2 := src.putLayer(t, v2, c)

			t.Run("first-image", func(t *testing.T) {
				svc, _ := newService(t, src)
				start := time.Now()
				p := mustPlan(t, svc, request(b1))
				planned := time.Since(start)
				checkPlan(t, p, b1, delta.FormatWhole)
				if c.name == dockerGzip.name && !raceEnabled && len(p.Splits) < 2 {
					t.Errorf("a %d-byte go-gzip layer planned without split points (%v)", b1.size, p.Splits)
				}
				ch := newChild(t)
				path := ch.fetch(svc, p)
				// The child's decoder allocates the window the stream declares: no
				// more than the tar needs.
				if w := streamWindow(t, path); w > max(1<<20, 2*tar1) {
					t.Errorf("a %d-byte tar sent whole with a %d-byte window", tar1, w)
				}
				start = time.Now()
				ch.mustRebuild(p, path, b1)
				if ch.tarSize != tar1 {
					t.Errorf("Rebuild says it rebuilt a %d-byte tar; the layer's is %d bytes", ch.tarSize, tar1)
				}
				t.Logf("%s: first image: delta %d / blob %d bytes = %s (plan %v, rebuild %v, recipe %s)",
					c.name, p.Size, b1.size, ratio(p.Size, b1.size), planned.Round(time.Millisecond),
					time.Since(start).Round(time.Millisecond), p.Recipe)
			})

			t.Run("app-update", func(t *testing.T) {
				svc, _ := newService(t, src)
				start := time.Now()
				p := mustPlan(t, svc, request(b2, b1))
				planned := time.Since(start)
				checkPlan(t, p, b2, acrapi.DeltaFormat, b1)
				ch := newChild(t, b1)
				path := ch.fetch(svc, p)
				ch.basesOf(p) // decompressed before timing the rebuild
				start = time.Now()
				ch.mustRebuild(p, path, b2)
				if ch.tarSize != tar2 {
					t.Errorf("Rebuild says it rebuilt a %d-byte tar; the layer's is %d bytes", ch.tarSize, tar2)
				}
				t.Logf("%s: app update: delta %d / blob %d bytes = %s (plan %v, rebuild %v; %s)",
					c.name, p.Size, b2.size, ratio(p.Size, b2.size), planned.Round(time.Millisecond),
					time.Since(start).Round(time.Millisecond), delta.Describe(p))
			})
		})
	}
}

// TestPlanCached answers the same request from the cache, also after a restart, and a request
// offering the same layers in another order, or more that are no base, with the same delta.
func TestPlanCached(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes())
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(2), dockerGzip)
	other := src.putLayer(t, baseTree(3, layerBytes()/4), dockerGzip)
	dir := t.TempDir()
	log, logs := testLogger(t)
	svc, err := delta.NewService(dir, src, log, delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	req := request(b2, b1, other)

	start := time.Now()
	p1 := mustPlan(t, svc, req)
	first := time.Since(start)
	deltaPath := filepath.Join(dir, "deltas", strings.TrimPrefix(p1.ID, "sha256:"))
	fi1, err := os.Stat(deltaPath)
	if err != nil {
		t.Fatalf("the delta file: %v", err)
	}
	opens := src.opens.Load()

	start = time.Now()
	p2 := mustPlan(t, svc, req)
	second := time.Since(start)
	if !reflect.DeepEqual(p1, p2) {
		t.Errorf("second plan differs:\n%+v\n%+v", p1, p2)
	}
	if n := computed(logs); n != 1 {
		t.Errorf("%d deltas computed for the same request twice, want 1", n)
	}
	if fi2, err := os.Stat(deltaPath); err != nil || !os.SameFile(fi1, fi2) || fi2.Size() != fi1.Size() {
		t.Errorf("the delta file was written again: %v", err)
	}
	t.Logf("plan %v; cached plan %v, %d blobs opened", first.Round(time.Millisecond), second.Round(time.Microsecond), src.opens.Load()-opens)

	// A restarted parent keeps its plans.
	svc2, err := delta.NewService(dir, src, log, delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if p3 := mustPlan(t, svc2, req); !reflect.DeepEqual(p1, p3) || computed(logs) != 1 {
		t.Errorf("after a restart: plan %+v, %d computed; want the cached one", p3, computed(logs))
	}

	// The same layers in another order, and with an unrelated one more: other requests, whose
	// bases are the same (the layer at the same position first; the other one shares
	// directories and links), so the delta is not computed again.
	rev := req
	rev.Have = slices.Clone(req.Have)
	slices.Reverse(rev.Have)
	unrelated := src.putBytes(t, gzipBytes(t, []byte("not a tar, and no base")))
	rev.Have = append(rev.Have, acrapi.HeldLayer{Digest: unrelated.digest.String(), Repository: "other/repo"})
	p4 := mustPlan(t, svc2, rev)
	if computed(logs) != 1 || logs.FilterMessage("delta reused").Len() != 1 || p4.ID != p1.ID {
		t.Errorf("%d deltas computed, %d reused, the same delta: %t; want the first one reused", computed(logs), logs.FilterMessage("delta reused").Len(), p4.ID == p1.ID)
	}
	checkPlan(t, p4, b2, acrapi.DeltaFormat, []blob{b1, other}[:len(p4.Bases)]...)
	if p5 := mustPlan(t, svc2, rev); p5.ID != p4.ID || logs.FilterMessage("delta reused").Len() != 1 {
		t.Errorf("asked again, the reused plan was not the request's own (%d reused)", logs.FilterMessage("delta reused").Len())
	}
	// Other bases: another delta.
	p6 := mustPlan(t, svc2, request(b2, other))
	if computed(logs) != 2 || p6.ID == p1.ID {
		t.Errorf("with other bases: %d deltas computed (want 2), the same delta: %t", computed(logs), p6.ID == p1.ID)
	}
	ch := newChild(t, b1, other)
	ch.mustRebuild(p4, ch.fetch(svc2, p4), b2)
	ch.mustRebuild(p6, ch.fetch(svc2, p6), b2)
}

// TestPlanConcurrentRequests: children asking for the same delta at once share one computation.
func TestPlanConcurrentRequests(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes()/2)
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(2), dockerGzip)
	src.gate = make(chan struct{})
	svc, logs := newService(t, src)
	req := request(b2, b1)
	plans := make([]acrapi.DeltaPlan, 4)
	errs := make([]error, len(plans))
	var wg sync.WaitGroup
	for i := range plans {
		wg.Go(func() { plans[i], errs[i] = plan(t, svc, req) })
	}
	time.Sleep(100 * time.Millisecond) // all of them wait for the first computation
	close(src.gate)
	wg.Wait()
	for i, p := range plans {
		if errs[i] != nil {
			t.Fatalf("Plan %d: %v", i, errs[i])
		}
		if !reflect.DeepEqual(p, plans[0]) {
			t.Errorf("plan %d differs: %+v", i, p)
		}
	}
	if n := computed(logs); n != 1 {
		t.Errorf("%d deltas computed for one request made %d times at once, want 1", n, len(plans))
	}
	ch := newChild(t, b1)
	ch.mustRebuild(plans[0], ch.fetch(svc, plans[0]), b2)
}

// TestPlanOddHave: what a child offers may be malformed, missing, the target itself, or name
// no repository; the plan uses what it can.
func TestPlanOddHave(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes()/2)
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(2), dockerGzip)
	svc, _ := newService(t, src)
	req := request(b2)
	req.Position = 3
	req.Have = []acrapi.HeldLayer{
		{Digest: "not-a-digest", Position: 3},
		{Digest: digest.FromString("missing").String(), Repository: testRepo, Position: 3},
		{Digest: b2.digest.String(), Repository: testRepo, Position: 3},
		{Digest: b1.digest.String(), Position: -1}, // the request's repository
		{Digest: b1.digest.String(), Repository: testRepo, Position: 3},
	}
	p := mustPlan(t, svc, req)
	checkPlan(t, p, b2, acrapi.DeltaFormat, b1)
	ch := newChild(t, b1)
	ch.mustRebuild(p, ch.fetch(svc, p), b2)
}

// TestPlanFormats: a plan is always in a format the child applies.
func TestPlanFormats(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes()/2)
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(2), dockerGzip)
	svc, _ := newService(t, src)
	for _, c := range []struct {
		name    string
		formats []string
		have    []blob
	}{
		{"tardelta-only,empty", []string{acrapi.DeltaFormat}, nil},
		{"whole-only,empty", []string{delta.FormatWhole}, nil},
		{"both,empty", delta.Formats, nil},
		{"whole-only,holding-base", []string{delta.FormatWhole}, []blob{b1}},
		{"tardelta-only,holding-base", []string{acrapi.DeltaFormat}, []blob{b1}},
		{"both,holding-base", delta.Formats, []blob{b1}},
		{"whole-only,holding-base,again", []string{delta.FormatWhole}, []blob{b1}},
		// A child of the release before EXEDIFF.
		{"tardelta-2,holding-base", []string{acrapi.DeltaFormatV2, acrapi.DeltaFormatV1, delta.FormatWhole}, []blob{b1}},
		// A child whose EXEDIFF model is the previous one: version 2, as above.
		{"tardelta-3,holding-base", []string{"tardelta/3", acrapi.DeltaFormatV2, acrapi.DeltaFormatV1, delta.FormatWhole}, []blob{b1}},
		// A child of the release before PATCHH: version 4.
		{"tardelta-4,holding-base", []string{acrapi.DeltaFormatV4, acrapi.DeltaFormatV2, acrapi.DeltaFormatV1, delta.FormatWhole}, []blob{b1}},
		{"tardelta-1-only,holding-base", []string{acrapi.DeltaFormatV1}, []blob{b1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := request(b2, c.have...)
			req.Formats = c.formats
			p, err := plan(t, svc, req)
			if errors.Is(err, delta.ErrUnavailable) {
				t.Logf("unavailable: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if !slices.Contains(c.formats, p.Format) {
				t.Fatalf("plan format %q for a child that applies %v", p.Format, c.formats)
			}
			ch := newChild(t, c.have...)
			d := ch.fetch(svc, p)
			if want := newestTardelta(c.formats); want != "" && p.Format != want && p.Format != delta.FormatWhole {
				t.Fatalf("plan format %q for a child whose newest tardelta is %s", p.Format, want)
			}
			for format, v := range map[string]byte{acrapi.DeltaFormatV2: 2, acrapi.DeltaFormatV4: 4, acrapi.DeltaFormat: 5} {
				if p.Format != format {
					continue
				}
				if b, err := os.ReadFile(d); err != nil || len(b) < 5 || b[4] != v {
					t.Fatalf("a %s plan's delta is not version %d (%v)", p.Format, v, err)
				}
			}
			ch.mustRebuild(p, d, b2)
			t.Logf("%s", delta.Describe(p))
		})
	}
}

// TestPlanSmallCacheBudget: the uncompressed tars and the deltas are caches; a budget that
// holds fewer of them than a computation uses must cost recomputation, never a plan whose
// delta cannot be served.
func TestPlanSmallCacheBudget(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes()/2)
	tarSize := int64(len(base.tarBytes(t)))
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(2), dockerGzip)
	for _, c := range []struct {
		name   string
		budget int64
	}{{"1-byte", 1}, {"1.2-tars", tarSize * 6 / 5}} {
		t.Run(c.name, func(t *testing.T) {
			log, _ := testLogger(t)
			dir := t.TempDir()
			svc, err := delta.NewService(dir, src, log, delta.Limits{TarCache: c.budget})
			if err != nil {
				t.Fatal(err)
			}
			update := request(b2, b1, b2)
			first := request(b1)
			again := update
			again.Have = slices.Clone(update.Have)
			slices.Reverse(again.Have)
			for _, req := range []acrapi.DeltaRequest{update, first, again} {
				p, err := plan(t, svc, req)
				if err != nil {
					t.Errorf("Plan(%s): %v", req.Digest, err)
					continue
				}
				if _, err := os.Stat(filepath.Join(dir, "deltas", strings.TrimPrefix(p.ID, "sha256:"))); err != nil {
					t.Errorf("the delta of the plan just returned (%s, %d bytes, budget %d): %v", p.Format, p.Size, c.budget, err)
					continue
				}
				want := b1
				if req.Digest == b2.digest.String() {
					want = b2
				}
				ch := newChild(t, b1)
				ch.mustRebuild(p, ch.fetch(svc, p), want)
			}
			var total int64
			entries, _ := os.ReadDir(filepath.Join(dir, "tars"))
			for _, e := range entries {
				if fi, err := e.Info(); err == nil {
					total += fi.Size()
				}
			}
			if total > c.budget {
				t.Errorf("%d bytes of tars kept, budget %d", total, c.budget)
			}
		})
	}
}

// TestPlanUnavailable: blobs no recipe reproduces, and requests that cannot be served, get
// ErrUnavailable (the child then fetches the blob).
func TestPlanUnavailable(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes()/2)
	tarData := base.tarBytes(t)
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	v2tar := base.v2(2).tarBytes(t)

	gz := gzipBytes(t, v2tar)
	corrupt := slices.Clone(gz)
	corrupt[len(corrupt)-6] ^= 0x40 // in the CRC-32
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	twoFrames := enc.EncodeAll(v2tar[len(v2tar)/2:], enc.EncodeAll(v2tar[:len(v2tar)/2], nil))
	enc.Close()
	blobs := map[string][]byte{
		"multi-member-gzip":      append(gzipBytes(t, v2tar[:len(v2tar)/2]), gzipBytes(t, v2tar[len(v2tar)/2:])...),
		"gzip-then-garbage":      append(slices.Clone(gz), "garbage"...),
		"gzip-bad-crc":           corrupt,
		"gzip-truncated":         gz[:len(gz)/2],
		"zstd-two-frames":        twoFrames,
		"uncompressed-tar":       v2tar,
		"not-compressed-at-all":  []byte("hello, world\n"),
		"empty":                  {},
		"multi-member-empty-tar": append(gzipBytes(t, nil), gzipBytes(t, tarData)...),
	}
	if gnu, err := exec.LookPath("gzip"); err == nil {
		cmd := exec.Command(gnu, "-6", "-n", "-c")
		cmd.Stdin = bytes.NewReader(v2tar)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gzip -6: %v", err)
		}
		blobs["gnu-gzip-6"] = out
	} else {
		t.Log("no gzip command: GNU gzip output not tested")
	}
	names := slices.Sorted(maps.Keys(blobs))
	svc, _ := newService(t, src)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			b := src.putBytes(t, blobs[name])
			for i := range 2 { // the second time from the cached facts
				start := time.Now()
				p, err := plan(t, svc, request(b, b1))
				if !errors.Is(err, delta.ErrUnavailable) {
					t.Fatalf("Plan (try %d) = %+v, %v; want ErrUnavailable", i, p, err)
				}
				t.Logf("try %d (%v): %v", i, time.Since(start).Round(time.Millisecond), err)
			}
		})
	}

	for name, mutate := range map[string]func(*acrapi.DeltaRequest){
		"missing-blob":     func(r *acrapi.DeltaRequest) { r.Digest = digest.FromString("missing").String() },
		"malformed-digest": func(r *acrapi.DeltaRequest) { r.Digest = "sha256:xyz" },
		"no-common-format": func(r *acrapi.DeltaRequest) { r.Formats = []string{"bsdiff/9"} },
		"no-formats":       func(r *acrapi.DeltaRequest) { r.Formats = nil },
	} {
		t.Run(name, func(t *testing.T) {
			req := request(b1)
			mutate(&req)
			if p, err := plan(t, svc, req); !errors.Is(err, delta.ErrUnavailable) {
				t.Fatalf("Plan = %+v, %v; want ErrUnavailable", p, err)
			}
		})
	}
}

// TestPlanNotATar: valid compressed blobs that hold no tar round-trip or are refused, never
// rebuilt wrong.
func TestPlanNotATar(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes()/2)
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	tarData := base.v2(2).tarBytes(t)
	contents := map[string][]byte{
		"random":        gen(randFor(1), kindAsset, layerBytes()/20),
		"text":          gen(randFor(2), kindText, layerBytes()/5),
		"empty":         {},
		"truncated-tar": tarData[:len(tarData)/2+77],
		"tar-and-more":  append(slices.Clone(tarData), gen(randFor(3), kindText, 10000)...),
	}
	svc, _ := newService(t, src)
	for _, name := range slices.Sorted(maps.Keys(contents)) {
		for _, have := range [][]blob{nil, {b1}} {
			t.Run(name+map[bool]string{true: ",holding-base", false: ",empty"}[have != nil], func(t *testing.T) {
				b := src.putBytes(t, gzipBytes(t, contents[name]))
				p, err := plan(t, svc, request(b, have...))
				if errors.Is(err, delta.ErrUnavailable) {
					t.Logf("unavailable: %v", err)
					return
				}
				if err != nil {
					t.Fatalf("Plan: %v", err)
				}
				ch := newChild(t, have...)
				ch.mustRebuild(p, ch.fetch(svc, p), b)
				t.Logf("%s: %s of the blob", delta.Describe(p), ratio(p.Size, b.size))
			})
		}
	}
}

// fixture is a parent holding an application layer and its update, with the plans a child
// gets for each: whole (first image) and delta (update).
type fixture struct {
	b1, b2      blob
	svc         *delta.Service
	whole, diff acrapi.DeltaPlan
	wholeBytes  []byte
	diffBytes   []byte
	child       *child // holds b1
}

func newFixture(t *testing.T, c compressor, size int) *fixture {
	t.Helper()
	base := baseTree(1, size)
	src := newDiskBlobs(t)
	f := &fixture{b1: src.putLayer(t, base, c), b2: src.putLayer(t, base.v2(2), c)}
	f.svc, _ = newService(t, src)
	f.whole = mustPlan(t, f.svc, request(f.b1))
	f.diff = mustPlan(t, f.svc, request(f.b2, f.b1))
	f.child = newChild(t, f.b1)
	f.wholeBytes = mustReadFile(t, f.child.fetch(f.svc, f.whole))
	f.diffBytes = mustReadFile(t, f.child.fetch(f.svc, f.diff))
	return f
}

// rebuildBytes rebuilds p from the delta d and the bases.
func rebuildBytes(p acrapi.DeltaPlan, d []byte, bases []tardelta.SizedReaderAt) ([]byte, error) {
	var out bytes.Buffer
	_, err := delta.Rebuild(context.Background(), p, bytes.NewReader(d), bases, &out)
	return out.Bytes(), err
}

// TestRebuildCorruptDelta: a damaged or truncated delta never rebuilds a layer.
func TestRebuildCorruptDelta(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dockerGzip, layerBytes()/2)
	flips := 12
	if raceEnabled {
		flips = 4
	}
	for _, c := range []struct {
		name string
		plan acrapi.DeltaPlan
		data []byte
		want blob
	}{{"whole", f.whole, f.wholeBytes, f.b1}, {"tardelta", f.diff, f.diffBytes, f.b2}} {
		t.Run(c.name, func(t *testing.T) {
			bases := f.child.basesOf(c.plan)
			check := func(what string, d []byte) {
				t.Helper()
				_, err := rebuildBytes(c.plan, d, bases)
				switch {
				case err == nil:
					t.Errorf("%s: Rebuild returned nil", what)
				case c.plan.Format == acrapi.DeltaFormat && !errors.Is(err, tardelta.ErrCorrupt) && !errors.Is(err, delta.ErrMismatch):
					t.Errorf("%s: Rebuild: %v; want ErrCorrupt or ErrMismatch", what, err)
				}
			}
			rng := randFor(7)
			for i := range flips {
				pos := i * len(c.data) / flips
				if i == flips-1 {
					pos = len(c.data) - 1
				} else if i%2 == 1 {
					pos = rng.IntN(len(c.data))
				}
				d := slices.Clone(c.data)
				d[pos] ^= 1 << (i % 8)
				check("byte "+strconv.Itoa(pos)+" flipped", d)
			}
			for _, n := range []int{0, 1, 13, len(c.data) / 3, len(c.data) / 2, len(c.data) - 1} {
				check("truncated to "+strconv.Itoa(n)+" bytes", c.data[:n])
			}
			// Bytes after the end: refused, or ignored with the right layer.
			got, err := rebuildBytes(c.plan, append(slices.Clone(c.data), 0), bases)
			if err == nil && !bytes.Equal(got, mustReadFile(t, c.want.path)) {
				t.Errorf("a delta with a byte appended rebuilt a wrong layer")
			}
			t.Logf("a delta with a byte appended: %v", err)
		})
	}
}

// TestRebuildWrongBase: bases other than those the delta was encoded against never rebuild a
// layer.
func TestRebuildWrongBase(t *testing.T) {
	t.Parallel()
	f := newFixture(t, dockerGzip, layerBytes()/2)
	good := f.child.basesOf(f.diff)[0]
	goodTar := make([]byte, good.Size())
	if _, err := good.ReadAt(goodTar, 0); err != nil {
		t.Fatal(err)
	}
	// A byte changed in content the update copies: the hard link's target is never edited.
	idx, err := tardelta.BuildIndex(bytes.NewReader(goodTar))
	if err != nil {
		t.Fatal(err)
	}
	var linked string
	for _, e := range idx.Entries {
		if e.Type == '1' {
			linked = e.Linkname
		}
	}
	damaged := slices.Clone(goodTar)
	for _, e := range idx.Entries {
		if e.Name == linked {
			damaged[e.Data.Offset+e.Data.Size/2] ^= 0x20
		}
	}
	if bytes.Equal(damaged, goodTar) {
		t.Fatal("no hard link target found in the base")
	}
	otherTar := baseTree(9, layerBytes()/2).tarBytes(t)
	targetTar := baseTree(1, layerBytes()/2).v2(2).tarBytes(t)
	for _, c := range []struct {
		name  string
		bases []tardelta.SizedReaderAt
	}{
		{"another-layer", []tardelta.SizedReaderAt{bytes.NewReader(otherTar)}},
		{"the-target-itself", []tardelta.SizedReaderAt{bytes.NewReader(targetTar)}},
		{"base-truncated", []tardelta.SizedReaderAt{bytes.NewReader(goodTar[:len(goodTar)/2])}},
		{"base-one-byte-changed", []tardelta.SizedReaderAt{bytes.NewReader(damaged)}},
		{"empty-base", []tardelta.SizedReaderAt{bytes.NewReader(nil)}},
		{"no-base", nil},
		{"base-twice", []tardelta.SizedReaderAt{good, good}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := rebuildBytes(f.diff, f.diffBytes, c.bases); err == nil {
				t.Fatal("Rebuild returned nil")
			} else {
				t.Logf("%v", err)
			}
		})
	}
	// And the right one still works.
	got, err := rebuildBytes(f.diff, f.diffBytes, []tardelta.SizedReaderAt{bytes.NewReader(goodTar)})
	if err != nil || !bytes.Equal(got, mustReadFile(t, f.b2.path)) {
		t.Fatalf("the right base: %v", err)
	}
}

// TestRebuildAlteredPlan: a plan that does not describe the layer (recipe, digest, size, diff-id
// or format altered) never rebuilds one.
func TestRebuildAlteredPlan(t *testing.T) {
	t.Parallel()
	comps := compressors
	if raceEnabled {
		comps = []compressor{dockerGzip, compressors[3]}
	}
	for _, comp := range comps {
		t.Run(comp.name, func(t *testing.T) {
			f := newFixture(t, comp, layerBytes()/2)
			rc, err := recipe.ParseRecipe(f.diff.Recipe)
			if err != nil {
				t.Fatal(err)
			}
			type alteration struct {
				name   string
				recipe func(*recipe.Recipe)
				plan   func(*acrapi.DeltaPlan)
			}
			alts := []alteration{
				{name: "level+1", recipe: func(r *recipe.Recipe) { r.Level++ }},
				{name: "level-1", recipe: func(r *recipe.Recipe) { r.Level-- }},
				{name: "diff-id", plan: func(p *acrapi.DeltaPlan) { p.DiffID = digest.FromString("x").String() }},
				{name: "digest", plan: func(p *acrapi.DeltaPlan) { p.Digest = digest.FromString("x").String() }},
				{name: "layer-size+1", plan: func(p *acrapi.DeltaPlan) { p.LayerSize++ }},
				{name: "layer-size-1", plan: func(p *acrapi.DeltaPlan) { p.LayerSize-- }},
				{name: "layer-size-0", plan: func(p *acrapi.DeltaPlan) { p.LayerSize = 0 }},
				{name: "format-whole", plan: func(p *acrapi.DeltaPlan) { p.Format = delta.FormatWhole }},
				{name: "format-unknown", plan: func(p *acrapi.DeltaPlan) { p.Format = "tardelta/9" }},
				{name: "recipe-empty-object", plan: func(p *acrapi.DeltaPlan) { p.Recipe = json.RawMessage(`{}`) }},
				{name: "recipe-null", plan: func(p *acrapi.DeltaPlan) { p.Recipe = nil }},
				{name: "recipe-unknown-field", plan: func(p *acrapi.DeltaPlan) {
					p.Recipe = append(json.RawMessage(`{"x":1,`), p.Recipe[1:]...)
				}},
			}
			switch rc.Compressor {
			case recipe.CompressorGoGzip, recipe.CompressorKlauspostGzip, recipe.CompressorPgzip:
				alts = append(alts,
					alteration{name: "level-9", recipe: func(r *recipe.Recipe) { r.Level = 9 }},
					alteration{name: "header-mtime", recipe: func(r *recipe.Recipe) { r.Header[5] ^= 1 }},
					alteration{name: "header-os", recipe: func(r *recipe.Recipe) { r.Header[9] = 3 }},
				)
				if rc.Compressor == recipe.CompressorPgzip {
					alts = append(alts, alteration{name: "block-size/2", recipe: func(r *recipe.Recipe) { r.BlockSize /= 2 }},
						alteration{name: "klauspost-gzip", recipe: func(r *recipe.Recipe) {
							r.Compressor, r.BlockSize = recipe.CompressorKlauspostGzip, 0
						}})
				} else {
					alts = append(alts, alteration{name: "pgzip", recipe: func(r *recipe.Recipe) {
						r.Compressor, r.BlockSize = recipe.CompressorPgzip, 1<<20
					}})
				}
			case recipe.CompressorKlauspostZstd:
				alts = append(alts,
					alteration{name: "window/2", recipe: func(r *recipe.Recipe) { r.WindowSize /= 2 }},
					alteration{name: "no-checksum", recipe: func(r *recipe.Recipe) { r.Checksum = !r.Checksum }},
				)
			}
			bases := f.child.basesOf(f.diff)
			for _, a := range alts {
				t.Run(a.name, func(t *testing.T) {
					p := f.diff
					recipeChanged := a.recipe != nil
					if recipeChanged {
						r := rc
						r.Header = slices.Clone(rc.Header)
						a.recipe(&r)
						p.Recipe, err = json.Marshal(r)
						if err != nil {
							t.Fatal(err)
						}
					} else {
						a.plan(&p)
					}
					_, err := rebuildBytes(p, f.diffBytes, bases)
					switch {
					case err == nil:
						t.Fatal("Rebuild returned nil")
					case recipeChanged && !errors.Is(err, delta.ErrMismatch) && !errors.Is(err, recipe.ErrInvalid) && !errors.Is(err, recipe.ErrUnsupported):
						t.Errorf("Rebuild: %v; want ErrMismatch or a recipe error", err)
					}
					t.Logf("%v", err)
				})
			}
		})
	}
}

// TestRebuildSplits: a go-gzip layer is recompressed in parallel at the plan's split points,
// to the same bytes; split points that are wrong never give a wrong layer, and invalid ones
// are ignored.
func TestRebuildSplits(t *testing.T) {
	if raceEnabled {
		t.Skip("split points need a layer of several MiB, too slow to compress under the race detector; pflate's tests cover the parallel writer there")
	}
	t.Parallel()
	f := newFixture(t, dockerGzip, layerBytes())
	for _, p := range []acrapi.DeltaPlan{f.whole, f.diff} {
		if len(p.Splits) < 2 {
			t.Fatalf("%s plan without split points: %v", p.Format, p.Splits)
		}
	}
	bases := f.child.basesOf(f.diff)
	want, err := rebuildBytes(f.diff, f.diffBytes, bases)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		splits func([]int64) []int64
		ok     bool
	}{
		{"none", func([]int64) []int64 { return nil }, true},
		{"invalid", func([]int64) []int64 { return []int64{0} }, true},
		{"too far apart", func(s []int64) []int64 { return []int64{s[len(s)-1]} }, true},
		{"shifted", func(s []int64) []int64 {
			s = slices.Clone(s)
			for i := range s[:len(s)-1] {
				s[i] += 4096
			}
			return s
		}, false},
		{"wrong total", func(s []int64) []int64 {
			s = slices.Clone(s)
			s[len(s)-1]--
			return s
		}, false},
	} {
		p := f.diff
		p.Splits = c.splits(p.Splits)
		got, err := rebuildBytes(p, f.diffBytes, bases)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.ok && !bytes.Equal(got, want):
			t.Errorf("%s: rebuilt other bytes", c.name)
		case !c.ok && err == nil:
			t.Errorf("%s: Rebuild returned nil", c.name)
		case !c.ok && !errors.Is(err, delta.ErrMismatch) && !errors.Is(err, recipe.ErrMismatch):
			t.Errorf("%s: %v, want a mismatch", c.name, err)
		}
	}
}

// hashWriter hashes and counts what is written.
type hashWriter struct {
	h hash.Hash
	n int64
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.h.Write(p)
}

// TestRebuildMemory rebuilds a 64 MiB layer (as a delta and whole) with memory bounded.
func TestRebuildMemory(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("slow; memory under the race detector means little")
	}
	// pgzip: the recipe writer compresses several blocks at once; Docker's gzip: in parallel
	// segments at split points.
	for _, c := range []compressor{compressors[2], dockerGzip} {
		t.Run(c.name, func(t *testing.T) { rebuildMemory(t, c) })
	}
}

func rebuildMemory(t *testing.T, c compressor) {
	const size = 64 << 20
	start := time.Now()
	base := baseTree(11, size)
	v2 := base.v2(12)
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, c)
	b2 := src.putLayer(t, v2, c)
	t.Logf("two %d MiB layers with %d files (%d and %d bytes with %s) made in %v",
		size>>20, len(base), b1.size, b2.size, c.name, time.Since(start).Round(time.Millisecond))
	svc, _ := newService(t, src)
	ch := newChild(t, b1)
	for _, req := range []acrapi.DeltaRequest{request(b2, b1), request(b2)} {
		start := time.Now()
		p := mustPlan(t, svc, req)
		planned := time.Since(start)
		path := ch.fetch(svc, p)
		bases := ch.basesOf(p)
		df, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before, allocBefore := ms.HeapInuse, ms.TotalAlloc
		peak := before
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
				}
			}
		}()
		start = time.Now()
		out := &hashWriter{h: sha256.New()}
		_, err = delta.Rebuild(context.Background(), p, df, bases, out)
		took := time.Since(start)
		close(stop)
		<-done
		df.Close()
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
		if err != nil {
			t.Fatalf("Rebuild: %v", err)
		}
		if got := digest.NewDigestFromBytes(digest.SHA256, out.h.Sum(nil)); got != b2.digest || out.n != b2.size {
			t.Fatalf("rebuilt %s (%d bytes), want %s", got, out.n, b2.digest)
		}
		t.Logf("%s: delta %s of the blob, %d split points; plan %v, rebuild %v; heap in use %d MiB before, peak %d MiB; allocated %d MiB",
			p.Format, ratio(p.Size, b2.size), len(p.Splits), planned.Round(time.Millisecond), took.Round(time.Millisecond),
			before>>20, peak>>20, (ms.TotalAlloc-allocBefore)>>20)
		if peak > 256<<20 {
			t.Errorf("peak heap in use %d MiB, want < 256 MiB", peak>>20)
		}
	}
}

func randFor(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

// TestUpdateInventory: changes apply only to the inventory they were made against, and must
// give the hash the child computed.
func TestUpdateInventory(t *testing.T) {
	svc, _ := newService(t, newDiskBlobs(t))
	l := func(s string, pos int) acrapi.HeldLayer {
		return acrapi.HeldLayer{Digest: digest.FromString(s).String(), Repository: "team/app", Position: pos}
	}
	byDigest := func(ls ...acrapi.HeldLayer) []acrapi.HeldLayer {
		slices.SortFunc(ls, func(a, b acrapi.HeldLayer) int { return strings.Compare(a.Digest, b.Digest) })
		return ls
	}
	v1 := byDigest(l("a", 0), l("b", 1), l("c", 2))
	h1 := acrapi.InventoryHash(v1)
	if err := svc.UpdateInventory("site", h1, h1, nil, nil); !errors.Is(err, delta.ErrInventoryStale) {
		t.Fatalf("changes before any inventory: %v, want ErrInventoryStale", err)
	}
	if err := svc.SetInventory("site", h1, v1); err != nil {
		t.Fatal(err)
	}
	v2 := byDigest(l("a", 0), l("c", 2), l("d", 1), l("e", 3))
	h2 := acrapi.InventoryHash(v2)
	added, removed := []acrapi.HeldLayer{l("d", 1), l("e", 3)}, []string{l("b", 1).Digest}
	if err := svc.UpdateInventory("site", "sha256:"+strings.Repeat("0", 64), h2, added, removed); !errors.Is(err, delta.ErrInventoryStale) {
		t.Errorf("changes to another inventory: %v, want ErrInventoryStale", err)
	}
	if err := svc.UpdateInventory("site", h1, h1, added, removed); err == nil || errors.Is(err, delta.ErrInventoryStale) {
		t.Errorf("changes that do not give their hash: %v, want an error", err)
	}
	if h, _, _ := svc.Inventory("site"); h != h1 {
		t.Fatalf("refused changes altered the inventory")
	}
	if err := svc.UpdateInventory("site", h1, h2, added, removed); err != nil {
		t.Fatal(err)
	}
	if h, got, _ := svc.Inventory("site"); h != h2 || !slices.Equal(got, v2) {
		t.Errorf("after the changes: %s %v, want %s %v", h, got, h2, v2)
	}
}

// TestInventoryUpdatesAtomic: status reports that change the same inventory at once apply
// one after the other — one wins, the others are stale — the inventory handed out is the
// caller's to change, and a restarted service holds what was last written.
func TestInventoryUpdatesAtomic(t *testing.T) {
	dir := t.TempDir()
	log, _ := testLogger(t)
	svc, err := delta.NewService(dir, newDiskBlobs(t), log, delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	l := func(s string) acrapi.HeldLayer {
		return acrapi.HeldLayer{Digest: digest.FromString(s).String(), Repository: "team/app"}
	}
	v1 := []acrapi.HeldLayer{l("a")}
	h1 := acrapi.InventoryHash(v1)
	if err := svc.SetInventory("site", h1, v1); err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	hashes := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		added := l(fmt.Sprint("added", i))
		next := []acrapi.HeldLayer{l("a"), added}
		slices.SortFunc(next, func(a, b acrapi.HeldLayer) int { return strings.Compare(a.Digest, b.Digest) })
		hashes[i] = acrapi.InventoryHash(next)
		wg.Go(func() { errs[i] = svc.UpdateInventory("site", h1, hashes[i], []acrapi.HeldLayer{added}, nil) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Fatalf("changes %d and %d to inventory %s both applied", winner, i, h1)
		case !errors.Is(err, delta.ErrInventoryStale):
			t.Fatalf("changes %d: %v, want nil or ErrInventoryStale", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no change applied")
	}
	h, layers, ok := svc.Inventory("site")
	if !ok || h != hashes[winner] || len(layers) != 2 {
		t.Fatalf("inventory %s (%d layers, %v); want the winner's %s", h, len(layers), ok, hashes[winner])
	}
	layers[0].Digest = "sha256:" + strings.Repeat("f", 64) // the caller's copy
	if h, _, _ := svc.Inventory("site"); h != hashes[winner] {
		t.Fatal("changing the layers Inventory returned changed the inventory held")
	}
	restarted, err := delta.NewService(dir, newDiskBlobs(t), log, delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if h, _, ok := restarted.Inventory("SITE"); !ok || h != hashes[winner] {
		t.Fatalf("after a restart: %s, %v; want %s", h, ok, hashes[winner])
	}
}

// TestKeepInventories: the inventories of registries no longer defined go, on disk too; those
// named stay, whatever the case of their names.
func TestKeepInventories(t *testing.T) {
	dir := t.TempDir()
	log, _ := testLogger(t)
	svc, err := delta.NewService(dir, newDiskBlobs(t), log, delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.KeepInventories(nil); err != nil {
		t.Fatalf("no inventory yet: %v", err)
	}
	inv := []acrapi.HeldLayer{{Digest: digest.FromString("a").String(), Repository: "team/app"}}
	for _, name := range []string{"siteKept", "siteGone", "lineGone"} {
		if err := svc.SetInventory(name, acrapi.InventoryHash(inv), inv); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.KeepInventories([]string{"SITEKEPT", "siteNew"}); err != nil {
		t.Fatal(err)
	}
	restarted, err := delta.NewService(dir, newDiskBlobs(t), log, delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*delta.Service{svc, restarted} {
		for name, want := range map[string]bool{"siteKept": true, "siteGone": false, "lineGone": false} {
			if _, _, ok := s.Inventory(name); ok != want {
				t.Errorf("inventory of %s held: %v, want %v", name, ok, want)
			}
		}
	}
}

// TestPlanRetriesUnsupported: "no recipe" is cached per blob, but only for the detector that
// found none; a blob a previous release (or a node without the legacy helper) could not
// reproduce is tried again, and a detector's own verdict is kept.
func TestPlanRetriesUnsupported(t *testing.T) {
	t.Parallel()
	base := baseTree(1, layerBytes()/2)
	src := newDiskBlobs(t)
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(2), dockerGzip)
	dir := t.TempDir()
	log, _ := testLogger(t)
	svc, err := delta.NewService(dir, src, log, delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	factsPath := filepath.Join(dir, "recipes", b2.digest.Encoded()+".json")
	if err := os.MkdirAll(filepath.Dir(factsPath), 0o700); err != nil {
		t.Fatal(err)
	}
	stale := `{"unsupported":"recipe: unsupported: no candidate compressor reproduces the blob","splitsChecked":true}`
	if err := os.WriteFile(factsPath, []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	req := request(b2, b1)
	req.Formats = []string{acrapi.DeltaFormat}
	p := mustPlan(t, svc, req)
	ch := newChild(t, b1)
	ch.mustRebuild(p, ch.fetch(svc, p), b2)
	b, err := os.ReadFile(factsPath)
	if err != nil || !strings.Contains(string(b), `"recipe"`) || strings.Contains(string(b), "unsupported") {
		t.Fatalf("facts after the retry: %s (%v); want the recipe found", b, err)
	}

	// The current detector's own verdict stands: it is not detected again.
	verdict := fmt.Sprintf(`{"unsupported":"recipe: unsupported: checked","unsupportedBy":%q,"splitsChecked":true}`, recipe.Detector())
	b3 := src.putLayer(t, base.v2(3), dockerGzip)
	factsPath3 := filepath.Join(dir, "recipes", b3.digest.Encoded()+".json")
	if err := os.WriteFile(factsPath3, []byte(verdict), 0o600); err != nil {
		t.Fatal(err)
	}
	req3 := request(b3, b1)
	req3.Formats = []string{acrapi.DeltaFormat}
	if p3, err := plan(t, svc, req3); err == nil {
		t.Fatalf("a blob cached as unsupported by this detector got a tardelta plan: %s", delta.Describe(p3))
	}
	var kept struct{ Unsupported, UnsupportedBy string }
	if b, _ := os.ReadFile(factsPath3); json.Unmarshal(b, &kept) != nil || kept.Unsupported != "recipe: unsupported: checked" || kept.UnsupportedBy != recipe.Detector() {
		t.Fatalf("the verdict was not kept: %s", b)
	}
}

// newestTardelta is the tardelta format a parent should make for a child that applies formats.
func newestTardelta(formats []string) string {
	for _, f := range []string{acrapi.DeltaFormat, acrapi.DeltaFormatV4, acrapi.DeltaFormatV2} {
		if slices.Contains(formats, f) {
			return f
		}
	}
	return ""
}

// streamWindow is the window size declared by the zstd frame at the start of the file.
func streamWindow(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h zstd.Header
	if err := h.Decode(b); err != nil {
		t.Fatalf("the delta does not start with a zstd frame: %v", err)
	}
	if h.WindowSize == 0 {
		return int64(h.FrameContentSize)
	}
	return int64(h.WindowSize)
}

// TestWholeMemory: a parent with little memory sends a first image whole with a smaller zstd
// window, whose encoder fits what it allows, and says so; the child rebuilds the exact layer.
func TestWholeMemory(t *testing.T) {
	t.Parallel()
	src := newDiskBlobs(t)
	b := src.putLayer(t, baseTree(5, 2*layerBytes()), dockerGzip) // larger than a 2 MiB window
	for _, c := range []struct {
		memory     int64
		wantWindow int64 // at most
		smaller    bool
	}{
		{0, 64 << 20, false},
		{delta.WholeMemory(2 << 20), 2 << 20, true},
		{delta.WholeMemory(2<<20) - 1, 1 << 20, true},
	} {
		t.Run(fmt.Sprint(c.memory), func(t *testing.T) {
			t.Parallel()
			log, logs := testLogger(t)
			svc, err := delta.NewService(t.TempDir(), src, log, delta.Limits{WholeMemory: c.memory})
			if err != nil {
				t.Fatal(err)
			}
			p := mustPlan(t, svc, request(b))
			checkPlan(t, p, b, delta.FormatWhole)
			ch := newChild(t)
			path := ch.fetch(svc, p)
			w := streamWindow(t, path)
			if w > c.wantWindow || c.memory > 0 && delta.WholeMemory(int(w)) > c.memory && w > 1<<20 {
				t.Errorf("whole memory %d: a %d-byte window, want at most %d", c.memory, w, c.wantWindow)
			}
			if said := logs.FilterMessageSnippet("smaller window").Len() > 0; said != c.smaller {
				t.Errorf("whole memory %d (window %d): logged a smaller window: %v, want %v", c.memory, w, said, c.smaller)
			}
			ch.mustRebuild(p, path, b)
			t.Logf("whole memory %d: window %d, %d bytes", c.memory, w, p.Size)
		})
	}
}

// TestPlanRecomputedWithMoreMemory: a delta made larger by the node's memory bounds (here a
// whole layer's smaller window; binary patches left out are recorded the same way) is served
// from the cache while the bounds stay, and computed again, smaller, once the node has more.
func TestPlanRecomputedWithMoreMemory(t *testing.T) {
	t.Parallel()
	src := newDiskBlobs(t)
	b := src.putLayer(t, baseTree(6, 2*layerBytes()), dockerGzip)
	dir := t.TempDir()
	service := func(l delta.Limits) (*delta.Service, *observer.ObservedLogs) {
		log, logs := testLogger(t)
		svc, err := delta.NewService(dir, src, log, l)
		if err != nil {
			t.Fatal(err)
		}
		return svc, logs
	}
	small := delta.Limits{WholeMemory: 1}
	svc, logs := service(small)
	tight := mustPlan(t, svc, request(b))
	if logs.FilterMessageSnippet("smaller window").Len() == 0 {
		t.Fatalf("a whole-memory bound of 1 byte did not make the window smaller (%s)", delta.Describe(tight))
	}
	again, logs := service(small)
	if p := mustPlan(t, again, request(b)); p.ID != tight.ID || computed(logs) != 0 {
		t.Errorf("under the same bound the delta was computed again (%d) or changed", computed(logs))
	}
	roomy, logs := service(delta.Limits{})
	p := mustPlan(t, roomy, request(b))
	if computed(logs) != 1 || p.Size >= tight.Size {
		t.Errorf("with no bound: %d computations and a %d-byte delta; want one, smaller than %d bytes", computed(logs), p.Size, tight.Size)
	}
	ch := newChild(t)
	ch.mustRebuild(p, ch.fetch(roomy, p), b)
	// Computed without a bound, it stays whatever the bound later.
	if p2 := mustPlan(t, again, request(b)); p2.ID != p.ID {
		t.Errorf("the delta computed with more memory was replaced by %s", delta.Describe(p2))
	}
}

// TestPlanMetrics: a parent counts its children's delta requests by result and the time it
// spent computing (TestPrepare, the deltas it prepared).
func TestPlanMetrics(t *testing.T) {
	t.Parallel()
	src := newDiskBlobs(t)
	base := baseTree(13, layerBytes())
	b1 := src.putLayer(t, base, dockerGzip)
	b2 := src.putLayer(t, base.v2(14), dockerGzip)
	random := src.putBytes(t, gzipBytes(t, gen(randFor(15), kindAsset, 64<<10)))
	svc, _ := newService(t, src)
	reg := prometheus.NewRegistry()
	if err := svc.Register(reg); err != nil {
		t.Fatal(err)
	}
	mustPlan(t, svc, request(b2, b1))
	mustPlan(t, svc, request(b2, b1))
	other := request(b2, b1)
	other.Have = append(other.Have, acrapi.HeldLayer{Digest: random.digest.String(), Repository: "other/repo", Position: 3})
	mustPlan(t, svc, other)
	if _, err := plan(t, svc, request(random)); !errors.Is(err, delta.ErrUnavailable) {
		t.Fatalf("a blob that is no tar: %v, want ErrUnavailable", err)
	}
	want := plansMetric(1, 1, 1, 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outpost_delta_plans_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "outpost_delta_compute_seconds_total" {
			if v := f.GetMetric()[0].GetCounter().GetValue(); v <= 0 {
				t.Errorf("compute_seconds_total %v after a delta was computed", v)
			}
			return
		}
	}
	t.Error("no outpost_delta_compute_seconds_total")
}
