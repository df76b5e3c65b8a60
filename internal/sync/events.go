package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/atomicfile"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// With an Outpost parent a pass reads the parent's event log from where the last one stopped
// and touches only what changed: a quiet pass costs a few hundred bytes, not a tag list per
// repository. It reconciles in full instead when it has no cursor, when the events after it are
// gone (their TTL passed), when its repositories changed, and once a day in any case.

// fullEvery bounds how long the node trusts events alone.
const fullEvery = 24 * time.Hour

// cursor is the durable position in the parent's event log.
type cursor struct {
	Seq          uint64    `json:"seq"`
	Repositories []string  `json:"repositories"` // the plan the position was reached with
	FullAt       time.Time `json:"fullAt"`       // the last full reconciliation
}

func (e *Engine) cursorFile() string { return filepath.Join(e.opts.StateDir, "events-cursor.json") }

func (e *Engine) loadCursor() (cursor, bool) {
	b, err := os.ReadFile(e.cursorFile())
	if err != nil {
		return cursor{}, false
	}
	var c cursor
	return c, json.Unmarshal(b, &c) == nil
}

func (e *Engine) saveCursor(c cursor) {
	b, _ := json.Marshal(c)
	if err := atomicfile.Write(e.cursorFile(), b, 0o600); err != nil {
		e.log.Warn("keeping the event cursor", zap.Error(err))
	}
}

// syncConnected syncs from the parent's events, or in full when it must.
func (e *Engine) syncConnected(ctx context.Context) (failed, total int, first error) {
	repos := slices.Clone(e.plan().repositories)
	slices.Sort(repos)
	cur, ok := e.loadCursor()
	if ok && slices.Equal(cur.Repositories, repos) && time.Since(cur.FullAt) < fullEvery {
		done, err := e.syncEvents(ctx, cur)
		if err == nil && done {
			return 0, len(repos), nil
		}
		if err != nil {
			return 1, len(repos), err
		}
	}
	// In full: note where the log is first, so that nothing logged during the pass is missed.
	page, err := e.acr.Events(ctx, math.MaxUint64)
	e.noteLink(err)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the parent's event log: %w", err)
	}
	failed, total, first = e.syncAll(ctx)
	if failed == 0 && first == nil {
		e.saveCursor(cursor{Seq: page.Latest, Repositories: repos, FullAt: time.Now().UTC()})
	}
	return failed, total, first
}

// syncEvents applies the events after cur. done is false when the log says to reconcile in
// full. The cursor moves only past events that were all applied.
func (e *Engine) syncEvents(ctx context.Context, cur cursor) (done bool, err error) {
	for {
		page, err := e.acr.Events(ctx, cur.Seq)
		e.noteLink(err)
		if err != nil {
			return false, fmt.Errorf("reading the parent's event log: %w", err)
		}
		if page.Reset {
			e.log.Info("events since the last sync are gone; reconciling in full", zap.Uint64("cursor", cur.Seq))
			return false, nil
		}
		var errs []error
		for _, ev := range page.Events {
			if err := e.applyEvent(ctx, ev); err != nil {
				if errors.Is(err, ErrWindowClosed) || ctx.Err() != nil {
					return false, err
				}
				errs = append(errs, fmt.Errorf("%s %s:%s: %w", ev.Action, ev.Repository, ev.Tag, err))
			}
		}
		if len(errs) > 0 {
			return false, errors.Join(errs...)
		}
		cur.Seq = page.Next
		e.saveCursor(cur)
		if !page.More {
			return true, nil
		}
	}
}

// applyEvent brings one tag (or referrer) in line with the parent.
func (e *Engine) applyEvent(ctx context.Context, ev acrapi.Event) error {
	if ev.Tag != "" && e.outbox.has(ev.Repository, ev.Tag) {
		return nil // pushed here and not yet up: this node's version wins until then
	}
	switch ev.Action {
	case acrapi.EventPush:
		if ev.Tag == "" {
			// A referrer pushed by digest (a signature, an SBOM).
			d, err := digest.Parse(ev.Digest)
			if err != nil {
				return err
			}
			if ok, err := e.store.HasManifest(ctx, ev.Repository, d); err != nil || ok {
				return err
			}
			return e.syncManifest(ctx, ev.Repository, d.String(), "", 1)
		}
		if !e.wantTag(ev.Tag) {
			return nil
		}
		err := e.syncTag(ctx, ev.Repository, ev.Tag)
		if IsNotFound(err) {
			return nil // moved on since: a later event says where
		}
		return err
	case acrapi.EventUntag:
		return e.untagLocal(ctx, ev.Repository, ev.Tag)
	case acrapi.EventDelete:
		d, err := digest.Parse(ev.Digest)
		if err != nil {
			return err
		}
		tags, err := e.store.Tags(ctx, ev.Repository)
		if err != nil {
			return err
		}
		for _, t := range tags {
			if got, ok, err := e.store.TagDigest(ctx, ev.Repository, t); err == nil && ok && got == d && !e.outbox.has(ev.Repository, t) {
				if err := e.untagLocal(ctx, ev.Repository, t); err != nil {
					return err
				}
			}
		}
		return nil
	default:
		return nil // an action this version does not know
	}
}

// untagLocal removes a tag the parent removed, if the node has it.
func (e *Engine) untagLocal(ctx context.Context, repo, tag string) error {
	if _, ok, err := e.store.TagDigest(ctx, repo, tag); err != nil || !ok {
		return err
	}
	if err := e.store.Untag(ctx, repo, tag); err != nil {
		return err
	}
	e.metrics.tagsRemoved.Inc()
	e.pass.tagsRemoved.Add(1)
	e.changed(repo, tag, "", acrapi.EventUntag)
	e.log.Info("tag removed: the parent removed it", zap.String("repository", repo), zap.String("tag", tag))
	return nil
}
