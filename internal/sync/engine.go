// Package sync mirrors a parent registry into the node's store: on a cron schedule within a
// sync window, in resumable ranged chunks, verifying every byte, never exposing half an image.
package sync

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/robfig/cron/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Options configure an Engine.
type Options struct {
	Parent ParentOptions
	// Repositories are exact names, "ns/*" (one level below ns), "ns/**" (any depth) or "*".
	Repositories []string
	// TagInclude and TagExclude are regular expressions matched against whole tags.
	TagInclude, TagExclude []string
	// Platforms limits indexes to these os/arch[/variant]; empty means all.
	Platforms []string
	// Referrers mirrors the referrers (signatures, SBOMs) of every synced manifest.
	Referrers bool
	// Schedule is a 5-field cron expression, UTC. Window is how long the link may be used after
	// each firing; zero means for as long as the pass that firing starts.
	Schedule string
	Window   time.Duration
	// ChunkSize is the byte length of each ranged blob request.
	ChunkSize int
	// BandwidthKiBps caps all parent traffic; zero means no cap.
	BandwidthKiBps int
	// Parallelism is how many blobs are fetched at once.
	Parallelism int
	// StallTimeout abandons (and retries) a response that delivers no byte for this long;
	// zero means one minute.
	StallTimeout time.Duration
	// StateDir holds the engine's durable state (blob checkpoints).
	StateDir string
	// Retry bounds retries of failed requests and chunks.
	Retry RetryPolicy
	// Changed, when set, hears every tag the engine stores or removes (action is
	// acrapi.EventPush or acrapi.EventUntag): a node logs them for its own children.
	Changed func(repo, tag string, dgst digest.Digest, action string)
	// Delta asks an Outpost parent for layers as deltas against layers this node holds; the
	// parent of a connected registry may turn it off for it.
	Delta bool
	// Connected, when set, makes the parent an Outpost node this one is a connected registry of:
	// it then says what to sync and when (Repositories, Schedule and Window are only defaults).
	Connected *ConnectedOptions
	Log       *zap.Logger
}

// Engine is the child side of sync.
type Engine struct {
	opts      Options
	store     Store
	parent    *Parent
	link      *linkTransport // under parent and the /acr client: its connections close with a window
	gate      *Gate
	meter     *Meter
	log       *zap.Logger
	planMu    stdsync.RWMutex
	cur       plan       // what to sync and when; a connected registry's parent may change it
	cron      *cron.Cron // while Run runs
	cronEntry cron.EntryID
	connected *ConnectedOptions
	acr       *acrapi.Client // the parent's /acr API, through the link; nil unless connected
	refused   atomic.Pointer[error]
	// deltaOff is the parent's DeltaSync Disabled for this connected registry;
	// deltaUnsupported a parent that does not serve deltas at all.
	deltaOff, deltaUnsupported atomic.Bool
	// parentReadsPlatforms: the parent's last status answer listed acrapi.ReportPlatforms.
	parentReadsPlatforms atomic.Bool
	// rebuilding lets one layer be rebuilt from a delta at a time: each holds tens of MiB of
	// decoder and compressor state, and the node's memory must stay bounded.
	rebuilding stdsync.Mutex
	// inventory is the list of layers held that the parent acknowledged in a status report.
	inventoryMu   stdsync.Mutex
	inventory     []acrapi.HeldLayer
	inventoryHash string
	// held is the last inventory listed from the store (it walks every tag's manifests),
	// reused while nothing changed the store: no pass stored or removed anything and no
	// client changed anything (StoreChanged) since. (Garbage collection removes only what no
	// tag references, which is not in the inventory.) heldWalks counts the walks.
	held        []acrapi.HeldLayer
	heldStale   atomic.Bool
	heldWalks   atomic.Int64
	include     []*regexp.Regexp
	exclude     []*regexp.Regexp
	platforms   platformFilter
	checkpoints checkpoints
	outbox      outbox
	flight      singleflight.Group
	metrics     *metrics
	progress    *progress

	trigger chan bool // a pass is wanted; true when forced outside the window
	running atomic.Bool
	pass    *passCounters // the totals of the pass in progress
}

// passCounters are the totals of one pass.
type passCounters struct {
	blobsFetched, blobsMounted, manifests, tagsRemoved atomic.Int64
	// deltaLayers came as deltas, deltaBytes of them crossed the link this pass, deltaSaved
	// is what their deltas saved against fetching them whole.
	deltaLayers, deltaBytes, deltaSaved atomic.Int64
	// syncing is set once the pass has told the parent it is transferring.
	syncing atomic.Bool
	// held lists the layers held, as bases for the pass's delta requests.
	held passHeld
}

// ErrOutsideWindow is returned by Trigger when no window is open and the pass is not forced.
var ErrOutsideWindow = errors.New("no sync window is open: wait for the next one, or force the pass")

// New builds an engine over store. It sends nothing until Run.
func New(opts Options, store Store, parser cron.Parser) (*Engine, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 1 << 20
	}
	if opts.Parallelism <= 0 {
		opts.Parallelism = 2
	}
	if opts.Retry.Attempts < 1 {
		opts.Retry = DefaultRetry
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = time.Minute
	}
	opts.Parent.Retry = opts.Retry
	if opts.Parent.Log == nil {
		opts.Parent.Log = opts.Log
	}
	sched, err := parser.Parse(opts.Schedule)
	if err != nil {
		return nil, fmt.Errorf("sync schedule %q: %w", opts.Schedule, err)
	}
	compile := func(exprs []string) ([]*regexp.Regexp, error) {
		var out []*regexp.Regexp
		for _, x := range exprs {
			re, err := regexp.Compile("^(?:" + x + ")$")
			if err != nil {
				return nil, fmt.Errorf("tag filter %q: %w", x, err)
			}
			out = append(out, re)
		}
		return out, nil
	}
	include, err := compile(opts.TagInclude)
	if err != nil {
		return nil, err
	}
	exclude, err := compile(opts.TagExclude)
	if err != nil {
		return nil, err
	}
	if opts.Parent.Scopes == nil {
		for _, r := range opts.Repositories {
			if strings.Contains(r, "*") {
				opts.Parent.Scopes = append(opts.Parent.Scopes, "registry:catalog:*")
				break
			}
		}
		for _, r := range opts.Repositories {
			if !strings.Contains(r, "*") {
				opts.Parent.Scopes = append(opts.Parent.Scopes, "repository:"+r+":pull")
			}
		}
	}
	gate, meter := NewGate(), &Meter{}
	link := &linkTransport{gate: gate, limiter: newLimiter(opts.BandwidthKiBps), meter: meter, stall: opts.StallTimeout}
	parent, err := NewParent(opts.Parent, link)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		opts: opts, store: store, parent: parent, link: link, gate: gate, meter: meter, log: opts.Log,
		cur:     plan{repositories: opts.Repositories, schedule: sched, scheduleText: opts.Schedule, window: opts.Window},
		include: include, exclude: exclude, platforms: platformFilter(opts.Platforms),
		checkpoints: checkpoints{dir: filepath.Join(opts.StateDir, "blobs")},
		outbox:      outbox{dir: filepath.Join(opts.StateDir, "outbox")},
		metrics:     newMetrics(meter), progress: newProgress(),
		trigger:   make(chan bool, 1),
		connected: opts.Connected,
		pass:      &passCounters{}, // replaced by each pass
	}
	if e.connected != nil {
		e.initConnected(link)
	}
	e.removeStaleBases()
	return e, nil
}

// Meter counts the engine's traffic with the parent.
func (e *Engine) Meter() *Meter { return e.meter }

// Run syncs on schedule until ctx ends. If a window is open at start-up (or there is no window
// limit), a pass starts at once.
func (e *Engine) Run(ctx context.Context) error {
	c := cron.New(cron.WithLocation(time.UTC))
	e.planMu.Lock()
	e.cron, e.cronEntry = c, c.Schedule(e.cur.schedule, cron.FuncJob(e.fire))
	e.planMu.Unlock()
	if end, open := e.windowAt(time.Now()); open {
		e.gate.Open(end)
		e.want(false)
	}
	c.Start()
	defer c.Stop()
	for {
		select {
		case <-ctx.Done():
			e.gate.Close()
			return nil
		case forced := <-e.trigger:
			e.runPass(ctx, forced)
			if err := e.refused.Load(); err != nil {
				e.gate.Close()
				return *err
			}
		}
	}
}

// fire opens (or extends) the window for a schedule firing and asks for a pass. A pass already
// running is not interrupted; at most one more is queued.
func (e *Engine) fire() {
	if w := e.plan().window; w > 0 {
		e.gate.Open(time.Now().Add(w))
	}
	e.want(false)
}

func (e *Engine) want(forced bool) {
	select {
	case e.trigger <- forced:
	default:
	}
}

// Trigger asks for a pass now. Outside a window it is refused unless force, which opens the
// link for that one pass.
func (e *Engine) Trigger(force bool) error {
	if !force && e.plan().window > 0 && !e.gate.IsOpen() {
		return ErrOutsideWindow
	}
	e.want(force)
	return nil
}

// windowAt tells whether a window is open at t, and when it ends (zero: no limit).
func (e *Engine) windowAt(t time.Time) (time.Time, bool) {
	p := e.plan()
	if p.window <= 0 {
		return time.Time{}, true
	}
	var last time.Time
	for f := p.schedule.Next(t.Add(-p.window)); !f.IsZero() && !f.After(t); f = p.schedule.Next(f) {
		last = f
	}
	if last.IsZero() {
		return time.Time{}, false
	}
	return last.Add(p.window), true
}

// Status is the engine's live state.
func (e *Engine) Status() acrapi.SyncStatus {
	s := e.progress.snapshot()
	s.Parent = e.opts.Parent.URL
	now := time.Now()
	s.Window.Open = e.gate.IsOpen()
	if until := e.gate.Until(); s.Window.Open && !until.IsZero() {
		u := until.UTC()
		s.Window.ClosesAt = &u
	}
	if next := e.plan().schedule.Next(now); !next.IsZero() {
		n := next.UTC()
		s.Window.NextOpen = &n
	}
	return s
}

// runPass runs one pass while the window is open (or, forced, until it ends) and returns its
// summary (Result "skipped" when no window was open).
func (e *Engine) runPass(ctx context.Context, forced bool) acrapi.PassSummary {
	// Without a window limit, and for a forced pass outside a window, the link is open for
	// this pass only. A firing during the pass may set a window end; then the window stays.
	if e.plan().window <= 0 || (forced && !e.gate.IsOpen()) {
		e.gate.Open(time.Time{})
		defer func() {
			if e.gate.Until().IsZero() {
				e.gate.Close()
			}
		}()
	}
	if !e.gate.IsOpen() {
		return acrapi.PassSummary{Started: time.Now().UTC(), Result: "skipped"} // its window has closed
	}
	wctx, cancel := e.gate.Context(ctx)
	defer cancel()

	e.running.Store(true)
	defer e.running.Store(false)
	e.pass = &passCounters{}
	e.removeAbandonedDeltas()
	start, inBefore := time.Now(), e.meter.In()
	summary := &acrapi.PassSummary{Started: start.UTC(), Result: "running"}
	e.progress.mu.Lock()
	e.progress.syncing, e.progress.lastPass = true, summary
	e.progress.mu.Unlock()

	failed, total, err := 0, 0, e.connect(wctx)
	var pushErr error
	if err == nil {
		// Local pushes go up first: then the pass finds them on the parent.
		if pushErr = e.pushOutbox(wctx); pushErr != nil {
			e.log.Warn("pushing to the parent failed; the images stay queued", zap.Error(pushErr))
			failed++
		}
		var f int
		if e.connected != nil {
			f, total, err = e.syncConnected(wctx)
		} else {
			f, total, err = e.syncAll(wctx)
		}
		failed += f
	}

	result := "ok"
	switch {
	case ctx.Err() != nil:
		result = "interrupted" // the node is stopping; the next start resumes
	case errors.Is(context.Cause(wctx), ErrWindowClosed) && ctx.Err() == nil:
		result = "window-closed"
		// The pass's requests are cancelled; their connections go too, so that the parent
		// stops sending what it had queued on them.
		if n := e.link.conns.closeAll(); n > 0 {
			e.log.Debug("closed the connections to the parent at the window's end", zap.Int("connections", n))
		}
	case err != nil || (total > 0 && failed == total):
		result = "failed"
	case failed > 0:
		result = "partial"
	}
	end := time.Now()
	e.progress.mu.Lock()
	e.progress.syncing = false
	s := *summary
	s.Finished = ptr(end.UTC())
	s.Result = result
	s.BytesFromParent = e.meter.In() - inBefore
	s.BlobsFetched, s.BlobsMounted = e.pass.blobsFetched.Load(), e.pass.blobsMounted.Load()
	s.ManifestsSynced, s.TagsRemoved = e.pass.manifests.Load(), e.pass.tagsRemoved.Load()
	s.DeltaLayers, s.SavedBytes = e.pass.deltaLayers.Load(), e.pass.deltaSaved.Load()
	s.LayerTransferBytes = s.BytesFromParent + s.SavedBytes
	if all := errors.Join(pushErr, err); all != nil {
		s.Error = oneLine(all.Error())
	}
	e.progress.lastPass = &s
	if result == "ok" {
		e.progress.lastSuccess = ptr(end.UTC())
		e.metrics.lastSuccess.Set(float64(end.Unix()))
	}
	e.progress.mu.Unlock()
	e.metrics.passDuration.WithLabelValues(result).Observe(end.Sub(start).Seconds())

	fields := []zap.Field{zap.String("result", result), zap.Duration("duration", end.Sub(start)),
		zap.Int64("bytes_from_parent", s.BytesFromParent), zap.Int64("blobs_fetched", s.BlobsFetched),
		zap.Int64("blobs_mounted", s.BlobsMounted), zap.Int64("manifests_synced", s.ManifestsSynced),
		zap.Int64("tags_removed", s.TagsRemoved), zap.Int("repositories", total), zap.Int("repositories_failed", failed),
		zap.Int64("delta_layers", s.DeltaLayers), zap.Int64("bytes_with_layer_transfer", s.LayerTransferBytes), zap.Int64("bytes_saved", s.SavedBytes)}
	if s.Error != "" {
		fields = append(fields, zap.String("error", s.Error))
	}
	e.log.Info("sync pass", fields...)
	e.reportStatus(wctx, s)
	return s
}

func ptr[T any](v T) *T { return &v }

// syncAll resolves the repositories and syncs each. It returns how many failed, how many there
// were, and the first error.
func (e *Engine) syncAll(ctx context.Context) (failed, total int, first error) {
	repos, err := e.resolveRepositories(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, repo := range repos {
		if ctx.Err() != nil {
			return failed, len(repos), context.Cause(ctx)
		}
		err := e.syncRepository(ctx, repo)
		e.noteLink(err)
		e.progress.repoFinished(repo, err)
		if err != nil {
			failed++
			if first == nil {
				first = fmt.Errorf("%s: %w", repo, err)
			}
			e.log.Warn("repository sync failed", zap.String("repository", repo), zap.Error(err))
		}
	}
	return failed, len(repos), first
}

// noteLink records whether the parent answered.
func (e *Engine) noteLink(err error) {
	var pe *ParentError
	switch {
	case err == nil, errors.As(err, &pe) && !pe.Temporary(), errors.Is(err, ErrCorrupt):
		e.progress.setLink(true)
		e.metrics.linkUp.Set(1)
	case errors.Is(err, ErrWindowClosed), errors.Is(err, context.Canceled):
	default:
		e.progress.setLink(false)
		e.metrics.linkUp.Set(0)
	}
}

// resolveRepositories expands patterns through the parent's catalog.
func (e *Engine) resolveRepositories(ctx context.Context) ([]string, error) {
	set := map[string]bool{}
	var patterns []string
	for _, r := range e.plan().repositories {
		if strings.Contains(r, "*") {
			patterns = append(patterns, r)
		} else {
			set[r] = true
		}
	}
	if len(patterns) > 0 {
		catalog, err := e.parent.Catalog(ctx)
		e.noteLink(err) // exact names alone involve no exchange: nothing to say about the link
		if err != nil {
			return nil, fmt.Errorf("listing the parent's catalog for %s: %w", strings.Join(patterns, ", "), err)
		}
		for _, name := range catalog {
			for _, p := range patterns {
				if matchRepository(p, name) {
					set[name] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

// matchRepository reports whether name matches pattern: "*" and "**" match all, "ns/*" one
// level below ns, "ns/**" any depth below ns, anything else itself.
func matchRepository(pattern, name string) bool {
	switch {
	case pattern == "*" || pattern == "**":
		return true
	case strings.HasSuffix(pattern, "/**"):
		return strings.HasPrefix(name, strings.TrimSuffix(pattern, "**"))
	case strings.HasSuffix(pattern, "/*"):
		rest, ok := strings.CutPrefix(name, strings.TrimSuffix(pattern, "*"))
		return ok && rest != "" && !strings.Contains(rest, "/")
	default:
		return pattern == name
	}
}

// wantTag applies the tag filters.
func (e *Engine) wantTag(tag string) bool {
	if len(e.include) > 0 {
		ok := false
		for _, re := range e.include {
			if re.MatchString(tag) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, re := range e.exclude {
		if re.MatchString(tag) {
			return false
		}
	}
	return true
}

// syncRepository brings repo in line with the parent: new and moved tags are synced, tags the
// parent no longer has (within the filters) are removed. Nothing is removed unless the parent's
// tag list was read.
func (e *Engine) syncRepository(ctx context.Context, repo string) error {
	tags, err := e.parent.Tags(ctx, repo)
	var pe *ParentError
	if errors.As(err, &pe) && pe.Status == 404 && pe.Code == "NAME_UNKNOWN" {
		tags, err = nil, nil // the parent has no such repository (any more)
	}
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, t := range tags {
		if e.wantTag(t) {
			wanted[t] = true
		}
	}
	e.progress.repoStarted(repo, len(wanted))
	var errs []error
	for _, tag := range sortedKeys(wanted) {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if e.outbox.has(repo, tag) {
			continue // pushed here and not yet up: this node's version wins until then
		}
		if err := e.syncTag(ctx, repo, tag); err != nil {
			if errors.Is(err, ErrWindowClosed) || ctx.Err() != nil {
				return err
			}
			errs = append(errs, fmt.Errorf("tag %s: %w", tag, err))
			continue
		}
		e.progress.imageDone(repo)
	}
	local, err := e.store.Tags(ctx, repo)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, tag := range local {
		if !wanted[tag] && e.wantTag(tag) && !e.outbox.has(repo, tag) {
			if err := e.store.Untag(ctx, repo, tag); err != nil {
				errs = append(errs, fmt.Errorf("removing tag %s: %w", tag, err))
				continue
			}
			e.metrics.tagsRemoved.Inc()
			e.pass.tagsRemoved.Add(1)
			e.changed(repo, tag, "", acrapi.EventUntag)
			e.log.Info("tag removed: the parent no longer has it", zap.String("repository", repo), zap.String("tag", tag))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// syncTag syncs repo:tag when the parent's digest differs from the local one, and in any case
// the referrers of the image, which can be added without the tag moving.
func (e *Engine) syncTag(ctx context.Context, repo, tag string) error {
	dgst, err := e.parent.HeadManifest(ctx, repo, tag)
	if err != nil {
		return err
	}
	local, ok, err := e.store.TagDigest(ctx, repo, tag)
	if err != nil {
		return err
	}
	if ok && local == dgst {
		if e.opts.Referrers {
			return e.syncReferrers(ctx, repo, dgst, 0)
		}
		return nil
	}
	return e.syncManifest(ctx, repo, dgst.String(), tag, 0)
}

// maxDepth bounds index nesting and referrer chains.
const maxDepth = 4

// syncManifest stores manifest ref of repo and everything it references, children first, so
// that the manifest (and the tag, if any) becomes visible only when complete.
func (e *Engine) syncManifest(ctx context.Context, repo, ref, tag string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("manifest %s is nested more than %d levels deep", ref, maxDepth)
	}
	m, err := e.parent.GetManifest(ctx, repo, ref)
	if err != nil {
		return err
	}
	have, err := e.store.HasManifest(ctx, repo, m.Digest)
	if err != nil {
		return err
	}
	var pinned []digest.Digest // stored for this manifest, unreferenced until it is stored
	if !have {
		p, err := parseManifest(m)
		if err != nil {
			return err
		}
		if p.index {
			for _, c := range p.children {
				if !e.platforms.keep(c) {
					continue
				}
				if ok, err := e.store.HasManifest(ctx, repo, c.Digest); err != nil {
					return err
				} else if ok {
					continue
				}
				if err := e.syncManifest(ctx, repo, c.Digest.String(), "", depth+1); err != nil {
					return err
				}
				pinned = append(pinned, c.Digest)
				if err := e.store.Pin(ctx, c.Digest); err != nil {
					return err
				}
			}
		} else {
			for _, b := range p.blobs {
				pinned = append(pinned, b.Digest)
			}
			// Pinned first: a pass the window cuts short keeps what it stored for the next one.
			if err := e.store.Pin(ctx, pinned...); err != nil {
				return err
			}
			if err := e.ensureBlobs(ctx, repo, p.blobs); err != nil {
				return err
			}
		}
	}
	if !have || tag != "" {
		if err := e.store.PutManifest(ctx, repo, m.MediaType, m.Raw, m.Digest, tag); err != nil {
			return fmt.Errorf("storing manifest %s: %w", m.Digest, err)
		}
		if !have {
			e.metrics.manifests.Inc()
			e.pass.manifests.Add(1)
		}
		if tag != "" {
			e.changed(repo, tag, m.Digest, acrapi.EventPush)
		}
		if err := e.store.Unpin(ctx, pinned...); err != nil {
			e.log.Warn("unpinning", zap.Error(err))
		}
	}
	if e.opts.Referrers && depth == 0 {
		return e.syncReferrers(ctx, repo, m.Digest, depth)
	}
	return nil
}

// syncReferrers stores the referrers of subject that the node lacks.
func (e *Engine) syncReferrers(ctx context.Context, repo string, subject digest.Digest, depth int) error {
	refs, err := e.parent.Referrers(ctx, repo, subject)
	if err != nil {
		return fmt.Errorf("referrers of %s: %w", subject, err)
	}
	for _, r := range refs {
		if ok, err := e.store.HasManifest(ctx, repo, r.Digest); err != nil {
			return err
		} else if ok {
			continue
		}
		if err := e.syncManifest(ctx, repo, r.Digest.String(), "", depth+1); err != nil {
			return fmt.Errorf("referrer %s: %w", r.Digest, err)
		}
		e.changed(repo, "", r.Digest, acrapi.EventPush)
	}
	return nil
}

// ensureBlobs fetches blobs, Parallelism at a time.
func (e *Engine) ensureBlobs(ctx context.Context, repo string, blobs []Descriptor) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.opts.Parallelism)
	var queued atomic.Int64
	queued.Store(int64(len(blobs)))
	for _, b := range blobs {
		g.Go(func() error {
			e.metrics.queue.Set(float64(queued.Add(-1)))
			return e.ensureBlob(gctx, repo, b)
		})
	}
	return g.Wait()
}

// plan is what the engine syncs, and when.
type plan struct {
	repositories []string
	schedule     cron.Schedule
	scheduleText string
	window       time.Duration
}

func (e *Engine) plan() plan {
	e.planMu.RLock()
	defer e.planMu.RUnlock()
	return e.cur
}

// setPlan replaces the plan; a new schedule takes effect on the running cron at once.
func (e *Engine) setPlan(p plan) {
	e.planMu.Lock()
	defer e.planMu.Unlock()
	if p.scheduleText != e.cur.scheduleText && e.cron != nil {
		e.cron.Remove(e.cronEntry)
		e.cronEntry = e.cron.Schedule(p.schedule, cron.FuncJob(e.fire))
	}
	e.cur = p
}

// oneLine joins the lines of a message, as errors.Join separates them.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

func (e *Engine) changed(repo, tag string, d digest.Digest, action string) {
	if e.opts.Changed != nil {
		e.opts.Changed(repo, tag, d, action)
	}
}
