package e2e

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// TestConnectedOverTLS: a root serving HTTPS with the certificate it generated at its first
// start (fingerprint logged); the admin CLI and a connected registry trust it through a CA file,
// and the child syncs over HTTPS. A child that does not trust it syncs nothing.
func TestConnectedOverTLS(t *testing.T) {
	t.Parallel()
	root := startNode(t, nodeOptions{selfSigned: true})
	certPEM, err := os.ReadFile(root.generatedCert())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("the generated certificate is not PEM")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(block.Bytes)
	var fp []string
	for _, b := range sum {
		fp = append(fp, strings.ToUpper(hex.EncodeToString([]byte{b})))
	}
	if !strings.Contains(root.logs(), strings.Join(fp, ":")) {
		t.Errorf("the root's log does not show the certificate's SHA-256 fingerprint %s", strings.Join(fp, ":"))
	}

	cli := func(args ...string) string {
		t.Helper()
		r := runOutpost(t, []string{"OUTPOST_PASSWORD=" + testAdminPassword},
			append(args, "--registry", root.base(), "--ca-file", root.generatedCert())...)
		if r.code != 0 {
			t.Fatalf("outpost %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}
	cs := map[string]string{}
	for _, name := range []string{"tlsEdge1", "tlsEdge2"} {
		cli("connected-registry", "create", "--name", name, "--repository", "tls/*", "--sync-schedule", "@every 2s")
		out := cli("connected-registry", "get-settings", "--name", name, "--parent-protocol", "https", "--generate-password", "1")
		cs[name] = strings.TrimPrefix(strings.TrimSpace(out), "ACR_REGISTRY_CONNECTION_STRING=")
		if c, err := acrapi.ParseConnectionString(cs[name]); err != nil || c.ParentEndpointProtocol != "https" {
			t.Fatalf("connection string of %s: %v %+v", name, err, c)
		}
	}
	img := randomImage(t, 2, 256<<10)
	want := root.pushImage(t, "tls/app:v1", img)

	trusting := startNode(t, nodeOptions{env: []string{"ACR_REGISTRY_CONNECTION_STRING=" + cs["tlsEdge1"], "OUTPOST_PARENT_CAFILE=" + root.generatedCert()}})
	distrusting := startNode(t, nodeOptions{env: []string{"ACR_REGISTRY_CONNECTION_STRING=" + cs["tlsEdge2"]}})
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, _ := (&member{node: trusting, name: "tlsEdge1"}).headDigest(t, "tls/app", "v1")
		if got == want.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child trusting the root's certificate did not sync tls/app:v1 within 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	(&member{node: trusting, name: "tlsEdge1"}).expectServes(t, map[string]v1.Image{"tls/app:v1": img})

	eventually(t, 30*time.Second, "the child without the CA reports an untrusted certificate", func() (bool, string) {
		logs := distrusting.logs()
		return strings.Contains(logs, "certificate signed by unknown authority") || strings.Contains(logs, "x509"), lastLine(logs)
	})
	if got, _ := (&member{node: distrusting, name: "tlsEdge2"}).headDigest(t, "tls/app", "v1"); got != "" {
		t.Errorf("the child that does not trust the root synced tls/app:v1")
	}
}
