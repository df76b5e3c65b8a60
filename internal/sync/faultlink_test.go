package sync_test

// Helpers of the fault tests: a parent reached only through HTTP fault middleware and a userland
// TCP link (test/faultnet), a log of the requests that reach the parent, random blobs with a
// cached digest, and reading the engine's metrics.

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	stdsync "sync"
	"testing"
	"time"

	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-registry/outpost/test/faultnet"
)

// perRequest bounds what one exchange with the parent costs on the link besides the content it
// carries: the status line and headers of a distribution response (about 340 bytes on average,
// see TestSharedBlobCrossesTheLinkOnce's log, which has no faults), and any small JSON body (the
// /v2/ ping's "{}", a tag list, an error, an empty referrers index: under 200 bytes here).
// Image content (manifest, config, layers) is counted separately, in imageSize.
const perRequest = 1 << 10

// faultLink is a parent registry that the engine reaches only through a faultnet.Proxy (TCP:
// bandwidth, resets, outages, stalls, corruption) in front of faultnet.HTTPFaults (HTTP
// faults), with every request that reaches the parent's handler logged.
type faultLink struct {
	parent   *node
	faults   *faultnet.HTTPFaults
	proxy    *faultnet.Proxy
	arrivals *arrivalLog
}

// newFaultLink starts a parent and a proxy in front of it. Tests push to parent directly and
// point the engine at proxy.URL().
func newFaultLink(t *testing.T, opts ...faultnet.Option) *faultLink {
	t.Helper()
	fl := &faultLink{arrivals: &arrivalLog{}}
	fl.parent = newNode(t, func(h http.Handler) http.Handler {
		fl.faults = faultnet.NewHTTPFaults(h)
		return fl.arrivals.wrap(fl.faults)
	})
	p, err := faultnet.NewProxy(fl.parent.host, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	fl.proxy = p
	return fl
}

// arrival is one request as the parent's handler received it.
type arrival struct {
	at           time.Time
	method, path string
	rng          string // the Range header
}

// arrivalLog records every request that reaches the parent.
type arrivalLog struct {
	mu   stdsync.Mutex
	list []arrival
}

func (l *arrivalLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.list = append(l.list, arrival{at: time.Now(), method: r.Method, path: r.URL.Path, rng: r.Header.Get("Range")})
		l.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// since returns the requests that arrived at or after t.
func (l *arrivalLog) since(t time.Time) []arrival {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []arrival
	for _, a := range l.list {
		if !a.at.Before(t) {
			out = append(out, a)
		}
	}
	return out
}

// matching returns the requests since t with method whose path matches re.
func (l *arrivalLog) matching(t time.Time, method string, re *regexp.Regexp) []arrival {
	var out []arrival
	for _, a := range l.since(t) {
		if a.method == method && re.MatchString(a.path) {
			out = append(out, a)
		}
	}
	return out
}

// blobLayer is a layer of fixed random bytes with its digest computed once (hashing 64 MiB at
// every call of Digest would dominate the tests).
type blobLayer struct {
	b []byte
	d ggcrv1.Hash
}

// randomLayer returns size random bytes (from seed) as an OCI layer.
func randomLayer(t *testing.T, size int, seed uint64) blobLayer {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewChaCha8(seedBytes(seed)))
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	h, _, err := ggcrv1.SHA256(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return blobLayer{b: b, d: h}
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return s
}

func (l blobLayer) Digest() (ggcrv1.Hash, error) { return l.d, nil }
func (l blobLayer) DiffID() (ggcrv1.Hash, error) { return l.d, nil }
func (l blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.b)), nil
}
func (l blobLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l blobLayer) Size() (int64, error)                 { return int64(len(l.b)), nil }
func (l blobLayer) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }

// digest is the layer's digest as a string.
func (l blobLayer) digest() string { return l.d.String() }

// imageOf is an OCI image of layers, in order (a layer may appear more than once).
func imageOf(t *testing.T, layers ...ggcrv1.Layer) ggcrv1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// imageSize is the content a child must fetch for img: its manifest, config and distinct layers.
func imageSize(t *testing.T, img ggcrv1.Image) int64 {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(raw)) + m.Config.Size
	seen := map[ggcrv1.Hash]bool{}
	for _, l := range m.Layers {
		if !seen[l.Digest] {
			seen[l.Digest] = true
			total += l.Size
		}
	}
	return total
}

// metricValue is the value of the unlabelled counter or gauge name in reg (the sum over its
// series for a labelled one); it fails the test if reg has no such metric.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// headStatus sends HEAD path to n and returns the status.
func headStatus(t *testing.T, n *node, path string) int {
	t.Helper()
	resp, err := http.Head(n.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// getError sends GET path to n and returns the status and the first OCI error code.
func getError(t *testing.T, n *node, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(n.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	code := ""
	if m := regexp.MustCompile(`"code"\s*:\s*"([A-Z_]+)"`).FindSubmatch(b); m != nil {
		code = string(m[1])
	}
	return resp.StatusCode, code
}

// bounded is a context for one test step: it ends with the test or after limit.
func bounded(t *testing.T, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	t.Cleanup(cancel)
	return ctx
}

// within fails the test unless got ≤ limit, saying what was measured.
func within(t *testing.T, what string, got, limit int64) {
	t.Helper()
	if got > limit {
		t.Errorf("%s: %d bytes, more than the allowed %d (%+d)", what, got, limit, got-limit)
	}
}

// waitFor polls cond every 10 ms until it holds or limit passes.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
