package sync_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/outpost-registry/outpost/internal/registry"
)

func TestMirrorsTagsWithIdenticalDigests(t *testing.T) {
	parent, child := newNode(t, nil), newNode(t, nil)
	parent.push(t, "team/app:v1", randomImage(t, 300<<10, 3))
	parent.push(t, "team/app:v2", randomImage(t, 100<<10, 1))
	parent.push(t, "team/sub/deep:v1", randomImage(t, 10<<10, 1))
	parent.push(t, "other/app:v1", randomImage(t, 10<<10, 1))

	e := newEngine(t, engineOptions(t, parent.srv.URL, "team/*"), child)
	s := e.RunPass(context.Background(), false)
	if s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v1")
	requireSame(t, parent, child, "team/app:v2")
	if child.digestOf(t, "team/sub/deep:v1") != "" || child.digestOf(t, "other/app:v1") != "" {
		t.Fatal("synced repositories outside team/*")
	}
	if s.BlobsFetched != 6 || s.ManifestsSynced != 2 {
		t.Fatalf("fetched %d blobs and %d manifests, want 6 and 2", s.BlobsFetched, s.ManifestsSynced)
	}

	// A quiet pass fetches nothing but listings and HEADs.
	s = e.RunPass(context.Background(), false)
	if s.Result != "ok" || s.BlobsFetched != 0 || s.ManifestsSynced != 0 || s.BytesFromParent > 4096 {
		t.Fatalf("quiet pass did work: %+v", s)
	}
}

func TestDeepWildcardAndTagFilters(t *testing.T) {
	parent, child := newNode(t, nil), newNode(t, nil)
	img := randomImage(t, 1024, 1)
	for _, rt := range []string{"team/sub/deep:1.0", "team/sub/deep:1.0-rc1", "team/sub/deep:latest", "team/app:2.0"} {
		parent.push(t, rt, img)
	}
	opts := engineOptions(t, parent.srv.URL, "team/**")
	opts.TagInclude = []string{`\d+\.\d+.*`}
	opts.TagExclude = []string{`.*-rc\d+`}
	e := newEngine(t, opts, child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	for rt, want := range map[string]bool{"team/sub/deep:1.0": true, "team/app:2.0": true, "team/sub/deep:1.0-rc1": false, "team/sub/deep:latest": false} {
		if got := child.digestOf(t, rt) != ""; got != want {
			t.Errorf("%s synced = %v, want %v", rt, got, want)
		}
	}
	// The same blob in two repositories crossed the link once, then was mounted.
	if s := e.Status(); s.LastPass.BlobsFetched != 2 || s.LastPass.BlobsMounted != 2 {
		t.Errorf("blobs fetched %d, mounted %d; want 2 and 2 (config and layer, once each)", s.LastPass.BlobsFetched, s.LastPass.BlobsMounted)
	}
}

func TestMovedAndDeletedTagsAreReconciled(t *testing.T) {
	parent, child := newNode(t, nil), newNode(t, nil)
	parent.push(t, "app:stable", randomImage(t, 1024, 1))
	parent.push(t, "app:old", randomImage(t, 1024, 1))
	e := newEngine(t, engineOptions(t, parent.srv.URL, "app"), child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	parent.push(t, "app:stable", randomImage(t, 2048, 1)) // moved
	if err := remote.Delete(parent.ref(t, "app:old")); err != nil {
		t.Fatal(err)
	}
	if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.TagsRemoved != 1 {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, parent, child, "app:stable")
	if child.digestOf(t, "app:old") != "" {
		t.Fatal("tag deleted on the parent is still on the child")
	}
}

func TestIndexPlatformsAndReferrers(t *testing.T) {
	parent := newNode(t, nil)
	child := newNodeWithPlatforms(t, []string{"linux/arm64"})
	amd, arm := randomImage(t, 1024, 1), randomImage(t, 2048, 1)
	idx := indexOf(t, map[string]any{"linux/amd64": amd, "linux/arm64": arm})
	if err := remote.WriteIndex(parent.ref(t, "multi:v1"), idx); err != nil {
		t.Fatal(err)
	}
	armDigest, _ := arm.Digest()
	amdDigest, _ := amd.Digest()
	idxDigest, _ := idx.Digest()
	sig := signatureFor(t, idx)
	if err := remote.Write(parent.ref(t, "multi@"+mustDigest(t, sig)), sig); err != nil {
		t.Fatal(err)
	}

	opts := engineOptions(t, parent.srv.URL, "multi")
	opts.Platforms = []string{"linux/arm64"}
	e := newEngine(t, opts, child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	if got := child.digestOf(t, "multi:v1"); got != idxDigest.String() {
		t.Fatalf("index digest %q, want the parent's %s", got, idxDigest)
	}
	if child.digestOf(t, "multi@"+armDigest.String()) == "" {
		t.Fatal("arm64 image not synced")
	}
	if child.digestOf(t, "multi@"+amdDigest.String()) != "" {
		t.Fatal("amd64 image synced although only linux/arm64 was asked for")
	}
	refs, err := remote.Referrers(child.ref(t, "multi@"+idxDigest.String()).Context().Digest(idxDigest.String()))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := refs.IndexManifest()
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != mustDigest(t, sig) {
		t.Fatalf("referrers on the child: %+v", im.Manifests)
	}
}

var _ = mutate.Append

// TestSyncsSHA512Content syncs an image whose manifest, config and layer are named by sha512
// into two repositories: every digest as the parent has it, each blob fetched once (in chunks)
// and linked into the second repository, a quiet pass that fetches nothing, and garbage
// collection on the child that keeps it all.
func TestSyncsSHA512Content(t *testing.T) {
	ctx := context.Background()
	parent, child := newNode(t, nil), newNode(t, nil)
	img := newSHA512Image(t)
	config, layer, raw, manifest := img.config, img.layer, img.raw, img.manifest
	repos := []string{"team/a", "team/b"}
	for _, repo := range repos {
		img.store(t, parent, repo, "v1")
	}

	e := newEngine(t, engineOptions(t, parent.srv.URL, "team/*"), child)
	s := e.RunPass(ctx, false)
	if s.Result != "ok" || s.BlobsFetched != 2 || s.BlobsMounted != 2 || s.ManifestsSynced != 2 {
		t.Fatalf("pass: %+v, want ok, 2 blobs fetched, 2 linked, 2 manifests", s)
	}
	holds := func() {
		t.Helper()
		for _, repo := range repos {
			if d, ok, err := child.reg.TagDigest(ctx, repo, "v1"); err != nil || !ok || d != manifest {
				t.Fatalf("%s:v1 on the child is %s (%v, %v), want %s", repo, d, ok, err, manifest)
			}
			if _, got, err := child.reg.GetManifest(ctx, repo, manifest); err != nil || !bytes.Equal(got, raw) {
				t.Fatalf("%s@%s on the child: %v", repo, manifest, err)
			}
			for _, b := range [][]byte{config, layer} {
				rc, _, err := child.reg.OpenBlob(ctx, repo, digest.SHA512.FromBytes(b))
				if err != nil {
					t.Fatalf("%s: blob %s: %v", repo, digest.SHA512.FromBytes(b), err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("%s: blob %s has other bytes (%v)", repo, digest.SHA512.FromBytes(b), err)
				}
			}
		}
	}
	holds()
	if s := e.RunPass(ctx, false); s.Result != "ok" || s.BlobsFetched != 0 || s.ManifestsSynced != 0 {
		t.Fatalf("quiet pass did work: %+v", s)
	}
	res, err := child.reg.CollectGarbage(ctx, registry.GCOptions{RemoveUntagged: true})
	if err != nil || res.BlobsDeleted != 0 || res.ManifestsDeleted != 0 {
		t.Fatalf("garbage collection on the child deleted %d blobs, %d manifests (%v)", res.BlobsDeleted, res.ManifestsDeleted, err)
	}
	holds()
}

// sha512Image is an image whose config, layer and manifest are named by sha512 digests.
type sha512Image struct {
	config, layer, raw []byte
	manifest           digest.Digest
}

func newSHA512Image(t *testing.T) sha512Image {
	t.Helper()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := make([]byte, 600<<10) // over two of the test's 256 KiB chunks
	if _, err := rand.Read(layer); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.SHA512.FromBytes(config), Size: int64(len(config))},
		Layers:    []v1.Descriptor{{MediaType: v1.MediaTypeImageLayerGzip, Digest: digest.SHA512.FromBytes(layer), Size: int64(len(layer))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return sha512Image{config: config, layer: layer, raw: raw, manifest: digest.SHA512.FromBytes(raw)}
}

// store puts the image into n's repo, tagged.
func (img sha512Image) store(t *testing.T, n *node, repo, tag string) {
	t.Helper()
	ctx := context.Background()
	for _, b := range [][]byte{img.config, img.layer} {
		w, err := n.reg.CreateUpload(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Commit(ctx, v1.Descriptor{Digest: digest.SHA512.FromBytes(b), Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.reg.PutManifest(ctx, repo, v1.MediaTypeImageManifest, img.raw, img.manifest, tag); err != nil {
		t.Fatal(err)
	}
}
