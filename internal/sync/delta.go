package sync

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	runtimemetrics "runtime/metrics"
	"slices"
	"strings"
	stdsync "sync"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/delta/pflate"
	"github.com/outpost-registry/outpost/internal/delta/recipe"
	"github.com/outpost-registry/outpost/internal/delta/tardelta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Delta sync: a layer the node lacks is asked of the parent as a delta against layers the node
// holds; the node rebuilds the exact blob, and commits it only once its digest matches. Any
// problem — a parent that does not speak delta, no recipe for the layer, a bad delta — falls
// back to fetching the blob itself, so delta can only save bytes, never fail a sync.

// deltaLayer tells whether d may travel as a delta, or be a delta's base: a layer of an image
// manifest (it has a position) that is a compressed tar.
func (d Descriptor) deltaLayer() bool {
	return d.position > 0 && slices.Contains(delta.LayerMediaTypes, d.MediaType)
}

// deltaPendingLimit bounds how long the node waits for its parent to compute a delta.
const deltaPendingLimit = 10 * time.Minute

// maxHeld bounds the layers offered as bases in one request.
const maxHeld = 256

// rebuildMemoryLimit is the Go heap's soft limit while a layer is rebuilt, so that the node stays
// within about 128 MiB: the delta's own buffers are bounded (tardelta, zstd windows), the rest
// is garbage the collector may leave until the heap doubles. rebuildBudget is the room the
// rebuild gets above what the node already holds live, for a node that holds more (one that is
// also a parent computing its children's deltas, whose live heap may be hundreds of MiB: a limit
// below it would have the collector run without pause).
const (
	rebuildMemoryLimit = 96 << 20
	rebuildBudget      = 80 << 20
)

// setMemoryLimit is debug.SetMemoryLimit; tests watch it.
var setMemoryLimit = debug.SetMemoryLimit

// rebuildLimit is the soft memory limit while a layer is rebuilt, given the limit in force and
// the heap live before: never above the one in force (an operator's or the container's).
func rebuildLimit(prev, live int64) int64 {
	return min(prev, max(rebuildMemoryLimit, live+rebuildBudget))
}

// liveHeap is the heap found live by a collection run now.
func liveHeap() int64 {
	runtime.GC()
	s := []runtimemetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	runtimemetrics.Read(s)
	if s[0].Value.Kind() != runtimemetrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// errNoDelta: this layer does not come as a delta; fetch it whole.
var errNoDelta = errors.New("no delta")

// errInventoryStale: the parent does not hold the inventory a request named.
var errInventoryStale = errors.New("the parent does not hold this node's inventory")

// acknowledgedInventory is the inventory the parent acknowledged in the last status report,
// and its hash; "" without one.
func (e *Engine) acknowledgedInventory() ([]acrapi.HeldLayer, string) {
	e.inventoryMu.Lock()
	defer e.inventoryMu.Unlock()
	return e.inventory, e.inventoryHash
}

// describeInventory adds the node's inventory of layers to a status report: its hash always;
// when the parent has not acknowledged it yet, the changes from the one it acknowledged, or
// the whole list if the changes would be as long. It returns what to record once the parent
// answers that it holds it.
func (e *Engine) describeInventory(ctx context.Context, r *acrapi.StatusReport) ([]acrapi.HeldLayer, string) {
	if !e.opts.Delta || e.deltaOff.Load() || e.deltaUnsupported.Load() {
		return nil, ""
	}
	layers, err := e.inventoryOfStore(ctx)
	if err != nil {
		e.log.Warn("listing the layers held for the status report", zap.Error(err))
		return nil, ""
	}
	hash := acrapi.InventoryHash(layers)
	r.LayersHash = hash
	if ackedLayers, acked := e.acknowledgedInventory(); acked != hash {
		added, removed := inventoryChanges(ackedLayers, layers)
		if acked != "" && len(added)+len(removed) < len(layers)/2 {
			r.LayersBase, r.LayersAdded, r.LayersRemoved = acked, added, removed
		} else {
			r.Layers = layers
		}
	}
	return layers, hash
}

// inventoryOfStore lists the layers the store holds, in digest order (so that the parent
// applying changes gets the same list, and hash), walking the store only when something may
// have changed it since the last walk.
func (e *Engine) inventoryOfStore(ctx context.Context) ([]acrapi.HeldLayer, error) {
	p := e.pass
	changed := p.blobsFetched.Load()+p.blobsMounted.Load()+p.manifests.Load()+p.tagsRemoved.Load()+p.deltaLayers.Load() > 0
	e.inventoryMu.Lock()
	held := e.held
	e.inventoryMu.Unlock()
	if held != nil && !changed && !e.heldStale.Load() {
		return held, nil
	}
	e.heldStale.Store(false) // before the walk: a change during it marks it stale again
	layers, err := e.heldLayers(ctx, acrapi.MaxInventory)
	if err != nil {
		e.heldStale.Store(true)
		return nil, err
	}
	if layers == nil {
		layers = []acrapi.HeldLayer{}
	}
	slices.SortFunc(layers, func(a, b acrapi.HeldLayer) int { return strings.Compare(a.Digest, b.Digest) })
	e.inventoryMu.Lock()
	e.held = layers
	e.inventoryMu.Unlock()
	return layers, nil
}

// StoreChanged tells the engine that a client changed the store (a push, a delete): the
// inventory of layers held is listed anew for the next status report.
func (e *Engine) StoreChanged() { e.heldStale.Store(true) }

// inventoryChanges lists what turns inventory from into to, both in digest order: the layers
// added (or moved to another repository or position) and the digests removed.
func inventoryChanges(from, to []acrapi.HeldLayer) (added []acrapi.HeldLayer, removed []string) {
	i, j := 0, 0
	for i < len(from) || j < len(to) {
		switch {
		case j == len(to) || i < len(from) && from[i].Digest < to[j].Digest:
			removed = append(removed, from[i].Digest)
			i++
		case i == len(from) || to[j].Digest < from[i].Digest:
			added = append(added, to[j])
			j++
		default:
			if from[i] != to[j] {
				removed = append(removed, from[i].Digest)
				added = append(added, to[j])
			}
			i++
			j++
		}
	}
	return added, removed
}

// fetchLayer fetches d, as a delta when it can, else whole.
func (e *Engine) fetchLayer(ctx context.Context, repo string, d Descriptor) error {
	e.metrics.layerBytes.Add(float64(d.Size))
	e.reportSyncing(ctx)
	if !e.deltaWanted(d) {
		return e.fetchBlob(ctx, repo, d)
	}
	err := e.fetchByDelta(ctx, repo, d)
	if err == nil {
		e.heldAdd(repo, d)
		return nil
	}
	if ctx.Err() != nil || errors.Is(err, ErrOutsideWindow) {
		return err
	}
	if !errors.Is(err, errNoDelta) {
		e.metrics.deltaFallbacks.Inc()
		e.log.Warn("delta failed; fetching the layer whole", zap.String("repository", repo), zap.Stringer("digest", d.Digest), zap.Error(err))
	} else {
		e.log.Debug("layer fetched whole", zap.Stringer("digest", d.Digest), zap.Error(err))
	}
	if err := e.fetchBlob(ctx, repo, d); err != nil {
		return err
	}
	e.heldAdd(repo, d)
	return nil
}

// passHeld is a pass's list of the layers held: listing them walks every tag's manifests,
// so it is done once per pass, and the layers the pass stores are added as they come.
type passHeld struct {
	mu     stdsync.Mutex
	listed bool
	layers []acrapi.HeldLayer // the most recently stored first
}

// heldFor lists the layers held to offer as bases for a layer of repo: repo's first, at most
// maxHeld.
func (e *Engine) heldFor(ctx context.Context, repo string) ([]acrapi.HeldLayer, error) {
	ph := &e.pass.held
	ph.mu.Lock()
	defer ph.mu.Unlock()
	if !ph.listed {
		layers, err := e.heldLayers(ctx, acrapi.MaxInventory)
		if err != nil {
			return nil, err
		}
		ph.layers, ph.listed = layers, true
	}
	out := make([]acrapi.HeldLayer, 0, min(len(ph.layers), maxHeld))
	for _, mine := range []bool{true, false} {
		for _, l := range ph.layers {
			if (l.Repository == repo) == mine && len(out) < maxHeld {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// heldAdd records a layer the pass stored, as a base for its next delta requests.
func (e *Engine) heldAdd(repo string, d Descriptor) {
	ph := &e.pass.held
	ph.mu.Lock()
	defer ph.mu.Unlock()
	if !ph.listed || !d.deltaLayer() {
		return
	}
	for _, l := range ph.layers {
		if l.Digest == d.Digest.String() {
			return
		}
	}
	ph.layers = slices.Insert(ph.layers, 0, acrapi.HeldLayer{Digest: d.Digest.String(), Repository: repo, Position: d.position - 1})
}

// deltaWanted says whether to ask for d as a delta.
func (e *Engine) deltaWanted(d Descriptor) bool {
	if !e.opts.Delta || e.deltaOff.Load() || e.deltaUnsupported.Load() || !d.deltaLayer() {
		return false
	}
	// A whole fetch already under way resumes instead: its bytes are paid for.
	if _, ok := e.checkpoints.load(d.Digest); ok {
		return false
	}
	return true
}

// fetchByDelta asks the parent for d as a delta, fetches the delta in resumable chunks,
// rebuilds the layer into an upload session and commits it.
func (e *Engine) fetchByDelta(ctx context.Context, repo string, d Descriptor) error {
	req := acrapi.DeltaRequest{Repository: repo, Digest: d.Digest.String(), Size: d.Size, Position: d.position - 1, Formats: delta.Formats}
	// A connected registry's parent keeps the inventory of its last status report: naming it
	// saves sending the list with every layer.
	held, hash := e.acknowledgedInventory()
	// While the parent plans (seconds when it computes the delta first), the layer at the
	// same position of the same repository is decompressed on a guess: the parent takes it
	// as a base whenever it can read it.
	var guess *baseTar
	defer func() {
		if guess != nil {
			guess.release()
		}
	}()
	speculate := func(held []acrapi.HeldLayer) {
		for _, h := range held {
			if guess == nil && h.Repository == repo && h.Position == req.Position {
				guess = e.startBase(ctx, h)
				return
			}
		}
	}
	var plan acrapi.DeltaPlan
	err := errInventoryStale
	if hash != "" {
		req.HaveHash = hash
		speculate(held)
		plan, err = e.planDelta(ctx, req)
	}
	if errors.Is(err, errInventoryStale) {
		if held, err = e.heldFor(ctx, repo); err != nil {
			return fmt.Errorf("%w: listing the layers held: %v", errNoDelta, err)
		}
		req.HaveHash, req.Have = "", held
		speculate(held)
		plan, err = e.planDelta(ctx, req)
	}
	if err != nil {
		return err
	}
	if plan.Digest != d.Digest.String() || plan.LayerSize != d.Size {
		return fmt.Errorf("the parent planned a delta for %s (%d bytes), not %s (%d bytes)", plan.Digest, plan.LayerSize, d.Digest, d.Size)
	}
	byDigest := map[string]acrapi.HeldLayer{}
	for _, h := range held {
		byDigest[h.Digest] = h
	}
	for _, b := range plan.Bases {
		if _, ok := byDigest[b]; !ok {
			return fmt.Errorf("the parent's delta uses %s, which this node did not offer", b)
		}
	}
	// A recipe this node cannot write (its compressor needs the legacy helper, say) would
	// make the delta useless: the layer is fetched whole without fetching the delta first.
	rc, err := recipe.ParseRecipe(plan.Recipe)
	if err == nil {
		err = recipe.Reproducible(rc)
	}
	if err != nil {
		return fmt.Errorf("the parent's delta plan: %w", err)
	}
	id, err := digest.Parse(plan.ID)
	if err != nil || plan.Size < 0 {
		return fmt.Errorf("the parent's delta plan has an invalid id %q", plan.ID)
	}
	// The other bases are decompressed while the delta downloads: over a slow link, that
	// takes nothing from the rebuild.
	bases := make(baseTars, len(plan.Bases))
	defer bases.release()
	for i, name := range plan.Bases {
		if guess != nil && guess.name == name {
			bases[i], guess = guess, nil
		} else {
			bases[i] = e.startBase(ctx, byDigest[name])
		}
	}
	if guess != nil {
		guess.release()
		guess = nil
	}
	deltaPath, err := e.downloadDelta(ctx, id, plan.Size)
	if err != nil {
		return err
	}
	started := time.Now()
	tarSize, err := e.rebuild(ctx, repo, d, plan, deltaPath, bases)
	if ctx.Err() == nil {
		// Used, or useless: the layer is fetched whole after a failed rebuild. (A cut
		// download keeps its file above, to resume.)
		_ = os.Remove(deltaPath)
	}
	if err != nil {
		return err
	}
	took := time.Since(started)
	e.metrics.deltaLayers.Inc()
	e.metrics.deltaSaved.Add(float64(max(d.Size-plan.Size, 0)))
	e.pass.deltaLayers.Add(1)
	e.pass.deltaSaved.Add(max(d.Size-plan.Size, 0))
	e.log.Info("layer rebuilt from a delta", zap.String("repository", repo), zap.Stringer("digest", d.Digest),
		zap.Int64("layer_bytes", d.Size), zap.Int64("delta_bytes", plan.Size), zap.Int("bases", len(plan.Bases)), zap.String("format", plan.Format),
		zap.Duration("rebuild", took), zap.Float64("rebuild_layer_mib_per_s", float64(d.Size)/(1<<20)/took.Seconds()),
		zap.Int64("tar_bytes", tarSize), zap.Float64("rebuild_tar_mib_per_s", float64(tarSize)/(1<<20)/took.Seconds()))
	return nil
}

// planDelta asks the parent for a plan, waiting while the parent computes it.
func (e *Engine) planDelta(ctx context.Context, req acrapi.DeltaRequest) (acrapi.DeltaPlan, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return acrapi.DeltaPlan{}, err
	}
	deadline := time.Now().Add(deltaPendingLimit)
	for attempt := 1; ; attempt++ {
		resp, err := e.parent.Send(ctx, http.MethodPost, "/acr/v1/deltas", http.Header{"Content-Type": {"application/json"}}, body)
		var pe *ParentError
		switch {
		case errors.As(err, &pe) && (pe.Status == http.StatusNotFound || pe.Status == http.StatusMethodNotAllowed):
			// Not an Outpost parent, or one without delta: stop asking.
			e.deltaUnsupported.Store(true)
			e.log.Info("the parent does not serve deltas; layers are fetched whole", zap.Int("status", pe.Status))
			return acrapi.DeltaPlan{}, fmt.Errorf("%w: the parent does not serve deltas", errNoDelta)
		case errors.As(err, &pe) && pe.Code == acrapi.CodeDeltaUnavailable:
			return acrapi.DeltaPlan{}, fmt.Errorf("%w: %s", errNoDelta, pe.Message)
		case errors.As(err, &pe) && pe.Code == acrapi.CodeInventoryStale:
			return acrapi.DeltaPlan{}, errInventoryStale
		case err != nil && (!retryable(err) || attempt >= e.opts.Retry.Attempts):
			return acrapi.DeltaPlan{}, err
		case err != nil:
			if serr := sleep(ctx, e.opts.Retry.Backoff(attempt, retryAfterOf(err))); serr != nil {
				return acrapi.DeltaPlan{}, serr
			}
			continue
		}
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if rerr != nil {
			return acrapi.DeltaPlan{}, rerr
		}
		if resp.StatusCode == http.StatusAccepted {
			if time.Now().After(deadline) {
				return acrapi.DeltaPlan{}, fmt.Errorf("%w: the parent was still computing the delta after %s", errNoDelta, deltaPendingLimit)
			}
			wait := 5 * time.Second
			if s := resp.Header.Get("Retry-After"); s != "" {
				var secs int
				if _, err := fmt.Sscan(s, &secs); err == nil && secs > 0 && secs < 60 {
					wait = time.Duration(secs) * time.Second
				}
			}
			if serr := sleep(ctx, wait); serr != nil {
				return acrapi.DeltaPlan{}, serr
			}
			attempt = 0
			continue
		}
		var plan acrapi.DeltaPlan
		if err := json.Unmarshal(b, &plan); err != nil {
			return acrapi.DeltaPlan{}, fmt.Errorf("the parent's delta plan: %w", err)
		}
		return plan, nil
	}
}

func retryAfterOf(err error) time.Duration {
	var pe *ParentError
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}

// deltaDir holds deltas being fetched (named by their digest, so a cut transfer resumes) and
// the uncompressed bases of a rebuild.
func (e *Engine) deltaDir() string { return filepath.Join(e.opts.StateDir, "deltas") }

// downloadDelta fetches delta id into its file in chunks, resuming from what the file holds,
// and checks its digest.
func (e *Engine) downloadDelta(ctx context.Context, id digest.Digest, size int64) (string, error) {
	if err := os.MkdirAll(e.deltaDir(), 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(e.deltaDir(), id.Encoded())
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", err
	}
	if have > size {
		if err := f.Truncate(0); err != nil {
			return "", err
		}
		have, _ = f.Seek(0, io.SeekStart)
	}
	chunk := int64(e.opts.ChunkSize)
	failures := 0
	for have < size {
		length := min(chunk, size-have)
		resp, err := e.parent.Do(ctx, http.MethodGet, "/acr/v1/deltas/"+id.String(),
			http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", have, have+length-1)}})
		var n int64
		if err == nil {
			if resp.StatusCode == http.StatusPartialContent {
				n, err = io.Copy(f, io.LimitReader(resp.Body, length))
			} else {
				// The whole delta: skip what is held, keep the rest.
				if _, err = io.CopyN(io.Discard, resp.Body, have); err == nil {
					n, err = io.Copy(f, io.LimitReader(resp.Body, size-have))
				}
			}
			resp.Body.Close()
			e.pass.deltaBytes.Add(n)
		}
		have += n
		if err == nil && n == 0 {
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			failures = 0
			continue
		}
		var pe *ParentError
		if errors.As(err, &pe) && pe.Status == http.StatusNotFound {
			_ = os.Remove(path) // evicted at the parent: a new plan names it again
			return "", fmt.Errorf("%w: the parent no longer has delta %s", errNoDelta, id)
		}
		if !retryable(err) {
			return "", err
		}
		if n > 0 {
			failures = 0
		}
		failures++
		if failures >= e.opts.Retry.Attempts {
			return "", fmt.Errorf("fetching delta %s: %w", id, err)
		}
		if serr := sleep(ctx, e.opts.Retry.Backoff(failures, retryAfterOf(err))); serr != nil {
			return "", serr
		}
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != id {
		_ = os.Remove(path)
		e.metrics.refetched.Add(float64(size))
		return "", fmt.Errorf("%w: delta %s arrived as %s", ErrCorrupt, id, got)
	}
	return path, nil
}

// rebuild waits for the bases (decompressed while the delta downloaded), rebuilds the layer
// from the delta into an upload session, and commits it: distribution checks the digest once
// more.
func (e *Engine) rebuild(ctx context.Context, repo string, d Descriptor, plan acrapi.DeltaPlan, deltaPath string, tars baseTars) (int64, error) {
	bases, err := tars.wait(ctx)
	if err != nil {
		return 0, err
	}
	df, err := os.Open(deltaPath)
	if err != nil {
		return 0, err
	}
	defer df.Close()
	e.rebuilding.Lock()
	defer e.rebuilding.Unlock()
	// A rebuild holds tens of MiB of decoder and compressor state; a soft memory limit makes the
	// collector return it rather than let the heap double, and it goes back to the system after.
	// (An operator's lower GOMEMLIMIT stays.) What the node holds live at the start (a parent's
	// delta computation, say) is measured once: a computation started during the rebuild has
	// the collector work harder for the rebuild's seconds, and is not stopped.
	if prev := setMemoryLimit(-1); prev > rebuildMemoryLimit {
		setMemoryLimit(rebuildLimit(prev, liveHeap()))
		defer setMemoryLimit(prev)
	}
	defer debug.FreeOSMemory()
	w, err := e.store.CreateUpload(ctx, repo)
	if err != nil {
		return 0, err
	}
	tarSize, err := delta.Rebuild(ctx, plan, df, bases, w)
	if errors.Is(err, pflate.ErrMismatch) && ctx.Err() == nil {
		// The split points did not hold (they are checked on the parent, so this is not
		// expected): the delta is paid for, so rebuild once more compressing serially.
		e.log.Warn("parallel recompression did not reproduce the layer; rebuilding serially", zap.Stringer("digest", d.Digest), zap.Error(err))
		_ = w.Cancel(context.WithoutCancel(ctx))
		plan.Splits = nil
		if _, err = df.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		if w, err = e.store.CreateUpload(ctx, repo); err != nil {
			return 0, err
		}
		tarSize, err = delta.Rebuild(ctx, plan, df, bases, w)
	}
	if err != nil {
		_ = w.Cancel(context.WithoutCancel(ctx))
		if errors.Is(err, delta.ErrMismatch) || errors.Is(err, tardelta.ErrCorrupt) {
			_ = os.Remove(deltaPath) // wrong bytes: a new attempt fetches them again
		}
		return 0, err
	}
	if _, err := w.Commit(ctx, v1.Descriptor{Digest: d.Digest, Size: d.Size, MediaType: "application/octet-stream"}); err != nil {
		_ = w.Cancel(context.WithoutCancel(ctx))
		return 0, fmt.Errorf("committing the rebuilt layer %s: %w", d.Digest, err)
	}
	return tarSize, nil
}

// abandonedDelta is how long a partly fetched delta is kept for its plan to be asked for
// again (the next passes do, within minutes or hours); after that it is abandoned, the layer
// having been fetched otherwise or no longer wanted.
const abandonedDelta = 7 * 24 * time.Hour

// removeStaleBases removes the uncompressed bases a rebuild cut by a kill left behind: they
// are as large as the layers' tars, and never reused.
func (e *Engine) removeStaleBases() {
	stale, _ := filepath.Glob(filepath.Join(e.deltaDir(), "base-*.tar"))
	for _, f := range stale {
		_ = os.Remove(f)
	}
}

// removeAbandonedDeltas removes, at the start of a pass, the deltas not written to for
// abandonedDelta. A delta in use was written to minutes ago at most.
func (e *Engine) removeAbandonedDeltas() {
	entries, _ := os.ReadDir(e.deltaDir())
	for _, ent := range entries {
		if info, err := ent.Info(); err == nil && info.Mode().IsRegular() && time.Since(info.ModTime()) > abandonedDelta {
			_ = os.Remove(filepath.Join(e.deltaDir(), ent.Name()))
		}
	}
}

// decompressBase writes the uncompressed tar of a layer the node holds to a temporary file and
// returns it with its size.
func (e *Engine) decompressBase(ctx context.Context, repo string, d digest.Digest) (*os.File, int64, error) {
	rc, _, err := e.store.OpenBlob(ctx, repo, d)
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	f, err := os.CreateTemp(e.deltaDir(), "base-*.tar")
	if err != nil {
		return nil, 0, err
	}
	n, err := delta.Decompress(ctx, rc, f)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, err
	}
	return f, n, nil
}

// A baseTar is the uncompressed tar of a layer the node holds, made in the background for a
// delta to use as its base.
type baseTar struct {
	name   string // the layer's digest
	done   chan struct{}
	cancel context.CancelFunc
	file   *os.File
	size   int64
	err    error
}

// startBase decompresses layer h into a temporary file.
func (e *Engine) startBase(ctx context.Context, h acrapi.HeldLayer) *baseTar {
	ctx, cancel := context.WithCancel(ctx)
	b := &baseTar{name: h.Digest, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(b.done)
		d, err := digest.Parse(h.Digest)
		if err == nil {
			b.file, b.size, err = e.decompressBase(ctx, h.Repository, d)
		}
		if err != nil {
			b.err = fmt.Errorf("base %s: %w", h.Digest, err)
		}
	}()
	return b
}

// release stops a decompression still under way and removes the file.
func (b *baseTar) release() {
	b.cancel()
	<-b.done
	if b.file != nil {
		b.file.Close()
		os.Remove(b.file.Name())
	}
}

// baseTars are a plan's bases, in its order.
type baseTars []*baseTar

// wait returns the bases once they are all decompressed.
func (bs baseTars) wait(ctx context.Context) ([]tardelta.SizedReaderAt, error) {
	out := make([]tardelta.SizedReaderAt, 0, len(bs))
	for _, b := range bs {
		select {
		case <-b.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if b.err != nil {
			return nil, b.err
		}
		out = append(out, io.NewSectionReader(b.file, 0, b.size))
	}
	return out, nil
}

func (bs baseTars) release() {
	for _, b := range bs {
		if b != nil {
			b.release()
		}
	}
}

// heldLayers lists the layers the node holds (at most limit), for the parent to choose bases
// from, walking every tag's manifests: repository by repository, newer tags first.
func (e *Engine) heldLayers(ctx context.Context, limit int) ([]acrapi.HeldLayer, error) {
	e.heldWalks.Add(1)
	repos, err := e.store.Repositories(ctx)
	if err != nil {
		return nil, err
	}
	var out []acrapi.HeldLayer
	seen := map[string]bool{}
	for _, r := range repos {
		tags, err := e.store.Tags(ctx, r)
		if err != nil {
			continue
		}
		slices.Reverse(tags) // newer tags (by name, often) first
		for _, t := range tags {
			if len(out) >= limit {
				return out, nil
			}
			md, ok, err := e.store.TagDigest(ctx, r, t)
			if err != nil || !ok {
				continue
			}
			e.addHeld(ctx, r, md, &out, seen, 0, limit)
		}
	}
	return out, nil
}

// addHeld adds the layers of manifest md (an index's children too) to out.
func (e *Engine) addHeld(ctx context.Context, repo string, md digest.Digest, out *[]acrapi.HeldLayer, seen map[string]bool, depth, limit int) {
	if depth > 2 || len(*out) >= limit {
		return
	}
	mt, raw, err := e.store.GetManifest(ctx, repo, md)
	if err != nil {
		return
	}
	p, err := parseManifest(Manifest{MediaType: mt, Raw: raw, Digest: md})
	if err != nil {
		return
	}
	for _, c := range p.children {
		e.addHeld(ctx, repo, c.Digest, out, seen, depth+1, limit)
	}
	for _, b := range p.blobs {
		if !b.deltaLayer() || seen[b.Digest.String()] || len(*out) >= limit {
			continue
		}
		if ok, err := e.store.HasBlob(ctx, repo, b.Digest); err != nil || !ok {
			continue
		}
		seen[b.Digest.String()] = true
		*out = append(*out, acrapi.HeldLayer{Digest: b.Digest.String(), Repository: repo, Position: b.position - 1})
	}
}
