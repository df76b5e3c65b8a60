package sync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/atomicfile"
)

// A ReadWrite connected registry keeps the images its clients push in a durable outbox and
// pushes them to its parent during sync windows, in resumable chunks like everything else that
// crosses the link. Until an entry is pushed, its tag is the node's own: a pass neither
// overwrites it with the parent's nor removes it.

// outboxEntry is one pushed tag waiting to go up.
type outboxEntry struct {
	Repository string        `json:"repository"`
	Tag        string        `json:"tag"`
	Digest     digest.Digest `json:"digest"`
	Queued     time.Time     `json:"queued"`
}

// outbox stores one file per repository:tag; a later push of the same tag replaces the entry.
type outbox struct{ dir string }

func (o outbox) path(repo, tag string) string {
	sum := sha256.Sum256([]byte(repo + ":" + tag))
	return filepath.Join(o.dir, hex.EncodeToString(sum[:16])+".json")
}

func (o outbox) add(e outboxEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return atomicfile.Write(o.path(e.Repository, e.Tag), b, 0o600)
}

// list returns the entries, oldest first.
func (o outbox) list() ([]outboxEntry, error) {
	files, err := os.ReadDir(o.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []outboxEntry
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".json") || strings.HasPrefix(f.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(o.dir, f.Name()))
		if err != nil {
			return nil, err
		}
		var e outboxEntry
		if json.Unmarshal(b, &e) == nil && e.Digest.Validate() == nil {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queued.Before(out[j].Queued) })
	return out, nil
}

// has reports whether repo:tag waits in the outbox.
func (o outbox) has(repo, tag string) bool {
	_, err := os.Stat(o.path(repo, tag))
	return err == nil
}

// done removes the entry if it still names d (a newer push of the tag stays queued).
func (o outbox) done(e outboxEntry) error {
	b, err := os.ReadFile(o.path(e.Repository, e.Tag))
	if err != nil {
		return nil
	}
	var cur outboxEntry
	if json.Unmarshal(b, &cur) == nil && cur.Digest != e.Digest {
		return nil
	}
	return os.Remove(o.path(e.Repository, e.Tag))
}

// Enqueue queues repo:tag (manifest d), pushed by a client, for the parent.
func (e *Engine) Enqueue(repo, tag string, d digest.Digest) error {
	if tag == "" {
		return nil // pushed by digest: it goes up with the tagged manifest that references it
	}
	e.metrics.outboxQueued.Inc()
	return e.outbox.add(outboxEntry{Repository: repo, Tag: tag, Digest: d, Queued: time.Now().UTC()})
}

// pushOutbox pushes every queued image to the parent, oldest first. An entry that fails stays
// queued for the next pass.
func (e *Engine) pushOutbox(ctx context.Context) error {
	entries, err := e.outbox.list()
	if err != nil || len(entries) == 0 {
		return err
	}
	var errs []error
	for _, entry := range entries {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err := e.pushManifest(ctx, entry.Repository, entry.Digest, entry.Tag, 0); err != nil {
			errs = append(errs, fmt.Errorf("pushing %s:%s to the parent: %w", entry.Repository, entry.Tag, err))
			continue
		}
		if err := e.outbox.done(entry); err != nil {
			errs = append(errs, err)
		}
		e.metrics.outboxPushed.Inc()
		e.log.Info("pushed to the parent", zap.String("repository", entry.Repository), zap.String("tag", entry.Tag), zap.Stringer("digest", entry.Digest))
	}
	return errors.Join(errs...)
}

// pushManifest pushes manifest d of repo with everything it references, children first, then
// the manifest itself (tagged when tag is set).
func (e *Engine) pushManifest(ctx context.Context, repo string, d digest.Digest, tag string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("manifest %s is nested more than %d levels deep", d, maxDepth)
	}
	mediaType, raw, err := e.store.GetManifest(ctx, repo, d)
	if err != nil {
		return fmt.Errorf("reading manifest %s: %w", d, err)
	}
	p, err := parseManifest(Manifest{Digest: d, MediaType: mediaType, Raw: raw})
	if err != nil {
		return err
	}
	if p.index {
		for _, c := range p.children {
			if ok, _ := e.store.HasManifest(ctx, repo, c.Digest); !ok {
				continue // a platform this node does not hold: the parent has it already
			}
			if _, err := e.parent.HeadManifest(ctx, repo, c.Digest.String()); err == nil {
				continue
			}
			if err := e.pushManifest(ctx, repo, c.Digest, "", depth+1); err != nil {
				return err
			}
		}
	}
	for _, b := range p.blobs {
		if err := e.pushBlob(ctx, repo, b); err != nil {
			return err
		}
	}
	ref := tag
	if ref == "" {
		ref = d.String()
	}
	resp, err := e.parent.Send(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {mediaType}}, raw)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if tag == "" || d.Algorithm() == digest.SHA256 {
		return nil
	}
	// Pushed by its tag, the manifest is named by its sha256 on the parent. The digest the
	// client pushed it by goes up too, so that pulls by that name work there; a parent that
	// refuses a sha512 name (distribution answers 400) holds the image all the same.
	resp, err = e.parent.Send(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+d.String(), http.Header{"Content-Type": {mediaType}}, raw)
	var pe *ParentError
	if errors.As(err, &pe) && pe.Status >= 400 && pe.Status < 500 {
		e.log.Debug("the parent does not name manifests by this digest", zap.String("repository", repo), zap.Stringer("digest", d), zap.Error(err))
		return nil
	}
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// pushCheckpoint records an upload to the parent in progress, so that a restart resumes it.
type pushCheckpoint struct {
	Location string `json:"location"`
}

func (e *Engine) pushCheckpointPath(repo string, d digest.Digest) string {
	sum := sha256.Sum256([]byte(repo))
	return filepath.Join(e.opts.StateDir, "push", hex.EncodeToString(sum[:8])+"-"+d.Encoded()+".json")
}

// pushBlob uploads blob d to the parent unless it has it: in chunks, each PATCH appended at the
// offset the parent confirms, resumable after a drop or a restart.
func (e *Engine) pushBlob(ctx context.Context, repo string, d Descriptor) error {
	if resp, err := e.parent.Send(ctx, http.MethodHead, "/v2/"+repo+"/blobs/"+d.Digest.String(), nil, nil); err == nil {
		resp.Body.Close()
		return nil
	} else if !IsNotFound(err) {
		return err
	}
	rc, size, err := e.store.OpenBlob(ctx, repo, d.Digest)
	if err != nil {
		return fmt.Errorf("reading blob %s: %w", d.Digest, err)
	}
	defer rc.Close()

	cpPath := e.pushCheckpointPath(repo, d.Digest)
	location, offset := "", int64(0)
	if b, err := os.ReadFile(cpPath); err == nil {
		var cp pushCheckpoint
		if json.Unmarshal(b, &cp) == nil && cp.Location != "" {
			if resp, err := e.parent.Send(ctx, http.MethodGet, cp.Location, nil, nil); err == nil {
				resp.Body.Close()
				location, offset = uploadState(resp, cp.Location)
			}
		}
	}
	if location == "" {
		resp, err := e.parent.Send(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		location, offset = uploadState(resp, "")
		if location == "" {
			return fmt.Errorf("the parent started an upload without a Location")
		}
	}
	chunk := make([]byte, e.opts.ChunkSize)
	failures := 0
	for offset < size {
		if err := e.savePushCheckpoint(cpPath, location); err != nil {
			return err
		}
		n := min(int64(len(chunk)), size-offset)
		if _, err := rc.Seek(offset, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.ReadFull(rc, chunk[:n]); err != nil {
			return fmt.Errorf("reading blob %s: %w", d.Digest, err)
		}
		h := http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("%d-%d", offset, offset+n-1)},
		}
		resp, err := e.parent.Send(ctx, http.MethodPatch, location, h, chunk[:n])
		if err != nil {
			// The transport may still be reading a failed request's body after Send returns:
			// the next chunk goes into a buffer of its own.
			chunk = make([]byte, len(chunk))
			// 416: the upload is not where this node thinks. A PATCH whose answer was lost
			// may have been stored after all, which makes the Location's state (its offset)
			// stale; the parent's upload status tells where to go on from.
			var pe *ParentError
			if !retryable(err) && !(errors.As(err, &pe) && pe.Status == http.StatusRequestedRangeNotSatisfiable) {
				return err
			}
			failures++
			if failures >= e.opts.Retry.Attempts {
				return err
			}
			if err := sleep(ctx, e.opts.Retry.Backoff(failures, 0)); err != nil {
				return err
			}
			// Ask the parent how far it got, and go on from there.
			if st, serr := e.parent.Send(ctx, http.MethodGet, location, nil, nil); serr == nil {
				st.Body.Close()
				location, offset = uploadState(st, location)
			}
			continue
		}
		resp.Body.Close()
		failures = 0
		sent := offset + n
		location, offset = uploadState(resp, location)
		if offset < sent {
			offset = sent // "Range: 0-0" cannot tell 0 bytes from 1: trust what was accepted
		}
	}
	sep := "?"
	if strings.Contains(location, "?") {
		sep = "&"
	}
	resp, err := e.parent.Send(ctx, http.MethodPut, location+sep+"digest="+d.Digest.String(), nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	_ = os.Remove(cpPath)
	return nil
}

func (e *Engine) savePushCheckpoint(path, location string) error {
	b, _ := json.Marshal(pushCheckpoint{Location: location})
	return atomicfile.Write(path, b, 0o600)
}

// uploadState reads an upload's Location and the offset its Range header confirms.
func uploadState(resp *http.Response, fallback string) (location string, offset int64) {
	location = resp.Header.Get("Location")
	if location == "" {
		location = fallback
	}
	if r := resp.Header.Get("Range"); r != "" {
		if _, end, ok := strings.Cut(strings.TrimPrefix(r, "bytes="), "-"); ok {
			// distribution answers "0-0" for an empty upload (and for one byte): read it as 0.
			if n, err := strconv.ParseInt(end, 10, 64); err == nil && n > 0 {
				offset = n + 1
			}
		}
	}
	return location, offset
}
