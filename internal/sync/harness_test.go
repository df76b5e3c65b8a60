package sync_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/zap/zaptest"

	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/registry"
	"github.com/outpost-registry/outpost/internal/sync"
)

// node is a registry served on loopback: a parent, or a child's store.
type node struct {
	reg  *registry.Registry
	srv  *httptest.Server
	host string // host:port
}

// newNode starts a registry over a temp directory. wrap, if not nil, wraps its handler (to
// inject faults or auth in front of a parent).
func newNode(t *testing.T, wrap func(http.Handler) http.Handler) *node {
	t.Helper()
	return startNode(t, registry.Options{DataDir: t.TempDir()}, wrap)
}

// newNodeWithPlatforms is a child that mirrors only some platforms of indexes.
func newNodeWithPlatforms(t *testing.T, platforms []string) *node {
	t.Helper()
	return startNode(t, registry.Options{DataDir: t.TempDir(), IndexPlatforms: platforms}, nil)
}

func startNode(t *testing.T, opts registry.Options, wrap func(http.Handler) http.Handler) *node {
	t.Helper()
	reg, err := registry.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	h := reg.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	// HTTP/1.1 and h2c, as a node serves: children speak h2c to it.
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() { srv.Close(); _ = reg.Close() })
	return &node{reg: reg, srv: srv, host: strings.TrimPrefix(srv.URL, "http://")}
}

func (n *node) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(n.host + "/" + s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// push writes img to the node as repo:tag and returns its digest.
func (n *node) push(t *testing.T, repoTag string, img ggcrv1.Image) ggcrv1.Hash {
	t.Helper()
	if err := remote.Write(n.ref(t, repoTag), img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// digestOf returns the digest repo:tag has on the node, or "" when it has no such tag.
func (n *node) digestOf(t *testing.T, repoTag string) string {
	t.Helper()
	desc, err := remote.Head(n.ref(t, repoTag))
	if err != nil {
		return ""
	}
	return desc.Digest.String()
}

// randomImage is an OCI image of layers random layers of size bytes each.
func randomImage(t *testing.T, size int64, layers int) ggcrv1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return mutate.MediaType(img, types.OCIManifestSchema1)
}

// engineOptions are fast defaults for tests: small chunks, short backoff.
func engineOptions(t *testing.T, parentURL string, repos ...string) sync.Options {
	return sync.Options{
		Parent:       sync.ParentOptions{URL: parentURL},
		Repositories: repos,
		Referrers:    true,
		Schedule:     "* * * * *",
		ChunkSize:    256 << 10,
		Parallelism:  2,
		StateDir:     t.TempDir(),
		Retry:        sync.RetryPolicy{Attempts: 8, Base: 10 * time.Millisecond, Max: 200 * time.Millisecond},
		Log:          zaptest.NewLogger(t),
	}
}

func newEngine(t *testing.T, opts sync.Options, child *node) *sync.Engine {
	t.Helper()
	e, err := sync.New(opts, child.reg, config.CronParser)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// requireSame fails unless repo:tag has the same digest on both nodes and every blob of it has
// identical bytes.
func requireSame(t *testing.T, parent, child *node, repoTag string) {
	t.Helper()
	pd, cd := parent.digestOf(t, repoTag), child.digestOf(t, repoTag)
	if pd == "" || pd != cd {
		t.Fatalf("%s: parent digest %q, child digest %q", repoTag, pd, cd)
	}
	img, err := remote.Image(child.ref(t, repoTag))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc) // ggcr verifies the digest while reading
		rc.Close()
		if err != nil {
			t.Fatalf("layer %s: %v", d, err)
		}
		if sz, _ := l.Size(); int64(len(b)) != sz {
			t.Fatalf("layer %s: %d bytes, want %d", d, len(b), sz)
		}
	}
}

// indexOf builds an OCI index of images by platform ("os/arch").
func indexOf(t *testing.T, images map[string]any) ggcrv1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for p, img := range images {
		os, arch, _ := strings.Cut(p, "/")
		adds = append(adds, mutate.IndexAddendum{Add: img.(ggcrv1.Image), Descriptor: ggcrv1.Descriptor{
			Platform: &ggcrv1.Platform{OS: os, Architecture: arch}}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

// signatureFor is an OCI 1.1 artifact whose subject is target.
func signatureFor(t *testing.T, target interface {
	Digest() (ggcrv1.Hash, error)
	Size() (int64, error)
	MediaType() (types.MediaType, error)
}) ggcrv1.Image {
	t.Helper()
	d, _ := target.Digest()
	size, _ := target.Size()
	mt, _ := target.MediaType()
	sig := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	sig = mutate.ConfigMediaType(sig, "application/vnd.example.signature.v1")
	layer := static(t, []byte("signature"), "application/vnd.example.signature.v1")
	sig, err := mutate.Append(sig, mutate.Addendum{Layer: layer})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(sig, ggcrv1.Descriptor{MediaType: mt, Digest: d, Size: size}).(ggcrv1.Image)
}

func static(t *testing.T, b []byte, mt types.MediaType) ggcrv1.Layer {
	t.Helper()
	return staticLayer{b: b, mt: mt}
}

func mustDigest(t *testing.T, x interface{ Digest() (ggcrv1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

var _ = bytes.Equal

// copyRepo copies repo:tag from one node into another's store, bypassing whatever wraps the
// destination's handler (auth, faults).
func copyRepo(t *testing.T, from, to *node, repoTag string) {
	t.Helper()
	img, err := remote.Image(from.ref(t, repoTag))
	if err != nil {
		t.Fatal(err)
	}
	direct := httptest.NewServer(to.reg.Handler())
	defer direct.Close()
	dst, err := name.ParseReference(strings.TrimPrefix(direct.URL, "http://") + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img); err != nil {
		t.Fatal(err)
	}
}
