package sync

import (
	"context"
	"time"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// RunPass runs one pass now, as a firing or `sync now` would, and returns its summary.
func (e *Engine) RunPass(ctx context.Context, force bool) acrapi.PassSummary {
	return e.runPass(ctx, force)
}

// OpenWindow opens the sync window until end, as a schedule firing would.
func (e *Engine) OpenWindow(end time.Time) { e.gate.Open(end) }

// InventoryChanges lists what turns one inventory into another.
var InventoryChanges = inventoryChanges

// InventoryWalks is how many times the engine listed the layers of its store (walked every
// tag's manifests).
func (e *Engine) InventoryWalks() int64 { return e.heldWalks.Load() }

// WatchMemoryLimit has f see every call the engine makes to debug.SetMemoryLimit, until the
// test ends.
func WatchMemoryLimit(t interface{ Cleanup(func()) }, f func(limit int64)) {
	prev := setMemoryLimit
	setMemoryLimit = func(limit int64) int64 {
		f(limit)
		return prev(limit)
	}
	t.Cleanup(func() { setMemoryLimit = prev })
}

// RebuildLimit is rebuildLimit.
var RebuildLimit = rebuildLimit
