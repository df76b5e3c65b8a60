package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const distributionModule = "github.com/distribution/distribution/v3"

// server is one registry process under test.
type server struct {
	name    string
	base    string // http://127.0.0.1:PORT
	client  *http.Client
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	logPath string
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

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// childEnv is this process's environment without variables that would reconfigure the servers
// (Outpost's OUTPOST_*, OpenTelemetry's OTEL_*, proxies), plus extra.
func childEnv(extra ...string) []string {
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

// distributionConfig is the plain registry's configuration with the options Outpost gives its
// embedded registry (internal/registry/registry.go): filesystem storage, delete enabled, the
// in-memory blob descriptor cache, redirects disabled, relative URLs, the nosniff header. Logging
// is at warn with the access log off, as Outpost at --log-level warn logs no line per request.
func distributionConfig(addr, dataDir, debugAddr string) ([]byte, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
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
  headers:
    X-Content-Type-Options: [nosniff]
`, dataDir, addr, hex.EncodeToString(secret))
	if debugAddr != "" {
		fmt.Fprintf(&b, "  debug:\n    addr: %q\n", debugAddr)
	}
	return b.Bytes(), nil
}

// startOutpost runs `outpost serve` on a free loopback port with its data in dir.
func startOutpost(ctx context.Context, binary, dir string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(binary, "serve", "--addr", addr, "--data", data, "--log-level", "warn")
	cmd.Env = childEnv()
	return start(ctx, "Outpost", cmd, addr, filepath.Join(dir, "outpost.log"))
}

// startDistribution runs distribution's registry with a generated config.yml in dir. A non-empty
// debugAddr enables its debug server (pprof) there.
func startDistribution(ctx context.Context, binary, dir, debugAddr string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg, err := distributionConfig(addr, filepath.Join(dir, "data"), debugAddr)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "serve", cfgPath)
	// Tracing stays on as in any plain registry, but its OTLP exporter would try to reach a
	// collector on localhost:4318 that is not there.
	cmd.Env = childEnv("OTEL_TRACES_EXPORTER=none")
	return start(ctx, "distribution", cmd, addr, filepath.Join(dir, "distribution.log"))
}

func start(ctx context.Context, name string, cmd *exec.Cmd, addr, logPath string) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	setChildAttrs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &server{name: name, base: "http://" + addr, client: newClient(), cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s did not become ready on %s: %w%s", name, addr, err, s.logTail())
	}
	return s, nil
}

// newClient is a keep-alive client for loopback load: no proxy, no compression, enough idle
// connections for every worker.
func newClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        128,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     64 << 10,
	}}
}

func (s *server) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("process exited: %v", s.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v2/", nil)
		resp, err := s.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %s: %v", limit, last)
}

// stop ends the process: SIGTERM, then SIGKILL after a grace period.
func (s *server) stop() {
	s.client.CloseIdleConnections()
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// alive reports an error if the process has exited.
func (s *server) alive() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s exited: %v%s", s.name, s.waitErr, s.logTail())
	default:
		return nil
	}
}

// logTail is the end of the server's log, for error messages.
func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\n--- " + s.name + " log (" + s.logPath + ") ---\n" + strings.TrimRight(string(b), "\n")
}

var errStatus = errors.New("unexpected status")
