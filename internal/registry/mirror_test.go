package registry

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

var testNamespaces = normalizeNamespaces(map[string]string{"docker.io": "", "GHCR.io": "ghcr/", "registry.example:5000": "mirrors/example"})

func TestRewriteMirrorRequest(t *testing.T) {
	tests := []struct {
		name, target        string
		wantPath, wantQuery string
		wantRewrite         *mirrorRewrite
		same                bool // the request is passed on untouched
	}{
		{name: "no query", target: "/v2/library/alpine/manifests/3.20", same: true},
		{name: "no ns", target: "/v2/library/alpine/manifests/3.20?n=10", same: true},
		{name: "unmapped ns keeps everything", target: "/v2/org/app/manifests/1?ns=quay.io", same: true},
		{name: "nsx is not ns", target: "/v2/org/app/manifests/1?nsx=ghcr.io", same: true},
		{name: "docker.io maps to empty: ns dropped, path kept", target: "/v2/library/alpine/manifests/3.20?ns=docker.io",
			wantPath: "/v2/library/alpine/manifests/3.20"},
		{name: "ghcr prefix", target: "/v2/org/app/manifests/1.0?ns=ghcr.io",
			wantPath: "/v2/ghcr/org/app/manifests/1.0", wantRewrite: &mirrorRewrite{ns: "ghcr.io", prefix: "ghcr"}},
		{name: "host case ignored", target: "/v2/org/app/blobs/sha256:abc?ns=GHCR.IO",
			wantPath: "/v2/ghcr/org/app/blobs/sha256:abc", wantRewrite: &mirrorRewrite{ns: "GHCR.IO", prefix: "ghcr"}},
		{name: "port and nested prefix", target: "/v2/app/tags/list?n=5&ns=registry.example%3A5000&last=a",
			wantPath: "/v2/mirrors/example/app/tags/list", wantQuery: "n=5&last=a",
			wantRewrite: &mirrorRewrite{ns: "registry.example:5000", prefix: "mirrors/example"}},
		{name: "base path not prefixed", target: "/v2/?ns=ghcr.io", wantPath: "/v2/",
			wantRewrite: &mirrorRewrite{ns: "ghcr.io", prefix: "ghcr"}},
		{name: "catalog not prefixed", target: "/v2/_catalog?ns=ghcr.io", wantPath: "/v2/_catalog",
			wantRewrite: &mirrorRewrite{ns: "ghcr.io", prefix: "ghcr"}},
		{name: "outside v2", target: "/healthz?ns=ghcr.io", wantPath: "/healthz",
			wantRewrite: &mirrorRewrite{ns: "ghcr.io", prefix: "ghcr"}},
		{name: "repeated ns: first counts, all dropped", target: "/v2/a/manifests/x?ns=ghcr.io&ns=docker.io",
			wantPath: "/v2/ghcr/a/manifests/x", wantRewrite: &mirrorRewrite{ns: "ghcr.io", prefix: "ghcr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.target, nil)
			orig := *req.URL
			got, m := rewriteMirrorRequest(req, testNamespaces)
			if *req.URL != orig {
				t.Fatalf("the original request was modified: %v", req.URL)
			}
			if tt.same {
				if got != req || m != nil {
					t.Fatalf("rewritten to %v, want untouched", got.URL)
				}
				return
			}
			if got.URL.Path != tt.wantPath || got.URL.RawQuery != tt.wantQuery {
				t.Errorf("rewritten to path %q query %q, want %q %q", got.URL.Path, got.URL.RawQuery, tt.wantPath, tt.wantQuery)
			}
			if got.RequestURI != got.URL.RequestURI() {
				t.Errorf("RequestURI %q does not match the URL %q", got.RequestURI, got.URL.RequestURI())
			}
			switch {
			case (m == nil) != (tt.wantRewrite == nil):
				t.Errorf("rewrite = %+v, want %+v", m, tt.wantRewrite)
			case m != nil && *m != *tt.wantRewrite:
				t.Errorf("rewrite = %+v, want %+v", *m, *tt.wantRewrite)
			}
		})
	}
	// Without a mapping nothing is rewritten.
	req := httptest.NewRequest(http.MethodGet, "/v2/org/app/manifests/1?ns=ghcr.io", nil)
	if got, m := rewriteMirrorRequest(req, nil); got != req || m != nil {
		t.Fatal("rewritten without a mapping")
	}
}

func TestMirrorRestore(t *testing.T) {
	m := &mirrorRewrite{ns: "registry.example:5000", prefix: "mirrors/example"}
	for in, want := range map[string]string{
		"/v2/mirrors/example/app/blobs/uploads/u1?_state=abc": "/v2/app/blobs/uploads/u1?_state=abc&ns=registry.example%3A5000",
		"/v2/mirrors/example/team/app/blobs/sha256:1":         "/v2/team/app/blobs/sha256:1?ns=registry.example%3A5000",
		"/v2/other/app/blobs/sha256:1":                        "/v2/other/app/blobs/sha256:1",               // not ours: untouched
		"http://host/v2/mirrors/example/app/blobs/x":          "http://host/v2/mirrors/example/app/blobs/x", // absolute: untouched
		"/v2/mirrors/example/":                                "/v2/mirrors/example/",
	} {
		if got := m.restore(in); got != want {
			t.Errorf("restore(%q) = %q, want %q", in, got, want)
		}
	}
	link := `</v2/mirrors/example/app/tags/list?last=b&n=2>; rel="next"`
	if got, want := m.restoreLink(link), `</v2/app/tags/list?last=b&n=2&ns=registry.example%3A5000>; rel="next"`; got != want {
		t.Errorf("restoreLink = %q, want %q", got, want)
	}
}

func FuzzMirrorRewrite(f *testing.F) {
	for _, s := range [][2]string{
		{"/v2/library/alpine/manifests/3.20", "ns=docker.io"},
		{"/v2/org/app/blobs/uploads/", "ns=ghcr.io&digest=sha256:1"},
		{"/v2/_catalog", "ns=ghcr.io"},
		{"/v2/a/tags/list", "n=1&ns=registry.example%3A5000&ns=x"},
		{"/v2//a", "ns=GHCR.IO;x"},
		{"/v2/a/manifests/b", "ns=%zz&n=%"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, path, rawQuery string) {
		if !strings.HasPrefix(path, "/") {
			return
		}
		req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: path, RawQuery: rawQuery}, RequestURI: path}
		req = req.WithContext(context.Background())
		got, m := rewriteMirrorRequest(req, testNamespaces)
		if got == req {
			if m != nil {
				t.Fatal("a rewrite without a new request")
			}
			return
		}
		ns, rest, found := cutNSParam(rawQuery)
		prefix, mapped := testNamespaces[strings.ToLower(ns)]
		if !found || !mapped {
			t.Fatalf("rewrote %q?%q without a mapped ns", path, rawQuery)
		}
		if got.URL.RawQuery != rest {
			t.Fatalf("query %q, want %q", got.URL.RawQuery, rest)
		}
		if _, again, _ := cutNSParam(got.URL.RawQuery); again != got.URL.RawQuery {
			t.Fatalf("ns left in %q", got.URL.RawQuery)
		}
		if !strings.HasSuffix(got.URL.Path, path[min(len(path), len("/v2/")):]) {
			t.Fatalf("path %q lost the end of %q", got.URL.Path, path)
		}
		if prefix == "" {
			if got.URL.Path != path || m != nil {
				t.Fatalf("empty prefix changed the path: %q", got.URL.Path)
			}
			return
		}
		if m == nil || m.prefix != prefix {
			t.Fatalf("rewrite %+v, want prefix %q", m, prefix)
		}
		if got.URL.Path != path {
			if want := "/v2/" + prefix + "/" + strings.TrimPrefix(path, "/v2/"); got.URL.Path != want {
				t.Fatalf("path %q, want %q", got.URL.Path, want)
			}
			// What the registry would answer for the rewritten path comes back to the client's.
			back, err := url.Parse(m.restore(got.URL.Path))
			if err == nil && back.Path != path && !strings.Contains(path, "%") {
				if _, perr := url.Parse(got.URL.Path); perr == nil {
					t.Fatalf("restore(%q) = %q, want path %q", got.URL.Path, back.Path, path)
				}
			}
		}
	})
}

// TestMirrorRequests serves containerd's mirror requests from a registry: pull through the
// mapping, an unmapped ns, and an upload whose relative Location comes back in the client's view.
func TestMirrorRequests(t *testing.T) {
	r, err := New(context.Background(), Options{DataDir: t.TempDir(),
		MirrorNamespaces: map[string]string{"docker.io": "", "ghcr.io": "ghcr"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(func() { srv.Close(); _ = r.Close() })
	host := strings.TrimPrefix(srv.URL, "http://")

	push := func(repo string) string {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(host + "/" + repo + ":v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	alpine := push("library/alpine")
	app := push("ghcr/org/app")
	quay := push("team/tool")

	get := func(method, target string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+target, nil)
		req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for target, want := range map[string]string{
		"/v2/library/alpine/manifests/v1?ns=docker.io": alpine,
		"/v2/org/app/manifests/v1?ns=ghcr.io":          app,
		"/v2/org/app/manifests/v1?ns=GHCR.IO":          app,
		"/v2/ghcr/org/app/manifests/v1":                app, // the local name works too
		"/v2/team/tool/manifests/v1?ns=quay.io":        quay,
	} {
		resp := get(http.MethodGet, target)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != want {
			t.Errorf("GET %s: %d digest %q, want 200 %s", target, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), want)
		}
	}
	for _, target := range []string{"/v2/org/app/manifests/v1?ns=docker.io", "/v2/library/alpine/manifests/v1?ns=ghcr.io"} {
		if resp := get(http.MethodHead, target); resp.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD %s: %d, want 404", target, resp.StatusCode)
		}
	}

	// An upload through the mirror view: POST, then PUT to the relative Location.
	blob := []byte("a blob pushed through ?ns=ghcr.io")
	dg := digest.FromBytes(blob)
	resp, err := http.Post(srv.URL+"/v2/org/app/blobs/uploads/?ns=ghcr.io", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, "/v2/org/app/blobs/uploads/") || !strings.Contains(loc, "ns=ghcr.io") {
		t.Fatalf("POST upload: %d Location %q, want 202 and a relative location in the client's view", resp.StatusCode, loc)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("digest", dg.String())
	u.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, srv.URL+u.String(), bytes.NewReader(blob))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v2/org/app/blobs/"+dg.String()+"?ns=ghcr.io" {
		t.Fatalf("PUT upload: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := get(http.MethodHead, "/v2/ghcr/org/app/blobs/"+dg.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("the blob is not stored under ghcr/org/app: %d", resp.StatusCode)
	}
}
