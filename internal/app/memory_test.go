package app

import (
	"math"
	"testing"
)

// TestDeltaPatchMemory: a node's binary patches get its Go memory limit less the reserve, at
// least a byte (0 would mean unbounded), and no bound without a limit.
func TestDeltaPatchMemory(t *testing.T) {
	for _, c := range []struct{ limit, want int64 }{
		{math.MaxInt64, 0},
		{0, 0},
		{1 << 30, 1<<30 - patchReserve},
		{patchReserve, 1},
		{64 << 20, 1},
	} {
		if got := deltaPatchMemory(c.limit); got != c.want {
			t.Errorf("deltaPatchMemory(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}
