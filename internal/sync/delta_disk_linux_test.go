package sync_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/outpost-registry/outpost/test/faultdisk"
)

// TestDeltaParentDiskFull: a parent whose disk has no room to compute a delta says so at once
// (507, DELTA_UNAVAILABLE) and logs why; the child fetches the layer whole in the same pass,
// without asking again.
func TestDeltaParentDiskFull(t *testing.T) {
	t.Parallel()
	// 64 KiB: room for the cache's directories, not for a layer's tar.
	answers, logs := passWithoutDelta(t, faultdisk.Small(t, 64<<10), nil)
	if len(answers) != 1 || answers[0].status != http.StatusInsufficientStorage {
		t.Errorf("delta plans answered %v; want one 507", answers)
	}
	warned := logs.FilterMessage("delta not computed: the disk is full; the child fetches the layer whole").FilterFieldKey("error")
	if warned.Len() != 1 || !strings.Contains(warned.All()[0].ContextMap()["error"].(string), "no space left on device") {
		t.Errorf("the parent logged %d warnings of its full disk naming the error", warned.Len())
	}
}
