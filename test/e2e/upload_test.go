package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
)

// TestBlobUpload pushes blobs the three ways the OCI distribution spec allows and reads them back.
func TestBlobUpload(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})

	cases := []struct {
		name   string
		repo   string
		size   int
		upload func(t *testing.T, repo string, data []byte)
	}{
		{
			name: "monolithic POST then PUT with digest",
			repo: "upload/monolithic",
			size: 300 << 10,
			upload: func(t *testing.T, repo string, data []byte) {
				loc := n.startUpload(t, repo)
				n.finishUpload(t, loc, digestOf(data), data)
			},
		},
		{
			// The spec lets a registry answer a single POST with ?digest either with 201 (stored)
			// or with 202 and an upload Location, after which the client goes on with PUT.
			name: "single POST with digest",
			repo: "upload/single-post",
			size: 100 << 10,
			upload: func(t *testing.T, repo string, data []byte) {
				dgst := digestOf(data)
				r := n.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+dgst, data, "Content-Type", mtOctets)
				switch r.status {
				case http.StatusCreated:
					expectRelativeLocation(t, "single POST", r)
					if got := r.header.Get("Docker-Content-Digest"); got != dgst {
						t.Errorf("single POST: Docker-Content-Digest %q, want %q", got, dgst)
					}
				case http.StatusAccepted:
					t.Logf("single POST with digest answered 202: the node falls back to POST-PUT, as the spec allows")
					expectRelativeLocation(t, "single POST", r)
					n.finishUpload(t, r.header.Get("Location"), dgst, data)
				default:
					t.Fatalf("single POST with digest: got %s, want 201 or 202", r)
				}
			},
		},
		{
			name: "chunked PATCHes then PUT",
			repo: "upload/chunked",
			size: 1<<20 + 12345,
			upload: func(t *testing.T, repo string, data []byte) {
				loc := n.startUpload(t, repo)
				status := n.do(t, http.MethodGet, loc, nil)
				expectStatus(t, "GET status of a new upload", status, http.StatusNoContent)
				if got := rangeEnd(t, status); got != 0 {
					t.Errorf("new upload: Range ends at %d, want 0-0", got)
				}
				const chunk = 256 << 10
				for off := 0; off < len(data); off += chunk {
					end := min(off+chunk, len(data))
					loc = n.patchChunk(t, loc, data[off:end], int64(off))

					status := n.do(t, http.MethodGet, loc, nil)
					expectStatus(t, "GET upload status", status, http.StatusNoContent)
					expectRelativeLocation(t, "GET upload status", status)
					if got := rangeEnd(t, status); got != int64(end-1) {
						t.Fatalf("upload status after %d bytes: Range %q, want 0-%d", end, status.header.Get("Range"), end-1)
					}
					loc = status.header.Get("Location")

					if off == 0 {
						// A chunk that does not start where the upload ends is refused with 416
						// and leaves the upload as it was.
						r := n.do(t, http.MethodPatch, loc, data[:10], "Content-Type", mtOctets, "Content-Range", "5-14")
						if r.status != http.StatusRequestedRangeNotSatisfiable {
							t.Errorf("out-of-order PATCH: got %s, want 416", r)
						}
					}
				}
				n.finishUpload(t, loc, digestOf(data), nil)
			},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(uint64(100+i), tc.size)
			tc.upload(t, tc.repo, data)
			if got := n.getBlob(t, tc.repo, digestOf(data)); !bytes.Equal(got, data) {
				t.Fatalf("GET blob: the bytes differ from the uploaded ones")
			}
		})
	}
}

// TestBlobMount mounts blobs across repositories: a known blob gives 201, a missing one falls back
// to an upload session (202).
func TestBlobMount(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	data := randomBytes(7, 64<<10)
	dgst := n.uploadBlob(t, "mount/source", data)
	missing := digestOf([]byte("never uploaded"))

	cases := []struct {
		name, target, dgst string
		status             int
	}{
		{"existing blob", "mount/target", dgst, http.StatusCreated},
		{"missing blob", "mount/other", missing, http.StatusAccepted},
		{"unknown source repository", "mount/third", "", http.StatusAccepted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from := "mount/source"
			d := tc.dgst
			if d == "" {
				d, from = dgst, "mount/no-such-repo"
			}
			r := n.do(t, http.MethodPost, fmt.Sprintf("/v2/%s/blobs/uploads/?mount=%s&from=%s", tc.target, d, from), nil)
			expectStatus(t, "POST mount", r, tc.status)
			expectRelativeLocation(t, "POST mount", r)
			if tc.status == http.StatusCreated {
				if got := r.header.Get("Docker-Content-Digest"); got != d {
					t.Errorf("mount: Docker-Content-Digest %q, want %q", got, d)
				}
				if want := "/v2/" + tc.target + "/blobs/" + d; r.header.Get("Location") != want {
					t.Errorf("mount: Location %q, want %q", r.header.Get("Location"), want)
				}
				if got := n.getBlob(t, tc.target, d); !bytes.Equal(got, data) {
					t.Errorf("mounted blob: the bytes differ")
				}
				return
			}
			// The fallback is a usable upload session.
			loc := r.header.Get("Location")
			content := randomBytes(8, 1000)
			n.finishUpload(t, loc, digestOf(content), content)
			if got := n.getBlob(t, tc.target, digestOf(content)); !bytes.Equal(got, content) {
				t.Errorf("fallback upload: the bytes differ")
			}
		})
	}
}

// TestUploadLocationsRelative checks every Location the upload flow returns while the request
// carries the Host and X-Forwarded-* headers nginx would set: each must be a relative /v2/ path,
// or clients behind the proxy would be sent to an address they cannot reach.
func TestUploadLocationsRelative(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	proxied := []string{"Host", "registry.example.com", "X-Forwarded-Host", "registry.example.com",
		"X-Forwarded-Proto", "https", "X-Forwarded-Port", "443"}
	hdr := func(kv ...string) []string { return append(append([]string{}, proxied...), kv...) }
	data := randomBytes(9, 5000)
	dgst := digestOf(data)

	r := n.do(t, http.MethodPost, "/v2/proxy/app/blobs/uploads/", nil, hdr()...)
	expectStatus(t, "POST", r, http.StatusAccepted)
	expectRelativeLocation(t, "POST", r)

	r = n.do(t, http.MethodPatch, r.header.Get("Location"), data[:2000], hdr("Content-Type", mtOctets, "Content-Range", "0-1999")...)
	expectStatus(t, "PATCH", r, http.StatusAccepted)
	expectRelativeLocation(t, "PATCH", r)

	r = n.do(t, http.MethodGet, r.header.Get("Location"), nil, hdr()...)
	expectStatus(t, "GET status", r, http.StatusNoContent)
	expectRelativeLocation(t, "GET status", r)

	r = n.do(t, http.MethodPut, withQuery(t, r.header.Get("Location"), "digest", dgst), data[2000:], hdr("Content-Type", mtOctets)...)
	expectStatus(t, "PUT", r, http.StatusCreated)
	expectRelativeLocation(t, "PUT", r)

	r = n.do(t, http.MethodPost, "/v2/proxy/other/blobs/uploads/?mount="+dgst+"&from=proxy/app", nil, hdr()...)
	expectStatus(t, "POST mount", r, http.StatusCreated)
	expectRelativeLocation(t, "POST mount", r)

	r = n.do(t, http.MethodPost, "/v2/proxy/app/blobs/uploads/?digest="+dgst, data, hdr("Content-Type", mtOctets)...)
	if r.status != http.StatusCreated && r.status != http.StatusAccepted {
		t.Fatalf("single POST: got %s, want 201 or 202", r)
	}
	expectRelativeLocation(t, "single POST", r)
}
