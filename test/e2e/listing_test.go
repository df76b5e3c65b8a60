package e2e

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// nextLink is the target of a Link header with rel="next", or "" when there is none.
func nextLink(t testing.TB, r *response) string {
	t.Helper()
	link := r.header.Get("Link")
	if link == "" {
		return ""
	}
	m := regexp.MustCompile(`^<([^>]+)>;\s*rel="next"$`).FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("Link header %q is not of the form <url>; rel=\"next\"", link)
	}
	if !strings.Contains(m[1], "last=") {
		t.Errorf("Link %q has no last= parameter", m[1])
	}
	return m[1]
}

// TestTagsPagination lists tags a page at a time with ?n=2 and the Link header.
func TestTagsPagination(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	img := randomImage(t, 1, 1024)
	n.pushImage(t, "tags/app:v1", img)
	want := []string{"v1", "v2", "v3", "v4", "v5"}
	for _, tag := range want[1:] {
		if err := remote.Tag(n.ref(t, "tags/app:"+tag).(name.Tag), img, n.remote(t)...); err != nil {
			t.Fatalf("tagging %s: %v", tag, err)
		}
	}

	var got []string
	target := "/v2/tags/app/tags/list?n=2"
	for page := 1; target != ""; page++ {
		if page > 10 {
			t.Fatalf("more than 10 pages of 2 tags for 5 tags")
		}
		r := n.do(t, http.MethodGet, target, nil)
		expectStatus(t, "GET "+target, r, http.StatusOK)
		var body struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatalf("GET %s: %v in %s", target, err, r)
		}
		if body.Name != "tags/app" {
			t.Errorf("page %d: name %q", page, body.Name)
		}
		if len(body.Tags) > 2 {
			t.Errorf("page %d: %d tags for n=2", page, len(body.Tags))
		}
		got = append(got, body.Tags...)
		target = nextLink(t, r)
		if page == 1 && target == "" {
			t.Errorf("the first page of 2 of 5 tags has no Link header")
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged tags %v, want %v", got, want)
	}

	all, err := remote.List(n.ref(t, "tags/app:v1").Context(), append(n.remote(t), remote.WithPageSize(2))...)
	if err != nil {
		t.Fatalf("remote.List: %v", err)
	}
	if !slices.Equal(all, want) {
		t.Errorf("remote.List: %v, want %v", all, want)
	}
}

// TestCatalog lists the node's repositories, whole and a page at a time with ?n=.
func TestCatalog(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	want := []string{"catalog/a", "catalog/b", "catalog/c"}
	img := randomImage(t, 1, 1024)
	for _, repo := range want {
		n.pushImage(t, repo+":latest", img)
	}

	r := n.do(t, http.MethodGet, "/v2/_catalog", nil)
	expectStatus(t, "GET /v2/_catalog", r, http.StatusOK)
	var body struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("GET /v2/_catalog: %v in %s", err, r)
	}
	if !slices.Equal(body.Repositories, want) {
		t.Errorf("GET /v2/_catalog: repositories %v, want %v", body.Repositories, want)
	}

	var paged []string
	target := "/v2/_catalog?n=2"
	for page := 1; target != "" && page <= 5; page++ {
		r := n.do(t, http.MethodGet, target, nil)
		if r.status != http.StatusOK {
			t.Errorf("GET %s: got %s, want 200", target, r)
			break
		}
		body.Repositories = nil
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatalf("GET %s: %v in %s", target, err, r)
		}
		if len(body.Repositories) > 2 {
			t.Errorf("page %d: %d repositories for n=2", page, len(body.Repositories))
		}
		paged = append(paged, body.Repositories...)
		target = nextLink(t, r)
	}
	if !slices.Equal(paged, want) {
		t.Errorf("paged catalog %v, want %v", paged, want)
	}

	reg, err := name.NewRegistry(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	all, err := remote.Catalog(testContext(t, time.Minute), reg, n.remote(t)...)
	if err != nil {
		t.Errorf("remote.Catalog: %v", err)
	} else if !slices.Equal(all, want) {
		t.Errorf("remote.Catalog: %v, want %v", all, want)
	}
}

// TestManifestDelete deletes a manifest by digest: 202, then 404 MANIFEST_UNKNOWN.
func TestManifestDelete(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	dgst := n.pushImage(t, "delete/app:v1", randomImage(t, 1, 2048))
	path := "/v2/delete/app/manifests/" + dgst.String()

	expectStatus(t, "DELETE manifest", n.do(t, http.MethodDelete, path, nil), http.StatusAccepted)
	expectError(t, "GET deleted manifest", n.do(t, http.MethodGet, path, nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	expectError(t, "GET the deleted manifest's tag", n.do(t, http.MethodGet, "/v2/delete/app/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	if r := n.do(t, http.MethodHead, path, nil); r.status != http.StatusNotFound {
		t.Errorf("HEAD deleted manifest: got %s, want 404", r)
	}
	expectError(t, "DELETE the manifest again", n.do(t, http.MethodDelete, path, nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
}

// TestBlobDelete deletes a blob: 202, then 404 BLOB_UNKNOWN.
func TestBlobDelete(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	dgst := n.uploadBlob(t, "delete/blob", randomBytes(11, 4096))
	path := "/v2/delete/blob/blobs/" + dgst

	expectStatus(t, "DELETE blob", n.do(t, http.MethodDelete, path, nil), http.StatusAccepted)
	expectError(t, "GET deleted blob", n.do(t, http.MethodGet, path, nil), http.StatusNotFound, "BLOB_UNKNOWN")
	if r := n.do(t, http.MethodHead, path, nil); r.status != http.StatusNotFound {
		t.Errorf("HEAD deleted blob: got %s, want 404", r)
	}
	expectError(t, "DELETE the blob again", n.do(t, http.MethodDelete, path, nil), http.StatusNotFound, "BLOB_UNKNOWN")
}
