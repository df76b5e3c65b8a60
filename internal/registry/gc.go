package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

// DefaultGCGrace is the grace the command line, the admin endpoint and the schedule use.
const DefaultGCGrace = time.Hour

// GCOptions configure one garbage collection.
type GCOptions struct {
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
	// RemoveUntagged deletes the manifests no tag reaches: reached are tagged manifests, the
	// children of a reached index and the referrers (signatures, SBOMs) of a reached manifest,
	// recursively. Without it every manifest is kept, and only blobs no manifest references go.
	RemoveUntagged bool
	// Grace spares what was written less than Grace ago: manifests, blob links and blobs. A
	// push uploads its blobs (and an index's children) before the manifest that references
	// them; the grace is what keeps them for that manifest. Zero spares nothing.
	Grace time.Duration
}

// GCItem is one thing garbage collection deleted, or would delete in a dry run.
type GCItem struct {
	Repository string        `json:"repository,omitempty"`
	Digest     digest.Digest `json:"digest"`
	Size       int64         `json:"size,omitempty"`
}

// GCResult counts what garbage collection deleted (in a dry run: would delete). The lists are
// filled in a dry run only.
type GCResult struct {
	DryRun         bool `json:"dryRun"`
	RemoveUntagged bool `json:"removeUntagged"`
	Repositories   int  `json:"repositories"`
	// ManifestsDeleted counts manifests removed from their repository (RemoveUntagged only).
	ManifestsDeleted int `json:"manifestsDeleted"`
	// BlobLinksRemoved counts blobs removed from a repository that no kept manifest of that
	// repository references.
	BlobLinksRemoved int `json:"blobLinksRemoved"`
	// BlobsDeleted counts blobs (layers, configs, manifests) deleted from the store, and
	// BytesFreed their sizes.
	BlobsDeleted int   `json:"blobsDeleted"`
	BytesFreed   int64 `json:"bytesFreed"`
	// ReferrerEntriesPruned counts referrer-index entries of manifests that are not stored;
	// ReferrerEntriesRestored, entries written again for stored manifests whose entry was lost.
	ReferrerEntriesPruned   int `json:"referrerEntriesPruned"`
	ReferrerEntriesRestored int `json:"referrerEntriesRestored"`

	Manifests []GCItem `json:"manifests,omitempty"`
	BlobLinks []GCItem `json:"blobLinks,omitempty"`
	Blobs     []GCItem `json:"blobs,omitempty"`
}

// Paths of distribution's filesystem layout (registry/storage/paths.go), for modification
// times, which its storage API does not expose.
const storageRoot = "/docker/registry/v2"

func repoPath(repo string, elem ...string) string {
	return path.Join(append([]string{storageRoot, "repositories", repo}, elem...)...)
}

func revisionLinkPath(repo string, d digest.Digest) string {
	return repoPath(repo, "_manifests", "revisions", d.Algorithm().String(), d.Encoded(), "link")
}

func layerLinkDir(repo string, d digest.Digest) string {
	return repoPath(repo, "_layers", d.Algorithm().String(), d.Encoded())
}

func blobDataPath(d digest.Digest) string {
	hex := d.Encoded()
	return path.Join(storageRoot, "blobs", d.Algorithm().String(), hex[:2], hex, "data")
}

// linkNames lists the digests of the links under dir (a repository's _layers or
// _manifests/revisions), by their paths: <algorithm>/<encoded>/link. distribution's own listing
// gives each link's content instead, which for a sha512 alias is the sha256 it stands for.
func (r *Registry) linkNames(ctx context.Context, dir string) ([]digest.Digest, error) {
	algs, err := r.driver.List(ctx, dir)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []digest.Digest
	for _, algDir := range algs {
		encs, err := r.driver.List(ctx, algDir)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, encDir := range encs {
			d, err := digest.Parse(path.Base(algDir) + ":" + path.Base(encDir))
			if err != nil {
				continue // not a digest: nothing distribution reads either
			}
			if _, err := r.driver.Stat(ctx, path.Join(encDir, "link")); err == nil {
				names = append(names, d)
			} else if !isNotFound(err) {
				return nil, err
			}
		}
	}
	return names, nil
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// gcManifest is what the mark phase needs of a stored manifest.
type gcManifest struct {
	refs    []v1.Descriptor // config and layers, or an index's children
	subject digest.Digest   // empty without a subject
	desc    v1.Descriptor   // its referrers-API descriptor, when it has a subject
}

// indexEntry is one file of the referrer index.
type indexEntry struct {
	path    string
	subject digest.Digest
	digest  digest.Digest // empty when the file is unreadable
}

// restoreEntry is a referrer-index entry to write again.
type restoreEntry struct {
	subject digest.Digest
	desc    v1.Descriptor
}

// repoPlan is what the sweep does in one repository.
type repoPlan struct {
	name            string
	tags            []string
	deleteManifests []digest.Digest
	removeLinks     []digest.Digest
	pruneEntries    []string
	restoreEntries  []restoreEntry
}

// CollectGarbage deletes what no kept manifest needs, never anything a kept manifest reaches:
//
//   - mark: the roots are every tagged manifest of every repository (with RemoveUntagged) or
//     every manifest (without), plus every manifest younger than the grace; from each marked
//     manifest its config, layers and index children are marked, and its referrers, found both
//     in the referrer index and by the subject field of every stored manifest;
//   - sweep: with RemoveUntagged, unmarked manifests are deleted; in every repository, links to
//     blobs its marked manifests do not reference and older than the grace are removed; blobs
//     no repository keeps and whose data is older than the grace are deleted; referrer-index
//     entries of manifests that are not stored are pruned.
//
// Upload sessions (_uploads) are never touched. It holds the maintenance lock for its whole run:
// writes to the store wait, reads do not. Errors in the mark phase stop it before it deletes
// anything; a sweep cut short leaves every kept image whole.
func (r *Registry) CollectGarbage(ctx context.Context, opts GCOptions) (GCResult, error) {
	res := GCResult{DryRun: opts.DryRun, RemoveUntagged: opts.RemoveUntagged}
	if opts.Grace < 0 {
		return res, fmt.Errorf("garbage collection grace %s is negative", opts.Grace)
	}
	r.maint.Lock()
	defer r.maint.Unlock()
	deleted := false
	defer func() {
		// distribution's App caches blob descriptors: a new App forgets what was deleted, so
		// that no HEAD answers for it and no manifest is accepted on its strength.
		if deleted {
			if err := r.renewApp(); err != nil {
				r.log.Error("restarting the registry handler after garbage collection", zap.Error(err))
			}
		}
	}()
	if r.gcHook != nil {
		r.gcHook(ctx)
	}
	cutoff := time.Now().Add(-opts.Grace)

	// Mark.
	repos, err := r.allRepositories(ctx)
	if err != nil {
		return res, fmt.Errorf("listing repositories: %w", err)
	}
	res.Repositories = len(repos)
	keep := map[digest.Digest]struct{}{}
	pins, err := r.pinned()
	if err != nil {
		return res, fmt.Errorf("reading pins: %w", err)
	}
	for d := range pins {
		keep[d] = struct{}{}
	}
	plans := make([]repoPlan, 0, len(repos))
	for _, name := range repos {
		plan, err := r.planRepository(ctx, name, opts, cutoff, keep, pins)
		if err != nil {
			return res, fmt.Errorf("repository %s: %w", name, err)
		}
		plans = append(plans, plan)
	}
	var blobs []GCItem
	err = r.namespace.Blobs().Enumerate(ctx, func(d digest.Digest) error {
		if _, ok := keep[d]; ok {
			return nil
		}
		fi, err := r.driver.Stat(ctx, blobDataPath(d))
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.ModTime().After(cutoff) {
			return nil // uploaded moments ago: its manifest may be on its way
		}
		blobs = append(blobs, GCItem{Digest: d, Size: fi.Size()})
		return ctx.Err()
	})
	if err != nil && !isNotFound(err) {
		return res, fmt.Errorf("listing blobs: %w", err)
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].Digest < blobs[j].Digest })

	if opts.DryRun {
		for _, p := range plans {
			for _, d := range p.deleteManifests {
				res.Manifests = append(res.Manifests, GCItem{Repository: p.name, Digest: d})
			}
			for _, d := range p.removeLinks {
				res.BlobLinks = append(res.BlobLinks, GCItem{Repository: p.name, Digest: d})
			}
			res.ReferrerEntriesPruned += len(p.pruneEntries)
			res.ReferrerEntriesRestored += len(p.restoreEntries)
		}
		res.Blobs = blobs
		res.ManifestsDeleted, res.BlobLinksRemoved, res.BlobsDeleted = len(res.Manifests), len(res.BlobLinks), len(blobs)
		for _, b := range blobs {
			res.BytesFreed += b.Size
		}
		return res, nil
	}

	// Sweep: manifests first, then the links, then the blobs, so that a sweep cut short at
	// any point leaves no kept manifest without what it references.
	vacuum := storage.NewVacuum(ctx, r.driver)
	for _, p := range plans {
		if len(p.deleteManifests) == 0 {
			continue
		}
		rep, err := r.repository(ctx, p.name)
		if err != nil {
			return res, err
		}
		ms, err := rep.Manifests(ctx)
		if err != nil {
			return res, err
		}
		for _, d := range p.deleteManifests {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if err := ms.Delete(ctx, d); err != nil && !errors.Is(err, distribution.ErrBlobUnknown) {
				return res, fmt.Errorf("deleting manifest %s@%s: %w", p.name, d, err)
			}
			deleted = true
			res.ManifestsDeleted++
			// Its entries in the tags' histories, and the revision's directory.
			if err := vacuum.RemoveManifest(p.name, d, p.tags); err != nil && !isNotFound(err) {
				return res, fmt.Errorf("deleting manifest %s@%s: %w", p.name, d, err)
			}
		}
	}
	for _, p := range plans {
		if len(p.removeLinks) == 0 {
			continue
		}
		rep, err := r.repository(ctx, p.name)
		if err != nil {
			return res, err
		}
		bs := rep.Blobs(ctx)
		for _, d := range p.removeLinks {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if err := bs.Delete(ctx, d); err != nil && !errors.Is(err, distribution.ErrBlobUnknown) {
				return res, fmt.Errorf("removing blob %s from %s: %w", d, p.name, err)
			}
			deleted = true
			res.BlobLinksRemoved++
			if err := r.driver.Delete(ctx, layerLinkDir(p.name, d)); err != nil && !isNotFound(err) {
				return res, fmt.Errorf("removing blob %s from %s: %w", d, p.name, err)
			}
		}
	}
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := vacuum.RemoveBlob(b.Digest.String()); err != nil && !isNotFound(err) {
			return res, fmt.Errorf("deleting blob %s: %w", b.Digest, err)
		}
		deleted = true
		res.BlobsDeleted++
		res.BytesFreed += b.Size
	}
	for _, p := range plans {
		for _, e := range p.pruneEntries {
			if err := os.Remove(e); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("pruning the referrer index: %w", err)
			}
			res.ReferrerEntriesPruned++
			r.referrers.removeEmptyDirs(filepath.Dir(e))
		}
		for _, e := range p.restoreEntries {
			if err := r.referrers.Record(p.name, e.subject, e.desc); err != nil {
				return res, fmt.Errorf("restoring the referrer index: %w", err)
			}
			res.ReferrerEntriesRestored++
		}
	}
	return res, nil
}

// allRepositories lists every repository with manifests or blob links. distribution's
// RepositoryEnumerator lists only those with manifests, and a repository whose blobs are pushed
// but whose first manifest is not yet must be seen too: its links keep their blobs.
func (r *Registry) allRepositories(ctx context.Context) ([]string, error) {
	root := path.Join(storageRoot, "repositories")
	seen := map[string]bool{}
	var repos []string
	err := r.driver.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(fi.Path(), root+"/")
		dir, base := path.Split(rel)
		if !strings.HasPrefix(base, "_") {
			return nil
		}
		if repo := strings.TrimSuffix(dir, "/"); (base == "_manifests" || base == "_layers") && repo != "" && !seen[repo] {
			seen[repo] = true
			repos = append(repos, repo)
		}
		return storagedriver.ErrSkipDir // _manifests, _layers, _uploads: no repository below
	})
	if isNotFound(err) {
		return nil, nil
	}
	sort.Strings(repos)
	return repos, err
}

// planRepository marks what repository name keeps, adds the digests of its kept blobs to keep,
// and returns what the sweep deletes there.
func (r *Registry) planRepository(ctx context.Context, name string, opts GCOptions, cutoff time.Time, keep map[digest.Digest]struct{}, pins map[digest.Digest]bool) (repoPlan, error) {
	plan := repoPlan{name: name}
	rep, err := r.repository(ctx, name)
	if err != nil {
		return plan, err
	}
	ms, err := rep.Manifests(ctx)
	if err != nil {
		return plan, err
	}
	revisions, err := r.linkNames(ctx, repoPath(name, "_manifests", "revisions"))
	if err != nil {
		return plan, fmt.Errorf("listing manifests: %w", err)
	}
	stored := map[digest.Digest]*gcManifest{}
	for _, d := range revisions {
		stored[d] = nil
	}
	bySubject := map[digest.Digest][]digest.Digest{}
	for d := range stored {
		if err := ctx.Err(); err != nil {
			return plan, err
		}
		m, err := ms.Get(ctx, d)
		if err != nil {
			// Without its references nothing it may reach can be told from garbage.
			return plan, fmt.Errorf("reading manifest %s: %w", d, err)
		}
		mediaType, payload, err := m.Payload()
		if err != nil {
			return plan, fmt.Errorf("reading manifest %s: %w", d, err)
		}
		info := &gcManifest{refs: m.References()}
		if subject, desc, ok := parseSubject(payload, mediaType, d); ok {
			info.subject, info.desc = subject, desc
			bySubject[subject] = append(bySubject[subject], d)
		}
		stored[d] = info
	}

	// A manifest stored by its sha256 and reached by its sha512 too is one manifest: both
	// names are marked, or neither.
	aliasTarget := map[digest.Digest]digest.Digest{}
	aliasesOf := map[digest.Digest][]digest.Digest{}
	for d := range stored {
		if !isAlias(d) {
			continue
		}
		target, err := r.readLink(ctx, revisionLinkPath(name, d))
		if err != nil {
			return plan, fmt.Errorf("manifest %s: %w", d, err)
		}
		aliasTarget[d] = target
		aliasesOf[target] = append(aliasesOf[target], d)
	}

	index, err := r.referrers.scanRepository(name)
	if err != nil {
		return plan, fmt.Errorf("reading the referrer index: %w", err)
	}
	indexed := map[digest.Digest][]digest.Digest{}
	for _, e := range index {
		if e.digest != "" {
			indexed[e.subject] = append(indexed[e.subject], e.digest)
		}
	}

	plan.tags, err = rep.Tags(ctx).All(ctx)
	var unknownRepo distribution.ErrRepositoryUnknown
	if errors.As(err, &unknownRepo) || isNotFound(err) {
		plan.tags, err = nil, nil
	}
	if err != nil {
		return plan, fmt.Errorf("listing tags: %w", err)
	}

	var roots []digest.Digest
	if !opts.RemoveUntagged {
		for d := range stored {
			roots = append(roots, d)
		}
	} else {
		for _, tag := range plan.tags {
			desc, err := rep.Tags(ctx).Get(ctx, tag)
			var unknownTag distribution.ErrTagUnknown
			if errors.As(err, &unknownTag) {
				continue
			}
			if err != nil {
				return plan, fmt.Errorf("reading tag %s: %w", tag, err)
			}
			roots = append(roots, desc.Digest)
		}
		for d := range stored {
			fi, err := r.driver.Stat(ctx, revisionLinkPath(name, d))
			if err != nil {
				return plan, fmt.Errorf("manifest %s: %w", d, err)
			}
			if fi.ModTime().After(cutoff) || pins[d] {
				roots = append(roots, d) // pushed moments ago, or synced ahead of its index
			}
		}
	}

	marked := map[digest.Digest]bool{}
	for stack := roots; len(stack) > 0; {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		info, isStored := stored[d]
		if marked[d] || !isStored {
			continue
		}
		marked[d] = true
		keep[d] = struct{}{}
		for _, ref := range info.refs {
			keep[ref.Digest] = struct{}{}
			stack = append(stack, ref.Digest) // an index's child, when it is a stored manifest
		}
		stack = append(stack, bySubject[d]...)
		stack = append(stack, indexed[d]...)
		stack = append(stack, aliasesOf[d]...)
		if target, ok := aliasTarget[d]; ok {
			keep[target] = struct{}{} // its bytes, should its sha256 name be gone
			stack = append(stack, target)
		}
	}
	if opts.RemoveUntagged {
		for d := range stored {
			if !marked[d] {
				plan.deleteManifests = append(plan.deleteManifests, d)
			}
		}
		sort.Slice(plan.deleteManifests, func(i, j int) bool { return plan.deleteManifests[i] < plan.deleteManifests[j] })
	}

	// Referrer index: prune entries of manifests not kept, restore lost entries of kept ones.
	has := map[[2]digest.Digest]bool{}
	for _, e := range index {
		if e.digest == "" || !marked[e.digest] {
			plan.pruneEntries = append(plan.pruneEntries, e.path)
			continue
		}
		has[[2]digest.Digest{e.subject, e.digest}] = true
	}
	for d := range marked {
		info := stored[d]
		if info.subject == "" {
			continue
		}
		// A manifest reached by its sha256 and its sha512 needs one entry, under either name;
		// one is restored under its sha512.
		names := append([]digest.Digest{d}, aliasesOf[d]...)
		if target, ok := aliasTarget[d]; ok {
			names = append(names, target)
		}
		if len(aliasesOf[d]) > 0 || slices.ContainsFunc(names, func(n digest.Digest) bool { return has[[2]digest.Digest{info.subject, n}] }) {
			continue
		}
		plan.restoreEntries = append(plan.restoreEntries, restoreEntry{subject: info.subject, desc: info.desc})
	}

	// Blob links: kept when a marked manifest references them, or when linked moments ago.
	repoKeep := map[digest.Digest]bool{}
	for d := range marked {
		repoKeep[d] = true
		for _, ref := range stored[d].refs {
			repoKeep[ref.Digest] = true
		}
	}
	links, err := r.linkNames(ctx, repoPath(name, "_layers"))
	if err != nil {
		return plan, fmt.Errorf("listing blobs: %w", err)
	}
	kept := map[digest.Digest]bool{}
	for _, d := range links {
		if repoKeep[d] || pins[d] {
			kept[d] = true
			continue
		}
		fi, err := r.driver.Stat(ctx, layerLinkPath(name, d))
		if err != nil {
			return plan, fmt.Errorf("blob link %s: %w", d, err)
		}
		kept[d] = fi.ModTime().After(cutoff) // uploaded or mounted moments ago: its manifest may follow
	}
	for _, d := range links {
		if kept[d] && isAlias(d) {
			// Its bytes are in the blob store under the sha256 the link holds, and reads
			// through it need that sha256's link too.
			target, err := r.readLink(ctx, layerLinkPath(name, d))
			if err != nil {
				return plan, fmt.Errorf("blob link %s: %w", d, err)
			}
			keep[target], kept[target] = struct{}{}, true
		}
	}
	for _, d := range links {
		if kept[d] {
			keep[d] = struct{}{}
		} else {
			plan.removeLinks = append(plan.removeLinks, d)
		}
	}
	sort.Slice(plan.removeLinks, func(i, j int) bool { return plan.removeLinks[i] < plan.removeLinks[j] })
	return plan, nil
}

// scanRepository reads every entry of repo's referrer index. Unreadable entries are returned
// with an empty digest. Entries of repositories nested below repo are not repo's: their
// directories have other names than digest algorithms and are skipped.
func (x *referrerIndex) scanRepository(repo string) ([]indexEntry, error) {
	root := filepath.Join(x.dir, filepath.FromSlash(repo))
	algs, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []indexEntry
	for _, a := range algs {
		alg := digest.Algorithm(a.Name())
		if !a.IsDir() || !alg.Available() {
			continue
		}
		subjects, err := os.ReadDir(filepath.Join(root, a.Name()))
		if err != nil {
			return nil, err
		}
		for _, s := range subjects {
			subject := digest.NewDigestFromEncoded(alg, s.Name())
			if !s.IsDir() || subject.Validate() != nil {
				continue
			}
			dir := filepath.Join(root, a.Name(), s.Name())
			files, err := os.ReadDir(dir)
			if err != nil {
				return nil, err
			}
			for _, f := range files {
				if f.IsDir() || !strings.HasSuffix(f.Name(), ".json") || strings.HasPrefix(f.Name(), ".") {
					continue
				}
				e := indexEntry{path: filepath.Join(dir, f.Name()), subject: subject}
				b, err := os.ReadFile(e.path)
				if err != nil {
					return nil, err
				}
				var desc v1.Descriptor
				if json.Unmarshal(b, &desc) == nil && desc.Digest.Validate() == nil && entryName(desc.Digest) == f.Name() {
					e.digest = desc.Digest
				}
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// removeEmptyDirs removes dir and its parents up to the index root while they are empty.
func (x *referrerIndex) removeEmptyDirs(dir string) {
	root := filepath.Clean(x.dir)
	for d := filepath.Clean(dir); strings.HasPrefix(d, root+string(filepath.Separator)); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			return // not empty
		}
	}
}
