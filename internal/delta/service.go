// Package delta sends a layer as the bytes a child lacks: the parent's side finds the layer's
// compression recipe, indexes tars and encodes deltas against layers the child holds, all
// cached by digest; the child's side rebuilds the exact blob from a delta and verifies it.
package delta

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/atomicfile"
	"github.com/outpost-registry/outpost/internal/delta/recipe"
	"github.com/outpost-registry/outpost/internal/delta/tardelta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Errors of Plan.
var (
	// ErrPending: the delta is being computed; ask again later.
	ErrPending = errors.New("the delta is being computed")
	// ErrUnavailable: no delta for this layer (no recipe reproduces it, it is not a tar, or a
	// delta would not be smaller); the child fetches the blob itself.
	ErrUnavailable = errors.New("no delta for this layer")
)

// BlobSource reads the parent's blobs.
type BlobSource interface {
	// OpenBlob opens blob dgst of repository repo.
	OpenBlob(ctx context.Context, repo string, dgst digest.Digest) (io.ReadSeekCloser, int64, error)
}

// Service computes and caches deltas on a parent. Everything it derives from a blob (recipe,
// diff-id, index, uncompressed tar) is cached by the blob's digest, and every delta by its
// target and bases, for all the children that ask for the same one.
type Service struct {
	dir string
	src BlobSource
	log *zap.Logger
	// tarBudget bounds the uncompressed tars kept on disk; the least recently used go first.
	tarBudget int64
	// patchMemory and wholeMemory are Limits'.
	patchMemory, wholeMemory int64

	mu   sync.Mutex
	jobs map[string]*job // by plan key
	// prepareQueue, preparing and prepareIdle are Prepare's: the images waiting, whether a
	// goroutine works through them, and a channel closed once it is done.
	prepareQueue []prepareItem
	preparing    bool
	prepareIdle  chan struct{}
	// sem bounds concurrent encodings: each holds tens of MiB of zstd tables and a core.
	sem chan struct{}

	metrics *metrics

	// invMu serialises inventory changes (a read, then a write, per status report) and
	// guards inventories, the files' contents as last read or written, by registry.
	invMu       sync.Mutex
	inventories map[string]heldInventory
	// platforms are the index platforms each registry said it keeps, by registry (from its
	// latest status report; kept in memory, as every report repeats them).
	platforms map[string][]string
}

// heldInventory is a connected registry's inventory and its hash.
type heldInventory struct {
	hash   string
	layers []acrapi.HeldLayer
}

type job struct {
	done   chan struct{}
	plan   acrapi.DeltaPlan
	reused bool // the plan was another request's with the same bases
	err    error
}

// maxBases bounds the bases of one delta; candidates evaluated for a delta.
const (
	maxBases      = 4
	maxCandidates = 12
	// wait is how long Plan waits for a delta being computed before answering ErrPending.
	wait = 20 * time.Second
)

// Limits bound what a Service takes of the node.
type Limits struct {
	// TarCache bounds the uncompressed tars kept on disk (0: 4 GiB).
	TarCache int64
	// PatchMemory bounds the memory of one file's binary patch (tardelta.Options.PatchMemory;
	// 0: no bound beyond the formats' own).
	PatchMemory int64
	// WholeMemory bounds the memory of FormatWhole's encoder, through its window (WholeMemory;
	// 0: the largest window, 64 MiB, whatever it takes).
	WholeMemory int64
}

// NewService keeps its cache in dir.
func NewService(dir string, src BlobSource, log *zap.Logger, limits Limits) (*Service, error) {
	for _, d := range []string{"recipes", "indexes", "tars", "deltas", "plans", "readers", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	// Temporary files of an interrupted computation are never resumed.
	if tmp, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range tmp {
			_ = os.Remove(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	if log == nil {
		log = zap.NewNop()
	}
	tarBudget := limits.TarCache
	if tarBudget <= 0 {
		tarBudget = 4 << 30
	}
	return &Service{dir: dir, src: src, log: log, tarBudget: tarBudget, patchMemory: max(limits.PatchMemory, 0),
		wholeMemory: max(limits.WholeMemory, 0), jobs: map[string]*job{},
		sem: make(chan struct{}, 1), inventories: map[string]heldInventory{}, platforms: map[string][]string{}, metrics: newMetrics()}, nil
}

// Plan returns how the child that sent req rebuilds the layer it asks for: computed now or
// earlier for another child. While the delta is computed it waits a while, then answers
// ErrPending; ErrUnavailable means the child must fetch the blob itself.
func (s *Service) Plan(ctx context.Context, req acrapi.DeltaRequest) (acrapi.DeltaPlan, error) {
	p, result, err := s.plan(ctx, req)
	if result != "" {
		s.metrics.plans.WithLabelValues(result).Inc()
	}
	return p, err
}

// plan is Plan, saying how it was answered (one of the result constants; "" on other errors).
func (s *Service) plan(ctx context.Context, req acrapi.DeltaRequest) (acrapi.DeltaPlan, string, error) {
	target, err := digest.Parse(req.Digest)
	if err != nil {
		return acrapi.DeltaPlan{}, resultUnavailable, fmt.Errorf("%w: digest: %v", ErrUnavailable, err)
	}
	if _, v := tardeltaFormat(req); v == 0 && !slices.Contains(req.Formats, FormatWhole) {
		return acrapi.DeltaPlan{}, resultUnavailable, fmt.Errorf("%w: the child applies none of the formats this parent encodes (%s)", ErrUnavailable, strings.Join(encodedFormats, ", "))
	}
	key := planKey(req)
	if p, ok := s.cachedPlan(key); ok {
		return p, resultCached, s.allow(p.ID, req.Repository)
	}
	if reason, ok := s.refusal(key); ok {
		return acrapi.DeltaPlan{}, resultUnavailable, fmt.Errorf("%w: %s", ErrUnavailable, reason)
	}
	s.mu.Lock()
	j, running := s.jobs[key]
	if !running {
		j = &job{done: make(chan struct{})}
		s.jobs[key] = j
		go func() {
			j.plan, j.reused, j.err = s.compute(context.WithoutCancel(ctx), target, req, key)
			s.mu.Lock()
			delete(s.jobs, key)
			s.mu.Unlock()
			close(j.done)
		}()
	}
	s.mu.Unlock()
	select {
	case <-j.done:
		switch {
		case errors.Is(j.err, ErrUnavailable):
			return j.plan, resultUnavailable, j.err
		case j.err != nil:
			return j.plan, resultFailed, j.err
		case j.reused:
			return j.plan, resultReused, s.allow(j.plan.ID, req.Repository)
		}
		return j.plan, resultComputed, s.allow(j.plan.ID, req.Repository)
	case <-time.After(wait):
		return acrapi.DeltaPlan{}, resultPending, ErrPending
	case <-ctx.Done():
		return acrapi.DeltaPlan{}, "", ctx.Err()
	}
}

// allow records that delta id was planned for a layer of repo: whoever may read repo may fetch
// it (Repositories).
func (s *Service) allow(id, repo string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	repos := s.readersLocked(id)
	if slices.Contains(repos, repo) {
		return nil
	}
	b, err := json.Marshal(append(repos, repo))
	if err != nil {
		return err
	}
	return atomicfile.Write(s.readersPath(id), b, 0o600)
}

// Repositories are the repositories delta id was planned for: a caller must be able to read
// one of them to fetch it, as the delta holds their layer's bytes.
func (s *Service) Repositories(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readersLocked(id)
}

func (s *Service) readersLocked(id string) []string {
	var repos []string
	if b, err := os.ReadFile(s.readersPath(id)); err == nil {
		_ = json.Unmarshal(b, &repos)
	}
	return repos
}

func (s *Service) readersPath(id string) string {
	d, err := digest.Parse(id)
	if err != nil {
		return filepath.Join(s.dir, "readers", "invalid")
	}
	return filepath.Join(s.dir, "readers", d.Encoded()+".json")
}

// Open opens the delta named id (a plan's ID) for serving.
func (s *Service) Open(id string) (*os.File, error) {
	d, err := digest.Parse(id)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("%w: %q is not a delta id", os.ErrNotExist, id)
	}
	return os.Open(filepath.Join(s.dir, "deltas", d.Encoded()))
}

// encodedFormats are the formats this parent encodes: tardeltaFormat's, and FormatWhole.
var encodedFormats = []string{acrapi.DeltaFormat, acrapi.DeltaFormatV4, acrapi.DeltaFormatV2, FormatWhole}

// tardeltaFormat is the newest tardelta version both this parent and the child speak, and its
// name; version 0 when there is none.
func tardeltaFormat(req acrapi.DeltaRequest) (string, int) {
	switch {
	case slices.Contains(req.Formats, acrapi.DeltaFormat):
		return acrapi.DeltaFormat, 5
	case slices.Contains(req.Formats, acrapi.DeltaFormatV4):
		return acrapi.DeltaFormatV4, 4
	case slices.Contains(req.Formats, acrapi.DeltaFormatV2):
		return acrapi.DeltaFormatV2, 2
	}
	return "", 0
}

// planKey names the delta for req: its target and what the child offers, in order. (Two
// children offering the same layers share it.)
func planKey(req acrapi.DeltaRequest) string {
	h := sha256.New()
	formats := slices.Sorted(slices.Values(req.Formats))
	fmt.Fprintf(h, "%s\n%s\n%d\n%s\n%s\n", acrapi.DeltaFormat, req.Digest, req.Position, req.Repository, strings.Join(formats, ","))
	for _, l := range req.Have {
		fmt.Fprintf(h, "%s %s %d\n", l.Digest, l.Repository, l.Position)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// storedPlan is a plan as cached: with the memory bounds that made its delta larger, if any.
type storedPlan struct {
	acrapi.DeltaPlan
	// PatchMemory and WholeMemory are Limits' when binary patches were left out, or the
	// whole layer's window made smaller, for them; 0 otherwise.
	PatchMemory int64 `json:"patchMemory,omitempty"`
	WholeMemory int64 `json:"wholeMemory,omitempty"`
}

// cachedPlan is a plan computed earlier for the same request (planKey).
func (s *Service) cachedPlan(key string) (acrapi.DeltaPlan, bool) {
	sp, ok := s.loadPlan(key)
	return sp.DeltaPlan, ok
}

// loadPlan reads the plan stored under key (planKey or deltaKey), whose delta file is still
// there, unless this node now has more memory than the bound that made it larger: it is
// computed again, smaller.
func (s *Service) loadPlan(key string) (storedPlan, bool) {
	var sp storedPlan
	b, err := os.ReadFile(filepath.Join(s.dir, "plans", key+".json"))
	if err != nil || json.Unmarshal(b, &sp) != nil || sp.ID == "" {
		return storedPlan{}, false
	}
	if sp.PatchMemory > 0 && (s.patchMemory == 0 || s.patchMemory > sp.PatchMemory) ||
		sp.WholeMemory > 0 && (s.wholeMemory == 0 || s.wholeMemory > sp.WholeMemory) {
		return storedPlan{}, false
	}
	d, err := digest.Parse(sp.ID)
	if err != nil {
		return storedPlan{}, false
	}
	path := filepath.Join(s.dir, "deltas", d.Encoded())
	if !exists(path) {
		return storedPlan{}, false
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now) // recently used
	return sp, true
}

// deltaKey names a delta by what makes its bytes: the target, the format, and the bases
// chosen, in order. Children that offer different layers but get the same bases (an
// inventory lists every image a child holds, most of them no base of this layer) share it.
func deltaKey(target digest.Digest, format string, bases []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", acrapi.DeltaFormat, target, format)
	for _, b := range bases {
		fmt.Fprintf(h, "%s\n", b)
	}
	return "d-" + hex.EncodeToString(h.Sum(nil))
}

// storePlan records a computed plan for the request (planKey) and for the delta (deltaKey).
func (s *Service) storePlan(sp storedPlan, keys ...string) error {
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	for _, key := range keys {
		if err := atomicfile.Write(filepath.Join(s.dir, "plans", key+".json"), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// refuse records that there is no delta for the request (planKey) or the delta (deltaKey), and
// why, so that the next child asking the same is answered at once.
func (s *Service) refuse(reason string, keys ...string) {
	for _, key := range keys {
		_ = atomicfile.Write(filepath.Join(s.dir, "plans", key+".refused"), []byte(reason), 0o600)
	}
}

// refusal is why there is no delta under key, if refuse recorded it.
func (s *Service) refusal(key string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(s.dir, "plans", key+".refused"))
	return string(b), err == nil
}

// facts are what is cached of a blob: how to reproduce it, and its uncompressed digest.
type facts struct {
	Recipe      *recipe.Recipe `json:"recipe,omitempty"`
	Unsupported string         `json:"unsupported,omitempty"`
	// UnsupportedBy is the recipe.Detector that found no recipe: a node that detects more
	// (a newer release, the legacy helper installed since) tries the blob again.
	UnsupportedBy string `json:"unsupportedBy,omitempty"`
	// Splits are the recipe's split points (recipe.FindSplits), once SplitsChecked (also set
	// when the recipe is unsupported).
	Splits        []int64 `json:"splits,omitempty"`
	SplitsChecked bool    `json:"splitsChecked,omitempty"`
	DiffID        string  `json:"diffId,omitempty"`
	TarSize       int64   `json:"tarSize,omitempty"`
}

func (s *Service) compute(ctx context.Context, target digest.Digest, req acrapi.DeltaRequest, key string) (_ acrapi.DeltaPlan, reused bool, _ error) {
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	start := time.Now()
	// The tar first: decompressing it records the diff-id among the blob's facts.
	targetIndex, targetTar, err := s.tar(ctx, req.Repository, target)
	if err != nil {
		return acrapi.DeltaPlan{}, false, err
	}
	defer targetTar.Close()
	f, err := s.facts(ctx, req.Repository, target, targetTar, targetIndex.Size)
	if err != nil {
		return acrapi.DeltaPlan{}, false, err
	}
	if f.Recipe == nil {
		return acrapi.DeltaPlan{}, false, fmt.Errorf("%w: %s", ErrUnavailable, f.Unsupported)
	}
	if f.DiffID == "" {
		return acrapi.DeltaPlan{}, false, fmt.Errorf("%w: the diff-id of %s is not known", ErrUnavailable, target)
	}
	var bases []base
	tdFormat, tdVersion := tardeltaFormat(req)
	if tdVersion != 0 {
		if bases, err = s.chooseBases(ctx, req, targetIndex); err != nil {
			return acrapi.DeltaPlan{}, false, err
		}
	}
	tbases := make([]tardelta.Base, 0, len(bases))
	var names []string
	for _, b := range bases {
		tbases = append(tbases, tardelta.Base{Index: b.index, Data: b.file})
		names = append(names, b.digest.String())
		defer b.file.Close()
	}
	layerSize := blobSize(ctx, s.src, req.Repository, target)
	if len(tbases) == 0 && layerSize > 0 && layerSize*100 >= targetIndex.Size*95 {
		// The layer hardly compresses (random or already compressed data): no stream will be
		// much smaller, and trying costs seconds of CPU per layer.
		reason := fmt.Sprintf("the layer's %d bytes hold a %d-byte tar that does not compress", layerSize, targetIndex.Size)
		s.refuse(reason, key)
		return acrapi.DeltaPlan{}, false, fmt.Errorf("%w: %s", ErrUnavailable, reason)
	}
	format := tdFormat
	if len(tbases) == 0 && slices.Contains(req.Formats, FormatWhole) {
		format = FormatWhole
	}
	dkey := deltaKey(target, format, names)
	if sp, ok := s.loadPlan(dkey); ok {
		// Another child offered other layers, and got the same bases.
		s.log.Info("delta reused", zap.Stringer("digest", target), zap.Strings("bases", names), zap.Int64("delta_bytes", sp.Size))
		return sp.DeltaPlan, true, s.storePlan(sp, key)
	}
	if reason, ok := s.refusal(dkey); ok {
		s.refuse(reason, key)
		return acrapi.DeltaPlan{}, false, fmt.Errorf("%w: %s", ErrUnavailable, reason)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "delta-*")
	if err != nil {
		return acrapi.DeltaPlan{}, false, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	var stats tardelta.Stats
	wholeLimited := false
	if format == FormatWhole {
		// Nothing to copy from: the whole tar, compressed far better than the gzip blob.
		stats.TargetBytes = targetIndex.Size
		stats.LiteralIn = targetIndex.Size
		window := wholeWindowFor(targetIndex.Size, s.wholeMemory)
		if wholeLimited = window < wholeWindowFor(targetIndex.Size, 0); wholeLimited {
			s.log.Info("whole layer compressed with a smaller window: a larger one would take more memory than this node allows; the delta is larger",
				zap.Stringer("digest", target), zap.Int("window_bytes", window), zap.Int64("whole_memory_bytes", s.wholeMemory))
		}
		stats.EncodedBytes, err = encodeWhole(ctx, io.NewSectionReader(targetTar, 0, targetIndex.Size), window, io.MultiWriter(tmp, h))
	} else if tdVersion != 0 {
		stats, err = tardelta.Encode(ctx, io.NewSectionReader(targetTar, 0, targetIndex.Size), tbases, io.MultiWriter(tmp, h), tardelta.Options{Version: tdVersion, PatchMemory: s.patchMemory})
	} else {
		err = fmt.Errorf("%w: the child applies none of %s", ErrUnavailable, strings.Join(encodedFormats, ", "))
	}
	if err != nil {
		return acrapi.DeltaPlan{}, false, fmt.Errorf("encoding the delta of %s: %w", target, err)
	}
	s.metrics.computeSeconds.Add(time.Since(start).Seconds())
	s.metrics.leftOut.Add(float64(stats.OverMemory))
	if err := tmp.Sync(); err != nil {
		return acrapi.DeltaPlan{}, false, err
	}
	// Not worth it: the child fetches the blob (resumably) instead.
	if size := layerSize; size > 0 && stats.EncodedBytes >= size {
		s.log.Info("delta not smaller than the layer", zap.Stringer("digest", target), zap.Int64("delta_bytes", stats.EncodedBytes), zap.Int64("layer_bytes", size))
		reason := fmt.Sprintf("a delta would be %d bytes, the layer is %d", stats.EncodedBytes, size)
		s.refuse(reason, key, dkey)
		return acrapi.DeltaPlan{}, false, fmt.Errorf("%w: %s", ErrUnavailable, reason)
	}
	id := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	s.trimDeltas() // before adding this one: the plan returned must be servable
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, "deltas", id.Encoded())); err != nil {
		return acrapi.DeltaPlan{}, false, err
	}
	rb, _ := json.Marshal(f.Recipe)
	plan := acrapi.DeltaPlan{ID: id.String(), Format: format, Size: stats.EncodedBytes, Bases: names,
		Recipe: rb, Splits: f.Splits, DiffID: f.DiffID, Digest: target.String(), LayerSize: layerSize}
	sp := storedPlan{DeltaPlan: plan}
	if stats.OverMemory > 0 {
		sp.PatchMemory = s.patchMemory
	}
	if wholeLimited {
		sp.WholeMemory = s.wholeMemory
	}
	if err := s.storePlan(sp, dkey, key); err != nil {
		return acrapi.DeltaPlan{}, false, err
	}
	s.log.Info("delta computed", zap.Stringer("digest", target), zap.Strings("bases", names), zap.Int64("layer_bytes", plan.LayerSize),
		zap.Int64("tar_bytes", stats.TargetBytes), zap.Int64("delta_bytes", stats.EncodedBytes), zap.Int64("copied", stats.CopyBytes),
		zap.Int64("patched", stats.PatchIn), zap.Int64("literal", stats.LiteralIn), zap.Duration("took", time.Since(start)))
	if stats.OverMemory > 0 {
		s.log.Info("binary patches left out: they would take more memory than this node allows; the delta is larger",
			zap.Stringer("digest", target), zap.Int64("left_out", stats.OverMemory), zap.Int64("patch_memory_bytes", s.patchMemory))
	}
	return plan, false, nil
}

func blobSize(ctx context.Context, src BlobSource, repo string, d digest.Digest) int64 {
	rc, size, err := src.OpenBlob(ctx, repo, d)
	if err != nil {
		return 0
	}
	rc.Close()
	return size
}

// facts returns the cached facts of blob d, working out its recipe and split points if
// needed from the blob and its tar (tarSize bytes), at hand. Split points are an
// optimisation: failing to find them is logged and leaves them out.
func (s *Service) facts(ctx context.Context, repo string, d digest.Digest, tar *os.File, tarSize int64) (facts, error) {
	path := filepath.Join(s.dir, "recipes", d.Encoded()+".json")
	var f facts
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &f) == nil {
		if f.Recipe != nil && f.SplitsChecked || f.Unsupported != "" && f.UnsupportedBy == recipe.Detector() {
			return f, nil
		}
		f.Unsupported, f.UnsupportedBy, f.SplitsChecked = "", "", false
	}
	rc, size, err := s.src.OpenBlob(ctx, repo, d)
	if err != nil {
		return f, fmt.Errorf("%w: layer %s: %v", ErrUnavailable, d, err)
	}
	defer rc.Close()
	blob := &seekReaderAt{r: rc}
	start := time.Now()
	if f.Recipe != nil {
		// Facts cached before split points were: the recipe stands.
		if f.Splits, err = recipe.FindSplits(ctx, blob, size, *f.Recipe, tar, tarSize); err != nil && ctx.Err() == nil {
			s.log.Warn("finding split points for a parallel rebuild", zap.Stringer("digest", d), zap.Error(err))
		}
	} else {
		rcp, splits, err := recipe.DetectAndConfirmSplits(ctx, blob, size, tar, tarSize)
		switch {
		case errors.Is(err, recipe.ErrUnsupported), errors.Is(err, recipe.ErrCorrupt):
			f.Unsupported, f.UnsupportedBy = err.Error(), recipe.Detector()
		case err != nil:
			return f, err
		default:
			f.Recipe, f.Splits = &rcp, splits
		}
	}
	if err := ctx.Err(); err != nil {
		return f, err
	}
	f.SplitsChecked = true
	if len(f.Splits) > 0 {
		s.log.Info("recipe and split points found", zap.Stringer("digest", d), zap.Stringer("recipe", f.Recipe),
			zap.Int("segments", len(f.Splits)), zap.Duration("took", time.Since(start)))
	}
	b, _ := json.Marshal(f)
	return f, atomicfile.Write(path, b, 0o600)
}

// seekReaderAt reads at offsets from a blob opened as a stream, one read at a time.
type seekReaderAt struct {
	mu sync.Mutex
	r  io.ReadSeeker
}

func (s *seekReaderAt) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.r.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := io.ReadFull(s.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// tar returns the index of blob d's uncompressed tar and the tar itself, decompressing it
// into the cache if needed; the diff-id is recorded in its facts on the way.
func (s *Service) tar(ctx context.Context, repo string, d digest.Digest) (*tardelta.Index, *os.File, error) {
	tarPath := filepath.Join(s.dir, "tars", d.Encoded())
	idxPath := filepath.Join(s.dir, "indexes", d.Encoded())
	if f, err := os.Open(tarPath); err == nil {
		if raw, err := os.ReadFile(idxPath); err == nil {
			var idx tardelta.Index
			if idx.UnmarshalBinary(raw) == nil {
				now := time.Now()
				_ = os.Chtimes(tarPath, now, now) // recently used
				return &idx, f, nil
			}
		}
		f.Close()
	}
	rc, _, err := s.src.OpenBlob(ctx, repo, d)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: layer %s: %v", ErrUnavailable, d, err)
	}
	defer rc.Close()
	zr, err := recipe.NewReader(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: layer %s: %v", ErrUnavailable, d, err)
	}
	defer zr.Close()
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "tar-*")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	pr, pw := io.Pipe()
	idxc := make(chan *tardelta.Index, 1)
	errc := make(chan error, 1)
	go func() {
		idx, err := tardelta.BuildIndex(pr)
		_, _ = io.Copy(io.Discard, pr)
		idxc <- idx
		errc <- err
	}()
	n, err := io.Copy(io.MultiWriter(tmp, h, pw), zr)
	pw.CloseWithError(err)
	idx, ierr := <-idxc, <-errc
	if err != nil {
		tmp.Close()
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Path == tmp.Name() {
			// The cache's disk (full, failing), not the layer: another time may do.
			return nil, nil, fmt.Errorf("decompressing layer %s into the cache: %w", d, err)
		}
		return nil, nil, fmt.Errorf("%w: decompressing layer %s: %v", ErrUnavailable, d, err)
	}
	if ierr != nil {
		tmp.Close()
		return nil, nil, fmt.Errorf("%w: indexing layer %s: %v", ErrUnavailable, d, ierr)
	}
	raw, err := idx.MarshalBinary()
	if err != nil {
		tmp.Close()
		return nil, nil, err
	}
	if err := atomicfile.Write(idxPath, raw, 0o600); err != nil {
		tmp.Close()
		return nil, nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, nil, err
	}
	tmp.Close()
	if err := os.Rename(tmp.Name(), tarPath); err != nil {
		return nil, nil, err
	}
	s.recordDiffID(d, "sha256:"+hex.EncodeToString(h.Sum(nil)), n)
	f, err := os.Open(tarPath)
	s.trimTars() // after opening: an open file stays readable once removed
	return idx, f, err
}

func (s *Service) recordDiffID(d digest.Digest, diffID string, size int64) {
	path := filepath.Join(s.dir, "recipes", d.Encoded()+".json")
	var f facts
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &f)
	}
	f.DiffID, f.TarSize = diffID, size
	b, _ := json.Marshal(f)
	_ = atomicfile.Write(path, b, 0o600)
}

// trimTars removes the least recently used uncompressed tars beyond the budget; their indexes
// stay (they are small), a tar is decompressed again when needed.
func (s *Service) trimTars() { trimDir(filepath.Join(s.dir, "tars"), s.tarBudget) }

// trimDeltas removes the least recently used deltas beyond a quarter of the budget; a plan
// whose delta is gone is computed again when asked for.
func (s *Service) trimDeltas() { trimDir(filepath.Join(s.dir, "deltas"), s.tarBudget/4) }

// trimDir removes the least recently used files of dir (by modification time, which readers
// refresh) until the rest fits in budget.
func trimDir(dir string, budget int64) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type tarFile struct {
		name string
		size int64
		used time.Time
	}
	var all []tarFile
	var total int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			all = append(all, tarFile{e.Name(), fi.Size(), fi.ModTime()})
			total += fi.Size()
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.Before(all[j].used) })
	for _, t := range all {
		if total <= budget {
			return
		}
		if os.Remove(filepath.Join(dir, t.name)) == nil {
			total -= t.size
		}
	}
}

// base is a chosen base: its tar, open, and its index.
type base struct {
	digest digest.Digest
	index  *tardelta.Index
	file   *os.File
}

// chooseBases picks the layers the delta copies from, among those the child holds: the same
// repository's layer at the same position first, then those sharing the most bytes of content
// (by path or by content hash) with the target. A layer that cannot be a base is passed over;
// failing to decompress one into the cache fails the choice.
func (s *Service) chooseBases(ctx context.Context, req acrapi.DeltaRequest, target *tardelta.Index) ([]base, error) {
	type scored struct {
		base
		score   int64
		samePos bool
	}
	names := map[string]int64{}
	sums := map[[32]byte]int64{}
	for _, e := range target.Entries {
		names[e.Name] += e.Data.Size + 1
		if e.Data.Size > 0 {
			sums[e.Data.Sum] += e.Data.Size
		}
	}
	// The same repository's layers first (at the same position first of all): an inventory
	// lists every repository the child holds, in no particular order.
	have := slices.Clone(req.Have)
	rank := func(h acrapi.HeldLayer) int {
		switch {
		case h.Repository == req.Repository && h.Position == req.Position:
			return 0
		case h.Repository == req.Repository || h.Repository == "":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(have, func(a, b acrapi.HeldLayer) int { return rank(a) - rank(b) })
	var cands []scored
	seen := map[string]bool{req.Digest: true}
	for _, h := range have {
		if len(cands) >= maxCandidates {
			break
		}
		d, err := digest.Parse(h.Digest)
		if err != nil || seen[h.Digest] {
			continue
		}
		seen[h.Digest] = true
		repo := h.Repository
		if repo == "" {
			repo = req.Repository
		}
		idx, f, err := s.tar(ctx, repo, d)
		if err != nil && !errors.Is(err, ErrUnavailable) {
			// This node's failure (a full disk), not the layer's: a delta without this base
			// would be larger, and cached for every child asking the same.
			for _, c := range cands {
				c.file.Close()
			}
			return nil, fmt.Errorf("base %s: %w", h.Digest, err)
		}
		if err != nil {
			s.log.Debug("a layer the child holds cannot be a base", zap.String("digest", h.Digest), zap.Error(err))
			continue
		}
		var score int64
		for _, e := range idx.Entries {
			if n, ok := names[e.Name]; ok {
				score += n
			} else if e.Data.Size > 0 {
				score += sums[e.Data.Sum]
			}
		}
		c := scored{base: base{digest: d, index: idx, file: f}, score: score,
			samePos: repo == req.Repository && h.Position == req.Position && req.Position >= 0}
		cands = append(cands, c)
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].samePos != cands[j].samePos {
			return cands[i].samePos
		}
		return cands[i].score > cands[j].score
	})
	// A base must share enough to pay for itself: the child decompresses every base, and a
	// Debian layer that shares only "usr/" and "etc/" with an application's costs seconds.
	minScore := max(64<<10, target.Size/100)
	var out []base
	for _, c := range cands {
		if len(out) < maxBases && (c.score >= minScore || c.samePos) {
			out = append(out, c.base)
			continue
		}
		c.file.Close()
	}
	return out, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Describe names a plan for logs.
func Describe(p acrapi.DeltaPlan) string {
	return fmt.Sprintf("delta %s (%d bytes for a %d-byte layer, bases %s)", p.ID, p.Size, p.LayerSize, strings.Join(p.Bases, ","))
}

// maxInventory bounds the inventory kept per child.
const maxInventory = acrapi.MaxInventory

// SetInventory keeps the layers a connected registry reported holding, named by hash (which
// must be theirs), for its delta requests to refer to.
func (s *Service) SetInventory(registry, hash string, layers []acrapi.HeldLayer) error {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	return s.setInventory(registry, hash, slices.Clone(layers))
}

// setInventory writes the inventory, which it keeps; invMu is held.
func (s *Service) setInventory(registry, hash string, layers []acrapi.HeldLayer) error {
	if len(layers) > maxInventory {
		return fmt.Errorf("%w: an inventory of %d layers, at most %d are kept", ErrUnavailable, len(layers), maxInventory)
	}
	if acrapi.InventoryHash(layers) != hash {
		return fmt.Errorf("%w: the inventory does not match its hash", ErrUnavailable)
	}
	b, err := json.Marshal(layers)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "inventories"), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(s.inventoryPath(registry), b, 0o600); err != nil {
		delete(s.inventories, strings.ToLower(registry)) // the file may hold either
		return err
	}
	s.inventories[strings.ToLower(registry)] = heldInventory{hash: hash, layers: layers}
	return nil
}

// ErrInventoryStale: changes to an inventory were reported against one the parent does not
// hold; the child sends its inventory whole.
var ErrInventoryStale = errors.New("the changes are to an inventory this parent does not hold")

// UpdateInventory applies the changes a connected registry reported to the inventory it
// holds, which must be base (by hash); the result must be hash. The inventory is kept in
// the order of the layers' digests.
func (s *Service) UpdateInventory(registry, base, hash string, added []acrapi.HeldLayer, removed []string) error {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	held, ok := s.inventory(registry)
	if !ok || held.hash != base {
		return ErrInventoryStale
	}
	gone := make(map[string]bool, len(removed))
	for _, d := range removed {
		gone[d] = true
	}
	next := make([]acrapi.HeldLayer, 0, len(held.layers)+len(added))
	for _, l := range held.layers {
		if !gone[l.Digest] {
			next = append(next, l)
		}
	}
	next = append(next, added...)
	slices.SortStableFunc(next, func(a, b acrapi.HeldLayer) int { return strings.Compare(a.Digest, b.Digest) })
	return s.setInventory(registry, hash, next)
}

// ForgetInventory drops what registry reported holding: it was deleted, and nothing is
// prepared for it or kept of it any more.
func (s *Service) ForgetInventory(registry string) error {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	delete(s.inventories, strings.ToLower(registry))
	delete(s.platforms, strings.ToLower(registry))
	if err := os.Remove(s.inventoryPath(registry)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// maxPlatforms bounds the platforms a registry may report.
const maxPlatforms = 64

// SetPlatforms records the index platforms (os/arch[/variant]) registry keeps, as its status
// report gives them; none means all. Prepare prepares deltas of those platforms' layers only.
func (s *Service) SetPlatforms(registry string, platforms []string) error {
	if len(platforms) > maxPlatforms {
		return fmt.Errorf("%d platforms, at most %d", len(platforms), maxPlatforms)
	}
	for _, p := range platforms {
		if !acrapi.ValidPlatform(p) {
			return fmt.Errorf("platform %q: expected os/arch or os/arch/variant in lower case", p)
		}
	}
	s.invMu.Lock()
	defer s.invMu.Unlock()
	if len(platforms) == 0 {
		delete(s.platforms, strings.ToLower(registry))
	} else {
		s.platforms[strings.ToLower(registry)] = slices.Clone(platforms)
	}
	return nil
}

// Platforms returns the index platforms registry last reported keeping (none: all).
func (s *Service) Platforms(registry string) []string {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	return slices.Clone(s.platforms[strings.ToLower(registry)])
}

// KeepInventories drops the inventories of every registry but those named: a node below the
// root learns that a connected registry was deleted from the definitions its parent sends,
// not from the admin call that deleted it.
func (s *Service) KeepInventories(registries []string) error {
	keep := make(map[string]bool, len(registries))
	for _, r := range registries {
		keep[strings.ToLower(r)] = true
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, "inventories"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && !keep[name] {
			errs = append(errs, s.ForgetInventory(name))
		}
	}
	return errors.Join(errs...)
}

// InventoryHash is the hash of the inventory registry last reported ("" if none): what a status
// report's answer names, without copying the layers.
func (s *Service) InventoryHash(registry string) string {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	held, _ := s.inventory(registry)
	return held.hash
}

// Inventory returns the layers registry last reported holding and their hash; false if none.
// The layers are the caller's to change.
func (s *Service) Inventory(registry string) (string, []acrapi.HeldLayer, bool) {
	s.invMu.Lock()
	defer s.invMu.Unlock()
	held, ok := s.inventory(registry)
	return held.hash, slices.Clone(held.layers), ok
}

// inventory returns registry's inventory, read from its file the first time (it outlives
// restarts); invMu is held. The layers must not be changed.
func (s *Service) inventory(registry string) (heldInventory, bool) {
	if held, ok := s.inventories[strings.ToLower(registry)]; ok {
		return held, true
	}
	b, err := os.ReadFile(s.inventoryPath(registry))
	if err != nil {
		return heldInventory{}, false
	}
	var layers []acrapi.HeldLayer
	if json.Unmarshal(b, &layers) != nil {
		return heldInventory{}, false
	}
	held := heldInventory{hash: acrapi.InventoryHash(layers), layers: layers}
	s.inventories[strings.ToLower(registry)] = held
	return held, true
}

func (s *Service) inventoryPath(registry string) string {
	return filepath.Join(s.dir, "inventories", strings.ToLower(registry)+".json")
}
