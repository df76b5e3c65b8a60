// Package benchkit is what the benchmarks under test/bench share: servers, an image, the run.
package benchkit

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const distributionModule = "github.com/distribution/distribution/v3"

// Process is one registry process a benchmark started.
type Process struct {
	Name    string
	Addr    string // 127.0.0.1:PORT
	Base    string // http://127.0.0.1:PORT
	Cmd     *exec.Cmd
	LogPath string
	creds   Credentials
	exited  chan struct{}
	waitErr error
}

// SameDistribution checks that the Outpost binary embeds the distribution version the plain
// registry binary was built from, as a comparison between different versions would measure the
// version gap rather than Outpost. It returns that version and the Go version of either binary.
func SameDistribution(outpost, distribution string) (version, outpostGo, distributionGo string, err error) {
	ov, ogo, err := distributionVersion(outpost)
	if err != nil {
		return "", "", "", err
	}
	dv, dgo, err := distributionVersion(distribution)
	if err != nil {
		return "", "", "", err
	}
	if ov != dv {
		return "", "", "", fmt.Errorf("%s embeds distribution %s but %s is distribution %s: rebuild the latter from the same version (test/bench/tools/go.mod)", outpost, ov, distribution, dv)
	}
	return dv, ogo, dgo, nil
}

// distributionVersion reads the distribution module version and the Go version a binary was
// built with, from its embedded build information.
func distributionVersion(binary string) (mod, goVersion string, err error) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return "", "", fmt.Errorf("reading the build information of %s: %w", binary, err)
	}
	if bi.Main.Path == distributionModule {
		return bi.Main.Version, bi.GoVersion, nil
	}
	for _, d := range bi.Deps {
		if d.Path == distributionModule {
			if d.Replace != nil {
				return d.Replace.Version, bi.GoVersion, nil
			}
			return d.Version, bi.GoVersion, nil
		}
	}
	return "", "", fmt.Errorf("%s does not embed %s", binary, distributionModule)
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// ChildEnv is this process's environment without variables that would reconfigure the servers
// (OUTPOST_*, REGISTRY_*, OTEL_*, proxies), plus extra.
func ChildEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		uk := strings.ToUpper(k)
		if strings.HasPrefix(uk, "OUTPOST_") || strings.HasPrefix(uk, "OTEL_") || strings.HasPrefix(uk, "REGISTRY_") ||
			strings.HasSuffix(uk, "_PROXY") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// DistributionConfig is a configuration of distribution's registry with the options Outpost
// gives its embedded registry (internal/registry/registry.go), so that every benchmark compares
// against the same setup: filesystem storage, delete enabled, the in-memory blob descriptor
// cache, redirects disabled, relative URLs, a random HTTP secret. The access log is off. httpExtra
// is YAML appended inside the http section, extra YAML appended after it.
func DistributionConfig(addr, dataDir, logLevel, httpExtra, extra string) ([]byte, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `version: 0.1
log:
  level: %s
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  redirect:
    disable: true
http:
  addr: %q
  secret: %q
  relativeurls: true
`, logLevel, dataDir, addr, hex.EncodeToString(secret))
	b.WriteString(httpExtra)
	b.WriteString(extra)
	return b.Bytes(), nil
}

// Start starts cmd and waits until GET /v2/ on addr answers 200 to the admin. Its output is
// appended to logPath, so that a process restarted on the same directory keeps the log of the
// one before.
func Start(ctx context.Context, name string, cmd *exec.Cmd, addr, logPath string) (*Process, error) {
	return StartAs(ctx, name, cmd, addr, logPath, Admin)
}

// StartAs is Start for a node that accepts other credentials than the admin's (a connected
// registry accepts its own sync token).
func StartAs(ctx context.Context, name string, cmd *exec.Cmd, addr, logPath string, c Credentials) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	setChildAttrs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, Addr: addr, Base: "http://" + addr, Cmd: cmd, exited: make(chan struct{}), LogPath: logPath, creds: c}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s did not become ready on %s: %w%s", name, addr, err, p.LogTail())
	}
	return p, nil
}

func (p *Process) waitReady(ctx context.Context, limit time.Duration) error {
	// A client of its own, with a short timeout: a server that accepts but hangs must not hold
	// one attempt for longer than the limit.
	c := p.Client(2 * time.Second)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("process exited: %v", p.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Base+"/v2/", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusTooManyRequests {
				return err // wrong credentials do not get better by asking again
			}
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %s: %v", limit, last)
}

// Client is an HTTP client for the process, with its credentials: no proxy, no compression.
func (p *Process) Client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: WithCredentials(&http.Transport{Proxy: nil, DisableCompression: true}, p.creds)}
}

// Stop ends the process: SIGTERM, then SIGKILL after a grace period.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Kill9 ends the process with SIGKILL, as a power cut or the OOM killer would, and waits for it.
func (p *Process) Kill9() {
	_ = p.Cmd.Process.Kill()
	<-p.exited
}

// Alive reports an error if the process has exited.
func (p *Process) Alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v%s", p.Name, p.waitErr, p.LogTail())
	default:
		return nil
	}
}

// LogTail is the end of the process's log, for error messages.
func (p *Process) LogTail() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\n--- " + p.Name + " log (" + p.LogPath + ") ---\n" + strings.TrimRight(string(b), "\n")
}
