package sync_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	gosync "sync"
	"testing"

	"github.com/outpost-registry/outpost/test/faultdisk"
)

// TestDeltaParentDiskFull: a parent whose disk has no room to compute a delta says so at once
// (507, DELTA_UNAVAILABLE) and logs why; the child fetches the layer whole in the same pass,
// without asking again.
func TestDeltaParentDiskFull(t *testing.T) {
	t.Parallel()
	// 64 KiB: room for the cache's directories, not for a layer's tar.
	deltaDir := faultdisk.Small(t, 64<<10)
	var plans []int
	var mu gosync.Mutex
	record := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(rec, r)
			if r.Method == http.MethodPost {
				mu.Lock()
				plans = append(plans, rec.status)
				mu.Unlock()
			}
		})
	}
	parent, logs := deltaParentCachingIn(t, deltaDir, record)
	parent.push(t, "team/app:v1", layeredImage(t, gzipLayer(t, tree(5, 60))))
	child := newNode(t, nil)
	s := newEngine(t, deltaOptions(t, parent, "team/app"), child).RunPass(context.Background(), false)
	if s.Result != "ok" || s.DeltaLayers != 0 {
		t.Fatalf("from a parent with a full disk: %+v", s)
	}
	requireSame(t, parent, child, "team/app:v1")
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(plans, []int{http.StatusInsufficientStorage}) {
		t.Errorf("delta plans answered %v; want one 507", plans)
	}
	warned := logs.FilterMessage("delta not computed: the disk is full; the child fetches the layer whole").FilterFieldKey("error")
	if warned.Len() != 1 || !strings.Contains(warned.All()[0].ContextMap()["error"].(string), "no space left on device") {
		t.Errorf("the parent logged %d warnings of its full disk naming the error", warned.Len())
	}
}

// statusRecorder remembers the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
