package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/outpost-registry/outpost/internal/atomicfile"
)

// referrerIndex records, per repository and subject digest, the descriptors of manifests that
// name that subject. distribution keeps no such index, and deriving it by reading every manifest
// of a repository on each request would not scale.
//
// Layout: dir/<repository>/<subject algorithm>/<subject hex>/<algorithm>-<hex>.json, one
// descriptor per file. An entry is written before its manifest is stored, so a crash between the
// two leaves an entry without a manifest, never a manifest without an entry; reads skip (and
// prune) entries whose manifest is not in the repository, which also covers deleted manifests.
type referrerIndex struct {
	dir string
	ns  distribution.Namespace
	// maint is the registry's maintenance lock (nil in tests of the index alone). An entry
	// without its manifest is pruned only when no write is in flight: a manifest PUT records
	// its entry before it stores the manifest, and holds the lock for reading across both.
	maint *sync.RWMutex
}

// manifestFields are the parts of an image manifest or index that the referrers API reports.
type manifestFields struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *v1.Descriptor    `json:"config"`
	Subject      *v1.Descriptor    `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

// parseSubject returns the subject digest of a manifest body, and the descriptor the referrers
// API lists for it. ok is false when the body has no valid subject.
func parseSubject(body []byte, contentType string, dgst digest.Digest) (subject digest.Digest, desc v1.Descriptor, ok bool) {
	var m manifestFields
	if err := json.Unmarshal(body, &m); err != nil || m.Subject == nil || m.Subject.Digest.Validate() != nil {
		return "", v1.Descriptor{}, false
	}
	mediaType := m.MediaType
	if mediaType == "" {
		mediaType = contentType
	}
	artifactType := m.ArtifactType
	// OCI 1.1: an image manifest without artifactType is reported with its config's media type.
	if artifactType == "" && mediaType == v1.MediaTypeImageManifest && m.Config != nil {
		artifactType = m.Config.MediaType
	}
	return m.Subject.Digest, v1.Descriptor{
		MediaType:    mediaType,
		ArtifactType: artifactType,
		Digest:       dgst,
		Size:         int64(len(body)),
		Annotations:  m.Annotations,
	}, true
}

func (x *referrerIndex) subjectDir(repo string, subject digest.Digest) string {
	return filepath.Join(x.dir, filepath.FromSlash(repo), subject.Algorithm().String(), subject.Encoded())
}

func entryName(d digest.Digest) string {
	return d.Algorithm().String() + "-" + d.Encoded() + ".json"
}

// Record adds desc as a referrer of subject in repo. Call it before the manifest is stored.
func (x *referrerIndex) Record(repo string, subject digest.Digest, desc v1.Descriptor) error {
	if _, err := reference.WithName(repo); err != nil {
		return fmt.Errorf("repository name %q: %w", repo, err)
	}
	if err := subject.Validate(); err != nil {
		return err
	}
	if err := desc.Digest.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(desc)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(x.subjectDir(repo, subject), entryName(desc.Digest)), b, 0o600)
}

// List returns the referrers of subject in repo whose manifests are stored, filtered by
// artifactType when it is not empty, sorted by digest.
func (x *referrerIndex) List(ctx context.Context, repo string, subject digest.Digest, artifactType string) ([]v1.Descriptor, error) {
	dir := x.subjectDir(repo, subject)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []v1.Descriptor{}, nil
	}
	if err != nil {
		return nil, err
	}
	named, err := reference.WithName(repo)
	if err != nil {
		return nil, err
	}
	repository, err := x.ns.Repository(ctx, named)
	if err != nil {
		return nil, err
	}
	manifests, err := repository.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	out := []v1.Descriptor{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var desc v1.Descriptor
		if err := json.Unmarshal(b, &desc); err != nil || desc.Digest.Validate() != nil {
			// A torn or foreign file: the entry is rewritten if its manifest is pushed again.
			_ = os.Remove(path)
			continue
		}
		exists, err := manifests.Exists(ctx, desc.Digest)
		if err != nil {
			return nil, err
		}
		if !exists {
			x.pruneIfStillMissing(ctx, manifests, desc.Digest, path)
			continue
		}
		if artifactType != "" && desc.ArtifactType != artifactType {
			continue
		}
		out = append(out, desc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// pruneIfStillMissing removes the entry at path unless its manifest is being stored right now
// (a write holds the maintenance lock) or has been stored since it was looked for.
func (x *referrerIndex) pruneIfStillMissing(ctx context.Context, manifests distribution.ManifestService, d digest.Digest, path string) {
	if x.maint != nil {
		if !x.maint.TryLock() {
			return // a write is in flight: it may be this entry's manifest; prune later
		}
		defer x.maint.Unlock()
	}
	if exists, err := manifests.Exists(ctx, d); err == nil && !exists {
		_ = os.Remove(path)
	}
}

var specsVersioned = specs.Versioned{SchemaVersion: 2}
