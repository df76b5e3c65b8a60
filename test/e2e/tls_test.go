package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// tlsHost is the name the test's certificate is issued to. go-containerregistry speaks plain HTTP
// to loopback addresses, so the HTTPS pushes address the node by this name, and the transport
// dials the node's loopback address whatever the name.
const tlsHost = "outpost.test"

// selfSignedCert writes a self-signed certificate for tlsHost and 127.0.0.1 and its key.
func selfSignedCert(t testing.TB) *tlsFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: tlsHost},
		DNSNames:              []string{tlsHost},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := &tlsFiles{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), pool: x509.NewCertPool()}
	files.pool.AddCert(cert)
	if err := os.WriteFile(files.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestHTTPS serves HTTPS with a self-signed certificate and pushes and pulls over it.
func TestHTTPS(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{tls: selfSignedCert(t)})
	if !strings.Contains(n.logs(), `"scheme":"https"`) {
		t.Errorf("the serving log line does not say https:\n%s", n.logs())
	}

	// go-containerregistry, by host name: the transport trusts the certificate and dials loopback.
	tr := n.transport.Clone()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, n.addr)
	}
	_, port, _ := net.SplitHostPort(n.addr)
	opts := []remote.Option{remote.WithTransport(n.withCredentials(tr)), remote.WithContext(testContext(t, 2*time.Minute))}
	ref, err := name.ParseReference(tlsHost + ":" + port + "/secure/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if ref.Context().Scheme() != "https" {
		t.Fatalf("go-containerregistry would use %s for %s", ref.Context().Scheme(), ref)
	}
	img := randomImage(t, 2, 128<<10)
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("pushing over HTTPS: %v", err)
	}
	got, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("pulling over HTTPS: %v", err)
	}
	if g, w := mustDigest(t, got), mustDigest(t, img); g != w {
		t.Fatalf("pulled digest %s, pushed %s", g, w)
	}
	for d, want := range compressedLayers(t, img) {
		if b := n.getBlob(t, "secure/app", d); string(b) != string(want) {
			t.Errorf("layer %s differs over HTTPS", d)
		}
	}

	// Plain requests by IP address over HTTPS.
	expectStatus(t, "GET /v2/ over HTTPS", n.do(t, http.MethodGet, "/v2/", nil), http.StatusOK)

	// HTTP/2 for a client that offers it by ALPN (children do: their headers are compressed).
	h2 := n.transport.Clone()
	h2.ForceAttemptHTTP2 = true
	defer h2.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: h2, Timeout: 10 * time.Second}).Get(n.base() + "/v2/"); err != nil {
		t.Errorf("GET /v2/ offering HTTP/2: %v", err)
	} else {
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("a client offering HTTP/2 over TLS was answered in %s", resp.Proto)
		}
	}

	// A client that does not trust the certificate is refused, and so is plain HTTP.
	untrusting := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}
	if resp, err := untrusting.Get(n.base() + "/v2/"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without the certificate got %s", resp.Status)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the certificate: %v, want a certificate error", err)
	}
	if resp, err := untrusting.Get("http://" + n.addr + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP to the HTTPS port got %s", resp.Status)
		}
	}
}
