package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestOCIConformance runs the OCI distribution-spec conformance suite (the module pinned in
// test/conformance, built here) against a node, as its users' registries are judged: pull, push,
// content discovery (tags, referrers) and content management (deletes), with images, indexes,
// artifacts, subjects, non-distributable layers, empty blobs, large manifests and content
// addressed by sha512; on the node's own address, and over HTTPS through nginx with
// deploy/nginx/outpost.conf, as the IoT Edge API proxy fronts it. In its read-only mode it also
// pulls from a child what the child synced from its parent: an image, an index, the image's
// referrer and an image named by sha512, as devices pull at the edge. The suite runs with its
// development profile (1.1+dev), which adds tag parameters on manifest pushes, upload
// cancellation and required digest headers to the released 1.1.
func TestOCIConformance(t *testing.T) {
	t.Parallel()
	suite := os.Getenv("OCI_CONFORMANCE_BINARY")
	if suite == "" {
		suite = filepath.Join(t.TempDir(), "oci-conformance")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, "go", "build", "-o", suite, "github.com/opencontainers/distribution-spec/conformance")
		build.Dir = filepath.Join("..", "conformance")
		if out, err := build.CombinedOutput(); err != nil {
			t.Skipf("cannot build the OCI conformance suite (%v): skipping it: %s", err, lastLine(string(out)))
		}
	}
	t.Run("direct", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, nodeOptions{})
		runConformance(t, suite, n.addr, "disabled", n)
	})
	t.Run("through nginx", func(t *testing.T) {
		t.Parallel()
		bin := nginxBinary(t)
		n := startNode(t, nodeOptions{})
		px := startNginx(t, bin, n)
		// The suite's "insecure" still verifies certificates: it trusts the test's instead.
		runConformance(t, suite, px.addr, "enabled", n, "SSL_CERT_FILE="+px.tls.certFile)
	})
	t.Run("synced child", func(t *testing.T) {
		t.Parallel()
		child, data := syncedConformanceData(t)
		// In read-only mode the suite checks the digest header of a manifest response it
		// did not keep (it keeps responses only of manifests whose bytes it knows), so it
		// would always find none; syncedConformanceData checks the header itself.
		runConformance(t, suite, child.addr, "disabled", child, append(data,
			"OCI_API_PUSH=false", "OCI_API_BLOBS_DELETE=false", "OCI_API_MANIFESTS_DELETE=false", "OCI_API_TAGS_DELETE=false",
			"OCI_API_MANIFESTS_DIGEST_HEADER=false")...)
	})
}

// syncedConformanceData pushes to a parent an image, an index of two platforms and a
// signature of the image (a referrer), starts a child that mirrors them, and returns the child
// once it serves all three, with the suite's read-only settings naming them.
func syncedConformanceData(t *testing.T) (*node, []string) {
	parent := startNode(t, nodeOptions{})
	const repo = "conformance/repo1"
	img := randomImage(t, 2, 32<<10)
	imgDigest := parent.pushImage(t, repo+":image", img)
	idx := randomIndex(t, 16<<10, "amd64", "arm64")
	if err := remote.WriteIndex(parent.ref(t, repo+":index"), idx, parent.remote(t)...); err != nil {
		t.Fatalf("pushing the index: %v", err)
	}
	idxDigest := mustDigest(t, idx)
	raw := mustRawManifest(t, img)
	sig, ok := mutate.Subject(mutate.ConfigMediaType(randomImage(t, 1, 1024), "application/vnd.example.signature.v1+json"),
		v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: imgDigest, Size: int64(len(raw))}).(v1.Image)
	if !ok {
		t.Fatal("mutate.Subject of an image is not an image")
	}
	sigDigest := mustDigest(t, sig)
	if err := remote.Write(parent.ref(t, repo+"@"+sigDigest.String()), sig, parent.remote(t)...); err != nil {
		t.Fatalf("pushing the signature: %v", err)
	}

	// An image whose config, layer and manifest are named by sha512, tagged by ?tag=.
	shaBlobs := [][]byte{[]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`), randomBytes(512, 64<<10)}
	var shaDescs []ocispec.Descriptor
	for _, b := range shaBlobs {
		d := digest.SHA512.FromBytes(b)
		r := parent.finishUpload(t, parent.startUpload(t, repo), d.String(), b)
		if got := r.header.Get("Docker-Content-Digest"); got != d.String() {
			t.Fatalf("uploading blob %s: Docker-Content-Digest %q", d, got)
		}
		shaDescs = append(shaDescs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(b))})
	}
	shaDescs[0].MediaType = ocispec.MediaTypeImageConfig
	shaRaw, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: shaDescs[0], Layers: shaDescs[1:]})
	if err != nil {
		t.Fatal(err)
	}
	shaDigest := digest.SHA512.FromBytes(shaRaw)
	r := parent.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+shaDigest.String()+"?tag=sha512", shaRaw, "Content-Type", ocispec.MediaTypeImageManifest)
	expectStatus(t, "PUT the sha512 manifest", r, http.StatusCreated)

	cfg := filepath.Join(t.TempDir(), "outpost.yaml")
	body := "parent:\n  url: " + parent.base() + "\n" + parentCredentials + "sync:\n  repositories: [" + repo + "]\n  schedule: \"@every 2s\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	child := startNode(t, nodeOptions{args: []string{"--config", cfg}})
	m := &member{node: child, name: "child"}
	m.waitImage(t, 60*time.Second, repo, "image", imgDigest, m)
	m.waitImage(t, 60*time.Second, repo, "index", idxDigest, m)
	eventually(t, 60*time.Second, "the child serves the image named by sha512", func() (bool, string) {
		r := child.do(t, http.MethodHead, "/v2/"+repo+"/manifests/sha512", nil, "Accept", ocispec.MediaTypeImageManifest)
		return r.status == http.StatusOK && r.header.Get("Docker-Content-Digest") == shaDigest.String(), r.String()
	}, m)
	eventually(t, 60*time.Second, "the child serves the image's signature among its referrers", func() (bool, string) {
		r := child.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+imgDigest.String(), nil)
		return r.status == http.StatusOK && strings.Contains(string(r.body), sigDigest.String()), r.String()
	}, m)

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	blobs := []string{mustConfigDigest(t, img)}
	for _, l := range layers {
		blobs = append(blobs, mustDigest(t, l).String())
	}
	for _, d := range shaDescs {
		blobs = append(blobs, d.Digest.String())
	}
	return child, []string{
		"OCI_RO_DATA_TAGS=image index sha512",
		"OCI_RO_DATA_MANIFESTS=" + strings.Join([]string{imgDigest.String(), idxDigest.String(), sigDigest.String(), shaDigest.String()}, " "),
		"OCI_RO_DATA_BLOBS=" + strings.Join(blobs, " "),
		"OCI_RO_DATA_REFERRERS=" + imgDigest.String(),
	}
}

func mustConfigDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// runConformance runs the suite against the registry at addr (tls: disabled or enabled), with
// env added to its environment, and fails with the failed tests and n's log.
//
// The suite's exit status says little: 0 when it cannot load its configuration or write its
// reports, and its report writer panics in read-only mode. It gets a results directory it
// cannot create, so it writes no report, and its verdict is read from the counts it prints.
func runConformance(t *testing.T, suite, addr, tls string, n *node, env ...string) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = dir // no oci-conformance.yaml there: the environment alone configures it
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+addr, "OCI_TLS="+tls,
		"OCI_USERNAME=admin", "OCI_PASSWORD="+testAdminPassword,
		"OCI_REPO1=conformance/repo1", "OCI_REPO2=conformance/repo2",
		"OCI_RESULTS_DIR="+filepath.Join(notADir, "results"), "OCI_VERSION=1.1+dev", "OCI_LOG=warn",
	)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run()
	var failed []string
	counts := map[string]int{} // the summary's first lines: Disabled, Skip, Pass, FAIL, Error, Total
	for line := range strings.SplitSeq(out.String(), "\n") {
		if strings.Contains(line, `msg="failed test"`) {
			failed = append(failed, line)
		}
		name, count, ok := strings.Cut(strings.TrimSpace(line), "...")
		if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimLeft(count, ".:"))); ok && err == nil {
			if _, seen := counts[name]; !seen {
				counts[name] = n
			}
		}
	}
	if len(failed) > 0 || counts["Pass"] == 0 || counts["FAIL"] != 0 || counts["Error"] != 0 {
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		t.Fatalf("the OCI conformance suite failed: %v\n%s\n%s%s", counts, strings.Join(failed, "\n"),
			strings.Join(lines[max(0, len(lines)-30):], "\n"), tails(&member{node: n, name: "node"}))
	}
	t.Logf("OCI conformance: %d passed, %d skipped (optional), %d disabled, of %d", counts["Pass"], counts["Skip"], counts["Disabled"], counts["Total"])
}
