package e2e

// HTTP and OCI helpers: plain requests, blob uploads, manifests, go-containerregistry options.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types used by the tests.
const (
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mtOCIEmpty    = "application/vnd.oci.empty.v1+json"
	mtOctets      = "application/octet-stream"
)

// emptyJSON is the OCI empty descriptor's blob.
var emptyJSON = []byte("{}")

// response is a whole HTTP response: status, headers and the body read to the end.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) String() string {
	b := string(r.body)
	if len(b) > 600 {
		b = b[:600] + "…"
	}
	return fmt.Sprintf("%d %s %q", r.status, http.StatusText(r.status), b)
}

// do sends one request to the node. target is a path ("/v2/…", with query) or an absolute URL;
// header holds name, value pairs. It fails the test if no response arrives within 60s.
func (n *node) do(t testing.TB, method, target string, body []byte, header ...string) *response {
	t.Helper()
	if strings.HasPrefix(target, "/") {
		target = n.base() + target
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		t.Fatalf("building %s %s: %v", method, target, err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if strings.EqualFold(header[i], "Host") {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// expectStatus stops the test unless r has status want.
func expectStatus(t testing.TB, what string, r *response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: got %s, want status %d", what, r, want)
	}
}

// errorCode is the code of the first error in an OCI error body, or "" when there is none.
func errorCode(r *response) string {
	var body struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(r.body, &body) != nil || len(body.Errors) == 0 {
		return ""
	}
	return body.Errors[0].Code
}

// expectError reports an error unless r has status and an OCI error body whose first code is code.
func expectError(t testing.TB, what string, r *response, status int, code string) {
	t.Helper()
	if r.status != status || errorCode(r) != code {
		t.Errorf("%s: got %s, want status %d with errors[0].code %s", what, r, status, code)
	}
}

// expectRelativeLocation reports an error unless r's Location is a path under /v2/: absolute URLs
// built from the request's Host break clients behind a reverse proxy.
func expectRelativeLocation(t testing.TB, what string, r *response) {
	t.Helper()
	if loc := r.header.Get("Location"); !strings.HasPrefix(loc, "/v2/") {
		t.Errorf("%s: Location %q is not a relative /v2/ path", what, loc)
	}
}

// rangeEnd parses an upload's Range header ("0-N", optionally "bytes=0-N") and returns N.
func rangeEnd(t testing.TB, r *response) int64 {
	t.Helper()
	h := strings.TrimPrefix(r.header.Get("Range"), "bytes=")
	start, end, ok := strings.Cut(h, "-")
	if !ok || start != "0" {
		t.Fatalf("Range header %q is not of the form 0-N", r.header.Get("Range"))
	}
	n, err := strconv.ParseInt(end, 10, 64)
	if err != nil {
		t.Fatalf("Range header %q: %v", r.header.Get("Range"), err)
	}
	return n
}

// digestOf is the sha256 digest of b in OCI form.
func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// randomBytes returns size pseudo-random bytes, the same for the same seed.
func randomBytes(seed uint64, size int) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, size)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// withQuery sets key=value in the query of loc, a path or URL from a Location header.
func withQuery(t testing.TB, loc, key, value string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("parsing Location %q: %v", loc, err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// startUpload opens an upload session in repo and returns its Location.
func (n *node) startUpload(t testing.TB, repo string) string {
	t.Helper()
	r := n.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	expectStatus(t, "POST upload", r, http.StatusAccepted)
	expectRelativeLocation(t, "POST upload", r)
	return r.header.Get("Location")
}

// patchChunk sends chunk, which starts at offset start of the blob, to the upload at loc and
// returns the upload's next Location.
func (n *node) patchChunk(t testing.TB, loc string, chunk []byte, start int64) string {
	t.Helper()
	end := start + int64(len(chunk)) - 1
	r := n.do(t, http.MethodPatch, loc, chunk, "Content-Type", mtOctets, "Content-Range", fmt.Sprintf("%d-%d", start, end))
	expectStatus(t, fmt.Sprintf("PATCH %d-%d", start, end), r, http.StatusAccepted)
	expectRelativeLocation(t, "PATCH", r)
	if got := rangeEnd(t, r); got != end {
		t.Fatalf("PATCH %d-%d: Range ends at %d, want %d", start, end, got, end)
	}
	return r.header.Get("Location")
}

// finishUpload completes the upload at loc with digest dgst and body (which may be nil).
func (n *node) finishUpload(t testing.TB, loc, dgst string, body []byte) *response {
	t.Helper()
	r := n.do(t, http.MethodPut, withQuery(t, loc, "digest", dgst), body, "Content-Type", mtOctets)
	expectStatus(t, "PUT upload "+dgst, r, http.StatusCreated)
	expectRelativeLocation(t, "PUT upload", r)
	if got := r.header.Get("Docker-Content-Digest"); got != dgst {
		t.Errorf("PUT upload: Docker-Content-Digest %q, want %q", got, dgst)
	}
	return r
}

// uploadBlob stores data in repo with a monolithic upload (POST, then PUT with the digest) and
// returns its digest.
func (n *node) uploadBlob(t testing.TB, repo string, data []byte) string {
	t.Helper()
	dgst := digestOf(data)
	n.finishUpload(t, n.startUpload(t, repo), dgst, data)
	return dgst
}

// getBlob fetches a blob and checks its digest.
func (n *node) getBlob(t testing.TB, repo, dgst string) []byte {
	t.Helper()
	r := n.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+dgst, nil)
	expectStatus(t, "GET blob "+dgst, r, http.StatusOK)
	if got := digestOf(r.body); got != dgst {
		t.Fatalf("GET blob %s: the body's digest is %s", dgst, got)
	}
	return r.body
}

// putManifest stores a manifest body under ref (a tag or digest).
func (n *node) putManifest(t testing.TB, repo, ref, mediaType string, body []byte) *response {
	t.Helper()
	return n.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, "Content-Type", mediaType)
}

// ref parses "repo:tag" or "repo@digest" as a reference on this node.
func (n *node) ref(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(n.addr + "/" + s)
	if err != nil {
		t.Fatalf("parsing reference %q: %v", s, err)
	}
	return r
}

// digestRef is "repo@digest" on this node.
func (n *node) digestRef(t testing.TB, repo string, h v1.Hash) name.Digest {
	t.Helper()
	d, err := name.NewDigest(n.addr + "/" + repo + "@" + h.String())
	if err != nil {
		t.Fatalf("parsing digest reference: %v", err)
	}
	return d
}

// remote are go-containerregistry options for this node: its transport and a bounded context.
func (n *node) remote(t testing.TB) []remote.Option {
	return []remote.Option{remote.WithTransport(n.client.Transport), remote.WithContext(testContext(t, 2*time.Minute))}
}

// pushImage writes img to ref ("repo:tag") with go-containerregistry and returns its digest.
func (n *node) pushImage(t testing.TB, ref string, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(n.ref(t, ref), img, n.remote(t)...); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return mustDigest(t, img)
}

// randomImage is an OCI image with layers random gzip layers of about size bytes each.
func randomImage(t testing.TB, layers int, size int64) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var ls []v1.Layer
	for range layers {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	img, err := mutate.AppendLayers(img, ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// randomIndex is an OCI image index of one randomImage (one layer of about size bytes) per
// linux architecture.
func randomIndex(t testing.TB, size int64, archs ...string) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, arch := range archs {
		adds = append(adds, mutate.IndexAddendum{
			Add:        randomImage(t, 1, size),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

func mustDigest(t testing.TB, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustRawManifest(t testing.TB, m interface{ RawManifest() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compressedLayers returns the digest and bytes of every layer of img, as pushed.
func compressedLayers(t testing.TB, img v1.Image) map[string][]byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[digestOf(b)] = b
	}
	return out
}

// expectSameImage pulls ref and checks that its digest, manifest and every layer's bytes equal
// want's.
func (n *node) expectSameImage(t testing.TB, ref name.Reference, want v1.Image) {
	t.Helper()
	got, err := remote.Image(ref, n.remote(t)...)
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	if g, w := mustDigest(t, got), mustDigest(t, want); g != w {
		t.Fatalf("pulled %s: digest %s, pushed %s", ref, g, w)
	}
	if !bytes.Equal(mustRawManifest(t, got), mustRawManifest(t, want)) {
		t.Errorf("pulled %s: the manifest bytes differ from the pushed ones", ref)
	}
	wantLayers := compressedLayers(t, want)
	gotLayers := compressedLayers(t, got)
	if len(gotLayers) != len(wantLayers) {
		t.Fatalf("pulled %s: %d layers, pushed %d", ref, len(gotLayers), len(wantLayers))
	}
	for d, b := range wantLayers {
		if !bytes.Equal(gotLayers[d], b) {
			t.Errorf("pulled %s: layer %s differs from the pushed bytes", ref, d)
		}
	}
}
