package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSelfSignedGeneratedOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	certFile, keyFile, generated, err := SelfSigned(dir, []string{"edge.example", "127.0.0.1"})
	if err != nil || !generated {
		t.Fatalf("first call: %v generated=%v", err, generated)
	}
	first, _ := os.ReadFile(certFile)
	if _, _, again, err := SelfSigned(dir, nil); err != nil || again {
		t.Fatalf("second call generated again (%v, %v)", again, err)
	}
	if second, _ := os.ReadFile(certFile); string(second) != string(first) {
		t.Fatal("the certificate changed on the second call")
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(pair.Certificate[0])
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	for _, host := range []string{"edge.example", "127.0.0.1"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("verifying for %s with the certificate as its own CA: %v", host, err)
		}
	}
	if fp := Fingerprint(pair.Certificate[0]); len(fp) != 95 {
		t.Errorf("fingerprint %q", fp)
	}
}

func TestReloaderFollowsFileChanges(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	certA, keyA, _, err := SelfSigned(dirA, []string{"a.example"})
	if err != nil {
		t.Fatal(err)
	}
	certB, keyB, _, err := SelfSigned(dirB, []string{"b.example"})
	if err != nil {
		t.Fatal(err)
	}
	live := t.TempDir()
	certFile, keyFile := filepath.Join(live, "tls.crt"), filepath.Join(live, "tls.key")
	copyFile(t, certA, certFile)
	copyFile(t, keyA, keyFile)
	r, err := NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.now = func() time.Time { return now }
	leaf := func() string {
		c, _ := r.GetCertificate(nil)
		x, _ := x509.ParseCertificate(c.Certificate[0])
		return x.DNSNames[0]
	}
	if leaf() != "a.example" {
		t.Fatal("not serving the first certificate")
	}
	// A half-written change (new certificate, old key) keeps the previous pair.
	copyFile(t, certB, certFile)
	bump(t, certFile, 1)
	now = now.Add(2 * time.Second)
	if leaf() != "a.example" {
		t.Fatal("a mismatched pair replaced the certificate")
	}
	copyFile(t, keyB, keyFile)
	bump(t, keyFile, 2)
	now = now.Add(2 * time.Second)
	if leaf() != "b.example" {
		t.Fatal("the renewed pair was not picked up")
	}
	if _, err := NewReloader(filepath.Join(live, "missing.crt"), keyFile, nil); err == nil {
		t.Fatal("a missing certificate file was accepted")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// bump moves a file's modification time, which a fast rewrite may leave unchanged.
func bump(t *testing.T, f string, s int) {
	t.Helper()
	at := time.Now().Add(time.Duration(s) * time.Second)
	if err := os.Chtimes(f, at, at); err != nil {
		t.Fatal(err)
	}
}
