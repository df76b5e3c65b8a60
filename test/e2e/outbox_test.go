package e2e

import (
	"net"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-registry/outpost/pkg/acrapi"
	"github.com/outpost-registry/outpost/test/faultnet"
)

// TestOutboxResumesAfterKill9: an image pushed to a ReadWrite connected registry goes up to its
// parent over a slow link; the registry is SIGKILLed in the middle of that push-up and
// restarted. The push resumes from what the parent already has: the parent gets the image
// byte for byte, and the link carried it about once.
func TestOutboxResumesAfterKill9(t *testing.T) {
	t.Parallel()
	root := startMember(t, "root", nodeOptions{})
	cli := &admin{t: t, root: root, password: testAdminPassword}
	cli.must("create", "--name", "rwSite1", "--mode", "ReadWrite", "--repository", "edge/*", "--sync-schedule", "@every 2s")

	link, err := faultnet.NewProxy(root.addr, faultnet.WithBandwidth(faultnet.Upstream, 2<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	_, port, _ := net.SplitHostPort(link.URL()[len("http://"):])
	cs := cli.connectionString("rwSite1", "--parent-endpoint", "127.0.0.1:"+port)
	if c, _ := acrapi.ParseConnectionString(cs); c.URL() != link.URL() {
		t.Fatalf("connection string names %s, want the link %s", c.URL(), link.URL())
	}
	site := &member{node: startNode(t, nodeOptions{env: []string{"ACR_REGISTRY_CONNECTION_STRING=" + cs}}), name: "rwSite1"}

	// Pushes are taken once the site has its configuration (ReadWrite) from the root.
	img := randomImage(t, 2, 4<<20)
	var want v1.Hash
	eventually(t, 60*time.Second, "a push to the ReadWrite site succeeds", func() (bool, string) {
		if err := remote.Write(site.ref(t, "edge/up:v1"), img, site.remote(t)...); err != nil {
			return false, err.Error()
		}
		want, _ = img.Digest()
		return true, ""
	}, site, root)
	size := int64(8 << 20)

	// Kill the site once 3 MiB of the push-up have crossed.
	ctx := testContext(t, 2*time.Minute)
	if err := link.WaitBytes(ctx, faultnet.Upstream, 3<<20); err != nil {
		t.Fatalf("waiting for the push-up: %v", err)
	}
	site.kill()
	atKill := link.Stats().BytesUp
	if _, ok := site.waitExit(5 * time.Second); !ok {
		t.Fatal("the site did not die")
	}
	site.restart()
	root.waitImage(t, 90*time.Second, "edge/up", "v1", want, root, site)
	root.expectServes(t, map[string]v1.Image{"edge/up:v1": img})

	total := link.Stats().BytesUp
	// The image once, a chunk in flight at the kill (1 MiB), and requests' overhead.
	if limit := size + 1<<20 + 256<<10; total > limit {
		t.Errorf("the link carried %d bytes up for an %d-byte image (%d before the kill); want at most %d", total, size, atKill, limit)
	}
	t.Logf("image %d B; %d B went up, %d B before the kill (ratio %.3f)", size, total, atKill, float64(total)/float64(size))
}
