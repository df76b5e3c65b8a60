package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	atSBOM   = "application/vnd.example.sbom"
	atSig    = "application/vnd.example.sig"
	atBundle = "application/vnd.example.bundle"
	mtPlain  = "application/vnd.example.config.v1+json"
)

// descriptor is an OCI content descriptor as the referrers API lists it.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// manifest is an OCI image manifest or index, written by hand so that every field is under the
// test's control.
type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *descriptor       `json:"config,omitempty"`
	Layers        []descriptor      `json:"layers,omitempty"`
	Manifests     []descriptor      `json:"manifests,omitempty"`
	Subject       *descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// referrersIndex is the body of a referrers response.
type referrersIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// TestReferrers covers the OCI 1.1 referrers API: OCI-Subject on push, listing, filtering,
// artifactType defaults, indexes as referrers, deletion, empty lists and bad digests.
func TestReferrers(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	const repo = "refs/app"

	subjectImg := randomImage(t, 1, 4096)
	subjectDigest := n.pushImage(t, repo+":subject", subjectImg)
	subject := &descriptor{MediaType: mtOCIManifest, Digest: subjectDigest.String(), Size: int64(len(mustRawManifest(t, subjectImg)))}

	emptyDigest := n.uploadBlob(t, repo, emptyJSON)
	if emptyDigest != "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" {
		t.Fatalf("the empty blob's digest is %s", emptyDigest)
	}
	emptyDesc := descriptor{MediaType: mtOCIEmpty, Digest: emptyDigest, Size: 2}
	blob := func(mediaType string, data []byte) descriptor {
		return descriptor{MediaType: mediaType, Digest: n.uploadBlob(t, repo, data), Size: int64(len(data))}
	}

	// push stores m by digest, checks OCI-Subject, and returns the descriptor the referrers API
	// must list for it.
	push := func(t *testing.T, m manifest, listedArtifactType string) descriptor {
		t.Helper()
		body, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		d := digestOf(body)
		r := n.putManifest(t, repo, d, m.MediaType, body)
		expectStatus(t, "PUT referrer "+m.ArtifactType, r, http.StatusCreated)
		if got := r.header.Get("OCI-Subject"); got != subjectDigest.String() {
			t.Errorf("PUT referrer %s: OCI-Subject %q, want %q", m.ArtifactType, got, subjectDigest)
		}
		if got := r.header.Get("Docker-Content-Digest"); got != d {
			t.Errorf("PUT referrer %s: Docker-Content-Digest %q, want %q", m.ArtifactType, got, d)
		}
		return descriptor{MediaType: m.MediaType, ArtifactType: listedArtifactType, Digest: d, Size: int64(len(body)), Annotations: m.Annotations}
	}

	sbom := push(t, manifest{
		SchemaVersion: 2, MediaType: mtOCIManifest, ArtifactType: atSBOM,
		Config:      &emptyDesc,
		Layers:      []descriptor{blob("application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3"}`))},
		Subject:     subject,
		Annotations: map[string]string{"org.opencontainers.image.created": "2026-01-02T03:04:05Z", "org.example.kind": "sbom"},
	}, atSBOM)
	sig := push(t, manifest{
		SchemaVersion: 2, MediaType: mtOCIManifest, ArtifactType: atSig,
		Config:      &emptyDesc,
		Layers:      []descriptor{blob("application/vnd.example.sig.v1", []byte("signature bytes"))},
		Subject:     subject,
		Annotations: map[string]string{"org.example.kind": "signature"},
	}, atSig)
	// Without artifactType an image manifest is listed with its config's media type.
	plain := push(t, manifest{
		SchemaVersion: 2, MediaType: mtOCIManifest,
		Config:  ptr(blob(mtPlain, []byte(`{"kind":"plain"}`))),
		Layers:  []descriptor{emptyDesc},
		Subject: subject,
	}, mtPlain)
	// An index can be a referrer too.
	bundle := push(t, manifest{
		SchemaVersion: 2, MediaType: mtOCIIndex, ArtifactType: atBundle,
		Manifests:   []descriptor{{MediaType: sbom.MediaType, Digest: sbom.Digest, Size: sbom.Size}},
		Subject:     subject,
		Annotations: map[string]string{"org.example.kind": "bundle"},
	}, atBundle)

	list := func(t *testing.T, query string) (*response, referrersIndex) {
		t.Helper()
		r := n.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+subjectDigest.String()+query, nil)
		expectStatus(t, "GET referrers"+query, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != mtOCIIndex {
			t.Errorf("GET referrers%s: Content-Type %q, want %s", query, ct, mtOCIIndex)
		}
		var idx referrersIndex
		if err := json.Unmarshal(r.body, &idx); err != nil {
			t.Fatalf("GET referrers%s: %v in %s", query, err, r)
		}
		if idx.SchemaVersion != 2 || idx.MediaType != mtOCIIndex {
			t.Errorf("GET referrers%s: schemaVersion %d, mediaType %q", query, idx.SchemaVersion, idx.MediaType)
		}
		return r, idx
	}
	expectListed := func(t *testing.T, got []descriptor, want ...descriptor) {
		t.Helper()
		byDigest := func(a, b descriptor) int { return strings.Compare(a.Digest, b.Digest) }
		got, want = slices.Clone(got), slices.Clone(want)
		slices.SortFunc(got, byDigest)
		slices.SortFunc(want, byDigest)
		if (len(got) != 0 || len(want) != 0) && !reflect.DeepEqual(got, want) {
			t.Errorf("referrers:\n got %+v\nwant %+v", got, want)
		}
	}

	t.Run("all", func(t *testing.T) {
		r, idx := list(t, "")
		expectListed(t, idx.Manifests, sbom, sig, plain, bundle)
		if h := r.header.Get("OCI-Filters-Applied"); h != "" {
			t.Errorf("unfiltered list: OCI-Filters-Applied %q", h)
		}
	})

	t.Run("filter by artifactType", func(t *testing.T) {
		r, idx := list(t, "?artifactType="+url.QueryEscape(atSBOM))
		expectListed(t, idx.Manifests, sbom)
		if h := r.header.Get("OCI-Filters-Applied"); h != "artifactType" {
			t.Errorf("filtered list: OCI-Filters-Applied %q, want artifactType", h)
		}
		_, idx = list(t, "?artifactType="+url.QueryEscape(mtPlain))
		expectListed(t, idx.Manifests, plain)
	})

	t.Run("go-containerregistry", func(t *testing.T) {
		ref := n.digestRef(t, repo, subjectDigest)
		for _, tc := range []struct {
			opts []remote.Option
			want []descriptor
		}{
			{nil, []descriptor{sbom, sig, plain, bundle}},
			{[]remote.Option{remote.WithFilter("artifactType", atSig)}, []descriptor{sig}},
		} {
			idx, err := remote.Referrers(ref, append(n.remote(t), tc.opts...)...)
			if err != nil {
				t.Fatalf("remote.Referrers: %v", err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			expectListed(t, fromGGCR(im.Manifests), tc.want...)
		}
	})

	t.Run("subject without referrers", func(t *testing.T) {
		other := n.pushImage(t, repo+":other", randomImage(t, 1, 1024))
		never := digestOf([]byte("no manifest has this digest"))
		for _, d := range []string{other.String(), never} {
			r := n.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+d, nil)
			expectStatus(t, "GET referrers of "+d, r, http.StatusOK)
			if !strings.Contains(string(r.body), `"manifests":[]`) {
				t.Errorf("GET referrers of %s: body %s lacks \"manifests\":[]", d, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != mtOCIIndex {
				t.Errorf("GET referrers of %s: Content-Type %q", d, ct)
			}
		}
	})

	t.Run("invalid digest", func(t *testing.T) {
		for _, d := range []string{"sha256:xyz", "sha256:abcdabcdabcdabcdabcdabcdabcdabcd", "not-a-digest"} {
			r := n.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+d, nil)
			expectError(t, "GET referrers/"+d, r, http.StatusBadRequest, "DIGEST_INVALID")
		}
	})

	// Last: it changes the list.
	t.Run("deleted referrer disappears", func(t *testing.T) {
		r := n.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+sig.Digest, nil)
		expectStatus(t, "DELETE the signature manifest", r, http.StatusAccepted)
		_, idx := list(t, "")
		expectListed(t, idx.Manifests, sbom, plain, bundle)
		_, idx = list(t, "?artifactType="+url.QueryEscape(atSig))
		expectListed(t, idx.Manifests)
	})
}

func ptr[T any](v T) *T { return &v }

// fromGGCR converts go-containerregistry descriptors for comparison.
func fromGGCR(ds []v1.Descriptor) []descriptor {
	out := []descriptor{}
	for _, d := range ds {
		out = append(out, descriptor{MediaType: string(d.MediaType), ArtifactType: d.ArtifactType,
			Digest: d.Digest.String(), Size: d.Size, Annotations: d.Annotations})
	}
	return out
}
