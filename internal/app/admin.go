package app

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// AdminSocket is the node's local admin endpoint, relative to the data directory: a Unix socket
// only the node's user can reach, so `outpost sync now|status` need no credentials.
const AdminSocket = "outpost/admin.sock"

// Syncer is what the admin endpoint needs of the sync engine.
type Syncer interface {
	Status() acrapi.SyncStatus
	Trigger(force bool) error
}

// adminHandler serves GET /sync/status, POST /sync/now[?force=true] and POST /gc (gc.go).
func adminHandler(s Syncer, gc GarbageCollector, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /gc", handleGC(gc, log))
	mux.HandleFunc("GET /sync/status", func(w http.ResponseWriter, _ *http.Request) {
		if s == nil {
			writeJSON(w, http.StatusOK, acrapi.SyncStatus{Link: "unknown", State: "disabled",
				Repositories: []acrapi.RepoSyncStatus{}, InFlight: []acrapi.BlobProgress{}})
			return
		}
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("POST /sync/now", func(w http.ResponseWriter, r *http.Request) {
		if s == nil {
			acrapi.WriteError(w, http.StatusConflict, acrapi.CodeUnsupported, "this node has no parent to sync from: set parent.url")
			return
		}
		if err := s.Trigger(r.URL.Query().Get("force") == "true"); err != nil {
			acrapi.WriteError(w, http.StatusConflict, "WINDOW_CLOSED", err.Error()+" (outpost sync now --force)")
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "sync pass requested"})
	})
	return mux
}

// serveAdmin serves the admin endpoint on the socket until ctx ends. A socket that cannot be
// opened is logged, not fatal: the node still serves its registry.
func serveAdmin(ctx context.Context, dataDir string, s Syncer, gc GarbageCollector, log *zap.Logger) {
	path := filepath.Join(dataDir, AdminSocket)
	_ = os.Remove(path) // left by a process that was killed
	ln, err := net.Listen("unix", path)
	if err != nil {
		log.Warn("local admin socket unavailable; outpost sync now|status will not reach this node", zap.String("path", path), zap.Error(err))
		return
	}
	if err := os.Chmod(path, 0o600); err != nil {
		log.Warn("restricting the admin socket", zap.Error(err))
	}
	srv := &http.Server{Handler: adminHandler(s, gc, log), ReadHeaderTimeout: 10 * time.Second,
		// Requests end with the node: a garbage collection in progress is cancelled.
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("admin socket stopped", zap.Error(err))
	}
}
