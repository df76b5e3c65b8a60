package sync

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Descriptor is the part of an OCI descriptor the sync engine reads.
type Descriptor struct {
	MediaType    string        `json:"mediaType"`
	Digest       digest.Digest `json:"digest"`
	Size         int64         `json:"size"`
	ArtifactType string        `json:"artifactType,omitempty"`
	URLs         []string      `json:"urls,omitempty"`
	Platform     *Platform     `json:"platform,omitempty"`
	// position is a layer's index in its image manifest, plus one (0: not a layer); a delta's
	// best base is the layer at the same position of the previous image.
	position int
}

// Platform is an image's os/architecture[/variant].
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Manifest media types.
const (
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

func isIndex(mediaType string) bool {
	return mediaType == mediaTypeOCIIndex || mediaType == mediaTypeDockerList
}

// parsed is what a manifest references.
type parsed struct {
	index    bool
	children []Descriptor // manifests an index lists
	blobs    []Descriptor // config and layers an image manifest references
}

// parseManifest reads the references of m. For an image manifest the blobs to fetch are its
// config and layers, less foreign layers that live at their own URLs.
func parseManifest(m Manifest) (parsed, error) {
	var body struct {
		SchemaVersion int          `json:"schemaVersion"`
		Manifests     []Descriptor `json:"manifests"`
		Config        *Descriptor  `json:"config"`
		Layers        []Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(m.Raw, &body); err != nil {
		return parsed{}, fmt.Errorf("manifest %s is not JSON: %w", m.Digest, err)
	}
	if body.SchemaVersion != 2 {
		return parsed{}, fmt.Errorf("manifest %s has schemaVersion %d: only schema 2 (Docker v2 and OCI) is supported", m.Digest, body.SchemaVersion)
	}
	check := func(d Descriptor) error {
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("manifest %s references an invalid digest %q", m.Digest, d.Digest)
		}
		if d.Size < 0 {
			return fmt.Errorf("manifest %s references %s with negative size", m.Digest, d.Digest)
		}
		return nil
	}
	var p parsed
	if isIndex(m.MediaType) {
		p.index = true
		for _, d := range body.Manifests {
			if err := check(d); err != nil {
				return parsed{}, err
			}
			p.children = append(p.children, d)
		}
		return p, nil
	}
	if body.Config != nil {
		if err := check(*body.Config); err != nil {
			return parsed{}, err
		}
		p.blobs = append(p.blobs, *body.Config)
	}
	for i, l := range body.Layers {
		if err := check(l); err != nil {
			return parsed{}, err
		}
		l.position = i + 1
		if len(l.URLs) > 0 && (strings.Contains(l.MediaType, "foreign") || strings.Contains(l.MediaType, "nondistributable")) {
			continue // fetched by clients from its own URLs, not stored in registries
		}
		p.blobs = append(p.blobs, l)
	}
	return p, nil
}

// platformFilter keeps index children of the configured platforms; empty keeps all.
type platformFilter []string

func (f platformFilter) keep(d Descriptor) bool {
	if len(f) == 0 {
		return true
	}
	if d.Platform == nil {
		return false
	}
	return slices.ContainsFunc(f, func(want string) bool {
		return acrapi.PlatformMatches(want, d.Platform.OS, d.Platform.Architecture, d.Platform.Variant)
	})
}
