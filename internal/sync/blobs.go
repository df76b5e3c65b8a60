package sync

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

// maxCorruptRetries bounds how often one blob is fetched again after its bytes failed
// verification within one pass.
const maxCorruptRetries = 3

// ensureBlob makes blob d part of repo: already there, linked from another repository, or
// fetched from the parent in ranged chunks into a durable upload session, verified on commit.
func (e *Engine) ensureBlob(ctx context.Context, repo string, d Descriptor) error {
	if ok, err := e.store.HasBlob(ctx, repo, d.Digest); err != nil || ok {
		return err
	}
	// One fetch per digest at a time, whichever repositories need it.
	_, err, _ := e.flight.Do(d.Digest.String(), func() (any, error) {
		if size, ok, err := e.store.StatBlob(ctx, d.Digest); err != nil {
			return nil, err
		} else if ok {
			if size != d.Size {
				return nil, fmt.Errorf("blob %s is stored with size %d but the manifest says %d", d.Digest, size, d.Size)
			}
			return nil, nil
		}
		return nil, e.fetchLayer(ctx, repo, d)
	})
	if err != nil {
		return err
	}
	if ok, err := e.store.HasBlob(ctx, repo, d.Digest); err != nil || ok {
		return err
	}
	e.metrics.blobsMounted.Inc()
	e.pass.blobsMounted.Add(1)
	return e.store.LinkBlob(ctx, repo, d.Digest, d.Size)
}

// fetchBlob fetches d from the parent, resuming a session a previous attempt left.
func (e *Engine) fetchBlob(ctx context.Context, repo string, d Descriptor) error {
	e.reportSyncing(ctx)
	for attempt := 1; ; attempt++ {
		err := e.fetchOnce(ctx, repo, d)
		if err == nil {
			e.metrics.blobsFetched.Inc()
			e.pass.blobsFetched.Add(1)
			return nil
		}
		if !errors.Is(err, ErrCorrupt) || attempt >= maxCorruptRetries {
			return err
		}
		e.metrics.corrupt.Inc()
		e.log.Warn("blob failed verification; fetching it again", zap.String("repository", repo),
			zap.Stringer("digest", d.Digest), zap.Int("attempt", attempt), zap.Error(err))
	}
}

func (e *Engine) fetchOnce(ctx context.Context, repo string, d Descriptor) (err error) {
	w, uploadRepo, err := e.openUpload(ctx, repo, d.Digest)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			// Close keeps the session and its bytes for the next attempt or the next window.
			_ = w.Close()
		}
	}()

	chunk := int64(e.opts.ChunkSize)
	prog := e.progress.startBlob(repo, d.Digest, d.Size, w.Size())
	defer e.progress.endBlob(d.Digest)

	failures := 0
	for w.Size() < d.Size {
		offset := w.Size()
		n, err := e.fetchChunk(ctx, uploadRepo, d, w, offset, min(chunk, d.Size-offset))
		prog.set(w.Size())
		if err == nil {
			failures = 0
			continue
		}
		if !retryable(err) || errors.Is(err, ErrCorrupt) {
			if errors.Is(err, ErrCorrupt) {
				e.discard(ctx, w, d.Digest)
				committed = true // cancelled: nothing to close
			}
			return err
		}
		if n > 0 {
			failures = 0 // progress was made: a drop costs at most the bytes in flight
		}
		failures++
		if failures >= e.opts.Retry.Attempts {
			return fmt.Errorf("fetching blob %s: %w", d.Digest, err)
		}
		e.log.Debug("blob chunk failed; resuming", zap.Stringer("digest", d.Digest), zap.Int64("offset", w.Size()), zap.Error(err))
		if serr := sleep(ctx, e.opts.Retry.Backoff(failures, 0)); serr != nil {
			return serr
		}
	}
	if w.Size() > d.Size {
		e.discard(ctx, w, d.Digest)
		committed = true
		return fmt.Errorf("%w: blob %s grew past its size %d", ErrCorrupt, d.Digest, d.Size)
	}
	if _, err := w.Commit(ctx, v1.Descriptor{Digest: d.Digest, Size: d.Size, MediaType: "application/octet-stream"}); err != nil {
		var invalid distribution.ErrBlobInvalidDigest
		if errors.As(err, &invalid) || errors.Is(err, distribution.ErrBlobInvalidLength) {
			e.discard(ctx, w, d.Digest)
			committed = true
			return fmt.Errorf("%w: blob %s: %v", ErrCorrupt, d.Digest, err)
		}
		return fmt.Errorf("committing blob %s: %w", d.Digest, err)
	}
	committed = true
	if err := e.checkpoints.remove(d.Digest); err != nil {
		e.log.Warn("removing a blob checkpoint", zap.Error(err))
	}
	if uploadRepo != repo {
		return e.store.LinkBlob(ctx, repo, d.Digest, d.Size)
	}
	return nil
}

// openUpload resumes the session a checkpoint names, or starts one and records it.
func (e *Engine) openUpload(ctx context.Context, repo string, d digest.Digest) (distribution.BlobWriter, string, error) {
	if cp, ok := e.checkpoints.load(d); ok {
		w, err := e.store.ResumeUpload(ctx, cp.Repo, cp.UploadID)
		if err == nil {
			e.log.Info("resuming blob", zap.String("repository", cp.Repo), zap.Stringer("digest", d), zap.Int64("offset", w.Size()))
			return w, cp.Repo, nil
		}
		e.log.Info("blob session is gone; starting over", zap.Stringer("digest", d), zap.Error(err))
	}
	w, err := e.store.CreateUpload(ctx, repo)
	if err != nil {
		return nil, "", fmt.Errorf("starting an upload for %s: %w", d, err)
	}
	if err := e.checkpoints.save(checkpoint{Digest: d, Repo: repo, UploadID: w.ID()}); err != nil {
		_ = w.Cancel(ctx)
		return nil, "", fmt.Errorf("recording the fetch of %s: %w", d, err)
	}
	return w, repo, nil
}

// discard cancels a session whose bytes are wrong, so that the next attempt starts from zero.
func (e *Engine) discard(ctx context.Context, w distribution.BlobWriter, d digest.Digest) {
	e.metrics.refetched.Add(float64(w.Size()))
	if err := w.Cancel(context.WithoutCancel(ctx)); err != nil {
		e.log.Warn("cancelling a corrupt upload", zap.Stringer("digest", d), zap.Error(err))
	}
	_ = e.checkpoints.remove(d)
}

// fetchChunk appends bytes [offset, offset+length) of d to w and returns how many it wrote.
// A parent that ignores Range sends the whole blob: its leading bytes are skipped (and counted
// as fetched again) and the rest is written, up to the blob's size.
func (e *Engine) fetchChunk(ctx context.Context, repo string, d Descriptor, w io.Writer, offset, length int64) (int64, error) {
	body, skip, whole, err := e.parent.BlobRange(ctx, repo, d.Digest, offset, length)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if whole {
		// The rest of the blob is coming anyway, from offset 0 too: stopping at the chunk
		// would drop the connection and what is in flight, then fetch it all again.
		length = d.Size - offset
	}
	if skip > 0 {
		n, err := io.CopyN(io.Discard, body, skip)
		e.metrics.refetched.Add(float64(n))
		if err != nil {
			return 0, err
		}
	}
	n, err := io.Copy(w, io.LimitReader(body, length))
	if err != nil {
		return n, err
	}
	if n < length {
		return n, fmt.Errorf("blob %s: the parent sent %d of the %d bytes asked for: %w", d.Digest, n, length, io.ErrUnexpectedEOF)
	}
	return n, nil
}
