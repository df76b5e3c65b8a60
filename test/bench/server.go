package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
)

// server is one registry process under test, with the client that loads it.
type server struct {
	*benchkit.Process
	client *http.Client
}

// distributionConfig is the plain registry's configuration with the options Outpost gives its
// embedded registry (benchkit.DistributionConfig) and the nosniff header it sets. Logging is at
// warn with the access log off, as Outpost at --log-level warn logs no line per request.
func distributionConfig(addr, dataDir, debugAddr string) ([]byte, error) {
	httpExtra := "  headers:\n    X-Content-Type-Options: [nosniff]\n"
	if debugAddr != "" {
		httpExtra += fmt.Sprintf("  debug:\n    addr: %q\n", debugAddr)
	}
	return benchkit.DistributionConfig(addr, dataDir, "warn", httpExtra, "")
}

// startOutpost runs `outpost serve` on a free loopback port with its data in dir.
func startOutpost(ctx context.Context, binary, dir string) (*server, error) {
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(binary, "serve", "--addr", addr, "--data", data, "--log-level", "warn")
	cmd.Env = benchkit.OutpostEnv()
	return start(ctx, "Outpost", cmd, addr, filepath.Join(dir, "outpost.log"))
}

// startDistribution runs distribution's registry with a generated config.yml in dir. A non-empty
// debugAddr enables its debug server (pprof) there.
func startDistribution(ctx context.Context, binary, dir, debugAddr string) (*server, error) {
	addr, err := benchkit.FreeAddr()
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
	cmd.Env = benchkit.ChildEnv("OTEL_TRACES_EXPORTER=none")
	return start(ctx, "distribution", cmd, addr, filepath.Join(dir, "distribution.log"))
}

func start(ctx context.Context, name string, cmd *exec.Cmd, addr, logPath string) (*server, error) {
	p, err := benchkit.Start(ctx, name, cmd, addr, logPath)
	if err != nil {
		return nil, err
	}
	return &server{Process: p, client: newClient()}, nil
}

// newClient is a keep-alive client for loopback load: no proxy, no compression, enough idle
// connections for every worker.
func newClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Minute, Transport: benchkit.WithAdmin(&http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        128,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     64 << 10,
	})}
}

// stop closes the client's connections and ends the process.
func (s *server) stop() {
	s.client.CloseIdleConnections()
	s.Stop()
}

// push uploads img to s, naming s in any error.
func (s *server) push(ctx context.Context, img *benchkit.Image) error {
	if err := img.Push(ctx, s.client, s.Base); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}
