package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sha512Image returns an image manifest whose config and layer are named by sha512, and both.
func sha512Image(t *testing.T) (manifest []byte, config, layer []byte) {
	t.Helper()
	config = []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer = randomBytes(t, 4096)
	m := v1.Manifest{
		Versioned: specsVersioned,
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.SHA512.FromBytes(config), Size: int64(len(config))},
		Layers:    []v1.Descriptor{{MediaType: v1.MediaTypeImageLayerGzip, Digest: digest.SHA512.FromBytes(layer), Size: int64(len(layer))}},
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return manifest, config, layer
}

// TestSHA512Content covers content addressed by sha512 as clients meet it: blobs uploaded,
// read and mounted by their sha512 digest, a manifest pushed by its sha512 digest with tag
// parameters, every answer naming the digest the client named; deleting it by either digest
// deletes it by both; garbage collection keeps what is referenced by sha512 and deletes it
// once it is not; other algorithms and wrong digests are refused with DIGEST_INVALID.
func TestSHA512Content(t *testing.T) {
	r, srv := newTestRegistry(t)
	c := rawClient{t, srv}
	manifest, config, layer := sha512Image(t)
	layerDigest, configDigest := digest.SHA512.FromBytes(layer), digest.SHA512.FromBytes(config)
	manifestDigest := digest.SHA512.FromBytes(manifest)

	// Blobs: upload, read, refuse wrong digests and other algorithms.
	for _, b := range [][]byte{config, layer} {
		d := digest.SHA512.FromBytes(b)
		a := c.pushBlob("app", b, d)
		if a.status != http.StatusCreated || a.header.Get("Docker-Content-Digest") != d.String() || !strings.HasSuffix(a.header.Get("Location"), "/blobs/"+d.String()) {
			t.Fatalf("uploading %s: %d, digest %q, location %q: %s", d, a.status, a.header.Get("Docker-Content-Digest"), a.header.Get("Location"), a.body)
		}
	}
	if a := c.pushBlob("app", []byte("other bytes"), layerDigest); a.status != http.StatusBadRequest || a.code() != "DIGEST_INVALID" {
		t.Errorf("uploading other bytes as %s: %d %s, want 400 DIGEST_INVALID", layerDigest, a.status, a.body)
	}
	if a := c.pushBlob("app", layer, digest.SHA384.FromBytes(layer)); a.status != http.StatusBadRequest || a.code() != "DIGEST_INVALID" || !strings.Contains(string(a.body), `\"sha384\" is not supported`) {
		t.Errorf("uploading by sha384: %d %s, want 400 DIGEST_INVALID naming the algorithm", a.status, a.body)
	}
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		a := c.do(method, "/v2/app/blobs/"+layerDigest.String(), nil)
		if a.status != http.StatusOK || a.header.Get("Docker-Content-Digest") != layerDigest.String() || method == http.MethodGet && !bytes.Equal(a.body, layer) {
			t.Fatalf("%s of the layer by sha512: %d, digest %q", method, a.status, a.header.Get("Docker-Content-Digest"))
		}
	}

	// Mounted into another repository, it is there by its sha512.
	a := c.do(http.MethodPost, "/v2/other/blobs/uploads/?mount="+layerDigest.String()+"&from=app", nil)
	if a.status != http.StatusCreated || a.header.Get("Docker-Content-Digest") != layerDigest.String() || !strings.HasSuffix(a.header.Get("Location"), "/blobs/"+layerDigest.String()) {
		t.Fatalf("mounting the layer by sha512: %d, digest %q, location %q: %s", a.status, a.header.Get("Docker-Content-Digest"), a.header.Get("Location"), a.body)
	}
	if a := c.do(http.MethodGet, "/v2/other/blobs/"+layerDigest.String(), nil); a.status != http.StatusOK || !bytes.Equal(a.body, layer) {
		t.Fatalf("reading the mounted layer: %d %s", a.status, a.body)
	}

	// The manifest: refused under another digest or with a malformed tag, then pushed.
	mt := "Content-Type"
	if a := c.do(http.MethodPut, "/v2/app/manifests/"+digest.SHA512.FromString("x").String(), manifest, mt, v1.MediaTypeImageManifest); a.status != http.StatusBadRequest || a.code() != "DIGEST_INVALID" {
		t.Errorf("pushing the manifest under another sha512: %d %s, want 400 DIGEST_INVALID", a.status, a.body)
	}
	if a := c.do(http.MethodPut, "/v2/app/manifests/"+manifestDigest.String()+"?tag=v1&tag=.bad", manifest, mt, v1.MediaTypeImageManifest); a.status != http.StatusBadRequest || a.code() != "TAG_INVALID" || !strings.Contains(string(a.body), ".bad") {
		t.Errorf("pushing with a malformed tag parameter: %d %s, want 400 TAG_INVALID naming it", a.status, a.body)
	}
	if a := c.do(http.MethodHead, "/v2/app/manifests/"+manifestDigest.String(), nil); a.status != http.StatusNotFound {
		t.Fatalf("a refused manifest was stored: HEAD %d", a.status)
	}
	a = c.do(http.MethodPut, "/v2/app/manifests/"+manifestDigest.String()+"?tag=v1&tag=v2", manifest, mt, v1.MediaTypeImageManifest)
	if a.status != http.StatusCreated || a.header.Get("Docker-Content-Digest") != manifestDigest.String() || !strings.HasSuffix(a.header.Get("Location"), "/manifests/"+manifestDigest.String()) {
		t.Fatalf("pushing the manifest by sha512: %d, digest %q, location %q: %s", a.status, a.header.Get("Docker-Content-Digest"), a.header.Get("Location"), a.body)
	}
	if got := a.header.Values("OCI-Tag"); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Errorf("OCI-Tag %q, want v1 and v2", got)
	}
	pulls := func(wantStatus int) {
		t.Helper()
		for _, ref := range []string{manifestDigest.String(), "v1", "v2"} {
			a := c.do(http.MethodGet, "/v2/app/manifests/"+ref, nil, "Accept", v1.MediaTypeImageManifest)
			if a.status != wantStatus {
				t.Fatalf("GET manifest %s: %d, want %d: %s", ref, a.status, wantStatus, a.body)
			}
			if wantStatus == http.StatusOK && (!bytes.Equal(a.body, manifest) || a.header.Get("Docker-Content-Digest") != manifestDigest.String()) {
				t.Fatalf("GET manifest %s: digest %q, body %s", ref, a.header.Get("Docker-Content-Digest"), a.body)
			}
		}
		for _, d := range []digest.Digest{configDigest, layerDigest} {
			if a := c.do(http.MethodGet, "/v2/app/blobs/"+d.String(), nil); a.status != wantStatus {
				t.Fatalf("GET blob %s: %d, want %d", d, a.status, wantStatus)
			}
		}
	}
	pulls(http.StatusOK)

	// A signature of it, pushed by its sha512 digest, is its one referrer.
	sig, err := json.Marshal(v1.Manifest{
		Versioned:    specsVersioned,
		MediaType:    v1.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.signature",
		Config:       v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: configDigest, Size: int64(len(config))},
		Layers:       []v1.Descriptor{{MediaType: v1.MediaTypeImageLayerGzip, Digest: layerDigest, Size: int64(len(layer))}},
		Subject:      &v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: manifestDigest, Size: int64(len(manifest))},
	})
	if err != nil {
		t.Fatal(err)
	}
	sigDigest := digest.SHA512.FromBytes(sig)
	if a := c.do(http.MethodPut, "/v2/app/manifests/"+sigDigest.String(), sig, mt, v1.MediaTypeImageManifest); a.status != http.StatusCreated || a.header.Get("OCI-Subject") != manifestDigest.String() {
		t.Fatalf("pushing a signature by sha512: %d, OCI-Subject %q: %s", a.status, a.header.Get("OCI-Subject"), a.body)
	}
	referrers := func() []digest.Digest {
		t.Helper()
		a := c.do(http.MethodGet, "/v2/app/referrers/"+manifestDigest.String(), nil)
		var idx v1.Index
		if a.status != http.StatusOK || json.Unmarshal(a.body, &idx) != nil {
			t.Fatalf("listing referrers: %d %s", a.status, a.body)
		}
		var ds []digest.Digest
		for _, m := range idx.Manifests {
			ds = append(ds, m.Digest)
		}
		return ds
	}
	if got := referrers(); !slices.Equal(got, []digest.Digest{sigDigest}) {
		t.Fatalf("referrers %v, want the signature's sha512 %s", got, sigDigest)
	}

	// Garbage collection keeps it all, its bytes being stored by sha256 and referenced by
	// sha512, and the untagged signature as a referrer of a tagged image.
	gc := func() GCResult {
		t.Helper()
		res, err := r.CollectGarbage(context.Background(), GCOptions{RemoveUntagged: true})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := gc(); res.BlobsDeleted != 0 || res.ManifestsDeleted != 0 {
		t.Fatalf("garbage collection of a tagged sha512 image deleted %d blobs, %d manifests", res.BlobsDeleted, res.ManifestsDeleted)
	}
	pulls(http.StatusOK)
	if got := referrers(); !slices.Equal(got, []digest.Digest{sigDigest}) {
		t.Fatalf("after garbage collection, referrers %v, want the signature's sha512 %s", got, sigDigest)
	}
	if a := c.do(http.MethodDelete, "/v2/app/manifests/"+sigDigest.String(), nil); a.status != http.StatusAccepted {
		t.Fatalf("deleting the signature: %d %s", a.status, a.body)
	}

	// Deleted by its sha256, it is gone by its sha512 and its tags too; pushed again, and
	// deleted by its sha512, it is gone by its sha256.
	canonical := digest.FromBytes(manifest)
	if a := c.do(http.MethodDelete, "/v2/app/manifests/"+canonical.String(), nil); a.status != http.StatusAccepted {
		t.Fatalf("deleting by sha256: %d %s", a.status, a.body)
	}
	if a := c.do(http.MethodGet, "/v2/app/manifests/"+manifestDigest.String(), nil); a.status != http.StatusNotFound {
		t.Fatalf("after deleting by sha256, GET by sha512: %d", a.status)
	}
	if a := c.do(http.MethodGet, "/v2/app/manifests/v1", nil); a.status != http.StatusNotFound {
		t.Fatalf("after deleting by sha256, GET by tag: %d", a.status)
	}
	if a := c.do(http.MethodPut, "/v2/app/manifests/"+manifestDigest.String(), manifest, mt, v1.MediaTypeImageManifest); a.status != http.StatusCreated {
		t.Fatalf("pushing again: %d %s", a.status, a.body)
	}
	if a := c.do(http.MethodDelete, "/v2/app/manifests/"+manifestDigest.String(), nil); a.status != http.StatusAccepted {
		t.Fatalf("deleting by sha512: %d %s", a.status, a.body)
	}
	if a := c.do(http.MethodGet, "/v2/app/manifests/"+canonical.String(), nil); a.status != http.StatusNotFound {
		t.Fatalf("after deleting by sha512, GET by sha256: %d", a.status)
	}

	// Once nothing references them, garbage collection deletes the blobs. (The first one
	// removed the layer from "other", where no manifest referenced it.)
	if res := gc(); res.BlobsDeleted != 4 {
		t.Errorf("garbage collection after the deletes removed %d blobs, want 4 (config, layer, image, signature)", res.BlobsDeleted)
	}
	pulls(http.StatusNotFound)
	var left []string
	_ = filepath.WalkDir(filepath.Join(r.DataDir(), "docker", "registry", "v2", "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Errorf("blob files left after garbage collection: %v", left)
	}
}
