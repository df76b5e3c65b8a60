package e2e

// Delta sync of layers the way real builders make them: the Docker engine builds two releases of
// an application and pushes them to a parent (moby compresses each layer with compress/gzip at
// the default level as it pushes), a child mirrors the first whole and gets the second's layer as
// a delta, rebuilt and recompressed byte for byte.

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/outpost-registry/outpost/test/faultnet"
)

// writeAppTree writes an application tree of source-like text files and an executable under
// dir/app: the same seed gives the same files. Release 2 edits a few files, adds one and removes one.
func writeAppTree(t *testing.T, dir string, release int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(41, 7))
	word := func() string {
		b := make([]byte, 3+rng.IntN(8))
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	pool := make([]string, 5000)
	for i := range pool {
		pool[i] = fmt.Sprintf("%s%s := %s.%s(ctx, %d, %q) // %x\n",
			strings.Repeat("\t", 1+rng.IntN(3)), word(), word(), word(), rng.IntN(1000), word(), rng.Uint32())
	}
	// Every file has the same modification time in both releases, as a checkout of unchanged
	// files would: only the files that changed differ in the tar.
	mtime := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	write := func(name string, body []byte) {
		p := filepath.Join(dir, "app", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		var b strings.Builder
		for size := 4000 + rng.IntN(20000); b.Len() < size; {
			b.WriteString(pool[rng.IntN(len(pool))])
		}
		name := fmt.Sprintf("pkg%02d/file%03d.go", i%17, i)
		switch {
		case release == 2 && i == 150:
			continue // removed in release 2
		case release == 2 && i%60 == 7:
			b.WriteString(fmt.Sprintf("// release 2: fix %d\n", i)) // edited in release 2
		}
		write(name, []byte(b.String()))
	}
	// An executable too, the same in both releases: machine code is where compressor
	// families differ first (klauspost/compress's v1.18.0 and v1.18.1 within 32 KB of it).
	exe, err := os.ReadFile(outpostBinary)
	if err != nil {
		t.Fatal(err)
	}
	write("bin/tool", exe[:min(len(exe), 3<<20)])
	if release == 2 {
		write("pkg99/new.go", []byte("package pkg99\n\n// New in release 2.\nfunc New() {}\n"))
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY app/ /app/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// digest is the digest the member answers for repo:tag, which must be there.
func (m *member) digest(t *testing.T, repo, tag string) v1.Hash {
	t.Helper()
	got, detail := m.headDigest(t, repo, tag)
	h, err := v1.NewHash(got)
	if err != nil {
		t.Fatalf("%s:%s at %s: %s", repo, tag, m.name, detail)
	}
	return h
}

// TestDeltaOfDockerPushedLayers: the layer of an application's second release, built and pushed
// by the Docker engine, reaches a child that holds the first release as a delta a small fraction
// of the layer, and the child serves both releases byte for byte (digests of every blob, the
// manifests), then to the Docker engine itself.
func TestDeltaOfDockerPushedLayers(t *testing.T) {
	t.Parallel()
	dockerd, docker := dockerBinaries(t)
	engine := startDockerd(t, dockerd, docker)
	parent := startNode(t, nodeOptions{})
	const repo = "edge/dockerdelta"
	host := parent.addr
	if out, err := engine.docker(t, time.Minute, "login", host, "-u", "admin", "-p", testAdminPassword); err != nil {
		t.Fatalf("docker login to the parent: %v", err)
	} else if !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("docker login to the parent: %s", out)
	}
	buildAndPush := func(release int) {
		t.Helper()
		dir := t.TempDir()
		writeAppTree(t, dir, release)
		ref := fmt.Sprintf("%s/%s:v%d", host, repo, release)
		// The legacy builder: dockerd's own, no BuildKit plugin needed; the layer is moby's
		// tar of the COPY either way.
		if _, err := engine.dockerEnv(t, 3*time.Minute, []string{"DOCKER_BUILDKIT=0"}, "build", "-q", "-t", ref, dir); err != nil {
			t.Fatalf("docker build of release %d: %v", release, err)
		}
		if _, err := engine.docker(t, 3*time.Minute, "push", ref); err != nil {
			t.Fatalf("docker push of release %d to the parent: %v", release, err)
		}
	}
	buildAndPush(1)

	child, v2Digest := expectDeltaSync(t, parent, repo, func() { buildAndPush(2) })

	// The Docker engine pulls release 2 from the child, with the parent's digest. The child is a
	// node of its own: it has its own admin, with the same test password.
	_, port, _ := net.SplitHostPort(child.addr)
	childHost := "127.0.0.1:" + port
	if _, err := engine.docker(t, time.Minute, "login", childHost, "-u", "admin", "-p", testAdminPassword); err != nil {
		t.Fatalf("docker login to the child: %v", err)
	}
	if _, err := engine.docker(t, 3*time.Minute, "pull", childHost+"/"+repo+":v2"); err != nil {
		t.Fatalf("docker pull of the rebuilt release from the child: %v", err)
	}
	out, err := engine.docker(t, 30*time.Second, "image", "inspect", "--format", "{{json .RepoDigests}}", childHost+"/"+repo+":v2")
	if err != nil {
		t.Fatal(err)
	}
	if want := childHost + "/" + repo + "@" + v2Digest.String(); !strings.Contains(out, want) {
		t.Errorf("the engine's RepoDigests for the child's release 2: %s; want %s", strings.TrimSpace(out), want)
	}
}

// expectDeltaSync starts a child that mirrors repo from parent, which holds release v1,
// through a byte-counting link; once the child holds v1, pushRelease2 pushes v2 to the parent.
// The child must get v2's one layer as a delta (rebuilt, recompressed, byte for byte) and
// serve both releases with the parent's digests. It returns the child and v2's digest.
func expectDeltaSync(t *testing.T, parent *node, repo string, pushRelease2 func()) (*node, v1.Hash) {
	t.Helper()
	return expectSync(t, parent, repo, pushRelease2, true)
}

// expectSync is expectDeltaSync; with wantDelta false, v2's layer must instead cross whole
// (no recipe reproduces it) and be served as byte-identical.
func expectSync(t *testing.T, parent *node, repo string, pushRelease2 func(), wantDelta bool) (*node, v1.Hash) {
	t.Helper()
	link, err := faultnet.NewProxy(parent.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	dir := t.TempDir()
	cfg := filepath.Join(dir, "outpost.yaml")
	body := "parent:\n  url: " + link.URL() + "\n" + parentCredentials + "sync:\n  repositories: [" + repo + "]\n  delta: true\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	child := startNode(t, nodeOptions{dataDir: filepath.Join(dir, "data"), args: []string{"--config", cfg}})
	m := &member{node: child, name: "child"}
	root := &member{node: parent, name: "parent"}
	m.waitImage(t, 90*time.Second, repo, "v1", root.digest(t, repo, "v1"), m)

	before := link.Stats().BytesDown
	pushRelease2()
	v2Digest := root.digest(t, repo, "v2")
	rel2, err := remote.Image(parent.ref(t, repo+":v2"), parent.remote(t)...)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := rel2.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("release 2 has %d layers (%v); want one", len(layers), err)
	}
	layerDigest, _ := layers[0].Digest()
	layerSize, _ := layers[0].Size()
	if mt, _ := layers[0].MediaType(); !strings.Contains(string(mt), "gzip") && !strings.Contains(string(mt), "zstd") {
		t.Fatalf("release 2's layer is %s; this test is about compressed layers", mt)
	}
	m.waitImage(t, 90*time.Second, repo, "v2", v2Digest, m)
	crossed := link.Stats().BytesDown - before

	deltaBytes, _ := rebuiltFromDelta(child.logs(), layerDigest.String())
	switch {
	case !wantDelta && deltaBytes != 0:
		t.Fatalf("the child rebuilt release 2's layer %s from a %d-byte delta; want it fetched whole", layerDigest, deltaBytes)
	case !wantDelta && crossed < layerSize:
		t.Fatalf("release 2 crossed the link in %d bytes; its layer alone is %d", crossed, layerSize)
	case !wantDelta:
		t.Logf("release 2's layer %d B crossed whole; the link carried %d B", layerSize, crossed)
	case deltaBytes == 0:
		t.Fatalf("the child did not rebuild release 2's layer %s from a delta; its log:\n%s", layerDigest, tails(m))
	case deltaBytes > layerSize/20 || crossed > layerSize/10:
		// The delta carries the edited files and the new one; the link, the delta and requests.
		t.Errorf("release 2 crossed the link in %d bytes (delta %d bytes) for a %d-byte layer: want the delta under 5%% and the link under 10%% of the layer",
			crossed, deltaBytes, layerSize)
	default:
		t.Logf("release 2's layer %d B; delta %d B; the link carried %d B for release 2 (%.2f%% of the layer)",
			layerSize, deltaBytes, crossed, 100*float64(crossed)/float64(layerSize))
	}

	rel1, err := remote.Image(parent.ref(t, repo+":v1"), parent.remote(t)...)
	if err != nil {
		t.Fatal(err)
	}
	m.expectServes(t, map[string]v1.Image{repo + ":v1": rel1, repo + ":v2": rel2})

	return child, v2Digest
}

// treeTar is the tar of dir's app/ tree, in name order, as a builder's layer would hold it.
func treeTar(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	root := filepath.Join(dir, "app")
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name, hdr.Uname, hdr.Gname, hdr.Uid, hdr.Gid = filepath.ToSlash(rel), "", "", 0, 0
		if e.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if e.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDeltaOfSkopeoPushedLayers: the same with skopeo as the builder's pusher: it compresses
// uncompressed layers with pgzip as podman and buildah do, and the skopeo the distribution
// ships (Debian 12's: klauspost/compress v1.15) writes deflate that only the legacy deflate
// helper beside the node's binary reproduces.
func TestDeltaOfSkopeoPushedLayers(t *testing.T) {
	t.Parallel()
	skopeoDelta(t, "edge/skopeodelta", "gzip", true)
}

// TestDeltaOfSkopeoZstdLayers: skopeo copy --dest-compress-format zstd, as podman push
// --compression-format zstd. Debian 12's skopeo writes klauspost/compress v1.15's zstd,
// which neither this binary (v1.20.3) nor the v1.18.0 helper reproduces on this content;
// outpost-legacy-deflate-klauspost1.15 does, with the 8-byte lead block containers/image
// writes, and the layer goes as a delta.
func TestDeltaOfSkopeoZstdLayers(t *testing.T) {
	t.Parallel()
	skopeoDelta(t, "edge/skopeozstd", "zstd", true)
}

func skopeoDelta(t *testing.T, repo, format string, wantDelta bool) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo is not installed (make test-deps installs it with apt-get): skipping the skopeo delta test")
	}
	for _, helper := range []string{"outpost-legacy-deflate", "outpost-legacy-deflate-klauspost1.15"} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(outpostBinary), helper)); err != nil {
			t.Skipf("no %s beside %s (make build builds it): skipping the skopeo delta test", helper, outpostBinary)
		}
	}
	parent := startNode(t, nodeOptions{})
	push := func(release int) {
		t.Helper()
		dir := t.TempDir()
		writeAppTree(t, dir, release)
		l := static.NewLayer(treeTar(t, dir), types.OCIUncompressedLayer)
		img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		oci := filepath.Join(dir, "oci")
		p, err := layout.Write(oci, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img); err != nil {
			t.Fatal(err)
		}
		ctx := testContext(t, 2*time.Minute)
		cmd := exec.CommandContext(ctx, skopeo, "copy", "--quiet", "--dest-compress", "--dest-compress-format", format,
			"--dest-tls-verify=false", "--dest-creds", "admin:"+testAdminPassword,
			"oci:"+oci, fmt.Sprintf("docker://%s/%s:v%d", parent.addr, repo, release))
		cmd.Env = baseEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("skopeo copy of release %d to the parent: %v: %s", release, err, out)
		}
	}
	push(1)
	expectSync(t, parent, repo, func() { push(2) }, wantDelta)
}
