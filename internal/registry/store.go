package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// These methods give the sync engine direct access to the store (they satisfy sync.Store).
// Writes go through distribution's storage API, which commits by rename: what they store is
// visible only when complete.

func (r *Registry) repository(ctx context.Context, repo string) (distribution.Repository, error) {
	named, err := reference.WithName(repo)
	if err != nil {
		return nil, fmt.Errorf("repository name %q: %w", repo, err)
	}
	return r.namespace.Repository(ctx, named)
}

// StatBlob reports whether the node holds blob d in any repository, and its size.
func (r *Registry) StatBlob(ctx context.Context, d digest.Digest) (int64, bool, error) {
	if isAlias(d) {
		target, ok, err := r.blobAliasTarget(ctx, d)
		if err != nil || !ok {
			return 0, false, err
		}
		d = target
	}
	desc, err := r.namespace.BlobStatter().Stat(ctx, d)
	if errors.Is(err, distribution.ErrBlobUnknown) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return desc.Size, true, nil
}

// HasBlob reports whether repo links blob d.
func (r *Registry) HasBlob(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return false, err
	}
	_, err = rep.Blobs(ctx).Stat(ctx, d)
	if errors.Is(err, distribution.ErrBlobUnknown) {
		return false, nil
	}
	return err == nil, err
}

// mountStat makes a blob create option mount a blob the node holds without looking for it in
// a source repository: the global store has it, whichever repository linked it first.
type mountStat struct {
	from reference.Canonical
	desc v1.Descriptor
}

func (m mountStat) Apply(v any) error {
	opts, ok := v.(*distribution.CreateOptions)
	if !ok {
		return fmt.Errorf("unexpected blob create options %T", v)
	}
	opts.Mount.ShouldMount, opts.Mount.From, opts.Mount.Stat = true, m.from, &m.desc
	return nil
}

// LinkBlob makes a blob the node holds part of repo, copying nothing. It fails with
// distribution.ErrBlobUnknown when the node no longer holds the blob (garbage collection may
// have removed it since the caller looked).
func (r *Registry) LinkBlob(ctx context.Context, repo string, d digest.Digest, size int64) error {
	r.maint.RLock()
	defer r.maint.RUnlock()
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return err
	}
	alias := digest.Digest("")
	if isAlias(d) {
		// The blob store has it under the sha256 digest it stands for: link both.
		target, ok, err := r.blobAliasTarget(ctx, d)
		if err != nil {
			return fmt.Errorf("linking blob %s into %s: %w", d, repo, err)
		}
		if !ok {
			return fmt.Errorf("linking blob %s into %s: %w", d, repo, distribution.ErrBlobUnknown)
		}
		alias, d = d, target
	}
	// The mount below links without looking: check under the lock that the blob is still here.
	if _, err := r.namespace.BlobStatter().Stat(ctx, d); err != nil {
		return fmt.Errorf("linking blob %s into %s: %w", d, repo, err)
	}
	from, err := reference.WithDigest(rep.Named(), d)
	if err != nil {
		return err
	}
	_, err = rep.Blobs(ctx).Create(ctx, mountStat{from: from, desc: v1.Descriptor{Digest: d, Size: size}})
	var mounted distribution.ErrBlobMounted
	if errors.As(err, &mounted) {
		if alias != "" {
			return r.linkBlobAlias(ctx, repo, alias, d)
		}
		return nil
	}
	if err == nil {
		return fmt.Errorf("linking blob %s into %s started an upload instead", d, repo)
	}
	return err
}

// CreateUpload starts an upload session in repo.
func (r *Registry) CreateUpload(ctx context.Context, repo string) (distribution.BlobWriter, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	w, err := rep.Blobs(ctx).Create(ctx)
	if err != nil {
		return nil, err
	}
	return lockedCommitWriter{BlobWriter: w, maint: &r.maint}, nil
}

// ResumeUpload reopens upload session id of repo.
func (r *Registry) ResumeUpload(ctx context.Context, repo, id string) (distribution.BlobWriter, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	w, err := rep.Blobs(ctx).Resume(ctx, id)
	if err != nil {
		return nil, err
	}
	return lockedCommitWriter{BlobWriter: w, maint: &r.maint}, nil
}

// lockedCommitWriter holds the maintenance lock while it commits. An upload session lives in
// _uploads, which garbage collection never touches, so writing to it needs no lock: only the
// commit, which moves the bytes into the blob store and links them into the repository.
type lockedCommitWriter struct {
	distribution.BlobWriter
	maint *sync.RWMutex
}

func (w lockedCommitWriter) Commit(ctx context.Context, provisional v1.Descriptor) (v1.Descriptor, error) {
	w.maint.RLock()
	defer w.maint.RUnlock()
	return w.BlobWriter.Commit(ctx, provisional)
}

// HasManifest reports whether repo holds manifest d.
func (r *Registry) HasManifest(ctx context.Context, repo string, d digest.Digest) (bool, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return false, err
	}
	ms, err := rep.Manifests(ctx)
	if err != nil {
		return false, err
	}
	return ms.Exists(ctx, d)
}

// PutManifest stores raw in repo (recording its subject for the referrers API first) and then
// points tag at it. distribution refuses a manifest whose references are not stored. A
// manifest named by its sha512 digest d is stored by its sha256 and linked by d.
func (r *Registry) PutManifest(ctx context.Context, repo, mediaType string, raw []byte, d digest.Digest, tag string) error {
	r.maint.RLock()
	defer r.maint.RUnlock()
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return err
	}
	m, desc, err := distribution.UnmarshalManifest(mediaType, raw)
	if err != nil {
		return fmt.Errorf("manifest %s of type %q: %w", d, mediaType, err)
	}
	if err := checkAlgorithm("manifest", d); err != nil {
		return err
	}
	if got := d.Algorithm().FromBytes(raw); got != d {
		return fmt.Errorf("manifest bytes hash to %s, not %s", got, d)
	}
	if subject, rdesc, ok := parseSubject(raw, mediaType, d); ok {
		if err := r.referrers.Record(repo, subject, rdesc); err != nil {
			return fmt.Errorf("recording referrer %s: %w", d, err)
		}
	}
	ms, err := rep.Manifests(ctx)
	if err != nil {
		return err
	}
	if _, err := ms.Put(ctx, m); err != nil {
		return err
	}
	if isAlias(d) {
		if err := r.linkManifestAlias(ctx, repo, d, desc.Digest); err != nil {
			return fmt.Errorf("linking manifest %s: %w", d, err)
		}
	}
	if tag == "" {
		return nil
	}
	return rep.Tags(ctx).Tag(ctx, tag, v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(raw))})
}

// TagDigest returns the digest tag points at in repo.
func (r *Registry) TagDigest(ctx context.Context, repo, tag string) (digest.Digest, bool, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return "", false, err
	}
	desc, err := rep.Tags(ctx).Get(ctx, tag)
	var unknown distribution.ErrTagUnknown
	if errors.As(err, &unknown) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return desc.Digest, true, nil
}

// Tags lists repo's tags; an unknown repository has none.
func (r *Registry) Tags(ctx context.Context, repo string) ([]string, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return nil, err
	}
	tags, err := rep.Tags(ctx).All(ctx)
	var unknown distribution.ErrRepositoryUnknown
	if errors.As(err, &unknown) {
		return nil, nil
	}
	return tags, err
}

// Untag removes tag from repo.
func (r *Registry) Untag(ctx context.Context, repo, tag string) error {
	r.maint.RLock()
	defer r.maint.RUnlock()
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return err
	}
	return rep.Tags(ctx).Untag(ctx, tag)
}

// Repositories lists every repository the node holds.
func (r *Registry) Repositories(ctx context.Context) ([]string, error) { return r.allRepositories(ctx) }

// CountImages counts the tags of every repository: the images the node holds, as its status
// report gives them.
func (r *Registry) CountImages(ctx context.Context) (int, error) {
	repos, err := r.allRepositories(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, repo := range repos {
		tags, err := r.Tags(ctx, repo)
		if err != nil {
			return n, err
		}
		n += len(tags)
	}
	return n, nil
}

// GetManifest returns manifest d of repo: its media type and exact bytes.
func (r *Registry) GetManifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return "", nil, err
	}
	ms, err := rep.Manifests(ctx)
	if err != nil {
		return "", nil, err
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return "", nil, err
	}
	mediaType, raw, err := m.Payload()
	return mediaType, raw, err
}

// OpenBlob opens blob d of repo for reading.
func (r *Registry) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	rep, err := r.repository(ctx, repo)
	if err != nil {
		return nil, 0, err
	}
	desc, err := rep.Blobs(ctx).Stat(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	rc, err := rep.Blobs(ctx).Open(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	return rc, desc.Size, nil
}
