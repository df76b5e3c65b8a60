package delta

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// ManifestSource reads the parent's manifests; a BlobSource that is one lets Prepare work.
type ManifestSource interface {
	GetManifest(ctx context.Context, repo string, d digest.Digest) (mediaType string, raw []byte, err error)
}

// LayerMediaTypes are the layers that may travel as deltas, or be bases: compressed tars.
var LayerMediaTypes = []string{
	v1.MediaTypeImageLayerGzip, v1.MediaTypeImageLayerZstd, "application/vnd.docker.image.rootfs.diff.tar.gzip",
}

// Bounds of the work Prepare queues: images waiting, image manifests of one index read, and
// of those, the ones prepared for one child (the first it keeps).
const (
	maxPrepareQueue    = 64
	maxIndexImages     = 64
	maxPreparePlatform = 8
)

type prepareItem struct {
	repo     string
	manifest digest.Digest
	child    func(registry string) bool
}

// Prepare computes, in the background, the deltas this node's children will ask for the image
// just stored as manifest in repo, so that a child's sync window goes to the transfer rather
// than to waiting for the parent: for every child that reported an inventory and that child
// says will sync repo with deltas (defined, active, syncing repo, delta sync on: an inventory
// outlives a deleted registry), each layer of the image it lacks, offered what the child will
// offer (its inventory, the formats of this release): a delta against an earlier release, or
// against the base image it holds, or the whole layer better compressed. A child whose
// request differs (older, other permissions) gets its delta computed when it asks, as without
// Prepare; one asking while the delta is computed waits for that computation. Prepare does not
// block; images beyond a queue of 64 are left to be computed on demand. A nil child means the
// node has no children.
func (s *Service) Prepare(repo string, manifest digest.Digest, child func(registry string) bool) {
	if _, ok := s.src.(ManifestSource); !ok || child == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.prepareQueue) >= maxPrepareQueue {
		s.log.Info("deltas not prepared: too many images queued; they are computed when children ask", zap.String("repository", repo), zap.Stringer("manifest", manifest))
		return
	}
	s.prepareQueue = append(s.prepareQueue, prepareItem{repo, manifest, child})
	s.metrics.prepareQueue.Inc()
	if !s.preparing {
		s.preparing = true
		s.prepareIdle = make(chan struct{})
		go s.prepareLoop()
	}
}

// PrepareIdle is closed once no image is queued for Prepare (at once if none ever was).
func (s *Service) PrepareIdle() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.preparing {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.prepareIdle
}

// prepareLoop works through the queue one image at a time, then ends.
func (s *Service) prepareLoop() {
	for {
		s.mu.Lock()
		if len(s.prepareQueue) == 0 {
			s.preparing = false
			close(s.prepareIdle)
			s.mu.Unlock()
			return
		}
		it := s.prepareQueue[0]
		s.prepareQueue = s.prepareQueue[1:]
		s.mu.Unlock()
		s.prepare(context.Background(), it)
		s.metrics.prepareQueue.Dec()
	}
}

// prepare computes the deltas of one image (an index: of its first image manifests).
func (s *Service) prepare(ctx context.Context, it prepareItem) {
	repo, manifest := it.repo, it.manifest
	layers, err := s.imageLayers(ctx, repo, manifest)
	if err != nil {
		s.log.Debug("no deltas prepared: the manifest cannot be read", zap.String("repository", repo), zap.Stringer("manifest", manifest), zap.Error(err))
		return
	}
	if len(layers) == 0 {
		return
	}
	prepared, cached := 0, 0
	for _, c := range s.childInventories(it.child) {
		held := make(map[string]bool, len(c.layers))
		for _, l := range c.layers {
			held[l.Digest] = true
		}
		images := map[int]bool{}
		for _, l := range layers {
			if !l.kept(c.platforms) {
				continue
			}
			if images[l.Image] = true; len(images) > maxPreparePlatform {
				break
			}
			if held[l.Digest] {
				continue
			}
			req := acrapi.DeltaRequest{Repository: repo, Digest: l.Digest, Size: l.Size, Position: l.Position, Have: c.layers, Formats: Formats}
			// Planned with no deadline of a child's: wait for the computation to end, so
			// that preparing never runs two at once beside the children's own.
			_, result, err := s.plan(ctx, req)
			for errors.Is(err, ErrPending) {
				_, result, err = s.plan(ctx, req)
			}
			switch result {
			case resultComputed:
				s.metrics.prepared.Inc()
				prepared++
			case resultReused:
				prepared++
			case resultCached:
				cached++
			case resultFailed:
				// A full disk fails the next layer too: leave the rest to the children's requests.
				s.log.Warn("deltas not prepared; they are computed when children ask", zap.String("repository", repo),
					zap.Stringer("manifest", manifest), zap.String("layer", l.Digest), zap.Error(err))
				return
			}
		}
	}
	if prepared > 0 {
		s.log.Info("deltas prepared for children", zap.String("repository", repo), zap.Stringer("manifest", manifest),
			zap.Int("prepared", prepared), zap.Int("already_cached", cached))
	}
}

// imageLayer is a layer of an image manifest that may travel as a delta.
type imageLayer struct {
	Digest   string
	Size     int64
	Position int
	// Image numbers the index entry the layer's image is, from 1 (0: not in an index), and
	// Platform is that entry's platform.
	Image    int
	Platform *v1.Platform
}

// kept reports whether a child that keeps platforms (none: all) syncs l: as its sync engine
// filters an index, an entry without a platform is not kept when some are named.
func (l imageLayer) kept(platforms []string) bool {
	if len(platforms) == 0 || l.Image == 0 {
		return true
	}
	return l.Platform != nil && slices.ContainsFunc(platforms, func(want string) bool {
		return acrapi.PlatformMatches(want, l.Platform.OS, l.Platform.Architecture, l.Platform.Variant)
	})
}

// imageLayers lists the layers of manifest that may travel as deltas, with their positions; an
// index's image manifests' (the first maxIndexImages), with their platforms.
func (s *Service) imageLayers(ctx context.Context, repo string, manifest digest.Digest) ([]imageLayer, error) {
	ms := s.src.(ManifestSource)
	_, raw, err := ms.GetManifest(ctx, repo, manifest)
	if err != nil {
		return nil, err
	}
	var m struct {
		Layers    []v1.Descriptor `json:"layers"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	var out []imageLayer
	for i, l := range m.Layers {
		if slices.Contains(LayerMediaTypes, l.MediaType) {
			out = append(out, imageLayer{Digest: l.Digest.String(), Size: l.Size, Position: i})
		}
	}
	images := 0
	for _, d := range m.Manifests {
		if images == maxIndexImages || len(m.Layers) > 0 {
			break
		}
		if d.MediaType != v1.MediaTypeImageManifest && d.MediaType != "application/vnd.docker.distribution.manifest.v2+json" {
			continue
		}
		images++
		sub, err := s.imageLayers(ctx, repo, d.Digest)
		if err != nil {
			return nil, err
		}
		for i := range sub {
			sub[i].Image, sub[i].Platform = images, d.Platform
		}
		out = append(out, sub...)
	}
	return out, nil
}

// childView is what Prepare knows of a child: the layers it holds, as its delta requests offer
// them, and the index platforms it keeps (none: all).
type childView struct {
	layers    []acrapi.HeldLayer
	platforms []string
}

// childInventories returns what Prepare knows of each child that child accepts.
func (s *Service) childInventories(child func(string) bool) []childView {
	entries, err := os.ReadDir(filepath.Join(s.dir, "inventories"))
	if err != nil {
		return nil
	}
	var out []childView
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !child(name) {
			continue
		}
		if _, layers, ok := s.Inventory(name); ok {
			out = append(out, childView{layers: layers, platforms: s.Platforms(name)})
		}
	}
	return out
}
