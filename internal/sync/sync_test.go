package sync_test

import (
	"context"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
