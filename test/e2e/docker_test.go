package e2e

// The Docker engine as the client, the way a device on an IoT Edge lower layer pulls: a private
// dockerd logs in to and pulls from a child node behind nginx with TLS (the API proxy), the
// child having synced the image from its parent.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// dockerEngine is a dockerd of the test's own: own data root, exec root, pid file and socket, no
// iptables or bridge (loopback only), vfs storage.
type dockerEngine struct {
	dir, sock, client string
	clientConfig      string // the docker client's --config directory (credentials of `login`)
	cmd               *exec.Cmd
	log               *syncBuffer
	done              chan struct{}
}

// dockerBinaries finds dockerd and the docker client next to it (a client of the same release:
// another one on PATH may speak a newer API), or skips the test.
func dockerBinaries(t *testing.T) (dockerd, docker string) {
	t.Helper()
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		for _, p := range []string{"/usr/bin/dockerd", "/usr/sbin/dockerd"} {
			if _, err := os.Stat(p); err == nil {
				dockerd = p
			}
		}
	}
	if dockerd == "" {
		t.Skip("dockerd is not installed (make test-deps installs docker.io with apt-get): skipping the Docker engine test")
	}
	for _, p := range []string{filepath.Join(filepath.Dir(dockerd), "docker"), "/usr/bin/docker"} {
		if _, err := os.Stat(p); err == nil {
			return dockerd, p
		}
	}
	if docker, err = exec.LookPath("docker"); err != nil {
		t.Skip("dockerd is installed but no docker client: skipping the Docker engine test")
	}
	return dockerd, docker
}

// startDockerd starts the engine and waits until `docker info` answers. Where the engine cannot
// start at all (no root, no cgroups…) the test is skipped with dockerd's last log lines.
func startDockerd(t *testing.T, dockerd, docker string) *dockerEngine {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dockerd needs root: skipping the Docker engine test")
	}
	// A short directory: the socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "outpost-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	e := &dockerEngine{dir: dir, sock: filepath.Join(dir, "docker.sock"), client: docker,
		clientConfig: filepath.Join(dir, "client"), log: &syncBuffer{}, done: make(chan struct{})}
	conf := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(conf, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.clientConfig, 0o700); err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command(dockerd,
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", "unix://"+e.sock, "--config-file", conf,
		"--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs")
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Skipf("dockerd cannot start here: %v", err)
	}
	go func() {
		_ = e.cmd.Wait()
		close(e.done)
	}()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("---- dockerd log (last lines) ----\n%s", e.logTail(40))
		}
		_ = os.RemoveAll(dir)
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-e.done:
			t.Skipf("dockerd exited at start (%v): skipping the Docker engine test; its log:\n%s", e.cmd.ProcessState, e.logTail(15))
		default:
		}
		if _, err := e.docker(t, 10*time.Second, "info", "--format", "{{.ServerVersion}}"); err == nil {
			return e
		}
		if time.Now().After(deadline) {
			t.Skipf("dockerd did not answer within 60s: skipping the Docker engine test; its log:\n%s", e.logTail(15))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// docker runs the client against the engine, with its own --config directory.
func (e *dockerEngine) docker(t *testing.T, limit time.Duration, args ...string) (string, error) {
	t.Helper()
	return e.dockerEnv(t, limit, nil, args...)
}

// dockerEnv is docker with more environment variables for the client.
func (e *dockerEngine) dockerEnv(t *testing.T, limit time.Duration, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	full := append([]string{"--config", e.clientConfig, "-H", "unix://" + e.sock}, args...)
	cmd := exec.CommandContext(ctx, e.client, full...)
	cmd.Env = append(append(baseEnv(), "DOCKER_CLI_HINTS=false"), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("docker %s: no answer within %s", strings.Join(args, " "), limit)
	} else if err != nil {
		err = fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

func (e *dockerEngine) logTail(n int) string {
	lines := strings.Split(strings.TrimSpace(e.log.String()), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends dockerd: SIGTERM, SIGKILL to its process group if it lingers.
func (e *dockerEngine) stop() {
	select {
	case <-e.done:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
	}
}

// trustCA installs ca as the engine's CA for host:port, in the one place dockerd looks
// (/etc/docker/certs.d/HOST:PORT/ca.crt), for the test's port only; removed at the end.
func trustCA(t *testing.T, hostport, caFile string) {
	t.Helper()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("/etc/docker/certs.d", hostport)
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists already: not touching it", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("trusting the proxy's CA: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDockerPullThroughNginx: an image pushed to a parent, synced by a child, pulled by the
// Docker engine from the child through nginx with TLS: `docker login` and `docker pull` of
// 127.0.0.1:PORT/repo:tag give the parent's manifest digest and config (image ID).
func TestDockerPullThroughNginx(t *testing.T) {
	t.Parallel()
	dockerd, docker := dockerBinaries(t)
	ngx := nginxBinary(t)
	start := time.Now()
	engine := startDockerd(t, dockerd, docker)
	t.Logf("dockerd ready in %s", time.Since(start).Round(time.Millisecond))

	const repo, tag = "edge/dockerapp", "v1"
	parent := startNode(t, nodeOptions{})
	img := randomImage(t, 2, 2<<20)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"/nothing"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	imgDigest := parent.pushImage(t, repo+":"+tag, img)
	configDigest, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	// The child syncs the repository from the parent.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("parent:\n  url: http://%s\n%ssync:\n  repositories: [%s]\n", parent.addr, parentCredentials, repo)), 0o600); err != nil {
		t.Fatal(err)
	}
	child := startNode(t, nodeOptions{dataDir: filepath.Join(dir, "data"), args: []string{"--config", cfg}})
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := child.do(t, http.MethodHead, "/v2/"+repo+"/manifests/"+tag, nil, "Accept", mtOCIManifest)
		if r.status == http.StatusOK && r.header.Get("Docker-Content-Digest") == imgDigest.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child did not sync %s:%s within 60s (HEAD: %d, digest %q)", repo, tag, r.status, r.header.Get("Docker-Content-Digest"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// nginx with TLS in front of the child, as the API proxy; the engine trusts its CA.
	px := startNginx(t, ngx, child)
	trustCA(t, px.addr, px.tls.certFile)
	_, port, _ := net.SplitHostPort(px.addr)
	host := "127.0.0.1:" + port

	// A pull-only token for the repository, made with the CLI against the child (a node without
	// an Outpost parent has its own admin and tokens).
	tok := runOutpost(t, []string{"OUTPOST_PASSWORD=" + testAdminPassword}, "token", "create", "--name", "edge-puller",
		"--repository", repo, "content/read", "metadata/read", "-o", "json", "--registry", child.base())
	if tok.code != 0 {
		t.Fatalf("token create: exit %d: %s", tok.code, tok.stderr)
	}
	var created acrapi.Token
	if err := json.Unmarshal([]byte(tok.stdout), &created); err != nil || len(created.Passwords) == 0 || created.Passwords[0].Value == "" {
		t.Fatalf("token create -o json printed no password: %v\n%s", err, tok.stdout)
	}

	// Without credentials, and with wrong ones, the engine is refused.
	// (Docker then falls back to plain HTTP for a loopback registry, which nginx refuses: the
	// message it shows is about that, so the node's log tells what happened.)
	if out, err := engine.docker(t, 3*time.Minute, "pull", host+"/"+repo+":"+tag); err == nil {
		t.Errorf("docker pull without logging in succeeded: %s", out)
	}
	if logs := child.logs(); !strings.Contains(logs, `"status":401`) || !strings.Contains(logs, `"user":"anonymous"`) {
		t.Errorf("the child logged no anonymous request answered 401 for the pull of %s", repo)
	}
	if out, err := engine.docker(t, 60*time.Second, "login", host, "-u", "edge-puller", "-p", "wrong-password"); err == nil {
		t.Errorf("docker login with a wrong password succeeded: %s", out)
	}
	if out, err := engine.docker(t, 60*time.Second, "login", host, "-u", "edge-puller", "-p", created.Passwords[0].Value); err != nil {
		t.Fatalf("docker login through nginx with the token: %v", err)
	} else if !strings.Contains(out, "Login Succeeded") {
		t.Errorf("docker login through nginx: %s", out)
	}
	pullStart := time.Now()
	if _, err := engine.docker(t, 3*time.Minute, "pull", host+"/"+repo+":"+tag); err != nil {
		t.Fatalf("docker pull through nginx: %v", err)
	}
	t.Logf("docker pull through nginx: %s", time.Since(pullStart).Round(time.Millisecond))

	out, err := engine.docker(t, 30*time.Second, "image", "inspect", "--format", "{{json .RepoDigests}} {{.Id}}", host+"/"+repo+":"+tag)
	if err != nil {
		t.Fatal(err)
	}
	digestsJSON, id, _ := strings.Cut(strings.TrimSpace(out), " ")
	var digests []string
	if err := json.Unmarshal([]byte(digestsJSON), &digests); err != nil {
		t.Fatalf("docker image inspect: %q: %v", out, err)
	}
	want := host + "/" + repo + "@" + imgDigest.String()
	if len(digests) != 1 || digests[0] != want {
		t.Errorf("RepoDigests %q, want [%s] (the parent's manifest digest)", digests, want)
	}
	if id != configDigest.String() {
		t.Errorf("image ID %s, want the config digest %s", id, configDigest)
	}

	// The pull went through nginx, over TLS, to the child.
	access := px.accessLog(t)
	if !strings.Contains(access, " /v2/"+repo+"/manifests/"+tag+" ") || !strings.Contains(access, "GET /v2/"+repo+"/manifests/"+imgDigest.String()) ||
		!strings.Contains(access, "GET /v2/"+repo+"/blobs/sha256:") {
		t.Errorf("nginx's access log does not show the pull of %s:\n%s", repo, access)
	}
}
