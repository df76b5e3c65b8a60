package cli

import (
	"bytes"
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runEnv(t *testing.T, environ []string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := Run(ctx, args, Env{Stdout: &out, Stderr: &errOut, Environ: environ})
	return result{code, out.String(), errOut.String()}
}

func TestHealthcheck(t *testing.T) {
	var status int
	var gotUA string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotUA = r.UserAgent()
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(status)
			_, _ = w.Write([]byte("not ready:\nstore closed\n"))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/redirect":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	status = http.StatusOK
	r := run(t, "healthcheck", "--url", srv.URL+"/readyz")
	if r.code != ExitOK || r.stdout != "" || r.stderr != "" {
		t.Fatalf("healthy node: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if gotUA != "outpost-healthcheck" {
		t.Errorf("User-Agent %q", gotUA)
	}
	status = http.StatusNoContent
	if r := run(t, "healthcheck", "--url", srv.URL+"/readyz"); r.code != ExitOK {
		t.Errorf("204: exit %d, stderr %q", r.code, r.stderr)
	}

	status = http.StatusServiceUnavailable
	r = run(t, "healthcheck", "--url", srv.URL+"/readyz")
	if r.code != ExitError {
		t.Errorf("503: exit %d, want 1", r.code)
	}
	oneErrorLine(t, r, "unhealthy", "503 Service Unavailable", "not ready: store closed")

	r = run(t, "healthcheck", "--url", srv.URL+"/redirect")
	if r.code != ExitError {
		t.Errorf("302: exit %d, want 1 (a redirect is not followed)", r.code)
	}
	oneErrorLine(t, r, "302")

	start := time.Now()
	r = run(t, "healthcheck", "--url", srv.URL+"/slow", "--timeout", "PT0.3S")
	if r.code != ExitError || time.Since(start) > 3*time.Second {
		t.Errorf("slow node: exit %d after %s, want 1 within the timeout", r.code, time.Since(start))
	}
	oneErrorLine(t, r, "no answer within")

	// Nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	r = run(t, "healthcheck", "--url", "http://"+closed+"/readyz")
	if r.code != ExitError {
		t.Errorf("connection refused: exit %d, want 1", r.code)
	}
	oneErrorLine(t, r, "unhealthy", closed)
}

func TestHealthcheckDefaultURL(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want string
	}{
		{nil, "http://127.0.0.1:8080/readyz"},
		{[]string{"OUTPOST_ADDR=:9000"}, "http://127.0.0.1:9000/readyz"},
		{[]string{"OUTPOST_ADDR=0.0.0.0:5000"}, "http://127.0.0.1:5000/readyz"},
		{[]string{"OUTPOST_ADDR=[::]:5001"}, "http://127.0.0.1:5001/readyz"},
		{[]string{"OUTPOST_ADDR=garbage"}, "http://127.0.0.1:8080/readyz"},
	} {
		if got := healthURLFromEnv(c.env); got != c.want {
			t.Errorf("healthURLFromEnv(%q) = %q, want %q", c.env, got, c.want)
		}
	}

	// The default URL is used: a node on OUTPOST_ADDR's port answers.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	if r := runEnv(t, []string{"OUTPOST_ADDR=:" + port}, "healthcheck"); r.code != ExitOK {
		t.Errorf("default URL from OUTPOST_ADDR: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestHealthcheckTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	u := srv.URL + "/readyz"

	r := run(t, "healthcheck", "--url", u)
	if r.code != ExitError {
		t.Errorf("untrusted certificate: exit %d, want 1", r.code)
	}
	oneErrorLine(t, r, "certificate")
	if r := run(t, "healthcheck", "--url", u, "--ca-file", caFile); r.code != ExitOK {
		t.Errorf("--ca-file: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, "healthcheck", "--url", u, "--insecure-skip-verify"); r.code != ExitOK {
		t.Errorf("--insecure-skip-verify: exit %d, stderr %q", r.code, r.stderr)
	}
}

// Bad input exits 1 too: Docker reserves 2 in a health check.
func TestHealthcheckBadInput(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--url", "ftp://x/readyz"}, []string{"--url", "http://"}},
		{[]string{"--url", "127.0.0.1:8080/readyz"}, []string{"--url"}},
		{[]string{"--timeout", "soon"}, []string{"--timeout", `"soon"`}},
		{[]string{"--timeout", "PT0S"}, []string{"--timeout", "more than zero"}},
		{[]string{"--url", "https://127.0.0.1:1/readyz", "--ca-file", notPEM}, []string{"--ca-file", "no PEM"}},
		{[]string{"--url", "https://127.0.0.1:1/readyz", "--ca-file", filepath.Join(dir, "missing.pem")}, []string{"--ca-file", "missing.pem"}},
		{[]string{"--url", "http://127.0.0.1:1/readyz", "--insecure-skip-verify"}, []string{"https"}},
		{[]string{"--no-such-flag"}, []string{"no-such-flag"}},
		{[]string{"extra"}, []string{"no arguments", "extra"}},
	} {
		r := run(t, append([]string{"healthcheck"}, c.args...)...)
		if r.code != ExitError {
			t.Errorf("healthcheck %s: exit %d, want 1", strings.Join(c.args, " "), r.code)
		}
		oneErrorLine(t, r, c.want...)
	}
}
