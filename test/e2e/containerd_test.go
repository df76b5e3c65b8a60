package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestContainerdMirror pulls docker.io/library/<img> and ghcr.io/org/app with a real containerd
// whose hosts.toml (written by outpost mirror-config containerd) points at a node: containerd
// sends ?ns=docker.io and ?ns=ghcr.io, which the node maps (mirror.namespaces) to library/<img>
// and ghcr/org/app. Nothing leaves loopback: the upstreams are never reached.
func TestContainerdMirror(t *testing.T) {
	t.Parallel()
	containerd, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd is not installed (make test-deps installs it)")
	}
	ctrBin, err := exec.LookPath("ctr")
	if err != nil {
		t.Skip("ctr is not installed (make test-deps installs it)")
	}
	ctx := testContext(t, 3*time.Minute)
	n := startNode(t, nodeOptions{env: []string{"OUTPOST_MIRROR_NAMESPACES=docker.io=,ghcr.io=ghcr"}})

	push := func(repo string) v1.Hash {
		img, err := random.Image(512, 2)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", "amd64"
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(n.addr + "/" + repo)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithTransport(n.client.Transport), remote.WithContext(ctx)); err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	alpine := push("library/alpine:3.20")
	app := push("ghcr/org/app:1.0")

	// A private containerd: own root, state and socket; no CRI.
	dir, err := os.MkdirTemp("", "ctrd-") // short: a unix socket path has at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	cfgFile := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var ctrdLog bytes.Buffer
	daemon := exec.Command(containerd, "--config", cfgFile)
	daemon.Stdout, daemon.Stderr = &ctrdLog, &ctrdLog
	daemon.SysProcAttr = sysProcAttr()
	if err := daemon.Start(); err != nil {
		t.Skipf("containerd cannot start: %v", err)
	}
	t.Cleanup(func() {
		_ = daemon.Process.Kill()
		_ = daemon.Wait()
		if t.Failed() {
			t.Logf("containerd log:\n%s", ctrdLog.String())
		}
	})
	up := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			up = true
			break
		}
	}
	if !up {
		t.Skipf("containerd did not start within 20s: %s", lastLine(ctrdLog.String()))
	}

	hostsDir := filepath.Join(dir, "certs.d")
	for _, upstream := range []string{"docker.io", "ghcr.io"} {
		res := runOutpost(t, nil, "mirror-config", "containerd", "--endpoint", "http://"+n.addr, "--upstream", upstream)
		if res.code != 0 {
			t.Fatalf("mirror-config containerd: exit %d: %s", res.code, res.stderr)
		}
		if err := os.MkdirAll(filepath.Join(hostsDir, upstream), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(hostsDir, upstream, "hosts.toml"), []byte(res.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctr := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, ctrBin, append([]string{"-a", sock, "-n", "outposttest"}, args...)...)
		cmd.Env = append(baseEnv(), "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for ref, want := range map[string]v1.Hash{"docker.io/library/alpine:3.20": alpine, "ghcr.io/org/app:1.0": app} {
		if out, err := ctr("images", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native", "--user", "admin:"+testAdminPassword, ref); err != nil {
			t.Fatalf("ctr images pull %s through the mirror: %v\n%s\nnode log:\n%s", ref, err, out, n.logs())
		}
		out, err := ctr("images", "ls")
		if err != nil {
			t.Fatalf("ctr images ls: %v\n%s", err, out)
		}
		if !strings.Contains(out, ref) || !strings.Contains(out, want.String()) {
			t.Fatalf("ctr images ls lacks %s at %s:\n%s", ref, want, out)
		}
	}
	// ghcr.io/org/app exists only as ghcr/org/app on the node: that pull worked only through the
	// ?ns=ghcr.io mapping.
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
