package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestErrorCodes checks the status and errors[0].code of the OCI error responses.
func TestErrorCodes(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	const repo = "errs/app"
	n.pushImage(t, repo+":v1", randomImage(t, 1, 1024))
	zero := "sha256:" + strings.Repeat("0", 64)
	data := randomBytes(21, 3000)
	configDigest := n.uploadBlob(t, repo, emptyJSON)
	manifestWith := func(config, layer string) []byte {
		b, err := json.Marshal(manifest{SchemaVersion: 2, MediaType: mtOCIManifest,
			Config: &descriptor{MediaType: mtOCIEmpty, Digest: config, Size: 2},
			Layers: []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layer, Size: 3000}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	cases := []struct {
		name   string
		method string
		path   func(t *testing.T) string // called per run; may open an upload
		body   []byte
		header []string
		status int
		code   string
	}{
		{name: "unknown blob", method: http.MethodGet, path: fixed("/v2/" + repo + "/blobs/" + zero),
			status: http.StatusNotFound, code: "BLOB_UNKNOWN"},
		{name: "unknown manifest by tag", method: http.MethodGet, path: fixed("/v2/" + repo + "/manifests/no-such-tag"),
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "unknown manifest by digest", method: http.MethodGet, path: fixed("/v2/" + repo + "/manifests/" + zero),
			status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{name: "tag list of an unknown repository", method: http.MethodGet, path: fixed("/v2/errs/no-such-repo/tags/list"),
			status: http.StatusNotFound, code: "NAME_UNKNOWN"},
		{name: "blob GET with an invalid digest", method: http.MethodGet, path: fixed("/v2/" + repo + "/blobs/sha256:xyz"),
			status: http.StatusBadRequest, code: "DIGEST_INVALID"},
		{name: "blob GET with a digest of the wrong length", method: http.MethodGet, path: fixed("/v2/" + repo + "/blobs/sha256:" + strings.Repeat("a", 40)),
			status: http.StatusBadRequest, code: "DIGEST_INVALID"},
		{name: "upload PUT with an invalid digest", method: http.MethodPut, body: data, header: []string{"Content-Type", mtOctets},
			path: func(t *testing.T) string {
				return withQuery(t, n.startUpload(t, repo), "digest", "sha256:xyz")
			},
			status: http.StatusBadRequest, code: "DIGEST_INVALID"},
		{name: "upload PUT without a digest", method: http.MethodPut, body: data, header: []string{"Content-Type", mtOctets},
			path:   func(t *testing.T) string { return n.startUpload(t, repo) },
			status: http.StatusBadRequest, code: "DIGEST_INVALID"},
		{name: "upload PUT with the wrong digest", method: http.MethodPut, body: data, header: []string{"Content-Type", mtOctets},
			path: func(t *testing.T) string {
				return withQuery(t, n.startUpload(t, repo), "digest", digestOf([]byte("other content")))
			},
			status: http.StatusBadRequest, code: "DIGEST_INVALID"},
		{name: "manifest with a missing config blob", method: http.MethodPut, body: manifestWith(zero, digestOf(data)),
			header: []string{"Content-Type", mtOCIManifest}, path: fixed("/v2/" + repo + "/manifests/broken"),
			status: http.StatusBadRequest, code: "MANIFEST_BLOB_UNKNOWN"},
		{name: "manifest with a missing layer blob", method: http.MethodPut, body: manifestWith(configDigest, digestOf(data)),
			header: []string{"Content-Type", mtOCIManifest}, path: fixed("/v2/" + repo + "/manifests/broken"),
			status: http.StatusBadRequest, code: "MANIFEST_BLOB_UNKNOWN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			r := n.do(t, tc.method, path, tc.body, tc.header...)
			expectError(t, tc.method+" "+path, r, tc.status, tc.code)
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s %s: Content-Type %q, want application/json", tc.method, path, ct)
			}
		})
	}

	// The failed upload with the wrong digest stored nothing under either digest.
	expectError(t, "GET blob after the wrong-digest upload", n.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+digestOf(data), nil),
		http.StatusNotFound, "BLOB_UNKNOWN")
}

func fixed(path string) func(*testing.T) string { return func(*testing.T) string { return path } }

// TestInvalidRepositoryName sends requests naming repositories that the OCI name grammar
// forbids.
//
// What the spec allows: its error-code table has NAME_INVALID, and its endpoint table lists 404
// as the failure status of these endpoints (400 too for manifest PUT); a 4XX body "MAY be in any
// format", but a JSON one must be the errors document. So the test accepts 400 with NAME_INVALID,
// or 404 with any body (a JSON one must name NAME_INVALID or NAME_UNKNOWN). distribution answers
// names its router does not match (upper case) with a plain-text 404, which the spec allows. A
// name that matches the path grammar but is longer than 255 characters must get the same kind of
// answer, never a 5XX.
func TestInvalidRepositoryName(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	names := map[string]string{
		"upper case":             "Invalid/Upper",
		"longer than 255 chars":  "long/" + strings.Repeat("a", 260),
		"separator at the start": "-bad/app",
	}
	for label, repo := range names {
		t.Run(label, func(t *testing.T) {
			for _, req := range []struct{ method, path string }{
				{http.MethodGet, "/v2/" + repo + "/tags/list"},
				{http.MethodGet, "/v2/" + repo + "/manifests/latest"},
				{http.MethodPost, "/v2/" + repo + "/blobs/uploads/"},
			} {
				r := n.do(t, req.method, req.path, nil)
				what := req.method + " " + req.path
				if len(what) > 80 {
					what = what[:80] + "…"
				}
				isJSON := strings.HasPrefix(r.header.Get("Content-Type"), "application/json")
				switch {
				case r.status == http.StatusBadRequest:
					expectError(t, what, r, http.StatusBadRequest, "NAME_INVALID")
				case r.status == http.StatusNotFound && isJSON:
					if c := errorCode(r); c != "NAME_INVALID" && c != "NAME_UNKNOWN" {
						t.Errorf("%s: got %s, want a 404 JSON body with NAME_INVALID or NAME_UNKNOWN", what, r)
					}
				case r.status == http.StatusNotFound:
					// Any body format is allowed for a 4XX.
				default:
					t.Errorf("%s: got %s, want 400 NAME_INVALID or 404", what, r)
				}
			}
		})
	}
}
