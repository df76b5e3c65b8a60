package app

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/duration"
	"github.com/outpost-registry/outpost/internal/registry"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// GarbageCollector is what the admin endpoint and the schedule need of the store.
type GarbageCollector interface {
	CollectGarbage(ctx context.Context, opts registry.GCOptions) (registry.GCResult, error)
}

// GCQuery encodes opts as the query of the admin endpoint's POST /gc.
func GCQuery(opts registry.GCOptions) string {
	q := url.Values{}
	q.Set("dryRun", strconv.FormatBool(opts.DryRun))
	q.Set("removeUntagged", strconv.FormatBool(opts.RemoveUntagged))
	q.Set("grace", duration.Duration(opts.Grace).String())
	return q.Encode()
}

// gcOptionsFromQuery reads POST /gc?dryRun=&removeUntagged=&grace= (grace defaults to
// registry.DefaultGCGrace).
func gcOptionsFromQuery(q url.Values) (registry.GCOptions, error) {
	opts := registry.GCOptions{Grace: registry.DefaultGCGrace}
	for name, dst := range map[string]*bool{"dryRun": &opts.DryRun, "removeUntagged": &opts.RemoveUntagged} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return opts, fmt.Errorf("%s=%q is not a boolean: expected true or false", name, v)
			}
			*dst = b
		}
	}
	if v := q.Get("grace"); v != "" {
		d, err := duration.Parse(v)
		if err != nil {
			return opts, fmt.Errorf("grace: %v", err)
		}
		opts.Grace = d.Std()
	}
	return opts, nil
}

// handleGC serves POST /gc on the admin endpoint: one garbage collection, its result as JSON.
func handleGC(gc GarbageCollector, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if gc == nil {
			acrapi.WriteError(w, http.StatusConflict, acrapi.CodeUnsupported, "this node has no store to collect")
			return
		}
		opts, err := gcOptionsFromQuery(r.URL.Query())
		if err != nil {
			acrapi.WriteError(w, http.StatusBadRequest, "INVALID", err.Error())
			return
		}
		res, err := runGC(r.Context(), gc, opts, log, "requested")
		if err != nil {
			acrapi.WriteError(w, http.StatusInternalServerError, "GC_FAILED", "garbage collection: "+err.Error())
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// runGC runs one garbage collection and logs one line with its totals.
func runGC(ctx context.Context, gc GarbageCollector, opts registry.GCOptions, log *zap.Logger, trigger string) (registry.GCResult, error) {
	start := time.Now()
	res, err := gc.CollectGarbage(ctx, opts)
	fields := []zap.Field{
		zap.String("trigger", trigger), zap.Bool("dry_run", opts.DryRun), zap.Bool("remove_untagged", opts.RemoveUntagged),
		zap.Stringer("grace", duration.Duration(opts.Grace)), zap.Int("repositories", res.Repositories),
		zap.Int("manifests_deleted", res.ManifestsDeleted), zap.Int("blob_links_removed", res.BlobLinksRemoved),
		zap.Int("blobs_deleted", res.BlobsDeleted), zap.Int64("bytes_freed", res.BytesFreed),
		zap.Int("referrer_entries_pruned", res.ReferrerEntriesPruned), zap.Duration("took", time.Since(start)),
	}
	if err != nil {
		log.Error("garbage collection failed", append(fields, zap.Error(err))...)
		return res, err
	}
	log.Info("garbage collection finished", fields...)
	return res, nil
}

// startGCSchedule runs garbage collection (untagged manifests removed, the default grace) on
// sync.gcSchedule, UTC, until ctx ends or the returned stop is called; stop waits for a run in
// progress, which it cancels. A firing while a sync pass runs waits for the pass to end: the
// blobs a pass stores are referenced only once it stores their manifests, maybe more than the
// grace later.
func (n *Node) startGCSchedule(ctx context.Context, syncer Syncer) (stop func()) {
	if n.cfg.Sync.GCSchedule == "" {
		return func() {}
	}
	sched, err := config.CronParser.Parse(n.cfg.Sync.GCSchedule)
	if err != nil { // validated with the configuration
		n.log.Error("sync.gcSchedule", zap.Error(err))
		return func() {}
	}
	log := n.log.Named("gc")
	ctx, cancel := context.WithCancel(ctx)
	c := cron.New(cron.WithLocation(time.UTC), cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	c.Schedule(sched, cron.FuncJob(func() {
		if !waitForSyncPass(ctx, syncer, 10*time.Second, log) {
			return
		}
		_, _ = runGC(ctx, n.registry, registry.GCOptions{RemoveUntagged: true, Grace: registry.DefaultGCGrace}, log, "schedule")
	}))
	c.Start()
	return func() {
		cancel()
		<-c.Stop().Done()
	}
}

// waitForSyncPass returns once no sync pass runs, polling every interval; false if ctx ended.
func waitForSyncPass(ctx context.Context, syncer Syncer, interval time.Duration, log *zap.Logger) bool {
	logged := false
	for syncer != nil && syncer.Status().State == "syncing" {
		if !logged {
			log.Info("garbage collection waits for the sync pass to finish", zap.String("trigger", "schedule"))
			logged = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(interval):
		}
	}
	return ctx.Err() == nil
}
