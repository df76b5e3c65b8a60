package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestSplitPaths(t *testing.T) {
	tests := []struct {
		path, repo, ref string
		referrers, ok   bool
	}{
		{path: "/v2/a/referrers/sha256:abc", repo: "a", ref: "sha256:abc", referrers: true, ok: true},
		{path: "/v2/team/app/referrers/sha256:abc", repo: "team/app", ref: "sha256:abc", referrers: true, ok: true},
		{path: "/v2/a/referrers/manifests/latest", repo: "a/referrers", ref: "latest", ok: true},
		{path: "/v2/a/referrers/", referrers: true},
		{path: "/v2/referrers/x", referrers: true},
		{path: "/v2/a/manifests/latest", repo: "a", ref: "latest", ok: true},
		{path: "/v2/a/b/manifests/sha256:1", repo: "a/b", ref: "sha256:1", ok: true},
		{path: "/v2/a/manifests/", ok: false},
		{path: "/v1/a/manifests/x", ok: false},
	}
	for _, tt := range tests {
		var repo, ref string
		var ok bool
		if tt.referrers {
			repo, ref, ok = splitReferrers(tt.path)
		} else {
			repo, ref, ok = splitManifest(tt.path)
		}
		if ok != tt.ok || repo != tt.repo || ref != tt.ref {
			t.Errorf("%s: got (%q, %q, %v), want (%q, %q, %v)", tt.path, repo, ref, ok, tt.repo, tt.ref, tt.ok)
		}
	}
}

func FuzzSplitPaths(f *testing.F) {
	for _, s := range []string{"/v2/a/referrers/sha256:abc", "/v2/a/manifests/x", "/v2//referrers/", "/v2/a/referrers/b/referrers/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if repo, d, ok := splitReferrers(path); ok && (repo == "" || d == "" || strings.Contains(d, "/")) {
			t.Fatalf("splitReferrers(%q) = %q, %q", path, repo, d)
		}
		if repo, ref, ok := splitManifest(path); ok && (repo == "" || ref == "" || strings.Contains(ref, "/")) {
			t.Fatalf("splitManifest(%q) = %q, %q", path, repo, ref)
		}
	})
}

func TestParseSubject(t *testing.T) {
	subj := digest.FromString("subject")
	self := digest.FromString("self")
	tests := []struct {
		name, body, contentType string
		ok                      bool
		want                    v1.Descriptor
	}{
		{name: "no subject", body: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`},
		{name: "not json", body: `{`},
		{name: "bad subject digest", body: `{"subject":{"digest":"sha256:nope"}}`},
		{
			name: "artifactType wins",
			body: `{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.sbom","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"subject":{"digest":"` + subj.String() + `"},"annotations":{"a":"b"}}`,
			ok:   true,
			want: v1.Descriptor{MediaType: v1.MediaTypeImageManifest, ArtifactType: "application/x.sbom", Annotations: map[string]string{"a": "b"}},
		},
		{
			name: "config mediaType when no artifactType",
			body: `{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/x.sig.config"},"subject":{"digest":"` + subj.String() + `"}}`,
			ok:   true,
			want: v1.Descriptor{MediaType: v1.MediaTypeImageManifest, ArtifactType: "application/x.sig.config"},
		},
		{
			name:        "media type from Content-Type",
			body:        `{"schemaVersion":2,"subject":{"digest":"` + subj.String() + `"},"manifests":[]}`,
			contentType: v1.MediaTypeImageIndex,
			ok:          true,
			want:        v1.Descriptor{MediaType: v1.MediaTypeImageIndex},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, desc, ok := parseSubject([]byte(tt.body), tt.contentType, self)
			if ok != tt.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			tt.want.Digest, tt.want.Size = self, int64(len(tt.body))
			if got != subj {
				t.Errorf("subject = %s", got)
			}
			a, _ := json.Marshal(desc)
			b, _ := json.Marshal(tt.want)
			if !bytes.Equal(a, b) {
				t.Errorf("descriptor = %s, want %s", a, b)
			}
		})
	}
}

// newTestRegistry serves a Registry on an httptest server.
func newTestRegistry(t *testing.T) (*Registry, *httptest.Server) {
	t.Helper()
	r, err := New(context.Background(), Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(func() { srv.Close(); _ = r.Close() })
	return r, srv
}

// rawClient speaks the distribution API to a test registry by hand, for what
// go-containerregistry cannot send (content addressed by sha512, malformed manifests) and for
// the exact answers.
type rawClient struct {
	t   *testing.T
	srv *httptest.Server
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) code() string {
	var e struct {
		Errors []struct{ Code, Detail string }
	}
	if json.Unmarshal(a.body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func (c rawClient) do(method, path string, body []byte, header ...string) answer {
	c.t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// pushBlob uploads b to repo in one PUT, naming it by dgst.
func (c rawClient) pushBlob(repo string, b []byte, dgst digest.Digest) answer {
	c.t.Helper()
	start := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	if start.status != http.StatusAccepted {
		c.t.Fatalf("starting an upload: %d %s", start.status, start.body)
	}
	loc := start.header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	return c.do(http.MethodPut, strings.TrimPrefix(loc, c.srv.URL)+sep+"digest="+dgst.String(), b, "Content-Type", "application/octet-stream")
}

func TestReferrerIndexSkipsWhatIsNotStored(t *testing.T) {
	r, srv := newTestRegistry(t)
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	imgDigest, _ := img.Digest()
	stored, _ := img.Manifest()
	subject := digest.Digest(imgDigest.String())

	// An entry recorded for a manifest that never got stored (a crash between the two steps)
	// and a torn file are both left out, and pruned.
	ghost := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromString("ghost"), Size: 5}
	if err := r.referrers.Record("app", subject, ghost); err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(r.referrers.subjectDir("app", subject), "sha256-torn.json")
	if err := os.WriteFile(torn, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An entry whose manifest is stored is listed.
	real := v1.Descriptor{MediaType: string(stored.MediaType), Digest: subject, Size: 1}
	if err := r.referrers.Record("app", subject, real); err != nil {
		t.Fatal(err)
	}
	got, err := r.referrers.List(context.Background(), "app", subject, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Digest != subject {
		t.Fatalf("List = %+v, want only the stored manifest", got)
	}
	entries, _ := os.ReadDir(r.referrers.subjectDir("app", subject))
	if len(entries) != 1 {
		t.Fatalf("ghost and torn entries not pruned: %d files left", len(entries))
	}
	if _, err := r.referrers.List(context.Background(), "app", digest.FromString("none"), ""); err != nil {
		t.Fatal(err)
	}
	if err := r.referrers.Record("Bad Name", subject, real); err == nil {
		t.Fatal("invalid repository name accepted")
	}
}

func TestReferrersMethodNotAllowed(t *testing.T) {
	_, srv := newTestRegistry(t)
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/v2/app/referrers/"+digest.FromString("x").String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("status %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestUploadSecretSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	a, err := loadOrCreateSecret(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadOrCreateSecret(filepath.Join(dir, "s"))
	if err != nil || a != b || len(a) != 64 {
		t.Fatalf("secret not kept: %q %q %v", a, b, err)
	}
	info, _ := os.Stat(filepath.Join(dir, "s"))
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("secret mode %v, want 0600", info.Mode().Perm())
	}
}

func TestRoute(t *testing.T) {
	for path, want := range map[string][2]string{
		"/v2/":                          {"base", ""},
		"/v2/a/b/manifests/latest":      {"manifest", "a/b"},
		"/v2/a/blobs/sha256:" + hex64(): {"blob", "a"},
		"/v2/a/blobs/uploads/":          {"blob-upload", "a"},
		"/v2/a/tags/list":               {"tags", "a"},
		"/v2/_catalog":                  {"catalog", ""},
		"/v2/a/referrers/sha256:1":      {"referrers", "a"},
		"/v2/nope":                      {"unknown", ""},
	} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		route, repo := Route(req)
		if route != want[0] || repo != want[1] {
			t.Errorf("Route(%s) = %q, %q; want %q, %q", path, route, repo, want[0], want[1])
		}
	}
}

func hex64() string { return strings.Repeat("a", 64) }

// TestRouteFastPathAgreesWithRegexp: the string fast path names every path as distribution's
// router does.
func TestRouteFastPathAgreesWithRegexp(t *testing.T) {
	d := "sha256:" + hex64()
	for _, path := range []string{
		"/v2/", "/v2/_catalog", "/v2/a/tags/list", "/v2/a/b/c/tags/list",
		"/v2/a/manifests/latest", "/v2/a/b/manifests/v1.2-rc_3", "/v2/a/manifests/" + d,
		"/v2/a/manifests/bad:tag", "/v2/A/manifests/latest", "/v2/a/manifests/" + strings.Repeat("t", 200),
		"/v2/a/blobs/" + d, "/v2/a/b/blobs/" + d, "/v2/a/blobs/sha256:short", "/v2/a/blobs/latest",
		"/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/0f9c8c", "/v2/a/blobs/uploads/0f9c8c/x",
		"/v2/manifests/manifests/x", "/v2/blobs/blobs/" + d, "/v2/a//manifests/x", "/v2/a/referrers/" + d,
	} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		r1, n1 := Route(req)
		if r1 == RouteReferrers {
			continue
		}
		r2, n2 := routeByRegexp(req)
		if r1 != r2 || n1 != n2 {
			t.Errorf("%s: fast path (%q, %q), regexp (%q, %q)", path, r1, n1, r2, n2)
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	req := httptest.NewRequest(http.MethodHead, "/v2/library/alpine/blobs/sha256:"+hex64(), nil)
	for b.Loop() {
		Route(req)
	}
}

func TestReadOnlyDeniesWritesNotReads(t *testing.T) {
	r, srv := newTestRegistry(t)
	ref, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:v1")
	img, _ := random.Image(64, 1)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	r.SetReadOnly("this connected registry is ReadOnly: push to its parent")
	ref2, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:v2")
	err := remote.Write(ref2, img)
	if err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), "ReadOnly") {
		t.Fatalf("push to a ReadOnly node: %v", err)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		req, _ := http.NewRequest(m, srv.URL+"/v2/app/manifests/v1", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", m, resp.StatusCode)
		}
	}
	if _, err := remote.Image(ref); err != nil {
		t.Fatalf("pull from a ReadOnly node: %v", err)
	}
	r.SetReadOnly("")
	if err := remote.Write(ref2, img); err != nil {
		t.Fatalf("push after read-write again: %v", err)
	}
}

// TestLayersWithURLs: a manifest whose non-distributable or foreign layers name the http(s)
// URLs clients fetch them from is stored without those blobs (Windows base images; the OCI
// conformance suite's non-distributable image), and kept by garbage collection; a malformed URL
// or a foreign layer without one is refused with 400 MANIFEST_INVALID naming the layer, not
// distribution's 500.
func TestLayersWithURLs(t *testing.T) {
	r, srv := newTestRegistry(t)
	c := rawClient{t, srv}
	config := []byte(`{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}`)
	configDigest := digest.FromBytes(config)
	if a := c.pushBlob("win/app", config, configDigest); a.status != http.StatusCreated {
		t.Fatalf("uploading the config: %d %s", a.status, a.body)
	}
	layer := func(mediaType string, urls ...string) map[string]any {
		return map[string]any{"mediaType": mediaType, "digest": digest.FromString(mediaType).String(), "size": 1234, "urls": urls}
	}
	manifest := func(mediaType, configType string, layers ...map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaType,
			"config": map[string]any{"mediaType": configType, "digest": configDigest.String(), "size": len(config)}, "layers": layers})
		return b
	}
	const docker, dockerConfig, foreign = "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	const nondist = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	accepted := map[string][]byte{
		"oci":    manifest(v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, layer(nondist, "https://store.example.com/blobs/a", "HTTP://mirror.example.com/a")),
		"docker": manifest(docker, dockerConfig, layer(foreign, "https://mcr.microsoft.com/v2/windows/servercore/blobs/x")),
	}
	for tag, m := range accepted {
		mt := v1.MediaTypeImageManifest
		if tag == "docker" {
			mt = docker
		}
		if a := c.do(http.MethodPut, "/v2/win/app/manifests/"+tag, m, "Content-Type", mt); a.status != http.StatusCreated {
			t.Errorf("a %s manifest with a layer to fetch from its URLs: %d %s, want 201", tag, a.status, a.body)
		}
	}
	for name, tc := range map[string]struct {
		mediaType string
		manifest  []byte
		want      string
	}{
		"ftp":      {v1.MediaTypeImageManifest, manifest(v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, layer(nondist, "ftp://store.example.com/a")), `layers[0].urls: \"ftp://store.example.com/a\"`},
		"fragment": {v1.MediaTypeImageManifest, manifest(v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, layer(nondist, "https://a.example.com/x#y")), "without a fragment"},
		"no urls":  {docker, manifest(docker, dockerConfig, layer(foreign)), "layers[0]: a foreign layer"},
	} {
		a := c.do(http.MethodPut, "/v2/win/app/manifests/"+strings.ReplaceAll(name, " ", "-"), tc.manifest, "Content-Type", tc.mediaType)
		if a.status != http.StatusBadRequest || a.code() != "MANIFEST_INVALID" || !strings.Contains(string(a.body), tc.want) {
			t.Errorf("%s: %d %s; want 400 MANIFEST_INVALID saying %s", name, a.status, a.body, tc.want)
		}
	}
	if _, err := r.CollectGarbage(context.Background(), GCOptions{}); err != nil {
		t.Fatalf("garbage collection with layers stored elsewhere: %v", err)
	}
	for tag := range accepted {
		if a := c.do(http.MethodGet, "/v2/win/app/manifests/"+tag, nil, "Accept", v1.MediaTypeImageManifest+", "+docker); a.status != http.StatusOK {
			t.Errorf("after garbage collection, GET win/app:%s: %d", tag, a.status)
		}
	}
}
