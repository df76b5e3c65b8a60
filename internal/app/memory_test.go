package app

import (
	"math"
	"testing"
)

// TestDeltaMemory: a node's binary patches and whole-layer encoder get its Go memory limit less
// their reserves, at least a byte (0 would mean unbounded), and no bound without a limit.
func TestDeltaMemory(t *testing.T) {
	for _, c := range []struct{ limit, patch, whole int64 }{
		{math.MaxInt64, 0, 0},
		{0, 0, 0},
		{1 << 30, 1<<30 - patchReserve, 1<<30 - wholeReserve},
		{patchReserve, 1, patchReserve - wholeReserve},
		{64 << 20, 1, 1},
	} {
		l := deltaLimits(t.TempDir(), c.limit)
		if l.PatchMemory != c.patch || l.WholeMemory != c.whole {
			t.Errorf("limit %d: patch memory %d, whole memory %d; want %d and %d", c.limit, l.PatchMemory, l.WholeMemory, c.patch, c.whole)
		}
	}
}
