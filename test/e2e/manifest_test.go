package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestImagePushPull pushes images with go-containerregistry and pulls them by tag and by digest.
func TestImagePushPull(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	dockerImg, err := random.Image(80<<10, 2) // Docker schema 2 media types
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, repo string
		img        v1.Image
	}{
		{"OCI image", "pull/oci", randomImage(t, 3, 100<<10)},
		{"Docker schema 2 image", "pull/docker", dockerImg},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dgst := n.pushImage(t, tc.repo+":v1", tc.img)
			raw := mustRawManifest(t, tc.img)
			mt, err := tc.img.MediaType()
			if err != nil {
				t.Fatal(err)
			}
			for _, ref := range []string{tc.repo + ":v1", tc.repo + "@" + dgst.String()} {
				n.expectSameImage(t, n.ref(t, ref), tc.img)
			}

			// HEAD and GET on the manifest, by tag and by digest.
			for _, ref := range []string{"v1", dgst.String()} {
				path := "/v2/" + tc.repo + "/manifests/" + ref
				accept := []string{"Accept", string(mt)}
				h := n.do(t, http.MethodHead, path, nil, accept...)
				expectStatus(t, "HEAD "+path, h, http.StatusOK)
				if got := h.header.Get("Docker-Content-Digest"); got != dgst.String() {
					t.Errorf("HEAD %s: Docker-Content-Digest %q, want %q", path, got, dgst)
				}
				if got := h.header.Get("Content-Length"); got != strconv.Itoa(len(raw)) {
					t.Errorf("HEAD %s: Content-Length %q, want %d", path, got, len(raw))
				}
				if len(h.body) != 0 {
					t.Errorf("HEAD %s: %d body bytes", path, len(h.body))
				}
				g := n.do(t, http.MethodGet, path, nil, accept...)
				expectStatus(t, "GET "+path, g, http.StatusOK)
				if !bytes.Equal(g.body, raw) {
					t.Errorf("GET %s: the manifest bytes differ from the pushed ones", path)
				}
				if got := g.header.Get("Content-Type"); got != string(mt) {
					t.Errorf("GET %s: Content-Type %q, want %q", path, got, mt)
				}
			}

			// HEAD and GET on every blob.
			layers := compressedLayers(t, tc.img)
			cfg, err := tc.img.RawConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			layers[digestOf(cfg)] = cfg
			for d, want := range layers {
				path := "/v2/" + tc.repo + "/blobs/" + d
				h := n.do(t, http.MethodHead, path, nil)
				expectStatus(t, "HEAD "+path, h, http.StatusOK)
				if got := h.header.Get("Docker-Content-Digest"); got != d {
					t.Errorf("HEAD %s: Docker-Content-Digest %q", path, got)
				}
				if got := h.header.Get("Content-Length"); got != strconv.Itoa(len(want)) {
					t.Errorf("HEAD %s: Content-Length %q, want %d", path, got, len(want))
				}
				if got := n.getBlob(t, tc.repo, d); !bytes.Equal(got, want) {
					t.Errorf("GET %s: the bytes differ from the pushed ones", path)
				}
			}
		})
	}
}

// TestIndexPushPull pushes a multi-platform image index and pulls it by tag and by digest.
func TestIndexPushPull(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	idx := randomIndex(t, 50<<10, "amd64", "arm64")
	dgst := mustDigest(t, idx)
	pushed, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(n.ref(t, "index/app:multi"), idx, n.remote(t)...); err != nil {
		t.Fatalf("pushing the index: %v", err)
	}

	for _, ref := range []string{"index/app:multi", "index/app@" + dgst.String()} {
		t.Run(ref, func(t *testing.T) {
			got, err := remote.Index(n.ref(t, ref), n.remote(t)...)
			if err != nil {
				t.Fatalf("pulling %s: %v", ref, err)
			}
			if g := mustDigest(t, got); g != dgst {
				t.Fatalf("pulled %s: digest %s, pushed %s", ref, g, dgst)
			}
			if !bytes.Equal(mustRawManifest(t, got), mustRawManifest(t, idx)) {
				t.Errorf("pulled %s: the index bytes differ", ref)
			}
			im, err := got.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Manifests) != 2 {
				t.Fatalf("pulled %s: %d manifests, want 2", ref, len(im.Manifests))
			}
			for i, desc := range im.Manifests {
				want := pushed.Manifests[i].Digest
				wantImg, err := idx.Image(want)
				if err != nil {
					t.Fatal(err)
				}
				if desc.Digest != want || desc.Platform == nil || desc.Platform.Architecture != []string{"amd64", "arm64"}[i] {
					t.Errorf("manifest %d: %+v, want digest %s", i, desc, want)
				}
				child, err := got.Image(desc.Digest)
				if err != nil {
					t.Fatalf("pulling child %s: %v", desc.Digest, err)
				}
				if g := mustDigest(t, child); g != want {
					t.Errorf("child %d: digest %s, want %s", i, g, want)
				}
				n.expectSameImage(t, n.ref(t, "index/app@"+want.String()), wantImg)
			}
		})
	}

	h := n.do(t, http.MethodHead, "/v2/index/app/manifests/multi", nil, "Accept", mtOCIIndex)
	expectStatus(t, "HEAD index", h, http.StatusOK)
	if got := h.header.Get("Docker-Content-Digest"); got != dgst.String() {
		t.Errorf("HEAD index: Docker-Content-Digest %q, want %s", got, dgst)
	}
	if got, want := h.header.Get("Content-Length"), fmt.Sprint(len(mustRawManifest(t, idx))); got != want {
		t.Errorf("HEAD index: Content-Length %q, want %s", got, want)
	}
	if got := h.header.Get("Content-Type"); got != mtOCIIndex {
		t.Errorf("HEAD index: Content-Type %q, want %s", got, mtOCIIndex)
	}
}
