package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/stream"
)

// TestNginxProxy runs a node behind a real nginx configured with the committed
// deploy/nginx/outpost.conf, as the IoT Edge API proxy fronts a connected registry: HTTPS at
// nginx, plain HTTP to the node. Through it: pushes with layers over nginx's default 1 MiB body
// limit (streamed, monolithic and chunked uploads), pulls with identical digests, a 32 MiB blob
// download, every Location on the proxy's address, /acr reaching the node, referrers; and a
// child node that syncs from the parent through the proxy.
func TestNginxProxy(t *testing.T) {
	t.Parallel()
	bin := nginxBinary(t)
	parent := startNode(t, nodeOptions{})
	px := startNginx(t, bin, parent)
	via := px.asNode(t) // the node helpers, sending to https://127.0.0.1:PORT (nginx)
	const repo = "edge/app"

	// The API root, through the proxy.
	r := via.do(t, http.MethodGet, "/v2/", nil)
	expectStatus(t, "GET /v2/ through nginx", r, http.StatusOK)
	if v := r.header.Get("Docker-Distribution-Api-Version"); v != "registry/2.0" {
		t.Errorf("GET /v2/ through nginx: Docker-Distribution-Api-Version %q", v)
	}

	// go-containerregistry addresses the proxy by name (it would speak plain HTTP to a loopback
	// IP); the transport trusts the test's certificate and dials nginx whatever the name.
	ggcrTr := px.transport.Clone()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	ggcrTr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, px.addr)
	}
	t.Cleanup(ggcrTr.CloseIdleConnections)
	ggcrRec := &locationRecorder{next: ggcrTr}
	// Should the test stop early, the Location headers seen so far are still checked.
	locationsChecked := false
	t.Cleanup(func() {
		if !locationsChecked {
			px.locations.check(t, parent.addr)
			ggcrRec.check(t, parent.addr)
		}
	})
	_, port, _ := net.SplitHostPort(px.addr)
	opts := []remote.Option{remote.WithTransport(parent.withCredentials(ggcrRec)), remote.WithContext(testContext(t, 2*time.Minute))}
	ref, err := name.ParseReference(tlsHost + ":" + port + "/" + repo + ":v1")
	if err != nil {
		t.Fatal(err)
	}

	// An image with two 3 MiB layers of known size (PATCH with Content-Length) and a 2 MiB
	// streamed layer (PATCH with Transfer-Encoding: chunked), pushed with remote.Write.
	base := randomImage(t, 2, 3<<20)
	wantLayers := compressedLayers(t, base)
	streamed := stream.NewLayer(io.NopCloser(bytes.NewReader(randomBytes(77, 2<<20))))
	img, err := mutate.AppendLayers(base, streamed)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("pushing %s through nginx: %v", ref, err)
	}
	imgDigest := mustDigest(t, img)
	streamedDigest := mustDigest(t, streamed)
	if ggcrRec.chunked() == 0 {
		t.Errorf("remote.Write sent no chunked PATCH: the streamed upload path was not exercised")
	}

	// Pull it back through nginx: same digest, same manifest bytes, same layer bytes.
	got, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("pulling %s through nginx: %v", ref, err)
	}
	if g := mustDigest(t, got); g != imgDigest {
		t.Fatalf("pulled %s through nginx: digest %s, pushed %s", ref, g, imgDigest)
	}
	rawManifest := mustRawManifest(t, img)
	if !bytes.Equal(mustRawManifest(t, got), rawManifest) {
		t.Errorf("pulled %s through nginx: the manifest bytes differ from the pushed ones", ref)
	}
	gotLayers := compressedLayers(t, got)
	for d, b := range wantLayers {
		if !bytes.Equal(gotLayers[d], b) {
			t.Errorf("pulled layer %s through nginx: differs from the pushed bytes", d)
		}
	}
	if b, ok := gotLayers[streamedDigest.String()]; !ok || digestOf(b) != streamedDigest.String() {
		t.Errorf("pulled the streamed layer %s through nginx: missing or wrong bytes", streamedDigest)
	}
	// The node holds what the proxy said it stored.
	for d, b := range wantLayers {
		if !bytes.Equal(parent.getBlob(t, repo, d), b) {
			t.Errorf("layer %s on the node differs from the pushed bytes", d)
		}
	}

	// Monolithic upload of 5 MiB with net/http: POST, then PUT with the whole body.
	mono := randomBytes(5, 5<<20)
	monoDigest := via.uploadBlob(t, "edge/blobs", mono)
	if !bytes.Equal(via.getBlob(t, "edge/blobs", monoDigest), mono) {
		t.Errorf("monolithic 5 MiB blob read back through nginx differs")
	}

	// Chunked upload of 5 MiB: POST, three PATCHes with Content-Range, a status GET, the PUT.
	chunked := randomBytes(6, 5<<20)
	chunkedDigest := digestOf(chunked)
	loc := via.startUpload(t, "edge/blobs")
	for start := 0; start < len(chunked); start += 2 << 20 {
		end := min(start+2<<20, len(chunked))
		loc = via.patchChunk(t, loc, chunked[start:end], int64(start))
	}
	r = via.do(t, http.MethodGet, loc, nil)
	expectStatus(t, "GET upload status through nginx", r, http.StatusNoContent)
	expectRelativeLocation(t, "GET upload status through nginx", r)
	if end := rangeEnd(t, r); end != int64(len(chunked))-1 {
		t.Errorf("upload status through nginx: Range ends at %d, want %d", end, len(chunked)-1)
	}
	via.finishUpload(t, loc, chunkedDigest, nil)
	if !bytes.Equal(via.getBlob(t, "edge/blobs", chunkedDigest), chunked) {
		t.Errorf("chunked 5 MiB blob read back through nginx differs")
	}

	// A 32 MiB blob: uploaded and downloaded whole through nginx, and a ranged GET of it.
	big := randomBytes(32, 32<<20)
	bigDigest := via.uploadBlob(t, "edge/blobs", big)
	start := time.Now()
	r = via.do(t, http.MethodGet, "/v2/edge/blobs/blobs/"+bigDigest, nil)
	expectStatus(t, "GET 32 MiB blob through nginx", r, http.StatusOK)
	if digestOf(r.body) != bigDigest {
		t.Fatalf("GET 32 MiB blob through nginx: %d bytes with digest %s, want %d bytes of %s", len(r.body), digestOf(r.body), len(big), bigDigest)
	}
	if cl := r.header.Get("Content-Length"); cl != fmt.Sprint(len(big)) {
		t.Errorf("GET 32 MiB blob through nginx: Content-Length %q, want %d", cl, len(big))
	}
	t.Logf("GET of a 32 MiB blob through nginx: %s", time.Since(start).Round(time.Millisecond))
	r = via.do(t, http.MethodGet, "/v2/edge/blobs/blobs/"+bigDigest, nil, "Range", "bytes=8388608-9437183")
	expectStatus(t, "ranged GET through nginx", r, http.StatusPartialContent)
	if !bytes.Equal(r.body, big[8<<20:9<<20]) || r.header.Get("Content-Range") != fmt.Sprintf("bytes 8388608-9437183/%d", len(big)) {
		t.Errorf("ranged GET through nginx: %d bytes, Content-Range %q", len(r.body), r.header.Get("Content-Range"))
	}

	// /acr reaches the node: its JSON 404, not an nginx page. Other paths are not routed.
	r = via.do(t, http.MethodGet, "/acr/x", nil)
	if r.status != http.StatusNotFound || !strings.Contains(r.header.Get("Content-Type"), "json") || !json.Valid(r.body) {
		t.Errorf("GET /acr/x through nginx: got %s (Content-Type %q), want the node's JSON 404", r, r.header.Get("Content-Type"))
	}
	r = via.do(t, http.MethodGet, "/metrics", nil)
	if r.status != http.StatusNotFound || json.Valid(r.body) {
		t.Errorf("GET /metrics through nginx: got %s, want nginx's own 404 (only /v2 and /acr are routed)", r)
	}

	// referrersOf lists the referrers of dgst in repo on n (a node, or the proxy in front of one).
	referrersOf := func(n *node, dgst string) []descriptor {
		t.Helper()
		r := n.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+dgst, nil)
		expectStatus(t, "GET referrers of "+dgst, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != mtOCIIndex {
			t.Errorf("GET referrers: Content-Type %q, want %s", ct, mtOCIIndex)
		}
		var idx referrersIndex
		if err := json.Unmarshal(r.body, &idx); err != nil {
			t.Fatalf("GET referrers: %v: %s", err, r.body)
		}
		return idx.Manifests
	}

	// Referrers through nginx: an SBOM whose subject is the image.
	emptyDigest := via.uploadBlob(t, repo, emptyJSON)
	empty := descriptor{MediaType: mtOCIEmpty, Digest: emptyDigest, Size: int64(len(emptyJSON))}
	sbom, err := json.Marshal(manifest{
		SchemaVersion: 2, MediaType: mtOCIManifest, ArtifactType: atSBOM,
		Config: &empty, Layers: []descriptor{empty},
		Subject: &descriptor{MediaType: mtOCIManifest, Digest: imgDigest.String(), Size: int64(len(rawManifest))},
	})
	if err != nil {
		t.Fatal(err)
	}
	sbomDigest := digestOf(sbom)
	r = via.putManifest(t, repo, sbomDigest, mtOCIManifest, sbom)
	expectStatus(t, "PUT referrer through nginx", r, http.StatusCreated)
	expectRelativeLocation(t, "PUT referrer through nginx", r)
	if s := r.header.Get("OCI-Subject"); s != imgDigest.String() {
		t.Errorf("PUT referrer through nginx: OCI-Subject %q, want %s", s, imgDigest)
	}
	if ds := referrersOf(via, imgDigest.String()); len(ds) != 1 || ds[0].Digest != sbomDigest || ds[0].ArtifactType != atSBOM {
		t.Errorf("referrers through nginx: %+v, want the SBOM %s", ds, sbomDigest)
	}

	// Every Location a client was sent, by go-containerregistry and by net/http, stays on the
	// proxy's address.
	n := px.locations.check(t, parent.addr) + ggcrRec.check(t, parent.addr)
	locationsChecked = true
	if n < 10 {
		t.Errorf("only %d Location headers seen through nginx: the upload flows were not exercised", n)
	}

	// A child node syncs from the parent through nginx over HTTPS, trusting the test's CA.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "outpost.yaml")
	body := fmt.Sprintf("parent:\n  url: https://%s\n  caFile: %s\n%ssync:\n  repositories: [%s]\n", px.addr, px.tls.certFile, parentCredentials, repo)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// waitFor polls cond until it holds or limit passes; what it last said is in the failure.
	waitFor := func(limit time.Duration, what string, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			ok, last := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s (last: %s)", what, limit, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	before := strings.Count(px.accessLog(t), "\n")
	child := startNode(t, nodeOptions{dataDir: filepath.Join(dir, "data"), args: []string{"--config", cfg}})
	waitFor(30*time.Second, "the image on the child, synced through nginx", func() (bool, string) {
		r := child.do(t, http.MethodHead, "/v2/"+repo+"/manifests/v1", nil, "Accept", mtOCIManifest)
		return r.status == http.StatusOK && r.header.Get("Docker-Content-Digest") == imgDigest.String(),
			fmt.Sprintf("HEAD manifest: %d, digest %q", r.status, r.header.Get("Docker-Content-Digest"))
	})
	r = child.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil, "Accept", mtOCIManifest)
	expectStatus(t, "GET manifest on the child", r, http.StatusOK)
	if !bytes.Equal(r.body, rawManifest) {
		t.Errorf("the child's manifest bytes differ from the parent's (digest %s)", digestOf(r.body))
	}
	for d, b := range wantLayers {
		if !bytes.Equal(child.getBlob(t, repo, d), b) {
			t.Errorf("layer %s on the child differs from the parent's", d)
		}
	}
	child.getBlob(t, repo, streamedDigest.String())
	waitFor(15*time.Second, "the SBOM referrer on the child", func() (bool, string) {
		ds := referrersOf(child, imgDigest.String())
		return len(ds) == 1 && ds[0].Digest == sbomDigest, fmt.Sprintf("referrers: %+v", ds)
	})

	// The child's traffic went through nginx, blobs in ranged GETs.
	lines := strings.Split(px.accessLog(t), "\n")[before:]
	var blobGets, partial, http1, fromChild int
	for _, l := range lines {
		if strings.Contains(l, "GET /v2/"+repo+"/blobs/sha256:") {
			blobGets++
			if strings.Contains(l, `" 206 `) {
				partial++
			}
		}
		if strings.Contains(l, `"outpost/`) { // the child's User-Agent
			fromChild++
			if strings.Contains(l, " HTTP/1.") {
				http1++
			}
		}
	}
	if blobGets == 0 || partial == 0 {
		t.Errorf("nginx's access log shows %d blob GETs (%d ranged) after the child started: the child did not sync through nginx in ranged requests", blobGets, partial)
	}
	// nginx offers HTTP/2 (listen … http2, as deploy/nginx/README.md shows): the child takes it.
	if fromChild == 0 || http1 > 0 {
		t.Errorf("%d of the child's %d requests through nginx were HTTP/1.x, want HTTP/2 (ALPN)", http1, fromChild)
	}
	t.Logf("through nginx: %d requests by net/http, %d by go-containerregistry, %d Location headers checked; the child's sync: %d blob GETs, %d ranged",
		px.locations.requests, ggcrRec.requests, n, blobGets, partial)
}
