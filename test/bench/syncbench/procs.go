package main

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

// The process helpers below follow test/bench/server.go (a package main of its own, so they
// cannot be imported): the same environment filtering, readiness check and stop sequence.

const distributionModule = "github.com/distribution/distribution/v3"

// server is one registry process: the parent, an Outpost child, or distribution's cache.
type server struct {
	name    string
	addr    string // 127.0.0.1:PORT
	base    string // http://127.0.0.1:PORT
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	logPath string
}

// distributionVersion reads the distribution module version a binary embeds.
func distributionVersion(binary string) (string, error) {
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		return "", fmt.Errorf("reading the build information of %s: %w", binary, err)
	}
	if bi.Main.Path == distributionModule {
		return bi.Main.Version, nil
	}
	for _, d := range bi.Deps {
		if d.Path == distributionModule {
			if d.Replace != nil {
				return d.Replace.Version, nil
			}
			return d.Version, nil
		}
	}
	return "", fmt.Errorf("%s does not embed %s", binary, distributionModule)
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
// (OUTPOST_*, REGISTRY_*, OTEL_*, proxies), plus extra.
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

// distributionCacheConfig is a plain distribution registry configured as a pull-through cache of
// remoteURL, with the storage options test/bench gives it. Logging is at info so that its cache
// errors (aborted fills) are in the log.
func distributionCacheConfig(addr, dataDir, remoteURL string) ([]byte, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
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
proxy:
  remoteurl: %q
`, dataDir, addr, hex.EncodeToString(secret), remoteURL)
	return b.Bytes(), nil
}

// startProcess starts cmd, appending its output to logPath, and waits until GET /v2/ on addr
// answers 200.
func startProcess(ctx context.Context, name string, cmd *exec.Cmd, addr, logPath string) (*server, error) {
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
	s := &server{name: name, addr: addr, base: "http://" + addr, cmd: cmd, exited: make(chan struct{}), logPath: logPath}
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

func (s *server) waitReady(ctx context.Context, limit time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()
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
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %s: %v", limit, last)
}

// stop ends the process: SIGTERM, then SIGKILL after a grace period.
func (s *server) stop() {
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

// kill9 ends the process with SIGKILL, as a power cut or the OOM killer would, and waits for it.
func (s *server) kill9() {
	_ = s.cmd.Process.Kill()
	<-s.exited
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
