package sync_test

// Fault tests (issue 3): the engine against a real parent on loopback behind a simulated
// satellite link. They assert byte counts and outcomes; timings only as lower bounds.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"

	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-registry/outpost/internal/sync"
	"github.com/outpost-registry/outpost/pkg/acrapi"
	"github.com/outpost-registry/outpost/test/faultnet"
)

// TestResetsCostAtMostOneChunkEach: 20 connection resets during a 64 MiB sync. The pass still
// completes in one go, and the link carries at most the image, one chunk per reset, and the
// per-request overhead.
func TestResetsCostAtMostOneChunkEach(t *testing.T) {
	t.Parallel()
	const size, chunk, resets = 64 << 20, 1 << 20, 20
	fl := newFaultLink(t)
	img := imageOf(t, randomLayer(t, size, 1))
	fl.parent.push(t, "big/app:v1", img)
	child := newNode(t, nil)
	opts := engineOptions(t, fl.proxy.URL(), "big/app")
	opts.ChunkSize = chunk
	e := newEngine(t, opts, child)
	start := time.Now()

	// Reset every connection at 20 points spread over the transfer. The link stalls at each
	// point and stays stalled until the reset, so a reset lands in the middle of a chunk however
	// late this goroutine runs; the next point is armed right after each release (one the link
	// has already passed stalls it at once). The goroutine waits for the stall, not for a byte
	// count: bytes the link had taken for a connection that is then reset are never delivered,
	// so delivered counts lag the stall points.
	ctx, cancel := context.WithCancel(bounded(t, 2*time.Minute))
	injected := make(chan int, 1)
	step := int64(size / (resets + 2))
	fl.proxy.StallAt(faultnet.Downstream, step)
	go func() {
		n := 0
		defer func() { injected <- n }()
		for i := int64(1); i <= resets; i++ {
			for !fl.proxy.Stalled() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Millisecond):
				}
			}
			fl.proxy.ResetAll()
			n++
			fl.proxy.Release()
			if i < resets {
				fl.proxy.StallAt(faultnet.Downstream, (i+1)*step)
			}
		}
	}()
	s := e.RunPass(ctx, false)
	cancel()
	n := <-injected
	fl.proxy.Release()
	if s.Result != "ok" {
		t.Fatalf("pass with resets: %+v", s)
	}
	if n != resets {
		t.Fatalf("%d resets were injected, want %d", n, resets)
	}
	requireSame(t, fl.parent, child, "big/app:v1")

	st := fl.proxy.Stats()
	requests := len(fl.arrivals.since(start))
	content := imageSize(t, img)
	// Each injected reset kills at most the one chunk in flight (a single blob is fetched; the
	// config was done long before the first reset point): what the child had read of it is
	// kept, what was still in socket buffers is lost. Every request also costs its headers.
	limit := content + resets*chunk + int64(requests)*perRequest
	within(t, "link downstream bytes", st.BytesDown, limit)
	within(t, "engine meter", e.Meter().In(), limit)
	if e.Meter().In() < size {
		t.Errorf("engine meter %d < blob size %d", e.Meter().In(), size)
	}
	if s.BytesFromParent != e.Meter().In() {
		t.Errorf("pass summary says %d bytes from parent, meter %d", s.BytesFromParent, e.Meter().In())
	}
	t.Logf("image %d B; link carried %d B (ratio %.4f), the engine read %d B of bodies (ratio %.4f); %d connection resets (%d injected), %d requests; %d B beyond the image on the link, %.0f KiB per injected reset",
		content, st.BytesDown, float64(st.BytesDown)/float64(content), e.Meter().In(), float64(e.Meter().In())/float64(content),
		st.Resets, n, requests, st.BytesDown-content, float64(st.BytesDown-content)/resets/1024)
}

// TestWindowCloseStopsTheLinkAndTheNextWindowResumes: no traffic at all outside a window; a
// window that closes mid-blob stops every request to the parent (but the one in flight), leaves
// the blob invisible and its checkpoint in place; the next window finishes it from where it
// stopped.
func TestWindowCloseStopsTheLinkAndTheNextWindowResumes(t *testing.T) {
	t.Parallel()
	const size, chunk = 3 << 20, 256 << 10
	// 1 MiB/s: the 3 MiB blob cannot finish in a 1.5 s window.
	fl := newFaultLink(t, faultnet.WithBandwidth(faultnet.Downstream, 1<<20))
	layer := randomLayer(t, size, 2)
	img := imageOf(t, layer)
	fl.parent.push(t, "edge/app:v1", img)
	child := newNode(t, nil)
	opts := engineOptions(t, fl.proxy.URL(), "edge/app")
	opts.ChunkSize = chunk
	// A window is configured, and closed now (the schedule's firings are not run by RunPass).
	opts.Schedule, opts.Window = "0 0 1 1 *", time.Minute
	e := newEngine(t, opts, child)
	ctx := bounded(t, time.Minute)
	start := time.Now()

	// Outside the window: Trigger refuses, a pass is skipped, nothing crosses the link.
	if err := e.Trigger(false); !errors.Is(err, sync.ErrOutsideWindow) {
		t.Fatalf("Trigger outside the window: %v, want ErrOutsideWindow", err)
	}
	if s := e.RunPass(ctx, false); s.Result != "skipped" {
		t.Fatalf("pass outside the window: %+v", s)
	}
	if st := fl.proxy.Stats(); st.Conns != 0 || st.BytesUp != 0 || st.BytesDown != 0 || e.Meter().In() != 0 || e.Meter().Out() != 0 {
		t.Fatalf("traffic outside the window: link %+v, meter in %d out %d", st, e.Meter().In(), e.Meter().Out())
	}
	if n := len(fl.arrivals.since(start)); n != 0 {
		t.Fatalf("%d requests reached the parent outside the window", n)
	}

	end := time.Now().Add(1500 * time.Millisecond)
	e.OpenWindow(end)
	if err := e.Trigger(false); err != nil {
		t.Fatalf("Trigger inside the window: %v", err)
	}
	if st := e.Status(); !st.Window.Open || st.Window.ClosesAt == nil {
		t.Fatalf("window status while open: %+v", st.Window)
	}
	s := e.RunPass(ctx, false)
	if s.Result != "window-closed" {
		t.Fatalf("pass cut by the window: %+v", s)
	}
	// After the window's end only the chunk request already sent may arrive.
	late := fl.arrivals.since(end)
	if len(late) > 1 {
		t.Errorf("%d requests reached the parent after the window closed: %+v", len(late), late)
	}
	for _, a := range late {
		if a.method != http.MethodGet || !strings.Contains(a.path, layer.digest()) {
			t.Errorf("after the window closed, %s %s reached the parent", a.method, a.path)
		}
	}
	// The pass's connections are closed: over HTTP/2 a cancelled request only resets its
	// stream, and the parent would go on sending what it had queued.
	waitFor(t, "the child's connections to the parent closed after the window", 10*time.Second, func() bool { return fl.proxy.Stats().Active == 0 })
	afterPass := len(fl.arrivals.since(start))
	firstIn := e.Meter().In()
	if firstIn <= 0 || firstIn >= size {
		t.Fatalf("the first window read %d bytes; want part of the %d-byte blob", firstIn, size)
	}

	// The half-fetched blob is invisible, the image absent, the checkpoint there.
	if code := headStatus(t, child, "/v2/edge/app/blobs/"+layer.digest()); code != http.StatusNotFound {
		t.Errorf("HEAD of the half-fetched blob on the child: %d, want 404", code)
	}
	if code, ec := getError(t, child, "/v2/edge/app/manifests/v1"); code != http.StatusNotFound || ec != "MANIFEST_UNKNOWN" {
		t.Errorf("manifest on the child after the window closed: %d %s, want 404 MANIFEST_UNKNOWN", code, ec)
	}
	cpPath := filepath.Join(opts.StateDir, "blobs", "sha256-"+strings.TrimPrefix(layer.digest(), "sha256:")+".json")
	b, err := os.ReadFile(cpPath)
	if err != nil {
		t.Fatalf("checkpoint of the interrupted blob: %v", err)
	}
	var cp struct{ Digest, Repository, UploadID string }
	if err := json.Unmarshal(b, &cp); err != nil || cp.Digest != layer.digest() || cp.UploadID == "" {
		t.Fatalf("checkpoint %s: %v %+v", b, err, cp)
	}
	st := e.Status()
	if st.Window.Open || len(st.InFlight) != 0 || st.LastPass == nil || st.LastPass.Result != "window-closed" {
		t.Errorf("status after the window closed: %+v", st)
	}

	// Still closed: refused, skipped, silent.
	if err := e.Trigger(false); !errors.Is(err, sync.ErrOutsideWindow) {
		t.Errorf("Trigger after the window: %v, want ErrOutsideWindow", err)
	}
	down := fl.proxy.Stats().BytesDown
	if s := e.RunPass(ctx, false); s.Result != "skipped" {
		t.Errorf("pass after the window: %+v", s)
	}
	if got := fl.proxy.Stats().BytesDown; got != down || len(fl.arrivals.since(start)) != afterPass {
		t.Errorf("traffic after the window closed: %d bytes, %d requests", got-down, len(fl.arrivals.since(start))-afterPass)
	}

	// The next window resumes from the checkpoint.
	e.OpenWindow(time.Now().Add(2 * time.Minute))
	if s := e.RunPass(ctx, false); s.Result != "ok" {
		t.Fatalf("pass in the next window: %+v", s)
	}
	requireSame(t, fl.parent, child, "edge/app:v1")
	if _, err := os.Stat(cpPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checkpoint left after the blob was committed: %v", err)
	}
	content := imageSize(t, img)
	requests := len(fl.arrivals.since(start))
	// The chunk cut by the window is the only content paid twice.
	limit := content + chunk + int64(requests)*perRequest
	within(t, "link downstream bytes over both windows", fl.proxy.Stats().BytesDown, limit)
	within(t, "engine meter over both windows", e.Meter().In(), limit)
	t.Logf("first window read %d of %d blob bytes; both windows: link %d B, meter %d B, image %d B, %d requests",
		firstIn, size, fl.proxy.Stats().BytesDown, e.Meter().In(), content, requests)
}

// blobPath matches the blob URL of digest d in any repository.
func blobPath(d string) *regexp.Regexp {
	return regexp.MustCompile(regexp.QuoteMeta("/blobs/"+d) + "$")
}

// runPassAsync runs a pass in the background; the summary arrives on the channel.
func runPassAsync(ctx context.Context, e *sync.Engine) <-chan acrapi.PassSummary {
	done := make(chan acrapi.PassSummary, 1)
	go func() { done <- e.RunPass(ctx, false) }()
	return done
}

// TestCorruptBlobIsRejectedAndRefetched: bytes flipped by the parent (HTTP) or by the link (TCP)
// make the blob fail verification: it is never visible on the child, it is fetched again, the
// image ends identical, and the metrics count it.
func TestCorruptBlobIsRejectedAndRefetched(t *testing.T) {
	t.Parallel()
	const size, chunk = 1 << 20, 256 << 10

	t.Run("parent sends a flipped byte", func(t *testing.T) {
		t.Parallel()
		fl := newFaultLink(t)
		layer := randomLayer(t, size, 3)
		img := imageOf(t, layer)
		fl.parent.push(t, "sec/app:v1", img)
		// The first chunk of the layer comes with one byte flipped; the refetch (the next
		// request for offset 0) is held until the test has looked at the child.
		corrupt := fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: blobPath(layer.digest()), Times: 1, Action: faultnet.CorruptBody(1000)})
		refetch, release := make(chan struct{}), make(chan struct{})
		var once stdsync.Once
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: blobPath(layer.digest()), Action: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
					once.Do(func() { close(refetch) })
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
				}
				next.ServeHTTP(w, r)
			})
		}})
		child := newNode(t, nil)
		opts := engineOptions(t, fl.proxy.URL(), "sec/app")
		opts.ChunkSize = chunk
		e := newEngine(t, opts, child)
		reg := prometheus.NewRegistry()
		if err := e.Register(reg); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		done := runPassAsync(bounded(t, time.Minute), e)
		select {
		case <-refetch:
		case s := <-done:
			t.Fatalf("the pass ended without fetching the corrupt blob again: %+v", s)
		case <-time.After(30 * time.Second):
			t.Fatal("no refetch within 30s")
		}
		// Between the failed verification and the refetch: nothing of it on the child.
		if code := headStatus(t, child, "/v2/sec/app/blobs/"+layer.digest()); code != http.StatusNotFound {
			t.Errorf("HEAD of the corrupt blob on the child: %d, want 404", code)
		}
		if code, ec := getError(t, child, "/v2/sec/app/manifests/v1"); code != http.StatusNotFound || ec != "MANIFEST_UNKNOWN" {
			t.Errorf("manifest on the child during the refetch: %d %s", code, ec)
		}
		if v := metricValue(t, reg, "outpost_sync_blobs_corrupt_total"); v != 1 {
			t.Errorf("outpost_sync_blobs_corrupt_total = %v during the refetch, want 1", v)
		}
		if v := metricValue(t, reg, "outpost_sync_refetched_bytes_total"); v != size {
			t.Errorf("outpost_sync_refetched_bytes_total = %v, want the %d bytes thrown away", v, size)
		}
		close(release)
		s := <-done
		if s.Result != "ok" {
			t.Fatalf("pass: %+v", s)
		}
		requireSame(t, fl.parent, child, "sec/app:v1")
		if corrupt.Applied() != 1 {
			t.Errorf("the corrupting rule acted %d times", corrupt.Applied())
		}
		if v := metricValue(t, reg, "outpost_sync_blobs_corrupt_total"); v != 1 {
			t.Errorf("outpost_sync_blobs_corrupt_total = %v, want 1", v)
		}
		if s.BlobsFetched != 2 || metricValue(t, reg, "outpost_sync_blobs_fetched_total") != 2 {
			t.Errorf("blobs fetched: summary %d, metric %v; want 2 (config and layer, each verified once)",
				s.BlobsFetched, metricValue(t, reg, "outpost_sync_blobs_fetched_total"))
		}
		// The corrupt copy was paid in full, once.
		limit := imageSize(t, img) + size + int64(len(fl.arrivals.since(start)))*perRequest
		within(t, "link downstream bytes", fl.proxy.Stats().BytesDown, limit)
	})

	t.Run("link flips a byte", func(t *testing.T) {
		t.Parallel()
		fl := newFaultLink(t)
		layer := randomLayer(t, size, 4)
		img := imageOf(t, layer)
		fl.parent.push(t, "sec/app:v1", img)
		// When the layer's second chunk is requested, stall the link 4 KiB into its response
		// (past the headers), then turn on corruption of exactly one byte and release: the
		// next byte the link delivers, inside that chunk's body, is flipped.
		at := make(chan struct{}, 1)
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: blobPath(layer.digest()), Skip: 1, Times: 1, Action: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fl.proxy.StallAt(faultnet.Downstream, fl.proxy.Stats().BytesDown+4096)
				at <- struct{}{}
				next.ServeHTTP(w, r)
			})
		}})
		child := newNode(t, nil)
		opts := engineOptions(t, fl.proxy.URL(), "sec/app")
		opts.ChunkSize, opts.Parallelism = chunk, 1 // one transfer at a time: the stall point is in the layer
		e := newEngine(t, opts, child)
		reg := prometheus.NewRegistry()
		if err := e.Register(reg); err != nil {
			t.Fatal(err)
		}
		ctx := bounded(t, time.Minute)
		done := runPassAsync(ctx, e)
		select {
		case <-at:
		case s := <-done:
			t.Fatalf("the pass ended before the layer's second chunk: %+v", s)
		}
		waitFor(t, "the link to stall in the layer's second chunk", 30*time.Second, fl.proxy.Stalled)
		fl.proxy.SetCorruption(faultnet.Corruption{Probability: 1, Limit: 1})
		fl.proxy.Release()
		s := <-done
		if s.Result != "ok" {
			t.Fatalf("pass: %+v", s)
		}
		requireSame(t, fl.parent, child, "sec/app:v1")
		if n := fl.proxy.Stats().Corrupted; n != 1 {
			t.Errorf("the link flipped %d bytes, want 1", n)
		}
		if v := metricValue(t, reg, "outpost_sync_blobs_corrupt_total"); v != 1 {
			t.Errorf("outpost_sync_blobs_corrupt_total = %v, want 1", v)
		}
		if v := metricValue(t, reg, "outpost_sync_refetched_bytes_total"); v != size {
			t.Errorf("outpost_sync_refetched_bytes_total = %v, want %d", v, size)
		}
	})
}

// TestWrongLengthsAndIgnoredRange: a parent that announces the wrong length, drops a response
// mid-body, or ignores Range: the pass still completes, with identical digests, in one go.
func TestWrongLengthsAndIgnoredRange(t *testing.T) {
	t.Parallel()
	const size, chunk = 1 << 20, 256 << 10
	cases := []struct {
		name   string
		method string
		path   func(layer string) *regexp.Regexp
		skip   int
		times  int
		action faultnet.Action
		// layerGETs, when not 0, is how many requests for the layer the pass may make
		layerGETs int
	}{
		{"blob Content-Length short", http.MethodGet, blobPath, 1, 1, faultnet.LieLength(-1000), 0},
		{"blob Content-Length long", http.MethodGet, blobPath, 1, 1, faultnet.LieLength(+1000), 0},
		{"blob truncated", http.MethodGet, blobPath, 1, 1, faultnet.Truncate(100_000), 0},
		{"manifest truncated", http.MethodGet, func(string) *regexp.Regexp { return regexp.MustCompile(`/manifests/`) }, 0, 1, faultnet.Truncate(50), 0},
		{"manifest Content-Length short", http.MethodGet, func(string) *regexp.Regexp { return regexp.MustCompile(`/manifests/`) }, 0, 1, faultnet.LieLength(-10), 0},
		{"tag list truncated", http.MethodGet, func(string) *regexp.Regexp { return regexp.MustCompile(`/tags/list$`) }, 0, 1, faultnet.Truncate(5), 0},
		// The first answer carries the whole blob: the engine takes all of it.
		{"every blob GET ignores Range", http.MethodGet, func(string) *regexp.Regexp { return regexp.MustCompile(`/blobs/`) }, 0, 0, faultnet.IgnoreRange(), 1},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fl := newFaultLink(t)
			layer := randomLayer(t, size, uint64(10+i))
			img := imageOf(t, layer)
			fl.parent.push(t, "len/app:v1", img)
			rule := fl.faults.Add(faultnet.Rule{Method: tc.method, Path: tc.path(layer.digest()), Skip: tc.skip, Times: tc.times, Action: tc.action})
			child := newNode(t, nil)
			opts := engineOptions(t, fl.proxy.URL(), "len/app")
			opts.ChunkSize = chunk
			e := newEngine(t, opts, child)
			start := time.Now()
			if s := e.RunPass(bounded(t, time.Minute), false); s.Result != "ok" {
				t.Fatalf("pass: %+v", s)
			}
			requireSame(t, fl.parent, child, "len/app:v1")
			if rule.Applied() == 0 {
				t.Fatal("the fault was never applied")
			}
			if got := len(fl.arrivals.matching(start, http.MethodGet, blobPath(layer.digest()))); tc.layerGETs > 0 && got > tc.layerGETs {
				t.Errorf("%d requests for the layer, want %d", got, tc.layerGETs)
			}
			limit := imageSize(t, img) + chunk + int64(len(fl.arrivals.since(start)))*perRequest
			within(t, "link downstream bytes", fl.proxy.Stats().BytesDown, limit)
			within(t, "engine meter", e.Meter().In(), limit)
		})
	}

	// A parent without range support that also drops the first response half-way: the second
	// request gets the whole blob again, whose first half is skipped (and counted as refetched).
	t.Run("ignored Range after a drop", func(t *testing.T) {
		t.Parallel()
		fl := newFaultLink(t)
		layer := randomLayer(t, size, 30)
		img := imageOf(t, layer)
		fl.parent.push(t, "len/app:v1", img)
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: blobPath(layer.digest()), Times: 1,
			Action: faultnet.Chain(faultnet.IgnoreRange(), faultnet.Truncate(size/2))})
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: regexp.MustCompile(`/blobs/`), Action: faultnet.IgnoreRange()})
		child := newNode(t, nil)
		opts := engineOptions(t, fl.proxy.URL(), "len/app")
		opts.ChunkSize = chunk
		e := newEngine(t, opts, child)
		reg := prometheus.NewRegistry()
		if err := e.Register(reg); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if s := e.RunPass(bounded(t, time.Minute), false); s.Result != "ok" {
			t.Fatalf("pass: %+v", s)
		}
		requireSame(t, fl.parent, child, "len/app:v1")
		skipped := int64(metricValue(t, reg, "outpost_sync_refetched_bytes_total"))
		if skipped <= 0 || skipped > size/2 {
			t.Errorf("outpost_sync_refetched_bytes_total = %d, want the skipped first half (up to %d)", skipped, size/2)
		}
		limit := imageSize(t, img) + skipped + int64(len(fl.arrivals.since(start)))*perRequest
		within(t, "link downstream bytes", fl.proxy.Stats().BytesDown, limit)
	})
}

// TestRetriesAndRetryAfter: 500, 503 and 429 (with Retry-After: 1) on the tag list, manifests
// and blobs are retried within the pass, which completes; a Retry-After is waited out.
func TestRetriesAndRetryAfter(t *testing.T) {
	t.Parallel()
	fl := newFaultLink(t)
	layer := randomLayer(t, 512<<10, 40)
	img := imageOf(t, layer)
	fl.parent.push(t, "api/app:v1", img)
	tags := regexp.MustCompile(`^/v2/api/app/tags/list$`)
	manifests := regexp.MustCompile(`^/v2/api/app/manifests/`)
	blob := blobPath(layer.digest())
	const after = time.Second
	rules := []*faultnet.RuleHandle{
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: tags, Times: 1, Action: faultnet.Status(http.StatusInternalServerError)}),
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: tags, Times: 1, Action: faultnet.RetryAfter(http.StatusTooManyRequests, after)}),
		fl.faults.Add(faultnet.Rule{Method: http.MethodHead, Path: manifests, Times: 1, Action: faultnet.Status(http.StatusServiceUnavailable)}),
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: manifests, Times: 1, Action: faultnet.RetryAfter(http.StatusServiceUnavailable, after)}),
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: blob, Times: 1, Action: faultnet.Status(http.StatusInternalServerError)}),
		fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: blob, Times: 1, Action: faultnet.RetryAfter(http.StatusTooManyRequests, after)}),
	}
	child := newNode(t, nil)
	opts := engineOptions(t, fl.proxy.URL(), "api/app")
	opts.Retry.Max = 5 * time.Second // the default test cap (200 ms) would cut Retry-After short
	e := newEngine(t, opts, child)
	start := time.Now()
	if s := e.RunPass(bounded(t, time.Minute), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, fl.parent, child, "api/app:v1")
	for i, r := range rules {
		if r.Applied() != 1 {
			t.Errorf("fault %d was applied %d times, want 1", i, r.Applied())
		}
	}
	// The request after each Retry-After answer came no sooner than Retry-After said.
	for _, c := range []struct {
		what   string
		method string
		path   *regexp.Regexp
		nth    int // the answer with Retry-After, 0-based
	}{
		{"tag list", http.MethodGet, tags, 1},
		{"manifest", http.MethodGet, manifests, 0},
		{"blob", http.MethodGet, blob, 1},
	} {
		got := fl.arrivals.matching(start, c.method, c.path)
		if len(got) < c.nth+2 {
			t.Errorf("%s: %d requests, want at least %d", c.what, len(got), c.nth+2)
			continue
		}
		if gap := got[c.nth+1].at.Sub(got[c.nth].at); gap < after-50*time.Millisecond {
			t.Errorf("%s: retried %s after a Retry-After of %s", c.what, gap, after)
		} else {
			t.Logf("%s: retried %s after Retry-After: %s", c.what, gap.Round(time.Millisecond), after)
		}
	}
}

// TestImageNotPullableUntilComplete: while the link is stalled in the middle of the second of
// three layers, the child has neither the tag nor the manifest (the first layer's blob may be
// there); after the stall the image completes.
func TestImageNotPullableUntilComplete(t *testing.T) {
	t.Parallel()
	const size, chunk = 1 << 20, 256 << 10
	fl := newFaultLink(t)
	layers := []blobLayer{randomLayer(t, size, 50), randomLayer(t, size, 51), randomLayer(t, size, 52)}
	img := imageOf(t, layers[0], layers[1], layers[2])
	fl.parent.push(t, "pull/app:v1", img)
	// Stall the whole link as the parent starts answering the second chunk of the second layer.
	stalled := make(chan struct{})
	fl.faults.Add(faultnet.Rule{Method: http.MethodGet, Path: blobPath(layers[1].digest()), Skip: 1, Times: 1, Action: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fl.proxy.Stall()
			close(stalled)
			next.ServeHTTP(w, r)
		})
	}})
	child := newNode(t, nil)
	opts := engineOptions(t, fl.proxy.URL(), "pull/app")
	opts.ChunkSize, opts.Parallelism = chunk, 1 // config, then the layers in order
	e := newEngine(t, opts, child)
	done := runPassAsync(bounded(t, time.Minute), e)
	select {
	case <-stalled:
	case s := <-done:
		t.Fatalf("the pass ended before the stall: %+v", s)
	}

	for _, ref := range []string{"v1", mustDigest(t, img)} {
		if code, ec := getError(t, child, "/v2/pull/app/manifests/"+ref); code != http.StatusNotFound || ec != "MANIFEST_UNKNOWN" {
			t.Errorf("GET manifest %s on the child mid-sync: %d %s, want 404 MANIFEST_UNKNOWN", ref, code, ec)
		}
		if code := headStatus(t, child, "/v2/pull/app/manifests/"+ref); code != http.StatusNotFound {
			t.Errorf("HEAD manifest %s on the child mid-sync: %d, want 404", ref, code)
		}
	}
	if code, ec := getError(t, child, "/v2/pull/app/tags/list"); code != http.StatusNotFound {
		t.Errorf("tag list on the child mid-sync: %d %s, want 404", code, ec)
	}
	t.Logf("mid-sync, the first layer's blob answers HEAD with %d", headStatus(t, child, "/v2/pull/app/blobs/"+layers[0].digest()))
	for _, l := range layers[1:] {
		if code := headStatus(t, child, "/v2/pull/app/blobs/"+l.digest()); code != http.StatusNotFound {
			t.Errorf("HEAD of unfinished layer %s on the child: %d, want 404", l.digest(), code)
		}
	}
	waitFor(t, "the second layer to show in the status", 10*time.Second, func() bool {
		st := e.Status()
		return st.State == "syncing" && len(st.InFlight) == 1 && st.InFlight[0].Digest == layers[1].digest() &&
			st.InFlight[0].Done == chunk && st.InFlight[0].Total == size
	})

	fl.proxy.Release()
	if s := <-done; s.Result != "ok" {
		t.Fatalf("pass after the stall: %+v", s)
	}
	requireSame(t, fl.parent, child, "pull/app:v1")
}

// TestParentDown: with the parent unreachable a pass fails and says the link is down (status and
// outpost_sync_link_up), the child keeps serving all it had and removes no tag; when the parent
// is back the next pass syncs and the link is up.
func TestParentDown(t *testing.T) {
	t.Parallel()
	fl := newFaultLink(t)
	old := map[string]ggcrv1.Image{
		"down/app:v1":  imageOf(t, randomLayer(t, 256<<10, 60)),
		"down/app:old": imageOf(t, randomLayer(t, 64<<10, 61)),
		"down/lib:v1":  imageOf(t, randomLayer(t, 64<<10, 62)),
	}
	for rt, img := range old {
		fl.parent.push(t, rt, img)
	}
	child := newNode(t, nil)
	e := newEngine(t, engineOptions(t, fl.proxy.URL(), "down/app", "down/lib"), child)
	reg := prometheus.NewRegistry()
	if err := e.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctx := bounded(t, time.Minute)
	if s := e.RunPass(ctx, false); s.Result != "ok" {
		t.Fatalf("first pass: %+v", s)
	}
	if l, up := e.Status().Link, metricValue(t, reg, "outpost_sync_link_up"); l != "up" || up != 1 {
		t.Fatalf("after a good pass: link %q, outpost_sync_link_up %v", l, up)
	}
	fresh := imageOf(t, randomLayer(t, 64<<10, 63))
	fl.parent.push(t, "down/app:v2", fresh)

	fl.proxy.Down()
	s := e.RunPass(ctx, false)
	if s.Result != "failed" || s.Error == "" || s.TagsRemoved != 0 {
		t.Fatalf("pass with the parent down: %+v", s)
	}
	if l, up := e.Status().Link, metricValue(t, reg, "outpost_sync_link_up"); l != "down" || up != 0 {
		t.Errorf("with the parent down: link %q, outpost_sync_link_up %v; want down and 0", l, up)
	}
	// A second pass while down: the link never shows up (not even before its first request).
	var sawUp atomic.Bool
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			if e.Status().Link != "down" || metricValue(t, reg, "outpost_sync_link_up") != 0 {
				sawUp.Store(true)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	s = e.RunPass(ctx, false)
	close(stop)
	<-polled
	if s.Result != "failed" {
		t.Errorf("second pass with the parent down: %+v", s)
	}
	if sawUp.Load() {
		t.Errorf("the status showed the link up during a pass against a parent that is down")
	}
	// Everything synced before is served whole; no tag was removed; the new one is not there.
	for rt := range old {
		requireSame(t, fl.parent, child, rt)
	}
	if child.digestOf(t, "down/app:v2") != "" {
		t.Error("down/app:v2 on the child although the parent was down")
	}
	if v := metricValue(t, reg, "outpost_sync_tags_removed_total"); v != 0 {
		t.Errorf("outpost_sync_tags_removed_total = %v", v)
	}
	if st := fl.proxy.Stats(); st.Refused == 0 {
		t.Errorf("no connection was refused while down: %+v", st)
	}

	fl.proxy.Up()
	if s := e.RunPass(ctx, false); s.Result != "ok" || s.TagsRemoved != 0 {
		t.Fatalf("pass after the parent came back: %+v", s)
	}
	if l, up := e.Status().Link, metricValue(t, reg, "outpost_sync_link_up"); l != "up" || up != 1 {
		t.Errorf("after the parent came back: link %q, outpost_sync_link_up %v", l, up)
	}
	requireSame(t, fl.parent, child, "down/app:v2")
	for rt := range old {
		requireSame(t, fl.parent, child, rt)
	}
}

// TestBandwidthCap: Options.BandwidthKiBps bounds the rate: 2 MiB at 512 KiB/s take at least
// about 4 s (checked as a lower bound of 3 s).
func TestBandwidthCap(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	parent, child := newNode(t, nil), newNode(t, nil)
	parent.push(t, "cap/app:v1", imageOf(t, randomLayer(t, size, 70)))
	opts := engineOptions(t, parent.srv.URL, "cap/app")
	opts.BandwidthKiBps = 512
	e := newEngine(t, opts, child)
	start := time.Now()
	s := e.RunPass(bounded(t, time.Minute), false)
	took := time.Since(start)
	if s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, parent, child, "cap/app:v1")
	if took < 3*time.Second {
		t.Errorf("%d bytes took %s at a cap of 512 KiB/s; want at least 3s", s.BytesFromParent, took)
	}
	t.Logf("%d bytes in %s: %.0f KiB/s under a cap of 512 KiB/s", s.BytesFromParent, took.Round(time.Millisecond), float64(s.BytesFromParent)/1024/took.Seconds())
}

// TestSharedBlobCrossesTheLinkOnce: two repositories (one of them listing the layer twice)
// need the same 2 MiB blob in one pass: it crosses the link once, the second repository links
// it locally.
func TestSharedBlobCrossesTheLinkOnce(t *testing.T) {
	t.Parallel()
	fl := newFaultLink(t)
	shared, small := randomLayer(t, 2<<20, 80), randomLayer(t, 4<<10, 81)
	a := imageOf(t, shared, shared) // two fetches of the same digest start at once
	b := imageOf(t, shared, small)
	fl.parent.push(t, "team/a:v1", a)
	fl.parent.push(t, "team/b:v1", b)
	child := newNode(t, nil)
	e := newEngine(t, engineOptions(t, fl.proxy.URL(), "team/*"), child)
	start := time.Now()
	s := e.RunPass(bounded(t, time.Minute), false)
	if s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, fl.parent, child, "team/a:v1")
	requireSame(t, fl.parent, child, "team/b:v1")
	// Fetched: a's config, the shared layer, b's config, the small layer. Mounted: the shared
	// layer into b.
	if s.BlobsFetched != 4 || s.BlobsMounted != 1 {
		t.Errorf("blobs fetched %d, mounted %d; want 4 and 1", s.BlobsFetched, s.BlobsMounted)
	}
	// One copy of each image's content, the shared layer counted once.
	content := imageSize(t, a) + imageSize(t, b) - int64(len(shared.b))
	limit := content + int64(len(fl.arrivals.since(start)))*perRequest
	within(t, "link downstream bytes", fl.proxy.Stats().BytesDown, limit)
	within(t, "engine meter", e.Meter().In(), limit)
	requests := len(fl.arrivals.since(start))
	t.Logf("content %d B (shared layer %d B once); link carried %d B, %d requests (%d for the shared layer): %.0f B per request besides content",
		content, len(shared.b), fl.proxy.Stats().BytesDown, requests, len(fl.arrivals.matching(start, http.MethodGet, blobPath(shared.digest()))),
		float64(fl.proxy.Stats().BytesDown-content)/float64(requests))
}

// TestProgressAndPassTotals: on a slow link the status shows the blob in flight with its done
// bytes rising toward the total, a positive rate and an ETA; afterwards the last pass's totals.
func TestProgressAndPassTotals(t *testing.T) {
	t.Parallel()
	const size, chunk = 2 << 20, 256 << 10
	fl := newFaultLink(t, faultnet.WithBandwidth(faultnet.Downstream, 512<<10))
	layer := randomLayer(t, size, 90)
	img := imageOf(t, layer)
	fl.parent.push(t, "prog/app:v1", img)
	child := newNode(t, nil)
	opts := engineOptions(t, fl.proxy.URL(), "prog/app")
	opts.ChunkSize = chunk
	e := newEngine(t, opts, child)
	start := time.Now()
	done := runPassAsync(bounded(t, time.Minute), e)

	var samples []acrapi.BlobProgress
	var sawRepoSyncing bool
	var s acrapi.PassSummary
poll:
	for {
		select {
		case s = <-done:
			break poll
		case <-time.After(50 * time.Millisecond):
		}
		st := e.Status()
		if st.State != "syncing" || st.LastPass == nil || st.LastPass.Result != "running" {
			t.Errorf("status during the pass: state %q, last pass %+v", st.State, st.LastPass)
		}
		for _, r := range st.Repositories {
			if r.Name == "prog/app" && r.State == "syncing" && r.ImagesPending == 1 {
				sawRepoSyncing = true
			}
		}
		for _, b := range st.InFlight {
			if b.Digest == layer.digest() {
				samples = append(samples, b)
			}
		}
	}
	if s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, fl.parent, child, "prog/app:v1")

	if !sawRepoSyncing {
		t.Error("the repository never showed as syncing with one image pending")
	}
	distinct, withRate := 0, 0
	for i, b := range samples {
		if b.Total != size || b.Repository != "prog/app" || b.Done < 0 || b.Done > size {
			t.Fatalf("in-flight entry %+v", b)
		}
		if i == 0 || b.Done != samples[i-1].Done {
			distinct++
		}
		if i > 0 && b.Done < samples[i-1].Done {
			t.Errorf("done went back from %d to %d", samples[i-1].Done, b.Done)
		}
		switch {
		case b.BytesPerSecond > 0:
			withRate++
			if b.ETASeconds < 0 || b.ETASeconds*b.BytesPerSecond > float64(b.Total-b.Done)+1 || b.ETASeconds*b.BytesPerSecond < float64(b.Total-b.Done)-1 {
				t.Errorf("ETA %.2fs does not match %d bytes left at %.0f B/s", b.ETASeconds, b.Total-b.Done, b.BytesPerSecond)
			}
		case b.ETASeconds != -1:
			t.Errorf("ETA %.2fs without a rate, want -1", b.ETASeconds)
		}
	}
	if distinct < 3 || withRate == 0 {
		t.Errorf("%d samples of the blob in flight, %d distinct done values, %d with a rate; want at least 3 and 1", len(samples), distinct, withRate)
	}
	if len(samples) > 0 {
		last := samples[len(samples)-1]
		t.Logf("%d samples; last: done %d of %d at %.0f KiB/s, ETA %.1fs", len(samples), last.Done, last.Total, last.BytesPerSecond/1024, last.ETASeconds)
	}

	st := e.Status()
	if st.State != "idle" || len(st.InFlight) != 0 || st.LastSuccess == nil || st.Link != "up" {
		t.Errorf("status after the pass: %+v", st)
	}
	if len(st.Repositories) != 1 || st.Repositories[0].State != "synced" || st.Repositories[0].ImagesPending != 0 || st.Repositories[0].LastSuccess == nil {
		t.Errorf("repositories after the pass: %+v", st.Repositories)
	}
	lp := st.LastPass
	if lp == nil || lp.Result != "ok" || lp.BlobsFetched != 2 || lp.BlobsMounted != 0 || lp.ManifestsSynced != 1 || lp.TagsRemoved != 0 ||
		lp.Finished == nil || lp.Finished.Before(lp.Started) || lp.Error != "" {
		t.Fatalf("last pass: %+v", lp)
	}
	content := imageSize(t, img)
	if lp.BytesFromParent != e.Meter().In() || lp.BytesFromParent < content || lp.BytesFromParent > content+int64(len(fl.arrivals.since(start)))*perRequest {
		t.Errorf("last pass: %d bytes from parent; meter %d, image %d", lp.BytesFromParent, e.Meter().In(), content)
	}
}

// TestWindowExtendedDuringAPassIsFollowed: a schedule firing during a pass extends the open
// window (as overlapping windows do); the pass goes on to the new end instead of being cut at
// the old one.
func TestWindowExtendedDuringAPassIsFollowed(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	// 1 MiB/s: the blob needs about 2 s, more than the first window's 1 s.
	fl := newFaultLink(t, faultnet.WithBandwidth(faultnet.Downstream, 1<<20))
	fl.parent.push(t, "ext/app:v1", imageOf(t, randomLayer(t, size, 95)))
	child := newNode(t, nil)
	opts := engineOptions(t, fl.proxy.URL(), "ext/app")
	opts.Schedule, opts.Window = "0 0 1 1 *", time.Minute
	e := newEngine(t, opts, child)
	ctx := bounded(t, time.Minute)
	e.OpenWindow(time.Now().Add(time.Second))
	done := runPassAsync(ctx, e)
	if err := fl.proxy.WaitBytes(ctx, faultnet.Downstream, 256<<10); err != nil {
		t.Fatal(err)
	}
	e.OpenWindow(time.Now().Add(time.Minute)) // the next firing
	if s := <-done; s.Result != "ok" {
		t.Fatalf("pass in an extended window: %+v", s)
	}
	requireSame(t, fl.parent, child, "ext/app:v1")
}
