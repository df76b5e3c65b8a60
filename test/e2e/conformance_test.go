package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOCIConformance runs the OCI distribution-spec conformance suite (the module pinned in
// test/conformance, built here) against a node, as its users' registries are judged: pull, push,
// content discovery (tags, referrers) and content management (deletes), with images, indexes,
// artifacts, subjects, non-distributable layers, empty blobs and large manifests; on the node's
// own address, and over HTTPS through nginx with deploy/nginx/outpost.conf, as the IoT Edge API
// proxy fronts it.
//
// Content addressed by sha512 is left out: distribution's storage names every blob and
// manifest by its sha256 digest, as plain distribution does (it fails those tests too).
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
}

// runConformance runs the suite against the registry at addr (tls: disabled or enabled), with
// env added to its environment, and fails with the failed tests and n's log.
func runConformance(t *testing.T, suite, addr, tls string, n *node, env ...string) {
	results := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = results // no oci-conformance.yaml there: the environment alone configures it
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+addr, "OCI_TLS="+tls,
		"OCI_USERNAME=admin", "OCI_PASSWORD="+testAdminPassword,
		"OCI_REPO1=conformance/repo1", "OCI_REPO2=conformance/repo2",
		"OCI_RESULTS_DIR="+results, "OCI_DATA_SHA512=false", "OCI_LOG=warn",
	)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var summary, failed []string
	ran := false
	for line := range strings.SplitSeq(out.String(), "\n") {
		switch {
		case strings.Contains(line, `msg="failed test"`):
			failed = append(failed, line)
		case strings.Contains(line, "......:"):
			summary = append(summary, strings.TrimSpace(line))
			ran = ran || strings.HasPrefix(strings.TrimSpace(line), "Pass....")
		}
	}
	// The suite exits 0 when it cannot even start (a configuration it cannot load): it must
	// have counted passed tests.
	if err != nil || len(failed) > 0 || !ran {
		t.Fatalf("the OCI conformance suite failed (%v):\n%s\n%s%s", err, strings.Join(failed, "\n"), strings.Join(summary, "\n"), tails(&member{node: n, name: "node"}))
	}
	t.Logf("OCI conformance: %s", strings.Join(summary[:min(len(summary), 6)], "; "))
}
