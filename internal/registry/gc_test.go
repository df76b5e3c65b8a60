package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// gcFixture pushes images through the real handler.
type gcFixture struct {
	t    *testing.T
	r    *Registry
	srv  *httptest.Server
	host string
}

func newGCFixture(t *testing.T) *gcFixture {
	r, srv := newTestRegistry(t)
	return &gcFixture{t: t, r: r, srv: srv, host: strings.TrimPrefix(srv.URL, "http://")}
}

func (f *gcFixture) ref(s string) name.Reference {
	f.t.Helper()
	ref, err := name.ParseReference(f.host + "/" + s)
	if err != nil {
		f.t.Fatal(err)
	}
	return ref
}

func (f *gcFixture) write(s string, img ggcr.Image) {
	f.t.Helper()
	if err := remote.Write(f.ref(s), img); err != nil {
		f.t.Fatalf("pushing %s: %v", s, err)
	}
}

// writeByDigest pushes img to repo untagged.
func (f *gcFixture) writeByDigest(repo string, img ggcr.Image) digest.Digest {
	f.t.Helper()
	d := mustDigest(f.t, img)
	f.write(repo+"@"+d.String(), img)
	return d
}

func (f *gcFixture) writeLayer(repo string, l ggcr.Layer) digest.Digest {
	f.t.Helper()
	r, err := name.NewRepository(f.host + "/" + repo)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := remote.WriteLayer(r, l); err != nil {
		f.t.Fatal(err)
	}
	d, _ := l.Digest()
	return digest.Digest(d.String())
}

func (f *gcFixture) status(method, path string) int {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, nil)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

type digester interface{ Digest() (ggcr.Hash, error) }

func mustDigest(t *testing.T, x digester) digest.Digest {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// blobsOf returns an image's config and layer digests.
func blobsOf(t *testing.T, img ggcr.Image) []digest.Digest {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	return out
}

func randomImage(t *testing.T, layers int64) ggcr.Image {
	t.Helper()
	img, err := random.Image(512, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// artifact is an OCI 1.1 artifact (a signature or an SBOM) whose subject is img.
func artifact(t *testing.T, subject describable, mt types.MediaType, content string) ggcr.Image {
	t.Helper()
	art := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	art = mutate.ConfigMediaType(art, "application/vnd.example.config+json")
	art, err := mutate.Append(art, mutate.Addendum{Layer: static.NewLayer([]byte(content), mt)})
	if err != nil {
		t.Fatal(err)
	}
	desc, err := partialDescriptor(subject)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(art, *desc).(ggcr.Image)
}

type describable interface {
	Digest() (ggcr.Hash, error)
	Size() (int64, error)
	MediaType() (types.MediaType, error)
}

func partialDescriptor(x describable) (*ggcr.Descriptor, error) {
	d, err := x.Digest()
	if err != nil {
		return nil, err
	}
	size, err := x.Size()
	if err != nil {
		return nil, err
	}
	mt, err := x.MediaType()
	if err != nil {
		return nil, err
	}
	return &ggcr.Descriptor{Digest: d, Size: size, MediaType: mt}, nil
}

// ageStore sets the modification time of every file of the store back by two hours, past the
// one-hour grace.
func ageStore(t *testing.T, dataDir string) {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	err := filepath.WalkDir(filepath.Join(dataDir, "docker"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot lists every file under dir with its size and modification time.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %d\n", p, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func items(repo string, ds ...digest.Digest) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, repo+"@"+d.String())
	}
	sort.Strings(out)
	return out
}

func itemStrings(list []GCItem) []string {
	out := make([]string, 0, len(list))
	for _, it := range list {
		out = append(out, it.Repository+"@"+it.Digest.String())
	}
	sort.Strings(out)
	return out
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// TestCollectGarbageKeepsEveryTaggedImage stores tagged images, an index of two platforms,
// referrers, an untagged dangling image sharing a layer with another repository, an untagged
// image whose tag was removed, and unreferenced blobs; collects with RemoveUntagged; and pulls
// every tagged image and referrer back completely.
func TestCollectGarbageKeepsEveryTaggedImage(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()

	imgA := randomImage(t, 2)
	f.write("app:v1", imgA)
	dA := mustDigest(t, imgA)

	amd, arm := randomImage(t, 1), randomImage(t, 1)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: ggcr.Descriptor{Platform: &ggcr.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: ggcr.Descriptor{Platform: &ggcr.Platform{OS: "linux", Architecture: "arm64"}}})
	if err := remote.WriteIndex(f.ref("app:multi"), idx); err != nil {
		t.Fatal(err)
	}
	dIdx, dAmd := mustDigest(t, idx), mustDigest(t, amd)

	// A signature of app:v1 (its index entry is kept) and an SBOM of an index child whose index
	// entry is lost: its subject field alone must keep it.
	sig := artifact(t, imgA, "application/vnd.example.signature", "signed "+dA.String())
	dSig := f.writeByDigest("app", sig)
	sbom := artifact(t, amd, "application/spdx+json", `{"spdxVersion":"SPDX-2.3"}`)
	dSBOM := f.writeByDigest("app", sbom)
	lost := filepath.Join(f.r.referrers.subjectDir("app", dAmd), entryName(dSBOM))
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	// An index entry whose manifest was never stored.
	ghost := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString("ghost"), Size: 5}
	if err := f.r.referrers.Record("app", dA, ghost); err != nil {
		t.Fatal(err)
	}

	// other:v1 and an untagged image in app share layer L.
	shared, err := random.Layer(512, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	dShared := digest.Digest(must(shared.Digest()).String())
	other, err := mutate.AppendLayers(randomImage(t, 1), shared)
	if err != nil {
		t.Fatal(err)
	}
	f.write("other:v1", other)
	dangling, err := mutate.AppendLayers(randomImage(t, 1), shared)
	if err != nil {
		t.Fatal(err)
	}
	dDangling := f.writeByDigest("app", dangling)
	danglingBlobs := blobsOf(t, dangling) // config, its own layer, the shared layer

	// app:old, untagged since.
	oldImg := randomImage(t, 2)
	f.write("app:old", oldImg)
	dOld := mustDigest(t, oldImg)
	if err := f.r.Untag(ctx, "app", "old"); err != nil {
		t.Fatal(err)
	}

	// A blob uploaded and never referenced, long ago.
	stale, _ := random.Layer(256, types.DockerLayer)
	dStale := f.writeLayer("app", stale)

	ageStore(t, f.r.DataDir())

	// A blob uploaded moments ago, whose manifest is not pushed yet.
	fresh, _ := random.Layer(256, types.DockerLayer)
	dFresh := f.writeLayer("app", fresh)

	// distribution's descriptor cache now knows the dangling image's own layer.
	if code := f.status(http.MethodHead, "/v2/app/blobs/"+danglingBlobs[1].String()); code != http.StatusOK {
		t.Fatalf("HEAD of a stored blob: %d", code)
	}

	wantManifests := items("app", dDangling, dOld)
	wantLinks := items("app", append(append([]digest.Digest{dStale}, danglingBlobs...), blobsOf(t, oldImg)...)...)
	wantBlobs := append([]digest.Digest{dDangling, danglingBlobs[0], danglingBlobs[1], dOld, dStale}, blobsOf(t, oldImg)...)
	sort.Slice(wantBlobs, func(i, j int) bool { return wantBlobs[i] < wantBlobs[j] })

	opts := GCOptions{RemoveUntagged: true, Grace: time.Hour, DryRun: true}
	before := snapshot(t, f.r.DataDir())
	dry, err := f.r.CollectGarbage(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, f.r.DataDir()); after != before {
		t.Fatalf("the dry run changed the data directory:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := itemStrings(dry.Manifests); !equalStrings(got, wantManifests) {
		t.Errorf("dry run manifests:\n%v\nwant\n%v", got, wantManifests)
	}
	if got := itemStrings(dry.BlobLinks); !equalStrings(got, wantLinks) {
		t.Errorf("dry run blob links:\n%v\nwant\n%v", got, wantLinks)
	}
	var gotBlobs []digest.Digest
	var wantBytes int64
	for _, b := range dry.Blobs {
		gotBlobs = append(gotBlobs, b.Digest)
		wantBytes += b.Size
	}
	if fmt.Sprint(gotBlobs) != fmt.Sprint(wantBlobs) {
		t.Errorf("dry run blobs:\n%v\nwant\n%v", gotBlobs, wantBlobs)
	}
	if dry.BytesFreed != wantBytes || dry.ReferrerEntriesPruned != 1 || dry.ReferrerEntriesRestored != 1 || dry.Repositories != 2 {
		t.Errorf("dry run: %+v", dry)
	}

	opts.DryRun = false
	res, err := f.r.CollectGarbage(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ManifestsDeleted != dry.ManifestsDeleted || res.BlobLinksRemoved != dry.BlobLinksRemoved ||
		res.BlobsDeleted != dry.BlobsDeleted || res.BytesFreed != dry.BytesFreed ||
		res.ReferrerEntriesPruned != dry.ReferrerEntriesPruned || res.ReferrerEntriesRestored != dry.ReferrerEntriesRestored {
		t.Errorf("collection %+v differs from its dry run %+v", res, dry)
	}
	if len(res.Manifests)+len(res.BlobLinks)+len(res.Blobs) != 0 {
		t.Errorf("lists are for dry runs: %+v", res)
	}

	// Every tagged image, index child and referrer pulls completely, with the same digests.
	pullImage := func(s string, want digest.Digest) {
		t.Helper()
		img, err := remote.Image(f.ref(s))
		if err != nil {
			t.Fatalf("pulling %s: %v", s, err)
		}
		if got := mustDigest(t, img); got != want {
			t.Fatalf("%s: digest %s, want %s", s, got, want)
		}
		if err := pullsCompletely(img); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	pullImage("app:v1", dA)
	pullImage("other:v1", mustDigest(t, other))
	pullImage("app@"+dSig.String(), dSig)
	pullImage("app@"+dSBOM.String(), dSBOM)
	ii, err := remote.Index(f.ref("app:multi"))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustDigest(t, ii); got != dIdx {
		t.Fatalf("index digest %s, want %s", got, dIdx)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index has %d children", len(im.Manifests))
	}
	for _, child := range im.Manifests {
		img, err := ii.Image(child.Digest)
		if err != nil {
			t.Fatalf("index child %s: %v", child.Digest, err)
		}
		if err := pullsCompletely(img); err != nil {
			t.Fatalf("index child %s: %v", child.Digest, err)
		}
	}
	for subject, want := range map[digest.Digest]digest.Digest{dA: dSig, dAmd: dSBOM} {
		got, err := f.r.referrers.List(ctx, "app", subject, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Digest != want {
			t.Errorf("referrers of %s: %+v, want %s", subject, got, want)
		}
	}

	// The dangling and the untagged images are gone, with their exclusive blobs; the shared
	// layer stays for other:v1; the stale blob is gone, the fresh one stays.
	for _, d := range []digest.Digest{dDangling, dOld} {
		if ok, err := f.r.HasManifest(ctx, "app", d); err != nil || ok {
			t.Errorf("manifest %s still stored (%v)", d, err)
		}
		if code := f.status(http.MethodHead, "/v2/app/manifests/"+d.String()); code != http.StatusNotFound {
			t.Errorf("HEAD manifest %s: %d", d, code)
		}
	}
	for _, d := range wantBlobs {
		if _, ok, err := f.r.StatBlob(ctx, d); err != nil || ok {
			t.Errorf("blob %s still stored (%v)", d, err)
		}
	}
	if code := f.status(http.MethodHead, "/v2/app/blobs/"+danglingBlobs[1].String()); code != http.StatusNotFound {
		t.Errorf("HEAD of a deleted blob answered %d from a stale cache", code)
	}
	if ok, _ := f.r.HasBlob(ctx, "app", dShared); ok {
		t.Error("the shared layer is still linked in app")
	}
	if ok, _ := f.r.HasBlob(ctx, "other", dShared); !ok {
		t.Error("the shared layer is gone from other")
	}
	if ok, _ := f.r.HasBlob(ctx, "app", dFresh); !ok {
		t.Error("a blob uploaded within the grace is gone")
	}
	if _, err := os.Stat(filepath.Join(f.r.referrers.subjectDir("app", dA), entryName(ghost.Digest))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the ghost referrer entry was not pruned: %v", err)
	}
	if _, err := os.Stat(lost); err != nil {
		t.Errorf("the lost referrer entry was not restored: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.r.DataDir(), "docker", "registry", "v2", "repositories", "app", "_uploads")); err != nil {
		t.Errorf("_uploads: %v", err)
	}

	// A second collection finds nothing more.
	again, err := f.r.CollectGarbage(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.ManifestsDeleted+again.BlobLinksRemoved+again.BlobsDeleted+again.ReferrerEntriesPruned+again.ReferrerEntriesRestored != 0 {
		t.Errorf("second collection: %+v", again)
	}
	// The fresh blob goes once it is older than the grace and still unreferenced.
	ageStore(t, f.r.DataDir())
	last, err := f.r.CollectGarbage(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if last.BlobsDeleted != 1 || last.BlobLinksRemoved != 1 {
		t.Errorf("collection after the grace: %+v", last)
	}
	if _, ok, _ := f.r.StatBlob(ctx, dFresh); ok {
		t.Error("an unreferenced blob older than the grace survived")
	}
	pullImage("app:v1", dA)
}

// pullsCompletely fetches an image's manifest, config and every layer from the registry and
// checks each against its digest.
func pullsCompletely(img ggcr.Image) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if got := digest.FromBytes(raw); got.String() != d.String() {
		return fmt.Errorf("manifest bytes hash to %s, not %s", got, d)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if got := digest.FromBytes(cfg); got.String() != m.Config.Digest.String() {
		return fmt.Errorf("config hashes to %s, not %s", got, m.Config.Digest)
	}
	for _, desc := range m.Layers {
		l, err := img.LayerByDigest(desc.Digest)
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", desc.Digest, err)
		}
		verifier := digest.Digest(desc.Digest.String()).Verifier()
		n, err := io.Copy(verifier, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", desc.Digest, err)
		}
		if n != desc.Size || !verifier.Verified() {
			return fmt.Errorf("layer %s: %d bytes that do not verify", desc.Digest, n)
		}
	}
	return nil
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Without RemoveUntagged every manifest is kept, with everything it references; only blobs no
// manifest references go.
func TestCollectGarbageKeepsUntaggedWithoutRemoveUntagged(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	img := randomImage(t, 2)
	d := f.writeByDigest("app", img)
	stale, _ := random.Layer(256, types.DockerLayer)
	dStale := f.writeLayer("app", stale)
	// A repository with blobs and no manifest yet is collected too.
	lonely, _ := random.Layer(256, types.DockerLayer)
	dLonely := f.writeLayer("lonely", lonely)
	ageStore(t, f.r.DataDir())

	res, err := f.r.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.Repositories != 2 || res.ManifestsDeleted != 0 || res.BlobLinksRemoved != 2 || res.BlobsDeleted != 2 {
		t.Fatalf("result %+v", res)
	}
	for _, d := range []digest.Digest{dStale, dLonely} {
		if _, ok, _ := f.r.StatBlob(ctx, d); ok {
			t.Errorf("the unreferenced blob %s survived", d)
		}
	}
	pulled, err := remote.Image(f.ref("app@" + d.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := pullsCompletely(pulled); err != nil {
		t.Fatal(err)
	}
}

// An untagged manifest pushed within the grace (an index's child, before its index) is kept
// with its blobs; so is an empty store.
func TestCollectGarbageSparesRecentManifests(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	if res, err := f.r.CollectGarbage(ctx, GCOptions{RemoveUntagged: true, Grace: time.Hour}); err != nil || res.Repositories != 0 {
		t.Fatalf("empty store: %+v, %v", res, err)
	}
	img := randomImage(t, 1)
	d := f.writeByDigest("app", img)
	res, err := f.r.CollectGarbage(ctx, GCOptions{RemoveUntagged: true, Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.ManifestsDeleted+res.BlobLinksRemoved+res.BlobsDeleted != 0 {
		t.Fatalf("recent content collected: %+v", res)
	}
	// The index naming it can still be pushed.
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	if err := remote.WriteIndex(f.ref("app:multi"), idx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.r.HasManifest(ctx, "app", d); !ok {
		t.Fatal("child gone")
	}
	if _, err := f.r.CollectGarbage(ctx, GCOptions{Grace: -time.Second}); err == nil {
		t.Fatal("a negative grace was accepted")
	}
}

// TestCollectGarbageBlocksWritesNotReads holds a collection inside its maintenance lock and
// checks that manifest PUTs (HTTP and store), blob commits and links wait for it while reads
// are answered.
func TestCollectGarbageBlocksWritesNotReads(t *testing.T) {
	f := newGCFixture(t)
	ctx := context.Background()
	imgA := randomImage(t, 1)
	f.write("app:v1", imgA)
	imgB := randomImage(t, 1)
	dB := f.writeByDigest("app", imgB) // its blobs are stored; its tag comes during the collection
	rawB, _ := imgB.RawManifest()
	mtB, _ := imgB.MediaType()
	layerA := blobsOf(t, imgA)[1]
	sizeA, _, err := f.r.StatBlob(ctx, layerA)
	if err != nil {
		t.Fatal(err)
	}

	upload, err := f.r.CreateUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("committed during a collection")
	if _, err := upload.Write(content); err != nil {
		t.Fatal(err)
	}

	entered, release := make(chan struct{}), make(chan struct{})
	f.r.gcHook = func(context.Context) {
		close(entered)
		<-release
	}
	gcDone := make(chan error, 1)
	go func() {
		_, err := f.r.CollectGarbage(ctx, GCOptions{RemoveUntagged: true, Grace: time.Hour})
		gcDone <- err
	}()
	<-entered

	client := &http.Client{Timeout: 10 * time.Second}
	httpPut := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, f.srv.URL+"/v2/app/manifests/v2", bytes.NewReader(rawB))
		req.Header.Set("Content-Type", string(mtB))
		resp, err := client.Do(req)
		if err != nil {
			httpPut <- -1
			return
		}
		resp.Body.Close()
		httpPut <- resp.StatusCode
	}()
	storePut := make(chan error, 1)
	go func() { storePut <- f.r.PutManifest(ctx, "app", string(mtB), rawB, dB, "v3") }()
	commit := make(chan error, 1)
	go func() {
		_, err := upload.Commit(ctx, v1.Descriptor{Digest: digest.FromBytes(content), Size: int64(len(content))})
		commit <- err
	}()
	link := make(chan error, 1)
	go func() { link <- f.r.LinkBlob(ctx, "other", layerA, sizeA) }()

	// Reads are answered while the collection holds the lock.
	for _, path := range []string{
		"/v2/", "/v2/app/manifests/v1", "/v2/app/blobs/" + layerA.String(), "/v2/app/tags/list",
		"/v2/_catalog", "/v2/app/referrers/" + mustDigest(t, imgA).String(),
	} {
		methods := []string{http.MethodGet, http.MethodHead}
		if strings.HasSuffix(path, "/list") || strings.HasSuffix(path, "_catalog") {
			methods = methods[:1] // distribution answers HEAD there with 405
		}
		for _, method := range methods {
			req, _ := http.NewRequest(method, f.srv.URL+path, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s during a collection: %v", method, path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s %s during a collection: %d", method, path, resp.StatusCode)
			}
		}
	}
	if ok, err := f.r.HasManifest(ctx, "app", dB); err != nil || !ok {
		t.Errorf("HasManifest during a collection: %v %v", ok, err)
	}

	select {
	case code := <-httpPut:
		t.Fatalf("a manifest PUT finished (%d) while the collection held the lock", code)
	case err := <-storePut:
		t.Fatalf("PutManifest finished (%v) while the collection held the lock", err)
	case err := <-commit:
		t.Fatalf("a blob commit finished (%v) while the collection held the lock", err)
	case err := <-link:
		t.Fatalf("LinkBlob finished (%v) while the collection held the lock", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	timeout := time.After(10 * time.Second)
	for _, wait := range []func() error{
		func() error { return <-gcDone },
		func() error {
			if code := <-httpPut; code != http.StatusCreated {
				return fmt.Errorf("manifest PUT after the collection: %d", code)
			}
			return nil
		},
		func() error { return <-storePut },
		func() error { return <-commit },
		func() error { return <-link },
	} {
		done := make(chan error, 1)
		go func() { done <- wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-timeout:
			t.Fatal("writes still blocked after the collection")
		}
	}
	if d, ok, _ := f.r.TagDigest(ctx, "app", "v2"); !ok || d != dB {
		t.Errorf("tag v2 = %s, %v", d, ok)
	}
}

// LinkBlob refuses a blob the store no longer holds, instead of linking nothing.
func TestLinkBlobOfMissingBlob(t *testing.T) {
	f := newGCFixture(t)
	err := f.r.LinkBlob(context.Background(), "app", digest.FromString("gone"), 4)
	if !errors.Is(err, distribution.ErrBlobUnknown) {
		t.Fatalf("LinkBlob of a missing blob: %v", err)
	}
}
